//! Evaluating a tenant: what its alerts should be now, and the changes that makes.
//!
//! Each round looks at the tenants marked since the last one (usage reported, API calls
//! written for a tenant whose decision limits them, limits, tier or policy changed: at most a
//! few rounds a second), and every
//! `alerts.evaluate_interval_seconds` at the tenants with open alerts or recent traffic.
//!
//! An alert is raised when its line is crossed, once per tenant, kind, subject, period and
//! threshold. It resolves when the value falls `alerts.hysteresis_percent` below the line (a
//! quota's line is the use it was raised at, since the policy draws its own lines), and not
//! before it has been open `alerts.min_open_seconds`; a quota alert of a period that has ended
//! resolves at once. A resolved alert that is crossed again is raised again (counted in
//! `times_raised`).

use std::time::Duration;

use chrono::NaiveDateTime;
use serde_json::json;

use super::{Alert, AlertKind, AlertSeverity, webhooks};
use crate::clock;
use crate::config::Window;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::quotas::{self, Level, catalogue::period_of};
use crate::store::models::AlertRow;
use crate::store::vocabulary::AlertStatus;
use crate::store::{self, Conn};
use crate::tenants::Tenant;
use crate::transaction;

/// What one line of one tenant looks like now.
#[derive(Debug, Clone)]
struct Observation {
    kind: AlertKind,
    subject: String,
    period: String,
    threshold: &'static str,
    severity: AlertSeverity,
    crossed: bool,
    value: f64,
    /// The line an open alert must fall below (by the hysteresis) to resolve; none: the value
    /// it was raised at.
    line: Option<f64>,
    message: String,
}

impl Observation {
    fn is(&self, row: &AlertRow) -> bool {
        row.kind == self.kind
            && row.subject == self.subject
            && row.period == self.period
            && row.threshold == self.threshold
    }
}

/// What an evaluation changed.
#[derive(Debug, Default)]
pub struct Changes {
    pub raised: Vec<Alert>,
    pub resolved: Vec<Alert>,
}

const QUOTA_THRESHOLDS: [(Level, AlertSeverity); 3] = [
    (Level::Warning, AlertSeverity::Warning),
    (Level::Critical, AlertSeverity::Critical),
    (Level::Blocked, AlertSeverity::Blocked),
];

