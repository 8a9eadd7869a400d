//! Scheduled jobs: work the server does by itself, each job once per interval across every
//! replica. Every server runs one scheduler; to run a due job it takes the job's lease in the
//! database (`store::jobs`), renews it while the job runs, and records the run (when, how long,
//! what it did or why it failed). A server that dies mid-run loses the lease when it expires,
//! and the job is taken over at its next tick by any server.
//!
//! The jobs: `usage-measure` (every active tenant that holds resources, measured in its
//! backends: `quotas.measure_interval_seconds`), `housekeeping` (expired sessions, login
//! attempts, setup links and idempotency keys, and reported-event ids too old to come again:
//! `jobs.housekeeping_interval_seconds`), `retention` (canceled and deleted tenants purged
//! when their retention period ends: `jobs.retention_interval_seconds`), `trials` (trials that
//! end suspended or converted, a `trial_ending` alert before: `jobs.trials_interval_seconds`),
//! `alerts` (every live tenant's alerts evaluated: `jobs.alerts_interval_seconds`) and
//! `database-probes` (each tenant database probed, paced across the fleet:
//! `database_probes.run_every_seconds`).
//!
//! A failed run raises a `job_failing` alert on the platform's own tenant; the next run that
//! succeeds resolves it.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use serde::Serialize;
use utoipa::ToSchema;

use crate::alerts::{AlertKind, AlertSeverity};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;

mod work;
use work::{alerts, housekeeping, retention, trials};

/// How often the scheduler looks for due jobs.
const TICK: Duration = Duration::from_secs(1);

/// A job the server knows.
#[derive(Debug, Clone, Copy)]
pub struct JobSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub interval: Duration,
}

/// The jobs of this configuration (a job whose interval is 0 is off).
pub fn specs(ctx: &Context) -> Vec<JobSpec> {
    let config = &ctx.config;
    [
        JobSpec {
            name: "alerts",
            description: "every trial and active tenant's alerts evaluated (quotas, at-risk), beside each server's own evaluation of the tenants it serves",
            interval: Duration::from_secs(config.jobs.alerts_interval_seconds),
        },
        JobSpec {
            name: "housekeeping",
            description: "expired sessions, login attempts, setup links and idempotency keys swept; old reported-event ids forgotten",
            interval: Duration::from_secs(config.jobs.housekeeping_interval_seconds),
        },
        JobSpec {
            name: "retention",
            description: "canceled and deleted tenants purged across their backends when their retention period ends",
            interval: Duration::from_secs(config.jobs.retention_interval_seconds),
        },
        JobSpec {
            name: "trials",
            description: "trials that have ended suspended or converted (trials.end_action); a trial_ending alert and webhook trials.notice_days before",
            interval: Duration::from_secs(config.jobs.trials_interval_seconds),
        },
        JobSpec {
            name: "database-probes",
            description: "each tenant database tenantry knows probed (connect and SELECT 1), paced at database_probes.per_second; database_down and database_slow alerts",
            interval: if config.database_probes.interval_seconds == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(config.database_probes.run_every_seconds)
            },
        },
        JobSpec {
            name: "usage-measure",
            description: "active tenants that hold resources measured in their backends (measure)",
            interval: Duration::from_secs(config.quotas.measure_interval_seconds),
        },
    ]
    .into_iter()
    .filter(|j| !j.interval.is_zero())
    .collect()
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub name: String,
    pub description: String,
    pub interval_seconds: i64,
    /// When it is due next.
    pub next_run_at: String,
    /// Running now, on this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_on: Option<String>,
    pub runs: i64,
    pub failures: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<i64>,
    /// The server that ran it last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_server: Option<String>,
    /// What the last run did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The jobs of this configuration, with their schedule and last run.
