//! `/api/v1/audit`: the audit log, filtered and paginated, and its chain check.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::audit::{self, AuditPage, AuditQuery, VerifyReport};
use crate::context::Context;
use crate::error::AppResult;
use crate::http::ApiCaller;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_audit).service(verify_audit);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Tenant slug or id. A tenant's own admin key reads its tenant's records only (and may
    /// leave this out).
    tenant: Option<String>,
    /// Exact action (`tenant.suspend`) or a prefix ending in a dot (`tenant.`).
    action: Option<String>,
    /// Actor (`admin`, `token:ci`, `cli:root`, `system`).
    actor: Option<String>,
    /// From this time (RFC 3339), inclusive.
    since: Option<DateTime<Utc>>,
    /// Until this time (RFC 3339), exclusive.
    until: Option<DateTime<Utc>>,
    /// `next_before` of the previous page.
    before: Option<i64>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
}

/// Audit records, newest first.
#[utoipa::path(
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of audit records", body = AuditPage),
    ),
)]
#[get("/audit")]
async fn list_audit(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<AuditParams>,
) -> AppResult<HttpResponse> {
    let p = params.into_inner();
    // A tenant's admins read their tenant's records, found by its id (which outlives a slug).
    let tenant = match &caller.principal.tenant {
        None => {
            caller.principal.require_platform()?;
            p.tenant
        }
        Some(scope) => {
            if let Some(asked) = p.tenant.as_deref()
                && asked != scope.slug
                && !asked.eq_ignore_ascii_case(&scope.id)
            {
                return Err(crate::error::AppError::not_found("tenant", asked));
            }
            caller.principal.require_tenant_admin(&scope.slug)?;
            Some(scope.id.clone())
        }
    };
    let page = audit::list(
        &ctx.db,
        &AuditQuery {
            tenant,
            action: p.action,
            actor: p.actor,
            since: p.since.map(|t| t.naive_utc()),
            until: p.until.map(|t| t.naive_utc()),
            before: p.before,
            limit: p.limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VerifyParams {
    /// Hash every record from the first, rather than from the newest checkpoint on.
    full: Option<bool>,
}

/// Check the hash chain: a changed, removed or reordered record is reported. From the newest
/// checkpoint (left by the last check that found the chain intact) unless `full=true`.
#[utoipa::path(
    tag = "audit",
    params(VerifyParams),
    responses(
        (status = 200, description = "The outcome (ok or the first broken record)", body = VerifyReport),
    ),
)]
#[get("/audit/verify")]
async fn verify_audit(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<VerifyParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    let full = params.full.unwrap_or(false);
    Ok(HttpResponse::Ok().json(audit::verify(&ctx.db, full).await?))
}
