//! `/api/v1/quotas/metrics` and `/api/v1/tenant/{slug}/{quotas,usage}`: the catalogue, a
//! tenant's limits and overrides, reported usage and the usage summary.

use actix_web::{HttpResponse, get, post, put, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::body::{ApiJson, from_value};
use crate::http::tenant_path::{Platform, PlatformAdmin, Read, TenantPath};
use crate::http::{ApiAdmin, ApiCaller};
use crate::quotas::policy::{self, PolicyChoice, PolicyChoices, PolicyInForce};
use crate::quotas::report::{ReportOutcome, UsageBatch, UsageEvent};
use crate::quotas::{self, CheckAnswer, CheckRequest, Metric, QuotaView, UsageSummary};
use crate::tenants::Tier;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_metrics)
        .service(list_policies)
        .service(choose_tier_policy)
        .service(get_tenant_policy)
        .service(choose_tenant_policy)
        .service(get_quotas)
        .service(put_quotas)
        .service(check_quota)
        .service(get_usage)
        .service(report_usage)
        .service(measure_usage)
        .service(reset_usage)
        .service(heaviest_tenants);
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HeaviestParams {
    /// Minutes back from now, 1–60 (default 15).
    window_minutes: Option<i64>,
    /// How many, 1–500 (default 20).
    limit: Option<i64>,
    /// requests (default), errors, error_rate, p95_ms or throttled.
    by: Option<crate::quotas::traffic::RankBy>,
}

/// The heaviest tenants: each tenant's API traffic over the window (every server's), the
/// heaviest first — the operators' "find heavy tenants".
#[utoipa::path(
    tag = "quotas",
    params(HeaviestParams),
    responses((status = 200, body = Vec<crate::quotas::traffic::TrafficView>)),
)]
#[get("/usage/heaviest")]
async fn heaviest_tenants(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<HeaviestParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    let p = params.into_inner();
    if let Some(w) = p.window_minutes
        && !(1..=crate::quotas::traffic::KEPT_MINUTES).contains(&w)
    {
        return Err(AppError::invalid(
            "window_minutes",
            "range",
            "must be from 1 to 60",
        ));
    }
    if let Some(l) = p.limit
        && !(1..=500).contains(&l)
    {
        return Err(AppError::invalid("limit", "range", "must be from 1 to 500"));
    }
    Ok(HttpResponse::Ok().json(
        crate::quotas::traffic::heaviest(
            &ctx,
            p.window_minutes.unwrap_or(15),
            p.limit.unwrap_or(20),
            p.by.unwrap_or(crate::quotas::traffic::RankBy::Requests),
        )
        .await?,
    ))
}

/// Why a counter is reset.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageResetRequest {
    /// Why (required; in the audit record with the value it held).
    pub reason: String,
}

/// Reset a counter or rate of the current period to zero (platform admins only): the operators'
/// "manually reset if needed". Audited as `quota.usage_reset` with what it held and why.
#[utoipa::path(
    tag = "quotas",
    request_body = UsageResetRequest,
    params(("slug" = String, Path, description = "The tenant's slug or id"), ("metric" = String, Path, description = "A counter or rate of the catalogue")),
    responses(
        (status = 200, description = "What the counter held, and its period", body = crate::quotas::overrides::UsageReset),
        (status = 422, description = "An unknown metric, a gauge, or no reason", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/usage/{metric}/reset")]
async fn reset_usage(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    path: web::Path<(String, String)>,
    body: ApiJson<UsageResetRequest>,
) -> AppResult<HttpResponse> {
    let (_, metric) = path.into_inner();
    Ok(HttpResponse::Ok().json(
        crate::quotas::overrides::reset_usage(
            &ctx,
            &target.caller.actor,
            &target.tenant,
            &metric,
            &body.0.reason,
        )
        .await?,
    ))
}

/// The catalogue of metrics: the built-in ones and the operator's, with how each counts (a
/// tenant sees its metrics in its quotas).
#[utoipa::path(
    tag = "quotas",
    responses((status = 200, body = Vec<Metric>)),
)]
#[get("/quotas/metrics")]
async fn list_metrics(ctx: web::Data<Context>, caller: ApiCaller) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(quotas::metrics(&ctx)))
}

/// The default quota policy and each tier's choice.
#[utoipa::path(
    tag = "quotas",
    responses((status = 200, body = PolicyChoices)),
)]
#[get("/quotas/policies")]
async fn list_policies(ctx: web::Data<Context>, caller: ApiCaller) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(policy::choices(&ctx).await?))
}

/// Choose the quota policy of a tier's tenants (those without a choice of their own); `null`
/// goes back to the default. Audited as `quota.policy_chosen`.
#[utoipa::path(
    tag = "quotas",
    params(("tier" = String, Path, description = "free, starter, professional, enterprise or custom")),
    request_body = PolicyChoice,
    responses(
        (status = 200, body = PolicyChoices),
        (status = 422, description = "Not a tier, or not an installed and enabled quota-policy plugin", body = ErrorBody),
    ),
)]
#[put("/quotas/policies/{tier}")]
async fn choose_tier_policy(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    tier: web::Path<String>,
    body: ApiJson<PolicyChoice>,
) -> AppResult<HttpResponse> {
    let tier: Tier = tier.parse().map_err(|_| {
        AppError::invalid(
            "tier",
            "one_of",
            "must be free, starter, professional, enterprise or custom",
        )
    })?;
    Ok(HttpResponse::Ok().json(policy::choose_for_tier(&ctx, &caller.actor, tier, &body.0).await?))
}