pub async fn list(ctx: &Context) -> AppResult<Vec<JobView>> {
    let rows = {
        let mut conn = ctx.db.conn().await?;
        store::jobs::list(&mut conn).await?
    };
    let now = clock::now();
    Ok(specs(ctx)
        .into_iter()
        .map(|spec| {
            let row = rows.iter().find(|r| r.name == spec.name);
            let at = |t: Option<NaiveDateTime>| t.map(clock::rfc3339);
            JobView {
                name: spec.name.to_owned(),
                description: spec.description.to_owned(),
                interval_seconds: spec.interval.as_secs() as i64,
                next_run_at: clock::rfc3339(
                    row.map_or_else(|| first_run(now, spec), |r| r.next_run_at),
                ),
                running_on: row.and_then(|r| {
                    r.lease_expires_at
                        .filter(|until| *until >= now)
                        .and(r.lease_owner.clone())
                }),
                runs: row.map_or(0, |r| r.runs),
                failures: row.map_or(0, |r| r.failures),
                last_started_at: row.and_then(|r| at(r.last_started_at)),
                last_finished_at: row.and_then(|r| at(r.last_finished_at)),
                last_duration_ms: row.and_then(|r| r.last_duration_ms),
                last_server: row.and_then(|r| r.last_server.clone()),
                last_outcome: row.and_then(|r| r.last_outcome.clone()),
                last_error: row.and_then(|r| r.last_error.clone()),
            }
        })
        .collect())
}

/// A new job is first due one interval after it is recorded (a server's start is not the time
/// to measure every tenant).
fn first_run(now: NaiveDateTime, spec: JobSpec) -> NaiveDateTime {
    now + chrono::Duration::from_std(spec.interval).unwrap_or_default()
}

/// Starts this server's scheduler.
pub fn spawn(ctx: &Context) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let owner = crate::provisioning::saga::owner_id();
        let specs = specs(&ctx);
        loop {
            if let Err(err) = record(&ctx, &specs).await {
                tracing::warn!("jobs: cannot record the jobs: {err}");
                tokio::time::sleep(TICK * 5).await;
                continue;
            }
            break;
        }
        loop {
            tokio::time::sleep(TICK).await;
            // A read first: the claim (a write) only for what is due and not held.
            let due = match due(&ctx).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!("jobs: cannot read the schedule: {err}");
                    continue;
                }
            };
            for spec in specs.iter().filter(|s| due.iter().any(|d| d == s.name)) {
                if let Err(err) = tick(&ctx, &owner, *spec).await {
                    tracing::warn!(job = spec.name, "jobs: {err}");
                }
            }
        }
    })
}

/// The jobs due now whose lease is free or expired.
async fn due(ctx: &Context) -> AppResult<Vec<String>> {
    let now = clock::now();
    let mut conn = ctx.db.conn().await?;
    Ok(store::jobs::list(&mut conn)
        .await?
        .into_iter()
        .filter(|r| r.next_run_at <= now && r.lease_expires_at.is_none_or(|until| until < now))
        .map(|r| r.name)
        .collect())
}

async fn record(ctx: &Context, specs: &[JobSpec]) -> AppResult<()> {
    let now = clock::now();
    let mut conn = ctx.db.conn().await?;
    for spec in specs {
        store::jobs::ensure(
            &mut conn,
            spec.name,
            spec.interval.as_secs() as i64,
            first_run(now, *spec),
        )
        .await?;
    }
    Ok(())
}

/// How long a lease lasts (`jobs.lease_seconds`); a running job renews it every third of that.
fn lease(ctx: &Context) -> Duration {
    Duration::from_secs(ctx.config.jobs.lease_seconds)
}

fn lease_until(ctx: &Context, now: NaiveDateTime) -> NaiveDateTime {
    now + chrono::Duration::from_std(lease(ctx)).unwrap_or_default()
}

