//! `/api/v1/alerts`, `/api/v1/tenant/{slug}/alerts` and `/api/v1/webhooks`: alerts on tenants,
//! and the endpoints operators register to hear about them.

use actix_web::{HttpResponse, delete, get, post, web};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::alerts::webhooks::{self, CreatedWebhook, Delivery, DeliveryPage, NewWebhook, Webhook};
use crate::alerts::{self, AlertPage, AlertQuery};
use crate::context::Context;
use crate::error::{AppResult, ErrorBody};
use crate::http::body::ApiJson;
use crate::http::tenant_path::{Read, TenantPath};
use crate::http::{ApiAdmin, ApiCaller};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_alerts)
        .service(tenant_alerts)
        .service(list_webhooks)
        .service(create_webhook)
        .service(get_webhook)
        .service(delete_webhook)
        .service(list_deliveries)
        .service(retry_delivery)
        .service(ping_webhook);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertParams {
    /// A tenant's slug.
    tenant: Option<String>,
    /// quota, at_risk, policy_failing, error_rate, latency, throttled, trial_ending, job_failing, database_down or database_slow.
    kind: Option<String>,
    /// The metric of a quota alert (`error_rate`, `p95_latency_ms`, `at_risk` or a policy's name
    /// for the others).
    metric: Option<String>,
    /// warning, critical or blocked.
    severity: Option<String>,
    /// open (the default), resolved or all.
    status: Option<String>,
    /// `next_before` of the previous page.
    before: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
}

/// Alerts on every tenant, newest first (open ones unless `status` says otherwise).
#[utoipa::path(
    tag = "alerts",
    params(AlertParams),
    responses(
        (status = 200, body = AlertPage),
        (status = 404, description = "The tenant filtered on does not exist", body = ErrorBody),
        (status = 422, description = "A filter breaks a rule, named", body = ErrorBody),
    ),
)]
#[get("/alerts")]
async fn list_alerts(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<AlertParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    let p = params.into_inner();
    let page = alerts::list(
        &ctx,
        &AlertQuery {
            tenant: p.tenant,
            kind: p.kind,
            metric: p.metric,
            severity: p.severity,
            status: p.status,
            before: p.before,
            limit: p.limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TenantAlertParams {
    /// quota, at_risk, policy_failing, error_rate, latency, throttled, trial_ending, job_failing, database_down or database_slow.
    kind: Option<String>,
    /// warning, critical or blocked.
    severity: Option<String>,
    /// open (the default), resolved or all.
    status: Option<String>,
    /// `next_before` of the previous page.
    before: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
}

/// The tenant's alerts, newest first: for its admins, members and keys.
#[utoipa::path(
    tag = "alerts",
    params(TenantAlertParams),
    responses((status = 200, body = AlertPage)),
)]
#[get("/tenant/{slug}/alerts")]
async fn tenant_alerts(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
    params: web::Query<TenantAlertParams>,
) -> AppResult<HttpResponse> {
    let p = params.into_inner();
    let page = alerts::list(
        &ctx,
        &AlertQuery {
            tenant: Some(target.slug().to_owned()),
            kind: p.kind,
            metric: None,
            severity: p.severity,
            status: p.status,
            before: p.before,
            limit: p.limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The registered endpoints, with their deliveries by state (for administrators: an endpoint's
/// URL can be a secret of its own).
#[utoipa::path(tag = "alerts", responses((status = 200, body = Vec<Webhook>)))]
#[get("/webhooks")]
async fn list_webhooks(ctx: web::Data<Context>, _caller: ApiAdmin) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(webhooks::list(&ctx).await?))
}

/// Register an endpoint. The answer holds its signing secret, shown this once. Audited as
/// `webhook.created`.
#[utoipa::path(
    tag = "alerts",
    request_body = NewWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 422, description = "A field breaks a rule, named (`url`, `events[1]`, `tenant`)", body = ErrorBody),
    ),
)]
#[post("/webhooks")]
async fn create_webhook(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: ApiJson<NewWebhook>,
) -> AppResult<HttpResponse> {
    let created = webhooks::create(&ctx, &caller.actor, &body.0).await?;
    Ok(HttpResponse::Created().json(created))
}

/// One endpoint.
#[utoipa::path(tag = "alerts", responses((status = 200, body = Webhook)))]
#[get("/webhooks/{id}")]
async fn get_webhook(
    ctx: web::Data<Context>,
    _caller: ApiAdmin,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(webhooks::get(&ctx, &id).await?))
}

/// Remove an endpoint and its deliveries. Audited as `webhook.deleted`.
#[utoipa::path(tag = "alerts", responses((status = 204, description = "Removed")))]
#[delete("/webhooks/{id}")]
async fn delete_webhook(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    webhooks::delete(&ctx, &caller.actor, &id).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// `next_before` of the previous page.
    before: Option<String>,
    /// Page size, 1–500 (default 50).
    limit: Option<i64>,
}

/// An endpoint's deliveries, newest first: state, attempts, the next attempt, the last answer.
#[utoipa::path(
    tag = "alerts",
    params(DeliveryParams),
    responses((status = 200, body = DeliveryPage)),
)]
#[get("/webhooks/{id}/deliveries")]
async fn list_deliveries(
    ctx: web::Data<Context>,
    _caller: ApiAdmin,
    id: web::Path<String>,
    params: web::Query<DeliveryParams>,
) -> AppResult<HttpResponse> {
    let p = params.into_inner();
    Ok(HttpResponse::Ok()
        .json(webhooks::deliveries(&ctx, &id, p.before.as_deref(), p.limit).await?))
}

/// Attempt a pending or failed delivery now (a failed one gets its attempts again).
#[utoipa::path(tag = "alerts", responses((status = 202, description = "Due now")))]
#[post("/webhooks/{id}/deliveries/{delivery}/retry")]
async fn retry_delivery(
    ctx: web::Data<Context>,
    _caller: ApiAdmin,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let (id, delivery) = path.into_inner();
    webhooks::retry(&ctx, &id, &delivery).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Send a `webhook.ping` to the endpoint: a check that it receives and verifies signatures.
#[utoipa::path(tag = "alerts", responses((status = 202, body = Delivery)))]
#[post("/webhooks/{id}/ping")]
async fn ping_webhook(
    ctx: web::Data<Context>,
    _caller: ApiAdmin,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Accepted().json(webhooks::ping(&ctx, &id).await?))
}
