//! Each tenant's API traffic as every server saw it: each server adds what it counted to the
//! database every flush (`quotas.flush_interval_ms`), an hour is kept, and the API reads it —
//! the usage summary's request rate, error rate and p95, and the "heaviest tenants" ranking —
//! as `/metrics` does for a bounded set of tenants.

use serde::Serialize;
use utoipa::ToSchema;

use crate::alert_signals::percentile;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::traffic::{Heaviest, TrafficRow};

/// Minutes of traffic kept.
pub const KEPT_MINUTES: i64 = 60;

/// A tenant's API traffic over a window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrafficView {
    /// The tenant's slug (in a ranking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub window_minutes: i64,
    /// Admitted requests in the window.
    pub requests: u64,
    pub requests_per_minute: f64,
    /// Answers 5xx.
    pub errors: u64,
    /// Errors in percent of requests.
    pub error_rate: f64,
    /// The 95th-percentile response time, in milliseconds (interpolated in its bucket).
    pub p95_ms: f64,
    /// Requests refused at the tenant's API-call budget.
    pub throttled: u64,
}

fn minute_now() -> i64 {
    chrono::Utc::now().timestamp() / 60
}

fn view(row: &TrafficRow, window: i64, tenant: Option<String>) -> TrafficView {
    let requests = row.requests.max(0) as u64;
    let errors = row.errors.max(0) as u64;
    TrafficView {
        tenant,
        window_minutes: window,
        requests,
        requests_per_minute: requests as f64 / window as f64,
        errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 * 100.0 / requests as f64
        },
        p95_ms: percentile(&row.latency(), requests, 0.95),
        throttled: row.throttled.max(0) as u64,
    }
}

/// Writes what this server counted since its last flush; what cannot be written is kept for
/// the next one. Once a minute or so, forgets the minutes past the hour kept.
pub async fn flush(ctx: &Context) -> AppResult<()> {
    let pending = ctx.alert_signals.take_pending();
    if pending.is_empty() {
        return Ok(());
    }
    let rows: Vec<TrafficRow> = pending
        .iter()
        .map(|(tenant, b)| {
            TrafficRow {
                tenant_id: tenant.clone(),
                minute: b.minute as i64,
                requests: b.requests as i64,
                errors: b.errors as i64,
                throttled: b.throttled as i64,
                ..TrafficRow::default()
            }
            .with_latency(b.latency)
        })
        .collect();
    let ids: Vec<String> = rows.iter().map(|r| r.tenant_id.clone()).collect();
    let written = async {
        let mut conn = ctx.db.conn().await?;
        // A tenant purged since its requests is skipped.
        let known = store::tenants::existing_ids(&mut conn, &ids).await?;
        let rows: Vec<TrafficRow> = rows
            .iter()
            .filter(|r| known.contains(&r.tenant_id))
            .cloned()
            .collect();
        crate::transaction!(ctx.db, |tx| { store::traffic::add(tx, &rows).await })?;
        if minute_now() % 10 == 0 {
            store::traffic::forget_before(&mut conn, minute_now() - KEPT_MINUTES).await?;
        }
        Ok::<(), AppError>(())
    }
    .await;
    if let Err(err) = written {
        ctx.alert_signals.restore_pending(pending);
        return Err(err);
    }
    Ok(())
}

/// `tenant_id`'s traffic over the last `window` minutes (this one included), every server's.
pub async fn of_tenant(ctx: &Context, tenant_id: &str, window: i64) -> AppResult<TrafficView> {
    let window = window.clamp(1, KEPT_MINUTES);
    let mut conn = ctx.db.conn().await?;
    let rows = store::traffic::sums(
        &mut conn,
        minute_now() - window + 1,
        Some(tenant_id),
        Heaviest::Requests,
        1,
    )
    .await?;
    Ok(view(
        rows.first().unwrap_or(&TrafficRow::default()),
        window,
        None,
    ))
}

/// What a ranking of tenants is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    Requests,
    Errors,
    ErrorRate,
    P95Ms,
    Throttled,
}

/// The heaviest tenants over the last `window` minutes: at most `limit`, ordered by `by`
/// (descending). Rates and percentiles are ranked among the 1,000 busiest tenants.
pub async fn heaviest(
    ctx: &Context,
    window: i64,
    limit: i64,
    by: RankBy,
) -> AppResult<Vec<TrafficView>> {
    let window = window.clamp(1, KEPT_MINUTES);
    let limit = limit.clamp(1, 500);
    let (order, fetch) = match by {
        RankBy::Requests => (Heaviest::Requests, limit),
        RankBy::Errors => (Heaviest::Errors, limit),
        RankBy::Throttled => (Heaviest::Throttled, limit),
        RankBy::ErrorRate | RankBy::P95Ms => (Heaviest::Requests, 1000),
    };
    let rows = {
        let mut conn = ctx.db.conn().await?;
        store::traffic::sums(&mut conn, minute_now() - window + 1, None, order, fetch).await?
    };
    let mut views = Vec::with_capacity(rows.len());
    for row in &rows {
        let slug = crate::tenants::get_by_id(ctx, &row.tenant_id)
            .await?
            .map(|t| t.slug);
        if slug.is_some() {
            views.push(view(row, window, slug));
        }
    }
    match by {
        RankBy::ErrorRate => views.sort_by(|a, b| b.error_rate.total_cmp(&a.error_rate)),
        RankBy::P95Ms => views.sort_by(|a, b| b.p95_ms.total_cmp(&a.p95_ms)),
        _ => {}
    }
    views.truncate(limit as usize);
    Ok(views)
}

/// The tenants `/metrics` shows per-tenant traffic series for — the `alerts.per_tenant_series`
/// busiest over the last five minutes, and those with an open error-rate, latency or
/// throttling alert (as many again of each at most) — so that the series stay bounded whatever
/// the number of tenants: (slug, requests a minute, error ratio, p95 in seconds).
pub async fn series(ctx: &Context) -> AppResult<Vec<(String, f64, f64, f64)>> {
    const WINDOW: i64 = 5;
    let k = i64::from(ctx.config.alerts.per_tenant_series);
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut views = heaviest(ctx, WINDOW, k, RankBy::Requests).await?;
    let alerted: Vec<(String, String)> = {
        let mut conn = ctx.db.conn().await?;
        let mut alerted = Vec::new();
        for kind in ["error_rate", "latency", "throttled"] {
            for (row, slug, _) in store::alerts::open_of_kind(&mut conn, kind, k).await? {
                alerted.push((row.tenant_id, slug));
            }
        }
        alerted
    };
    for (id, slug) in alerted {
        if views
            .iter()
            .any(|v| v.tenant.as_deref() == Some(slug.as_str()))
        {
            continue;
        }
        let mut v = of_tenant(ctx, &id, WINDOW).await?;
        v.tenant = Some(slug);
        views.push(v);
    }
    Ok(views
        .into_iter()
        .filter_map(|v| {
            Some((
                v.tenant?,
                v.requests_per_minute,
                v.error_rate / 100.0,
                v.p95_ms / 1000.0,
            ))
        })
        .collect())
}
