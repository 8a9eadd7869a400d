//! Probes of the tenants' databases: the `database-probes` job opens each database tenantry
//! knows (a tenant's own URI, or the connection it was provisioned with), times a round trip,
//! records the outcome, and raises or resolves the tenant's `database_down` alert (failing for
//! `database_probes.down_after_seconds`) and `database_slow` alert (the 95th percentile of the
//! recent probes over `slow_p95_ms`, resolved below it less the alerts' hysteresis).
//!
//! The rate is bounded and spread: a run takes the databases whose last probe is oldest, at
//! most `per_second × run_every_seconds` of them, started `1 / per_second` apart, a few at a
//! time. With more databases than `per_second × interval_seconds`, each is probed every
//! `databases / per_second` seconds instead of every `interval_seconds` — the fleet never
//! probes faster than `per_second`.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::operations::{self, Raise};
use crate::alerts::{AlertKind, AlertSeverity};
use crate::clock;
use crate::context::Context;
use crate::error::AppResult;
use crate::store;
use crate::store::probes::ProbeRow;

/// A tenant database's last probe, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DatabaseProbe {
    /// `up`, `slow`, `down` or `unsupported` (a database the probe cannot open: not PostgreSQL).
    pub status: String,
    /// The last probe's round trip (connect and `SELECT 1`), in milliseconds.
    pub latency_ms: Option<f64>,
    /// The 95th percentile of the recent answered probes, in milliseconds.
    pub p95_ms: Option<f64>,
    /// Why the last probe failed (never the URI or its password).
    pub detail: Option<String>,
    /// Since when every probe failed.
    pub failing_since: Option<chrono::DateTime<chrono::Utc>>,
    pub checked_at: chrono::DateTime<chrono::Utc>,
}

impl From<&ProbeRow> for DatabaseProbe {
    fn from(row: &ProbeRow) -> Self {
        DatabaseProbe {
            status: row.status.clone(),
            latency_ms: row.latency_ms,
            p95_ms: p95(&recent(row)),
            detail: row.detail.clone(),
            failing_since: row.failing_since.map(clock::to_utc),
            checked_at: clock::to_utc(row.checked_at),
        }
    }
}

/// A round trip to the tenant's database now, and the job's last probe of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealthReport {
    #[serde(flatten)]
    pub now: crate::tenant_health::TenantDatabaseHealth,
    /// The `database-probes` job's last probe of this database, if it probed it.
    pub last_probe: Option<DatabaseProbe>,
}

/// Checks the tenant's database now, beside the job's last probe of it.
pub async fn report(ctx: &Context, slug: &str) -> AppResult<DatabaseHealthReport> {
    let now = crate::tenant_health::tenant_database(ctx, slug).await?;
    let tenant = crate::tenants::get(ctx, slug).await?;
    Ok(DatabaseHealthReport {
        now,
        last_probe: last(ctx, &tenant.id).await?,
    })
}

/// The last probe of a tenant's database, if it was probed.
pub async fn last(ctx: &Context, tenant_id: &str) -> AppResult<Option<DatabaseProbe>> {
    let mut conn = ctx.db.conn().await?;
    Ok(store::probes::get(&mut conn, tenant_id)
        .await?
        .as_ref()
        .map(DatabaseProbe::from))
}

/// How many probed databases are in each status: (status, databases).
pub async fn counts(ctx: &Context) -> AppResult<Vec<(String, i64)>> {
    let mut conn = ctx.db.conn().await?;
    store::probes::count_by_status(&mut conn).await
}

fn recent(row: &ProbeRow) -> Vec<f64> {
    serde_json::from_str(&row.recent_ms).unwrap_or_default()
}

/// The 95th percentile (nearest rank) of `samples`; none without one.
fn p95(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64) * 0.95).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One run of the job: the due databases probed, paced. What it did.
pub async fn run(ctx: &Context) -> AppResult<String> {
    let config = &ctx.config.database_probes;
    let now = clock::now();
    let batch = i64::from(config.per_second) * config.run_every_seconds as i64;
    let due = {
        let mut conn = ctx.db.conn().await?;
        let before = now - chrono::Duration::seconds(config.interval_seconds as i64);
        store::probes::due(&mut conn, before, batch.max(1)).await?
    };
    let spacing = Duration::from_secs_f64(1.0 / f64::from(config.per_second));
    let started = Instant::now();
    let outcomes: Vec<AppResult<String>> = futures_util::stream::iter(due.into_iter().enumerate())
        .map(|(i, (id, slug))| async move {
            // Started `1 / per_second` apart: the rate holds however fast databases answer.
            let at = started + spacing * i as u32;
            tokio::time::sleep_until(at.into()).await;
            probe(ctx, &id, &slug).await
        })
        .buffer_unordered(config.concurrency as usize)
        .collect()
        .await;
    let mut tally: std::collections::BTreeMap<String, usize> = Default::default();
    let mut errors = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(status) => *tally.entry(status).or_default() += 1,
            Err(err) => errors.push(err.to_string()),
        }
    }
    if !errors.is_empty() {
        return Err(crate::error::AppError::Unavailable(format!(
            "{} probes could not be recorded: {}",
            errors.len(),
            errors.join("; ")
        )));
    }
    let probed: usize = tally.values().sum();
    Ok(if probed == 0 {
        "no database was due".to_owned()
    } else {
        let parts: Vec<String> = tally.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let plural = if probed == 1 { "" } else { "s" };
        format!("probed {probed} database{plural}: {}", parts.join(", "))
    })
}

