//! `/health`, `/health/ready`, `/metrics` and `/t/{slug}/health`: routes without authentication
//! (`/metrics` asks for `metrics_token` when one is set). The OpenAPI document is the other
//! route served without credentials (`api::mod`).

use std::time::Instant;

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::tenants;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(health)
        .service(ready)
        .service(metrics)
        .service(tenant_health);
}

/// Readiness of the server's dependencies.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    pub database: DatabaseHealth,
    /// The Redis of the shared rate limits; absent without `redis_url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
}

/// The answer is public (a load balancer asks it): it says whether, never why — the address
/// and the error of a dependency are in the server's log and in `/metrics`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedisHealth {
    /// `connected` or `unreachable`.
    pub status: String,
    pub response_time_ms: f64,
    /// What requests get while it is unreachable: `open` (each server's own budgets) or
    /// `closed` (refused; the server is then not ready).
    pub on_failure: crate::config::FailMode,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    /// `connected` or `unreachable`.
    pub status: String,
    pub backend: String,
    pub response_time_ms: f64,
}

/// The process is up.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Up")), security(()))]
#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "healthy", "version": env!("CARGO_PKG_VERSION") }))
}

/// The server can serve: a database round trip, with its time.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is down", body = Readiness),
    ),
    security(())
)]
#[get("/health/ready")]
async fn ready(ctx: web::Data<Context>) -> HttpResponse {
    let started = Instant::now();
    let result = ctx.db.ping().await;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let ok = result.is_ok();
    if let Err(err) = &result {
        tracing::warn!("readiness: the database does not answer: {err}");
    }
    let redis = match &ctx.limits.shared {
        None => None,
        Some(shared) => {
            let started = Instant::now();
            let answer = shared.ping().await;
            if let Err(err) = &answer {
                tracing::debug!(redis = %shared.address, "readiness: {err}");
            }
            Some(RedisHealth {
                status: if answer.is_ok() {
                    "connected"
                } else {
                    "unreachable"
                }
                .into(),
                response_time_ms: (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
                on_failure: ctx.config.redis_on_failure,
            })
        }
    };
    // Without Redis, a fail-closed server refuses every authenticated request: not ready.
    let redis_ok = redis.as_ref().is_none_or(|r| {
        r.status == "connected" || ctx.config.redis_on_failure == crate::config::FailMode::Open
    });
    let body = Readiness {
        status: if ok && redis_ok {
            "ready"
        } else {
            "unavailable"
        }
        .into(),
        database: DatabaseHealth {
            status: if ok { "connected" } else { "unreachable" }.into(),
            backend: ctx.db.backend().to_string(),
            response_time_ms: (elapsed * 1000.0).round() / 1000.0,
        },
        redis,
    };
    if ok && redis_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(tag = "operations", responses((status = 200, description = "Metrics", content_type = "text/plain")), security(()))]
#[get("/metrics")]
async fn metrics(req: actix_web::HttpRequest, ctx: web::Data<Context>) -> HttpResponse {
    // With `metrics_token`, only a scraper that presents it: the series name tenants.
    if let Some(expected) = &ctx.config.metrics_token {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq as _;
        if !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            return HttpResponse::Unauthorized()
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({ "error": {
                    "code": "unauthorized",
                    "message": "/metrics needs the metrics token (Authorization: Bearer …)",
                    "details": {},
                } }));
        }
    }
    match tenants::counts(&ctx).await {
        Ok(counts) => ctx.metrics.set_tenant_counts(&counts),
        Err(err) => tracing::warn!("metrics: counting tenants failed: {err}"),
    }
    match crate::provisioning::open_run_counts(&ctx).await {
        Ok(counts) => ctx.metrics.set_run_counts(&counts),
        Err(err) => tracing::warn!("metrics: counting runs failed: {err}"),
    }
    match crate::provisioning::run_totals(&ctx).await {
        Ok(totals) => ctx.metrics.scraped.set_run_totals(&totals),
        Err(err) => tracing::warn!("metrics: reading the run totals failed: {err}"),
    }
    ctx.metrics.scraped.set_pool(&ctx.db.pool_stats());
    ctx.metrics.scraped.refresh_process();
    match crate::quotas::traffic::series(&ctx).await {
        Ok(tenants) => ctx.metrics.scraped.set_tenant_traffic(&tenants),
        Err(err) => tracing::warn!("metrics: reading the tenants' traffic failed: {err}"),
    }
    match crate::database_probes::counts(&ctx).await {
        Ok(counts) => ctx.metrics.scraped.set_database_counts(&counts),
        Err(err) => tracing::warn!("metrics: counting the probed databases failed: {err}"),
    }
    if let Err(err) = crate::alerts::refresh_metrics(&ctx).await {
        tracing::warn!("metrics: counting alerts failed: {err}");
    }
    ctx.caches.refresh_metrics();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(ctx.metrics.render())
}

/// Public liveness of one tenant: whether it is serving, and whether its database and single
/// sign-on are configured (never their values).
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "The tenant is trial or active", body = crate::tenant_health::TenantHealth),
        (status = 404, description = "No such tenant", body = crate::error::ErrorBody),
        (status = 503, description = "The tenant is suspended, canceled, deleted or failed", body = crate::tenant_health::TenantHealth),
    ),
    security(())
)]
#[get("/t/{slug}/health")]
async fn tenant_health(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
) -> Result<HttpResponse, crate::error::AppError> {
    let report = crate::tenant_health::tenant(&ctx, &slug).await?;
    Ok(if report.status == "healthy" {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    })
}
