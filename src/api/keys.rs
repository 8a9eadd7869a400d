//! `/api/v1/tenant/{slug}/api-keys…` (a tenant's API keys, for platform admins and that tenant's
//! admins), `/api/v1/admin/tokens/{id}/rotate`, and `/api/v1/api-keys/{prefix}` (whose key is
//! this?).

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{self, ApiTokenInfo, KeySpec, NewApiToken, Role};
use crate::context::Context;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::ApiAdmin;
use crate::http::body::ApiJson;
use crate::http::tenant_path::{TenantAdmin, TenantPath};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(create_key)
        .service(list_keys)
        .service(revoke_key)
        .service(rotate_key)
        .service(rotate_platform_token)
        .service(key_owner);
}

/// Whose key is this: the API key or platform token with this prefix (`tny_abcd1234` or
/// `abcd1234`: never the whole token, which an address would carry into access logs), never its
/// secret, and the tenant it belongs to.
#[utoipa::path(
    tag = "admin",
    params(("prefix" = String, Path, description = "The key's public prefix: `tny_abcd1234` or `abcd1234`")),
    responses(
        (status = 200, description = "The key and its tenant (none for a platform token)", body = crate::auth::key_owner::KeyOwner),
        (status = 404, description = "No key has this prefix", body = ErrorBody),
        (status = 422, description = "Not a prefix, or a whole token", body = ErrorBody),
    ),
)]
#[get("/api-keys/{prefix}")]
async fn key_owner(
    ctx: web::Data<Context>,
    caller: crate::http::ApiCaller,
    prefix: web::Path<String>,
) -> AppResult<HttpResponse> {
    // Keys' metadata is for administrators, as the keys' lists are.
    caller.principal.require_admin()?;
    if prefix.trim_start_matches("tny_").contains('_') {
        return Err(AppError::invalid(
            "prefix",
            "not_a_token",
            "give the key's prefix (tny_abcd1234), never the whole token: an address is written to access logs; revoke this key if it was sent here",
        ));
    }
    Ok(HttpResponse::Ok().json(crate::auth::key_owner::find(&ctx, &prefix).await?))
}

/// A new tenant API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// 1–100 characters; unique among the tenant's live keys.
    pub name: String,
    /// `member` (default: reads its tenant) or `tenant-admin` (also manages its keys).
    #[serde(default)]
    pub role: Option<String>,
    /// The key stops working after this many days.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Requests per minute the key may make (per server); absent: no limit of its own.
    #[serde(default)]
    pub rate_limit_per_minute: Option<u32>,
}

/// How long the rotated key keeps working.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// Minutes the old key keeps working (0–10080, default 60).
    #[serde(default)]
    pub grace_minutes: Option<u32>,
}

/// Create an API key of a tenant; the key is in the answer, and only there.
#[utoipa::path(
    tag = "tenants",
    request_body = NewKey,
    responses(
        (status = 201, description = "The key (shown once)", body = NewApiToken),
        (status = 409, description = "A live key has this name", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/api-keys")]
async fn create_key(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    body: ApiJson<NewKey>,
) -> AppResult<HttpResponse> {
    let scope = target.tenant.scope();
    let role = match body.0.role.as_deref() {
        None => Role::Member,
        Some(r) => r
            .parse::<Role>()
            .ok()
            .filter(|r| r.is_tenant_role())
            .ok_or_else(|| {
                AppError::invalid(
                    "role",
                    "one_of",
                    match Role::tenant_role_hint(r) {
                        Some(hint) => {
                            format!("must be `member` or `tenant-admin`; `{r}` here is {hint}")
                        }
                        None => "must be `member` or `tenant-admin`".to_owned(),
                    },
                )
            })?,
    };
    let key = auth::create_key(
        &ctx,
        &target.caller.actor,
        Some(&scope),
        &KeySpec {
            name: body.0.name.clone(),
            role,
            expires_in_days: body.0.expires_in_days,
            rate_limit_per_minute: body.0.rate_limit_per_minute,
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(key))
}

/// A tenant's API keys (never their secrets), newest first.
#[utoipa::path(
    tag = "tenants",
    responses((status = 200, description = "Keys", body = [ApiTokenInfo]),),
)]
#[get("/tenant/{slug}/api-keys")]
async fn list_keys(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
) -> AppResult<HttpResponse> {
    let scope = target.tenant.scope();
    Ok(HttpResponse::Ok().json(auth::list_tenant_keys(&ctx, &scope).await?))
}

/// Revoke a tenant's API key (at once).
#[utoipa::path(
    tag = "tenants",
    params(("slug" = String, Path, description = "The tenant's slug"), ("id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked"),),
)]
#[delete("/tenant/{slug}/api-keys/{id}")]
async fn revoke_key(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (_, id) = path.into_inner();
    let scope = target.tenant.scope();
    auth::revoke_key(&ctx, &target.caller.actor, &scope, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate a tenant's API key: a new key (shown once) replaces it; the old one keeps working for
/// the grace period.
#[utoipa::path(
    tag = "tenants",
    params(("slug" = String, Path, description = "The tenant's slug"), ("id" = String, Path, description = "The key's id")),
    request_body = Rotate,
    responses(
        (status = 201, description = "The new key (shown once)", body = NewApiToken),
        (status = 409, description = "Revoked, expired or already rotated", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/api-keys/{id}/rotate")]
async fn rotate_key(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    path: web::Path<(String, String)>,
    body: ApiJson<Rotate>,
) -> AppResult<HttpResponse> {
    let (_, id) = path.into_inner();
    let scope = target.tenant.scope();
    let key = auth::rotate_key(
        &ctx,
        &target.caller.actor,
        Some(&scope),
        &id,
        body.0.grace_minutes.unwrap_or(60),
    )
    .await?;
    Ok(HttpResponse::Created().json(key))
}

/// Rotate a platform API token: a new token (shown once) replaces it; the old one keeps working
/// for the grace period.
#[utoipa::path(
    tag = "admin",
    params(("id" = String, Path, description = "The token's id")),
    request_body = Rotate,
    responses(
        (status = 201, description = "The new token (shown once)", body = NewApiToken),
        (status = 409, description = "Revoked, expired or already rotated", body = ErrorBody),
    ),
)]
#[post("/admin/tokens/{id}/rotate")]
async fn rotate_platform_token(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    id: web::Path<String>,
    body: ApiJson<Rotate>,
) -> AppResult<HttpResponse> {
    let key = auth::rotate_key(
        &ctx,
        &caller.actor,
        None,
        &id,
        body.0.grace_minutes.unwrap_or(60),
    )
    .await?;
    Ok(HttpResponse::Created().json(key))
}
