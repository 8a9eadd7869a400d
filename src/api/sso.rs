//! `/api/v1/tenant/{slug}/sso…`, `…/sessions…` and `…/health/oauth`: a tenant's single
//! sign-on settings (tenant admins and platform admins), "test connection", setup links
//! (platform admins), the tenant's sessions, and the OAuth health check.

use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::sso::{
    self, ConnectionTest, NewSetupLink, OAuthHealth, SetupLinkInfo, SsoSettings, SsoUpdate,
    TenantUrls,
};
use crate::auth::{self, Principal, Role, SessionInfo};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::http::body::ApiJson;
use crate::http::request_origin;
use crate::http::tenant_path::{Access, Platform, PlatformAdmin, Read, TenantAdmin, TenantPath};
use crate::identity_providers::ConnectionReport;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(get_sso)
        .service(update_sso)
        .service(test_sso)
        .service(list_setup_links)
        .service(create_setup_link)
        .service(revoke_setup_link)
        .service(list_sessions)
        .service(revoke_session)
        .service(oauth_health);
}

/// Tenant settings are read by platform principals and by that tenant's admins.
struct SettingsRead;

impl Access for SettingsRead {
    fn check(principal: &Principal, slug: &str) -> AppResult<()> {
        principal.require_tenant_read(slug)?;
        if principal.role == Role::Member {
            return Err(AppError::forbidden(format!(
                "`{}` has the member role; a tenant's SSO settings and sessions are for its admins",
                principal.name
            )));
        }
        Ok(())
    }
}

/// A tenant's SSO settings, with the redirect URIs to register at its provider.
#[utoipa::path(
    tag = "sso",
    responses(
        (status = 200, body = SsoSettings),
    ),
)]
#[get("/tenant/{slug}/sso")]
async fn get_sso(
    req: HttpRequest,
    ctx: web::Data<Context>,
    target: TenantPath<SettingsRead>,
) -> AppResult<HttpResponse> {
    let urls = TenantUrls::new(&ctx.config, target.slug(), &request_origin(&req));
    Ok(HttpResponse::Ok().json(SsoSettings::of(&target.tenant, &urls)))
}

/// Change a tenant's SSO settings (issuer, client id, secret, scopes, role mapping). A new
/// secret keeps the previous one for `client-secret/rollback`; the next login uses the new one.
#[utoipa::path(
    tag = "sso",
    request_body = SsoUpdate,
    responses(
        (status = 200, body = SsoSettings),
    ),
)]
#[patch("/tenant/{slug}/sso")]
async fn update_sso(
    req: HttpRequest,
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    body: ApiJson<SsoUpdate>,
) -> AppResult<HttpResponse> {
    let tenant = sso::update(&ctx, &target.caller.actor, target.slug(), &body.0).await?;
    let urls = TenantUrls::new(&ctx.config, target.slug(), &request_origin(&req));
    Ok(HttpResponse::Ok().json(SsoSettings::of(&tenant, &urls)))
}

/// Test a provider before saving it: fetches the discovery document and key set of the issuer
/// given (or the saved one) and reports what it found and what is wrong. Saves nothing.
#[utoipa::path(
    tag = "sso",
    request_body = ConnectionTest,
    responses(
        (status = 200, body = ConnectionReport),
    ),
)]
#[post("/tenant/{slug}/sso/test")]
async fn test_sso(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    body: ApiJson<ConnectionTest>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let address = target.caller.actor.source_ip.clone();
    Ok(HttpResponse::Ok()
        .json(sso::test_connection(&ctx, tenant, &body.0, address.as_deref()).await?))
}

/// A new setup link.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    /// Hours the link works (1–168; default `auth.setup_link_hours`, 24).
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
}

/// The tenant's SSO setup links (never their tokens).
#[utoipa::path(
    tag = "sso",
    responses(
        (status = 200, body = Vec<SetupLinkInfo>),
    ),
)]
#[get("/tenant/{slug}/sso/setup-links")]
async fn list_setup_links(
    ctx: web::Data<Context>,
    target: TenantPath<Platform>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(sso::list_setup_links(&ctx, &tenant.scope()).await?))
}

/// Create a single-use link with which the tenant's IT administrator sets up SSO without a
/// platform account; the URL is in the answer, and only there.
#[utoipa::path(
    tag = "sso",
    request_body = NewLink,
    responses(
        (status = 201, body = NewSetupLink),
    ),
)]
#[post("/tenant/{slug}/sso/setup-links")]
async fn create_setup_link(
    req: HttpRequest,
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    body: ApiJson<NewLink>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let urls = TenantUrls::new(&ctx.config, target.slug(), &request_origin(&req));
    let link = sso::create_setup_link(
        &ctx,
        &target.caller.actor,
        &tenant.scope(),
        body.0.expires_in_hours,
        &urls,
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header(("Cache-Control", "no-store"))
        .json(link))
}

/// Revoke a setup link → 204.
#[utoipa::path(
    tag = "sso",
    params(
        ("slug" = String, Path, description = "The tenant's slug"),
        ("id" = String, Path, description = "The link's id"),
    ),
    responses((status = 204),),
)]
#[delete("/tenant/{slug}/sso/setup-links/{id}")]
async fn revoke_setup_link(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (_, id) = path.into_inner();
    let scope = target.tenant.scope();
    sso::revoke_setup_link(&ctx, &target.caller.actor, &scope, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The live sessions of a tenant's users, newest first.
#[utoipa::path(
    tag = "sso",
    responses(
        (status = 200, body = Vec<SessionInfo>),
    ),
)]
#[get("/tenant/{slug}/sessions")]
async fn list_sessions(
    ctx: web::Data<Context>,
    target: TenantPath<SettingsRead>,
) -> AppResult<HttpResponse> {
    let scope = target.tenant.scope();
    Ok(HttpResponse::Ok().json(auth::list_tenant_sessions(&ctx, &scope).await?))
}

/// Sign a user out: ends one of the tenant's sessions → 204.
#[utoipa::path(
    tag = "sso",
    params(
        ("slug" = String, Path, description = "The tenant's slug"),
        ("handle" = String, Path, description = "The session's handle"),
    ),
    responses((status = 204),),
)]
#[delete("/tenant/{slug}/sessions/{handle}")]
async fn revoke_session(
    ctx: web::Data<Context>,
    target: TenantPath<TenantAdmin>,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (_, handle) = path.into_inner();
    let scope = target.tenant.scope();
    auth::revoke_tenant_session(&ctx, &target.caller.actor, &scope, &handle).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Whether the tenant's identity provider answers: discovery document and key set, each with
/// the time it took, and what is wrong with them.
#[utoipa::path(
    tag = "sso",
    responses(
        (status = 200, description = "healthy, unreachable, misconfigured or not_configured", body = OAuthHealth),
    ),
)]
#[get("/tenant/{slug}/health/oauth")]
async fn oauth_health(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(sso::oauth_health(&ctx, target.slug()).await?))
}
