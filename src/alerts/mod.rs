//! Alerts on tenants, and the webhooks that tell operators about them.
//!
//! - [`evaluate`]: watches each tenant — its quotas as its policy decides them, whether the
//!   policy answers, the error rate and response time of its API requests — and raises an
//!   alert once per tenant, kind, subject, period and threshold, resolving it when what it
//!   watches falls back (with hysteresis, and not before it has been open a while).
//! - [`operations`]: alerts the scheduled jobs raise — a trial about to end, a job that
//!   failed — resolved when what they tell of is over.
//! - [`webhooks`]: endpoints operators register; each raise and resolution is written to an
//!   outbox in the same transaction, then delivered signed (Standard Webhooks: HMAC-SHA256 over
//!   id, timestamp and body) and retried with backoff.

pub mod delivery;
pub mod evaluate;
pub mod operations;
pub mod webhooks;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::models::AlertRow;
use crate::store::{self, alerts::AlertFilter};
use crate::tenants::Tenant;

pub use crate::store::vocabulary::{AlertKind, AlertSeverity, AlertStatus};

/// An alert, as the API, the CLI and the pages show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    pub id: String,
    /// The tenant's slug.
    pub tenant: String,
    pub kind: AlertKind,
    /// The metric (quota alerts), the policy (policy_failing), or the kind's own name.
    pub subject: String,
    /// The period the alert belongs to (a quota's day or month); none for the others.
    pub period: Option<String>,
    /// The line crossed: warning, critical, blocked, at_risk or failing.
    pub threshold: String,
    pub severity: AlertSeverity,
    pub status: AlertStatus,
    /// What was last measured: percent of the limit, error rate in percent, p95 in ms.
    pub value: f64,
    pub message: String,
    /// How often it was raised (again after resolving) in its period.
    pub times_raised: u64,
    pub raised_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl Alert {
    pub fn from_row(row: &AlertRow, slug: &str) -> Self {
        Alert {
            id: row.id.clone(),
            tenant: slug.to_owned(),
            kind: row.kind,
            subject: row.subject.clone(),
            period: (!row.period.is_empty()).then(|| row.period.clone()),
            threshold: row.threshold.clone(),
            severity: row.severity,
            status: row.status,
            value: row.value,
            message: row.message.clone(),
            times_raised: row.times_raised.max(0) as u64,
            raised_at: clock::to_utc(row.raised_at),
            updated_at: clock::to_utc(row.updated_at),
            resolved_at: row.resolved_at.map(clock::to_utc),
        }
    }
}

/// What a listing of alerts asks for (all optional).
#[derive(Debug, Default, Clone)]
pub struct AlertQuery {
    /// A tenant's slug.
    pub tenant: Option<String>,
    pub kind: Option<String>,
    /// The metric (the subject of a quota alert).
    pub metric: Option<String>,
    pub severity: Option<String>,
    /// `open` (the default), `resolved` or `all`.
    pub status: Option<String>,
    pub before: Option<String>,
    pub limit: Option<i64>,
}

/// A page of alerts, newest first; `next_before` continues the listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub items: Vec<Alert>,
    pub next_before: Option<String>,
}

/// Alerts as `query` asks, newest first.
pub async fn list(ctx: &Context, query: &AlertQuery) -> AppResult<AlertPage> {
    // An empty parameter is as good as an absent one.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let query = &AlertQuery {
        tenant: given(&query.tenant),
        kind: given(&query.kind),
        metric: given(&query.metric),
        severity: given(&query.severity),
        status: given(&query.status),
        before: given(&query.before),
        limit: query.limit,
    };
    let limit = match query.limit {
        None => 50,
        Some(n) if (1..=500).contains(&n) => n,
        Some(_) => {
            return Err(AppError::invalid("limit", "range", "must be from 1 to 500"));
        }
    };
    let kind = match &query.kind {
        None => None,
        Some(k) => Some(
            k.parse::<AlertKind>()
                .map_err(|e| AppError::invalid("kind", "one_of", e.rule()))?,
        ),
    };
    let severity = match &query.severity {
        None => None,
        Some(s) => Some(
            s.parse::<AlertSeverity>()
                .map_err(|e| AppError::invalid("severity", "one_of", e.rule()))?,
        ),
    };
    let status = match query.status.as_deref() {
        None | Some("open") => Some(AlertStatus::Open),
        Some("resolved") => Some(AlertStatus::Resolved),
        Some("all") => None,
        Some(_) => {
            return Err(AppError::invalid(
                "status",
                "one_of",
                "must be open, resolved or all",
            ));
        }
    };
    let tenant_id = match &query.tenant {
        None => None,
        Some(slug) => Some(crate::tenants::get(ctx, slug).await?.id),
    };
    let mut conn = ctx.db.conn().await?;
    let rows = store::alerts::list(
        &mut conn,
        &AlertFilter {
            tenant_id,
            kind,
            subject: query.metric.clone(),
            severity,
            status,
            before: query.before.clone(),
            limit: limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<Alert> = rows
        .iter()
        .take(limit as usize)
        .map(|(row, slug)| Alert::from_row(row, slug))
        .collect();
    let next_before = more.then(|| items.last().map(|a| a.id.clone())).flatten();
    Ok(AlertPage { items, next_before })
}

/// The open alerts of `tenant`, most severe first.
pub async fn open_of(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<Alert>> {
    let mut page = list(
        ctx,
        &AlertQuery {
            tenant: Some(tenant.slug.clone()),
            limit: Some(500),
            ..AlertQuery::default()
        },
    )
    .await?;
    page.items.sort_by(|a, b| b.severity.cmp(&a.severity));
    Ok(page.items)
}

/// Open alerts by severity: what the dashboard shows.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct OpenCounts {
    pub warning: u64,
    pub critical: u64,
    pub blocked: u64,
}

pub async fn open_counts(ctx: &Context) -> AppResult<OpenCounts> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::alerts::open_by_severity(&mut conn).await?;
    let of = |s: &str| {
        rows.iter()
            .filter(|(severity, _)| severity == s)
            .map(|(_, n)| (*n).max(0) as u64)
            .sum()
    };
    Ok(OpenCounts {
        warning: of("warning"),
        critical: of("critical"),
        blocked: of("blocked"),
    })
}

/// Updates the alert gauges of `/metrics`: open alerts by severity, and the quota use of the
/// tenants with an open quota alert (their highest severity's value per metric).
pub async fn refresh_metrics(ctx: &Context) -> AppResult<()> {
    let mut conn = ctx.db.conn().await?;
    let open = store::alerts::open_by_severity(&mut conn).await?;
    let mut uses: Vec<(String, String, f64)> = Vec::new();
    for (slug, metric, value) in store::alerts::open_quota_use(&mut conn).await? {
        match uses.iter_mut().find(|(s, m, _)| *s == slug && *m == metric) {
            Some(existing) => existing.2 = existing.2.max(value),
            None => uses.push((slug, metric, value)),
        }
    }
    ctx.metrics.set_alert_state(&open, &uses);
    Ok(())
}
