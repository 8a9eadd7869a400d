//! `/api/v1/admin/tokens`: platform API tokens.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{self, ApiTokenInfo, NewApiToken, Role};
use crate::context::Context;
use crate::error::{AppResult, ErrorBody};
use crate::http::ApiAdmin;
use crate::http::body::ApiJson;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_tokens)
        .service(create_token)
        .service(revoke_token);
}

/// Body of a token creation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    pub name: String,
    /// `platform-admin` (default) or `platform-viewer` (read-only).
    #[serde(default)]
    pub role: Option<Role>,
    /// Days until the token stops working; absent: no expiry.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// Platform API tokens (never their secrets).
#[utoipa::path(
    tag = "admin",
    responses(
        (status = 200, description = "Tokens, newest first", body = [ApiTokenInfo]),
    ),
)]
#[get("/admin/tokens")]
async fn list_tokens(ctx: web::Data<Context>, _caller: ApiAdmin) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(auth::list_platform_tokens(&ctx).await?))
}

/// Create a platform API token. The response is the only time the token is shown.
#[utoipa::path(
    tag = "admin",
    request_body = NewTokenRequest,
    responses(
        (status = 201, description = "The token (shown once)", body = NewApiToken),
        (status = 409, description = "A live token has this name", body = ErrorBody),
    ),
)]
#[post("/admin/tokens")]
async fn create_token(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: ApiJson<NewTokenRequest>,
) -> AppResult<HttpResponse> {
    let body = body.0;
    let token = auth::create_platform_token(
        &ctx,
        &caller.actor,
        &body.name,
        body.role.unwrap_or(Role::PlatformAdmin),
        body.expires_in_days,
    )
    .await?;
    Ok(HttpResponse::Created().json(token))
}

/// Revoke a platform API token by id or name.
#[utoipa::path(
    tag = "admin",
    params(("id" = String, Path, description = "Token id or name")),
    responses(
        (status = 204, description = "Revoked"),
    ),
)]
#[delete("/admin/tokens/{id}")]
async fn revoke_token(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    auth::revoke_platform_token(&ctx, &caller.actor, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}