/// Probes one tenant's database, records it and raises or resolves its alerts; its status.
async fn probe(ctx: &Context, tenant_id: &str, slug: &str) -> AppResult<String> {
    let config = &ctx.config.database_probes;
    let health = match crate::tenant_health::tenant_database(ctx, slug).await {
        Ok(health) => health,
        // Purged since it was found due: nothing to probe.
        Err(crate::error::AppError::NotFound { .. }) => return Ok("gone".to_owned()),
        Err(err) => return Err(err),
    };
    let now = clock::now();
    let before = {
        let mut conn = ctx.db.conn().await?;
        store::probes::get(&mut conn, tenant_id).await?
    };
    let mut samples = before.as_ref().map(recent).unwrap_or_default();
    let was = before.as_ref().map(|b| b.status.as_str());
    let row = match health.status.as_str() {
        "connected" => {
            let ms = health.response_time_ms.unwrap_or_default();
            ctx.metrics.scraped.observe_probe(ms / 1000.0);
            samples.push(ms);
            let keep = config.samples as usize;
            if samples.len() > keep {
                samples.drain(..samples.len() - keep);
            }
            let p95 = p95(&samples).unwrap_or_default();
            // Slow above the line; once slow, until below the line less the hysteresis.
            let hysteresis = 1.0 - ctx.config.alerts.hysteresis_percent / 100.0;
            let slow = p95 > config.slow_p95_ms
                || (was == Some("slow") && p95 > config.slow_p95_ms * hysteresis);
            ProbeRow {
                tenant_id: tenant_id.to_owned(),
                status: if slow { "slow" } else { "up" }.to_owned(),
                latency_ms: Some(ms),
                recent_ms: serde_json::to_string(&samples).unwrap_or_else(|_| "[]".into()),
                detail: None,
                failing_since: None,
                checked_at: now,
            }
        }
        "unreachable" => ProbeRow {
            tenant_id: tenant_id.to_owned(),
            status: "down".to_owned(),
            latency_ms: None,
            recent_ms: serde_json::to_string(&samples).unwrap_or_else(|_| "[]".into()),
            detail: health.detail.clone(),
            failing_since: Some(before.as_ref().and_then(|b| b.failing_since).unwrap_or(now)),
            checked_at: now,
        },
        // No URI any more, or one the probe cannot open: nothing to watch, and not due again
        // before the interval.
        _ => ProbeRow {
            tenant_id: tenant_id.to_owned(),
            status: "unsupported".to_owned(),
            latency_ms: None,
            recent_ms: "[]".to_owned(),
            detail: health.detail.clone(),
            failing_since: None,
            checked_at: now,
        },
    };
    {
        let mut conn = ctx.db.conn().await?;
        store::probes::put(&mut conn, &row).await?;
    }
    alert(ctx, slug, &row, before.as_ref()).await?;
    Ok(row.status)
}

/// Raises or resolves the tenant's database alerts after a probe.
async fn alert(
    ctx: &Context,
    slug: &str,
    row: &ProbeRow,
    before: Option<&ProbeRow>,
) -> AppResult<()> {
    let config = &ctx.config.database_probes;
    let was = before.map(|b| b.status.as_str());
    match row.status.as_str() {
        "down" => {
            let since = row.failing_since.unwrap_or(row.checked_at);
            let failing = (row.checked_at - since).num_seconds();
            if failing >= config.down_after_seconds as i64 {
                operations::raise(
                    ctx,
                    Raise {
                        tenant_id: &row.tenant_id,
                        slug,
                        kind: AlertKind::DatabaseDown,
                        subject: "database",
                        period: "",
                        severity: AlertSeverity::Critical,
                        value: failing as f64,
                        message: format!(
                            "{slug}'s database has not answered since {} ({}s): {}",
                            clock::rfc3339(since),
                            failing,
                            row.detail.as_deref().unwrap_or("no answer")
                        ),
                    },
                )
                .await?;
            }
        }
        "up" | "slow" => {
            if was == Some("down") {
                operations::resolve(
                    ctx,
                    &row.tenant_id,
                    slug,
                    AlertKind::DatabaseDown,
                    "database",
                    &format!(
                        "{slug}'s database answers again ({:.1} ms)",
                        row.latency_ms.unwrap_or_default()
                    ),
                )
                .await?;
            }
        }
        _ => {
            if was == Some("down") {
                operations::resolve(
                    ctx,
                    &row.tenant_id,
                    slug,
                    AlertKind::DatabaseDown,
                    "database",
                    &format!("{slug} no longer has a database to probe"),
                )
                .await?;
            }
        }
    }
    let p95 = p95(&recent(row)).unwrap_or_default();
    if row.status == "slow" {
        operations::raise(
            ctx,
            Raise {
                tenant_id: &row.tenant_id,
                slug,
                kind: AlertKind::DatabaseSlow,
                subject: "database",
                period: "",
                severity: AlertSeverity::Warning,
                value: p95,
                message: format!(
                    "{slug}'s database answers slowly: {p95:.0} ms at the 95th percentile of its last {} probes (the line is {} ms)",
                    recent(row).len(),
                    config.slow_p95_ms
                ),
            },
        )
        .await?;
    } else if was == Some("slow") {
        operations::resolve(
            ctx,
            &row.tenant_id,
            slug,
            AlertKind::DatabaseSlow,
            "database",
            &format!("{slug}'s database answers in {p95:.0} ms at the 95th percentile again"),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::p95;

    #[test]
    fn the_95th_percentile_is_the_nearest_rank() {
        assert_eq!(p95(&[]), None);
        assert_eq!(p95(&[3.0]), Some(3.0));
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95(&samples), Some(19.0));
        let mut one_slow = vec![2.0; 19];
        one_slow.push(1500.0);
        assert_eq!(
            p95(&one_slow),
            Some(2.0),
            "one slow probe of 20 is not the p95"
        );
    }
}