/// The quota and at-risk lines of `tenant`, from its policy's decision; none when the policy
/// cannot decide (fail-closed without an earlier decision): those alerts are left as they are.
async fn quota_observations(
    ctx: &Context,
    tenant: &Tenant,
    now: NaiveDateTime,
) -> AppResult<Option<Vec<Observation>>> {
    let summary = match quotas::summary(ctx, tenant).await {
        Ok(summary) => summary,
        Err(AppError::Unavailable(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut out = Vec::new();
    let mut highest: Option<&quotas::QuotaView> = None;
    for view in &summary.metrics {
        let Some(limit) = view.limit else { continue };
        // A per-minute rate is alerted on once a day per line, not once a minute.
        let period = match view.window {
            Some(Window::Minute) => period_of(Some(Window::Day), now),
            window => period_of(window, now),
        };
        for (level, severity) in QUOTA_THRESHOLDS {
            out.push(Observation {
                kind: AlertKind::Quota,
                subject: view.metric.clone(),
                period: period.clone(),
                threshold: severity.as_str(),
                severity,
                crossed: view.severity >= level,
                value: view.percent,
                line: None,
                message: format!(
                    "{} has used {} of its {limit} {} ({:.0} %, tier {}, {})",
                    tenant.slug,
                    view.used,
                    view.metric,
                    view.percent,
                    tenant.tier,
                    if view.hard {
                        "a hard limit: use past it is refused"
                    } else {
                        "a soft limit: use past it is counted"
                    }
                ),
            });
        }
        if highest.is_none_or(|h| view.percent > h.percent) {
            highest = Some(view);
        }
    }
    let (value, worst) = highest.map_or((0.0, String::new()), |h| {
        (h.percent, format!("{} at {:.0} %", h.metric, h.percent))
    });
    out.push(Observation {
        kind: AlertKind::AtRisk,
        subject: "at_risk".into(),
        period: String::new(),
        threshold: "at_risk",
        severity: AlertSeverity::Warning,
        crossed: summary.at_risk,
        value,
        line: None,
        message: if summary.at_risk {
            format!("{} is at risk of reaching its limits: {worst}", tenant.slug)
        } else {
            format!(
                "{} is no longer at risk of reaching its limits",
                tenant.slug
            )
        },
    });
    Ok(Some(out))
}

/// The error-rate and response-time lines of `tenant`, from this server's view of its traffic;
/// none without traffic in the window.
fn traffic_observations(ctx: &Context, tenant: &Tenant) -> Option<Vec<Observation>> {
    let config = &ctx.config.alerts;
    let window = ctx.alert_signals.traffic_of(&tenant.id)?;
    let judged = window.requests >= config.min_requests;
    let minutes = config.traffic_window_minutes;
    let mut out = Vec::new();
    for (severity, line) in [
        (AlertSeverity::Warning, config.error_rate_warning_percent),
        (AlertSeverity::Critical, config.error_rate_critical_percent),
    ] {
        out.push(Observation {
            kind: AlertKind::ErrorRate,
            subject: "error_rate".into(),
            period: String::new(),
            threshold: severity.as_str(),
            severity,
            crossed: judged && window.error_rate > line,
            value: if judged { window.error_rate } else { 0.0 },
            line: Some(line),
            message: format!(
                "{:.1} % of {}'s API requests failed (5xx) over the last {minutes} minutes ({} of {}; the line is {line} %)",
                window.error_rate, tenant.slug, window.errors, window.requests
            ),
        });
    }
    for (severity, line) in [
        (AlertSeverity::Warning, config.latency_warning_ms),
        (AlertSeverity::Critical, config.latency_critical_ms),
    ] {
        out.push(Observation {
            kind: AlertKind::Latency,
            subject: "p95_latency_ms".into(),
            period: String::new(),
            threshold: severity.as_str(),
            severity,
            crossed: judged && window.p95_ms > line,
            value: if judged { window.p95_ms } else { 0.0 },
            line: Some(line),
            message: format!(
                "{}'s API requests took {:.0} ms at the 95th percentile over the last {minutes} minutes ({} requests; the line is {line} ms)",
                tenant.slug, window.p95_ms, window.requests
            ),
        });
    }
    // Throttling is judged on everything the tenant sent, refused requests included.
    let sent = window.requests + window.throttled;
    let line = config.throttled_warning_percent;
    let judged = sent >= config.min_requests;
    out.push(Observation {
        kind: AlertKind::Throttled,
        subject: "throttled".into(),
        period: String::new(),
        threshold: AlertSeverity::Warning.as_str(),
        severity: AlertSeverity::Warning,
        crossed: judged && window.throttled_rate > line,
        value: if judged { window.throttled_rate } else { 0.0 },
        line: Some(line),
        message: format!(
            "{:.1} % of {}'s API requests were refused at its API-call budget over the last {minutes} minutes ({} of {}; the line is {line} %)",
            window.throttled_rate, tenant.slug, window.throttled, sent
        ),
    });
    Some(out)
}

/// Evaluates `tenant` now: raises and resolves its alerts, and queues their webhooks in the
/// same transaction.
pub async fn evaluate_tenant(ctx: &Context, tenant: &Tenant) -> AppResult<Changes> {
    let now = clock::now();
    let config = &ctx.config.alerts;
    let quota = quota_observations(ctx, tenant, now).await?;
    let traffic = traffic_observations(ctx, tenant);
    let failure = ctx.alert_signals.policy_failure(&tenant.id);
    let mut observations: Vec<Observation> = Vec::new();
    if let Some(failure) = &failure {
        observations.push(Observation {
            kind: AlertKind::PolicyFailing,
            subject: failure.policy.clone(),
            period: String::new(),
            threshold: "failing",
            severity: AlertSeverity::Critical,
            crossed: true,
            value: 1.0,
            line: Some(1.0),
            message: format!(
                "the quota policy `{}` is failing for {} ({}); its last decision stays in force",
                failure.policy, tenant.slug, failure.reason
            ),
        });
    }
    let quota_known = quota.is_some();
    let traffic_known = traffic.is_some();
    observations.extend(quota.into_iter().flatten());
    observations.extend(traffic.into_iter().flatten());

    let mut periods: Vec<String> = observations.iter().map(|o| o.period.clone()).collect();
    periods.sort();
    periods.dedup();
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::alerts::of_tenant(&mut conn, &tenant.id, &periods).await?
    };
    let hysteresis = 1.0 - config.hysteresis_percent / 100.0;
    let held =
        |row: &AlertRow| (now - row.raised_at).num_seconds() < config.min_open_seconds as i64;
    let stale_after = chrono::Duration::minutes(2 * i64::from(config.traffic_window_minutes));

    enum Step {
        Raise(Observation),
        Reopen(String, Observation),
        Touch(String, Observation),
        Resolve(String, f64, String),
    }
    let mut steps = Vec::new();
    for o in &observations {
        let row = existing.iter().find(|r| o.is(r));
        match (row, o.crossed) {
            (None, true) => steps.push(Step::Raise(o.clone())),
            (Some(r), true) if r.status == AlertStatus::Resolved => {
                steps.push(Step::Reopen(r.id.clone(), o.clone()));
            }
            (Some(r), true) => steps.push(Step::Touch(r.id.clone(), o.clone())),
            (Some(r), false) if r.status == AlertStatus::Open => {
                // A line is crossed back below it (or the value it was raised at) less the
                // hysteresis; at risk, a condition, is over as soon as it no longer holds.
                let back = o.kind == AlertKind::AtRisk
                    || o.value < o.line.unwrap_or(r.raised_value) * hysteresis;
                if back && !held(r) {
                    steps.push(Step::Resolve(r.id.clone(), o.value, o.message.clone()));
                } else {
                    // Still open (inside the hysteresis, or held for `min_open_seconds`): its
                    // message stays the one that says why it is open.
                    let mut still = o.clone();
                    still.message = r.message.clone();
                    steps.push(Step::Touch(r.id.clone(), still));
                }
            }
            _ => {}
        }
    }
    // Open alerts nothing observed any more.
    for r in existing
        .iter()
        .filter(|r| r.status == AlertStatus::Open)
        .filter(|r| !observations.iter().any(|o| o.is(r)))
    {
        let resolution = match Some(r.kind) {
            Some(AlertKind::Quota) if quota_known => Some(format!(
                "{}: the period {} has ended, or the metric no longer has a limit",
                r.subject, r.period
            )),
            Some(AlertKind::AtRisk) if quota_known => Some("no longer at risk".to_owned()),
            Some(AlertKind::PolicyFailing) if failure.is_none() && !held(r) => Some(format!(
                "the quota policy `{}` answers again for {}",
                r.subject, tenant.slug
            )),
            Some(AlertKind::ErrorRate | AlertKind::Latency)
                if !traffic_known && now - r.updated_at > stale_after =>
            {
                Some(format!(
                    "no API requests of {} were measured for {} minutes",
                    tenant.slug,
                    stale_after.num_minutes()
                ))
            }
            _ => None,
        };
        if let Some(message) = resolution {
            steps.push(Step::Resolve(r.id.clone(), r.value, message));
        }
    }
    if steps.is_empty() {
        return Ok(Changes::default());
    }

    let changes = transaction!(ctx.db, |tx| {
        let mut raised_ids = Vec::new();
        let mut resolved_ids = Vec::new();
        for step in &steps {
            match step {
                Step::Raise(o) => {
                    let row = new_row(tenant, o, now);
                    if store::alerts::insert(tx, &row).await? {
                        raised_ids.push(row.id);
                    }
                }
                Step::Reopen(id, o) => {
                    if store::alerts::reopen(tx, id, o.value, &o.message, now).await? {
                        raised_ids.push(id.clone());
                    }
                }
                Step::Touch(id, o) => {
                    store::alerts::touch(tx, id, o.value, &o.message, now).await?;
                }
                Step::Resolve(id, value, message) => {
                    if store::alerts::resolve(tx, id, *value, message, now).await? {
                        resolved_ids.push(id.clone());
                    }
                }
            }
        }
        let mut changes = Changes::default();
        for (ids, event, out) in [
            (&raised_ids, webhooks::ALERT_RAISED, &mut changes.raised),
            (
                &resolved_ids,
                webhooks::ALERT_RESOLVED,
                &mut changes.resolved,
            ),
        ] {
            for id in ids {
                let alert = load(tx, id, &tenant.slug).await?;
                webhooks::enqueue(tx, Some(&tenant.id), event, json!({ "alert": alert }), now)
                    .await?;
                out.push(alert);
            }
        }
        Ok(changes)
    })?;
    for alert in &changes.raised {
        ctx.metrics
            .alerts_raised
            .with_label_values(&[alert.kind.as_str(), alert.severity.as_str()])
            .inc();
        tracing::warn!(tenant = %tenant.slug, kind = alert.kind.as_str(), severity = alert.severity.as_str(), "alert raised: {}", alert.message);
    }
    for alert in &changes.resolved {
        tracing::info!(tenant = %tenant.slug, kind = alert.kind.as_str(), "alert resolved: {}", alert.message);
    }
    if !changes.raised.is_empty() || !changes.resolved.is_empty() {
        ctx.deliveries_queued.notify_one();
    }
    Ok(changes)
}

fn new_row(tenant: &Tenant, o: &Observation, now: NaiveDateTime) -> AlertRow {
    AlertRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id.clone(),
        kind: o.kind,
        subject: o.subject.clone(),
        period: o.period.clone(),
        threshold: o.threshold.to_owned(),
        severity: o.severity,
        status: AlertStatus::Open,
        value: o.value,
        raised_value: o.value,
        message: o.message.clone(),
        times_raised: 1,
        raised_at: now,
        updated_at: now,
        resolved_at: None,
    }
}

async fn load(conn: &mut Conn, id: &str, slug: &str) -> AppResult<Alert> {
    store::alerts::get(conn, id)
        .await?
        .map(|row| Alert::from_row(&row, slug))
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("alert {id} vanished")))
}