/// Runs `spec` when it is due and this server takes its lease.
async fn tick(ctx: &Context, owner: &str, spec: JobSpec) -> AppResult<()> {
    let now = clock::now();
    let taken = {
        let mut conn = ctx.db.conn().await?;
        store::jobs::claim(&mut conn, spec.name, owner, now, lease_until(ctx, now)).await?
    };
    if !taken {
        return Ok(());
    }
    let started = Instant::now();
    let work = run(ctx, spec.name);
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tokio::time::sleep(lease(ctx) / 3) => {
                let mut conn = ctx.db.conn().await?;
                if !store::jobs::renew(&mut conn, spec.name, owner, lease_until(ctx, clock::now())).await? {
                    tracing::warn!(job = spec.name, "jobs: the lease was lost; the run goes on, its record is the new holder's");
                }
            }
        }
    };
    let finished_at = clock::now();
    let (outcome, error) = match &result {
        Ok(outcome) => (Some(outcome.as_str()), None),
        Err(err) => (None, Some(err.to_string())),
    };
    ctx.metrics
        .job_runs
        .with_label_values(&[
            spec.name,
            if error.is_some() {
                "failed"
            } else {
                "succeeded"
            },
        ])
        .inc();
    match &error {
        None => tracing::info!(job = spec.name, "jobs: {}", outcome.unwrap_or_default()),
        Some(err) => tracing::warn!(job = spec.name, "jobs: failed: {err}"),
    }
    if let Err(err) = alert(ctx, owner, spec, error.as_deref(), outcome).await {
        tracing::warn!(
            job = spec.name,
            "jobs: cannot raise or resolve its alert: {err}"
        );
    }
    let mut conn = ctx.db.conn().await?;
    store::jobs::finish(
        &mut conn,
        spec.name,
        owner,
        store::jobs::Finished {
            finished_at,
            next_run_at: now + chrono::Duration::from_std(spec.interval).unwrap_or_default(),
            duration_ms: started.elapsed().as_millis() as i64,
            outcome,
            error: error.as_deref(),
        },
    )
    .await?;
    Ok(())
}

/// Raises the `job_failing` alert of `spec` (on the platform's own tenant) when its run
/// failed, and resolves it when the run succeeded.
async fn alert(
    ctx: &Context,
    owner: &str,
    spec: JobSpec,
    error: Option<&str>,
    outcome: Option<&str>,
) -> AppResult<()> {
    let platform = crate::tenants::get(ctx, crate::tenants::ADMIN_SLUG).await?;
    match error {
        Some(error) => {
            crate::alerts::operations::raise(
                ctx,
                crate::alerts::operations::Raise {
                    tenant_id: &platform.id,
                    slug: &platform.slug,
                    kind: AlertKind::JobFailing,
                    subject: spec.name,
                    period: "",
                    severity: AlertSeverity::Critical,
                    value: 1.0,
                    message: format!(
                        "the scheduled job `{}` failed on {owner}: {error}",
                        spec.name
                    ),
                },
            )
            .await?;
        }
        None => {
            crate::alerts::operations::resolve(
                ctx,
                &platform.id,
                &platform.slug,
                AlertKind::JobFailing,
                spec.name,
                &format!(
                    "the scheduled job `{}` ran again on {owner}: {}",
                    spec.name,
                    outcome.unwrap_or_default()
                ),
            )
            .await?;
        }
    }
    Ok(())
}

/// One run of the job `name`: what it did.
async fn run(ctx: &Context, name: &str) -> AppResult<String> {
    match name {
        "alerts" => alerts(ctx).await,
        "housekeeping" => housekeeping(ctx).await,
        "retention" => retention(ctx).await,
        "trials" => trials(ctx).await,
        "database-probes" => crate::database_probes::run(ctx).await,
        "usage-measure" => {
            let (measured, failed) = crate::quotas::measure::measure_all(ctx).await?;
            if failed > 0 {
                return Err(AppError::Unavailable(format!(
                    "{measured} tenants measured; {failed} measurements failed (see the log)"
                )));
            }
            Ok(format!("{measured} tenants measured"))
        }
        other => Err(AppError::internal(anyhow::anyhow!("no job `{other}`"))),
    }
}