/// The quota policy that decides for the tenant, and whether it was chosen for the tenant, its
/// tier, or is the default.
#[utoipa::path(
    tag = "quotas",
    responses((status = 200, body = PolicyInForce)),
)]
#[get("/tenant/{slug}/quota-policy")]
async fn get_tenant_policy(
    ctx: web::Data<Context>,
    target: TenantPath<Platform>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(quotas::policy_of(&ctx, tenant).await?))
}

/// Choose the tenant's own quota policy; `null` goes back to its tier's or the default.
/// Audited as `quota.policy_chosen`.
#[utoipa::path(
    tag = "quotas",
    request_body = PolicyChoice,
    responses(
        (status = 200, body = PolicyInForce),
        (status = 422, description = "Not an installed and enabled quota-policy plugin", body = ErrorBody),
    ),
)]
#[put("/tenant/{slug}/quota-policy")]
async fn choose_tenant_policy(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    body: ApiJson<PolicyChoice>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok()
        .json(policy::choose_for_tenant(&ctx, &target.caller.actor, tenant, &body.0).await?))
}

/// Each metric's tier default, the tenant's override, the limit in effect and the current use.
#[utoipa::path(
    tag = "quotas",
    responses((status = 200, body = Vec<QuotaView>)),
)]
#[get("/tenant/{slug}/quotas")]
async fn get_quotas(ctx: web::Data<Context>, target: TenantPath<Read>) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(quotas::quotas(&ctx, tenant).await?))
}

/// Overrides by metric: a limit, `null` to go back to the tier's default, or
/// `{"limit": …, "hard": …}` (a soft quota is counted past its limit and alerted on). A temporary
/// override adds `expires_in_hours` (1–8784) or `expires_at` (RFC 3339) and a `reason`
/// (required then): it falls back to the tier's default by itself, audited when set and when it
/// ends.
#[derive(ToSchema)]
#[schema(as = QuotaOverrides, value_type = Object, example = json!({"agents": 500, "users": null, "storage_gb": {"limit": 200, "hard": false}, "api_calls_per_minute": {"limit": 5000, "expires_in_hours": 48, "reason": "launch week"}}))]
#[allow(dead_code)]
struct QuotaOverrides(Value);

/// Set or clear the tenant's overrides (audited as `quota.updated`, with old and new values).
#[utoipa::path(
    tag = "quotas",
    request_body = QuotaOverrides,
    responses(
        (status = 200, description = "The tenant's quotas as they are now", body = Vec<QuotaView>),
        (status = 422, description = "An unknown metric or a limit that is not a whole number, named", body = ErrorBody),
    ),
)]
#[put("/tenant/{slug}/quotas")]
async fn put_quotas(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    body: ApiJson<serde_json::Map<String, Value>>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let changes = quotas::parse_overrides(&ctx, &body.0)?;
    Ok(HttpResponse::Ok()
        .json(quotas::set_overrides(&ctx, &target.caller.actor, tenant, &changes).await?))
}

/// Would this use be admitted now? Nothing is counted.
#[utoipa::path(
    tag = "quotas",
    request_body = CheckRequest,
    responses((status = 200, body = CheckAnswer)),
)]
#[post("/tenant/{slug}/quotas/check")]
async fn check_quota(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
    body: ApiJson<CheckRequest>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(quotas::check(&ctx, tenant, &body.0).await?))
}

/// The usage summary: tier, status, each metric's use, limit, percent and severity, at risk.
#[utoipa::path(
    tag = "quotas",
    responses((status = 200, body = UsageSummary)),
)]
#[get("/tenant/{slug}/usage")]
async fn get_usage(ctx: web::Data<Context>, target: TenantPath<Read>) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(quotas::summary(&ctx, tenant).await?))
}

/// One event, or a batch of up to 1,000.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum UsageReport {
    Batch(UsageBatch),
    One(UsageEvent),
}

/// Report usage from an operator's system. The same event id is counted once; a batch is
/// counted whole or not at all.
#[utoipa::path(
    tag = "quotas",
    request_body = UsageReport,
    responses(
        (status = 200, description = "What was counted, and the duplicates", body = ReportOutcome),
        (status = 403, description = "`quota_exceeded`: an increment would pass a hard limit (nothing counted); or the tenant is not active", body = ErrorBody),
        (status = 422, description = "An event breaks a rule (each named: `events[3].increment`)", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/usage")]
async fn report_usage(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    body: ApiJson<serde_json::Map<String, Value>>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let body = Value::Object(body.0);
    let (events, single) = if body.get("events").is_some() {
        (from_value::<UsageBatch>(body)?.events, false)
    } else {
        (vec![from_value::<UsageEvent>(body)?], true)
    };
    let outcome = quotas::report::report(&ctx, tenant, &events, single).await?;
    Ok(HttpResponse::Ok().json(outcome))
}

/// Measure the tenant's usage in its backends now: every enabled provisioner's `measure`
/// (WIT 0.2.0), with what is a gauge of the catalogue recorded as its value. What a plugin
/// could not measure is listed, never taken for zero.
#[utoipa::path(
    tag = "quotas",
    params(("slug" = String, Path, description = "The tenant's slug")),
    responses(
        (status = 200, description = "Each figure, whether it was recorded, and the plugins that failed", body = quotas::measure::MeasureOutcome),
        (status = 403, description = "The tenant is not active", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/usage/measure")]
async fn measure_usage(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(quotas::measure::measure(&ctx, tenant).await?))
}
