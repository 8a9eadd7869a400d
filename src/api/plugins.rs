//! `/api/v1/plugin…`: install, list, inspect, enable, disable, configure, grant and revoke
//! plugins.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, delete, get, post, put, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::body::ApiJson;
use crate::http::{ApiAdmin, ApiCaller};
use crate::plugin_host::manifest::Inspection;
use crate::plugin_registry::{self as registry, Capability, PluginView};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_plugins)
        .service(check_plugin)
        .service(install_plugin)
        .service(get_plugin)
        .service(enable_plugin)
        .service(disable_plugin)
        .service(grant_capability)
        .service(revoke_capability)
        .service(configure_plugin);
}

/// Largest component accepted, in bytes.
const MAX_COMPONENT_BYTES: usize = 32 * 1024 * 1024;

/// A component uploaded as the raw request body (`Content-Type: application/wasm`).
pub struct WasmBody(pub Vec<u8>);

impl FromRequest for WasmBody {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut payload = payload.take();
        Box::pin(async move {
            if !content_type.starts_with("application/wasm")
                && !content_type.starts_with("application/octet-stream")
            {
                return Err(AppError::UnsupportedMediaType(format!(
                    "send the component as the body with Content-Type: application/wasm (got `{content_type}`)"
                )));
            }
            let mut body = Vec::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|e| AppError::BadRequest(format!("reading the body: {e}")))?;
                if body.len() + chunk.len() > MAX_COMPONENT_BYTES {
                    return Err(AppError::PayloadTooLarge {
                        limit: MAX_COMPONENT_BYTES,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(WasmBody(body))
        })
    }
}

/// Installed plugins with their capabilities and call statistics.
#[utoipa::path(
    tag = "plugins",
    responses((status = 200, description = "Plugins", body = [PluginView]),),
)]
#[get("/plugin")]
async fn list_plugins(ctx: web::Data<Context>, caller: ApiCaller) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(registry::list(&ctx).await?))
}

/// Inspect one plugin.
#[utoipa::path(
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses((status = 200, body = PluginView),),
)]
#[get("/plugin/{name}")]
async fn get_plugin(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    name: web::Path<String>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(registry::get(&ctx, &name).await?))
}

/// Check a component (world, WIT version, manifest, exports) without installing it.
#[utoipa::path(
    tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses((status = 200, body = Inspection), (status = 422, description = "Not an acceptable plugin", body = ErrorBody)),
)]
#[post("/plugin/check")]
async fn check_plugin(_caller: ApiAdmin, body: WasmBody) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(registry::check(&body.0)?))
}

/// Install (or upgrade) a plugin; the body is the component.
#[utoipa::path(
    tag = "plugins",
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, body = PluginView),
        (status = 409, description = "A built-in has this name", body = ErrorBody),
        (status = 422, description = "Not an acceptable plugin (named reason)", body = ErrorBody),
    ),
)]
#[post("/plugin")]
async fn install_plugin(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: WasmBody,
) -> AppResult<HttpResponse> {
    let view = registry::install(&ctx, &caller.actor, body.0).await?;
    Ok(HttpResponse::Created().json(view))
}

/// Options of an enable.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    /// The deadline of each call of this plugin, in milliseconds (overrides the world's default).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// Enable a plugin (optionally with its own deadline).
#[utoipa::path(
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body = EnableRequest,
    responses((status = 200, body = PluginView),),
)]
#[post("/plugin/{name}/enable")]
async fn enable_plugin(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
    body: ApiJson<EnableRequest>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok()
        .json(registry::set_enabled(&ctx, &caller.actor, &name, true, body.0.deadline_ms).await?))
}

/// Disable a plugin: its calls are refused until it is enabled again.
#[utoipa::path(
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, body = PluginView),
        (status = 409, description = "A plugin the platform itself works with (template-renderer, tier-quota)", body = ErrorBody),
    ),
)]
#[post("/plugin/{name}/disable")]
async fn disable_plugin(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok()
        .json(registry::set_enabled(&ctx, &caller.actor, &name, false, None).await?))
}

/// A capability to grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `host`, `secret` or `database`.
    pub kind: String,
    /// The host (`host` or `host:port`), the secret's name or the database's alias, as the
    /// manifest requests it.
    pub name: String,
    /// The secret's value, or the database's URL (write-only; sealed at rest).
    #[serde(default)]
    pub value: Option<String>,
}

/// Set a plugin's whole configuration: a JSON object of the fields its manifest declares
/// (`config_fields`); a field left out takes its default. Each value is checked against its
/// field, and a refusal names the field and changes nothing.
#[utoipa::path(
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body(content = Object, description = "Field → value"),
    responses((status = 200, body = PluginView), (status = 422, description = "A value its field refuses, naming the field", body = ErrorBody)),
)]
#[put("/plugin/{name}/config")]
async fn configure_plugin(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
    body: ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(registry::configure(&ctx, &caller.actor, &name, body.0).await?))
}

/// Grant a host or a secret the plugin's manifest requests.
#[utoipa::path(
    tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body = GrantRequest,
    responses((status = 200, body = PluginView), (status = 422, description = "Not requested by the manifest", body = ErrorBody)),
)]
#[post("/plugin/{name}/grants")]
async fn grant_capability(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
    body: ApiJson<GrantRequest>,
) -> AppResult<HttpResponse> {
    let request = body.0;
    if request.value.as_deref() == Some("") {
        return Err(AppError::invalid("value", "required", "must not be empty"));
    }
    let capability = match request.kind.as_str() {
        "host" => Capability::Host(request.name),
        "secret" => Capability::Secret {
            name: request.name,
            value: request.value.ok_or_else(|| {
                AppError::invalid(
                    "value",
                    "required",
                    "a secret grant needs the secret's value",
                )
            })?,
        },
        "database" => Capability::Database {
            alias: request.name,
            url: request.value.ok_or_else(|| {
                AppError::invalid(
                    "value",
                    "required",
                    "a database grant needs the database's URL",
                )
            })?,
        },
        _ => {
            return Err(AppError::invalid(
                "kind",
                "one_of",
                "must be `host`, `secret` or `database`",
            ));
        }
    };
    Ok(HttpResponse::Ok().json(registry::grant(&ctx, &caller.actor, &name, capability).await?))
}

/// Revoke a granted host, secret or database.
#[utoipa::path(
    tag = "plugins",
    params(
        ("name" = String, Path, description = "The plugin's name"),
        ("kind" = String, Path, description = "`host`, `secret` or `database`"),
        ("capability" = String, Path, description = "The host, the secret's name or the database's alias"),
    ),
    responses((status = 200, body = PluginView),),
)]
#[delete("/plugin/{name}/grants/{kind}/{capability}")]
async fn revoke_capability(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    path: web::Path<(String, String, String)>,
) -> AppResult<HttpResponse> {
    let (name, kind, capability) = path.into_inner();
    Ok(HttpResponse::Ok()
        .json(registry::revoke(&ctx, &caller.actor, &name, &kind, &capability).await?))
}