/// Evaluates the tenants marked since the last round, and every
/// `alerts.evaluate_interval_seconds` those with open alerts or recent traffic, until the
/// server stops.
pub fn spawn(ctx: &Context) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let every = Duration::from_secs(ctx.config.alerts.evaluate_interval_seconds);
        let mut next_sweep = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = ctx.alert_signals.marked() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
            // Coalesce: what is marked within this pause is evaluated once.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut ids = ctx.alert_signals.take_marked();
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + every;
                ids.extend(ctx.alert_signals.traffic_tenants());
                match ctx.db.conn().await {
                    Ok(mut conn) => {
                        match store::alerts::tenants_with_open(&mut conn, 100_000).await {
                            Ok(open) => ids.extend(open),
                            Err(err) => tracing::warn!("alerts: cannot list open alerts: {err}"),
                        }
                    }
                    Err(err) => tracing::warn!("alerts: no database connection: {err}"),
                }
            }
            ids.sort();
            ids.dedup();
            for id in ids {
                if let Err(err) = evaluate_id(&ctx, &id).await {
                    tracing::warn!(tenant_id = %id, "alerts: cannot evaluate: {err}");
                }
            }
        }
    })
}

async fn evaluate_id(ctx: &Context, id: &str) -> AppResult<()> {
    let Some(tenant) = crate::tenants::get_by_id(ctx, id).await? else {
        return Ok(());
    };
    evaluate_tenant(ctx, &tenant).await.map(|_| ())
}
