//! Quotas and usage: the catalogue of metrics, what tenants used, the limits their quota policy
//! decides with the operator's overrides, and admission of reported usage.
//!
//! - [`catalogue`]: the metrics and the period a use counts in.
//! - [`decision`]: asking the tenant's policy, and keeping its decision.
//! - [`report`]: usage reported by operators' systems, counted once per event id.
//!
//! The limits in effect come from the policy's decision; whether a limit is hard (refused past
//! it) or soft (counted and alerted on) is the metric's, unless an override says otherwise.

pub mod catalogue;
pub mod decision;
pub mod measure;
pub mod meter;
pub mod overrides;
pub mod policy;
pub mod report;
pub mod traffic;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::clock;
use crate::config::{MetricKind, Window};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::Severity;
use crate::store::models::QuotaOverrideRow;
use crate::store::{self, Conn};
use crate::tenants::{Tenant, TenantStatus, Tier};
use crate::throttle::CachedDecision;
use crate::transaction;

pub use catalogue::{Metric, catalogue};
use decision::Need;
pub use overrides::{OverrideChange, parse_overrides, set_overrides};

/// How close a use is to its limit, in rising order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Blocked,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
            Level::Blocked => "blocked",
        }
    }
}

impl From<Severity> for Level {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Ok => Level::Ok,
            Severity::Warning => Level::Warning,
            Severity::Critical => Level::Critical,
            Severity::Blocked => Level::Blocked,
        }
    }
}

/// One metric of a tenant: its limits and its use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaView {
    pub metric: String,
    pub kind: MetricKind,
    pub window: Option<Window>,
    /// The tier's limit (the policy's decision without the tenant's override); none: no limit.
    pub default_limit: Option<u64>,
    /// The tenant's own limit, when an operator set one.
    pub override_limit: Option<u64>,
    /// When a temporary override ends (the limit falls back to the tier's then).
    pub override_expires_at: Option<DateTime<Utc>>,
    /// Why the override was set.
    pub override_reason: Option<String>,
    /// The limit in effect.
    pub limit: Option<u64>,
    /// Whether use past the limit is refused (true) or only alerted on.
    pub hard: bool,
    /// Use in the current period (a gauge: its current value).
    pub used: u64,
    /// `used` / `limit` in percent (0 without a limit).
    pub percent: f64,
    pub severity: Level,
}

/// What a tenant used and may use: the usage summary.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UsageSummary {
    pub tenant: String,
    pub tier: Tier,
    pub status: TenantStatus,
    pub metrics: Vec<QuotaView>,
    /// True when any metric is above the at-risk threshold of the policy (90 % by default).
    pub at_risk: bool,
    /// False when a hard quota is blocked.
    pub allowed: bool,
    /// Authenticated API calls today and this month (UTC), as written so far (a server writes
    /// its counts every `quotas.flush_interval_ms`).
    pub api_calls_today: u64,
    pub api_calls_this_month: u64,
    /// The tenant's latest API call or user login; none when it was never seen.
    pub last_active: Option<DateTime<Utc>>,
    /// Its API traffic over the last hour, every server's: request rate, error rate, p95.
    pub traffic: traffic::TrafficView,
    pub measured_at: DateTime<Utc>,
}

/// The metrics of the catalogue, as the API lists them.
pub fn metrics(ctx: &Context) -> Vec<Metric> {
    catalogue(&ctx.config.quotas)
}

/// What a tenant's decision is asked on: the catalogue, its overrides and its current use.
pub struct Standing {
    pub metrics: Vec<Metric>,
    pub overrides: Vec<QuotaOverrideRow>,
    pub usage: HashMap<String, u64>,
}

impl Standing {
    /// The tenant's standing as the database holds it now.
    pub async fn of(ctx: &Context, tenant: &Tenant) -> AppResult<Standing> {
        let metrics = metrics(ctx);
        let mut conn = ctx.db.conn().await?;
        let overrides = store::usage::overrides(&mut conn, &tenant.id).await?;
        let usage = current_use(&mut conn, tenant, &metrics).await?;
        Ok(Standing {
            metrics,
            overrides,
            usage,
        })
    }

    /// The tenant's policy's decision on this standing.
    pub async fn decide(
        &self,
        ctx: &Context,
        tenant: &Tenant,
        need: Need,
    ) -> AppResult<Arc<CachedDecision>> {
        decision::decide(
            ctx,
            tenant,
            &self.metrics,
            &self.overrides,
            &self.usage,
            need,
        )
        .await
    }
}

/// The tenant's use of every metric in its current period.
async fn current_use(
    conn: &mut Conn,
    tenant: &Tenant,
    metrics: &[Metric],
) -> AppResult<HashMap<String, u64>> {
    let now = clock::now();
    let periods: Vec<String> = metrics
        .iter()
        .map(|m| m.period(now))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = store::usage::counters_in(conn, &tenant.id, &periods).await?;
    Ok(metrics
        .iter()
        .map(|m| {
            let period = m.period(now);
            let used = rows
                .iter()
                .find(|r| r.metric == m.name && r.period == period)
                .map_or(0, |r| r.value.max(0) as u64);
            (m.name.clone(), used)
        })
        .collect())
}

/// Limits, use and severity of each metric of `tenant`.
pub async fn quotas(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<QuotaView>> {
    Ok(summary(ctx, tenant).await?.metrics)
}

/// The usage summary of `tenant`.
pub async fn summary(ctx: &Context, tenant: &Tenant) -> AppResult<UsageSummary> {
    let standing = Standing::of(ctx, tenant).await?;
    let (today, last_active) = {
        let mut conn = ctx.db.conn().await?;
        let today = store::usage::value(
            &mut conn,
            &tenant.id,
            crate::throttle::API_CALLS_PER_DAY,
            &catalogue::period_of(Some(Window::Day), clock::now()),
        )
        .await?
        .unwrap_or(0);
        let last_active = store::usage::last_active(&mut conn, &tenant.id).await?;
        (today, last_active)
    };
    let decided = standing.decide(ctx, tenant, Need::Severities).await?;
    let views = standing.views(&decided);
    Ok(UsageSummary {
        tenant: tenant.slug.clone(),
        tier: tenant.tier,
        status: tenant.status,
        at_risk: decided.decision.at_risk,
        allowed: views
            .iter()
            .all(|v| v.severity != Level::Blocked || !v.hard),
        api_calls_today: today.max(0) as u64,
        api_calls_this_month: standing
            .usage
            .get("api_calls_per_month")
            .copied()
            .unwrap_or(0),
        last_active: last_active.map(clock::to_utc),
        traffic: traffic::of_tenant(ctx, &tenant.id, traffic::KEPT_MINUTES).await?,
        metrics: views,
        measured_at: Utc::now(),
    })
}

impl Standing {
    /// Each metric as `decided` limits it, with the use of this standing.
    fn views(&self, decided: &CachedDecision) -> Vec<QuotaView> {
        let Standing {
            metrics,
            overrides,
            usage,
        } = self;
        metrics
            .iter()
            .map(|m| {
                let over = overrides.iter().find(|o| o.metric == m.name);
                let decision = decided.decision.metrics.iter().find(|d| d.metric == m.name);
                let used = usage.get(&m.name).copied().unwrap_or(0);
                let limit = decision.and_then(|d| d.limit);
                QuotaView {
                    metric: m.name.clone(),
                    kind: m.kind,
                    window: m.window,
                    default_limit: decided.defaults.get(&m.name).copied().flatten(),
                    override_limit: over.and_then(|o| o.limit_value).map(|l| l.max(0) as u64),
                    override_expires_at: over.and_then(|o| o.expires_at).map(clock::to_utc),
                    override_reason: over.and_then(|o| o.reason.clone()),
                    limit,
                    hard: over.map_or(m.hard, |o| o.hard),
                    used,
                    percent: decision.map_or(0.0, |d| d.percent),
                    severity: decision.map_or(Level::Ok, |d| d.severity.into()),
                }
            })
            .collect()
    }
}

/// Admits a login of `subject` (at `issuer`) to `tenant` under its `users` quota: a user who
/// logged in before always is; a new one is counted, unless that would pass a hard limit
/// (`QuotaExceeded`, nothing recorded).
pub async fn admit_user(
    ctx: &Context,
    tenant: &Tenant,
    issuer: &str,
    subject: &str,
) -> AppResult<()> {
    let now = clock::now();
    let known = {
        let mut conn = ctx.db.conn().await?;
        store::usage::is_known_user(&mut conn, &tenant.id, issuer, subject).await?
    };
    let limit = if known {
        None
    } else {
        let decided = Standing::of(ctx, tenant)
            .await?
            .decide(ctx, tenant, Need::Limits)
            .await?;
        crate::throttle::QuotaDecisions::hard_limit(&decided, "users")
    };
    transaction!(ctx.db, |tx| {
        let new = store::usage::record_user(tx, &tenant.id, issuer, subject, now).await?;
        if new {
            ctx.alert_signals.mark(&tenant.id);
        }
        if new && let Some(limit) = limit {
            let users = store::usage::value(tx, &tenant.id, "users", store::usage::GAUGE_PERIOD)
                .await?
                .unwrap_or(0);
            if users.max(0) as u64 > limit {
                return Err(AppError::QuotaExceeded {
                    message: format!(
                        "{} has reached its limit of {limit} users (tier {})",
                        tenant.slug, tenant.tier
                    ),
                    details: json!({
                        "metric": "users",
                        "used": users - 1,
                        "limit": limit,
                        "tier": tenant.tier,
                    }),
                });
            }
        }
        Ok(())
    })
}

/// What `policy` decides for `tenant` on its current usage, or on `usage` (metric → use) where
/// given, with its overrides, and the lines it logged; nothing is kept or counted.
pub async fn evaluate(
    ctx: &Context,
    policy: &str,
    tenant: &Tenant,
    usage: Option<&HashMap<String, u64>>,
) -> AppResult<(
    AppResult<crate::plugin_host::Decision>,
    Vec<crate::plugin_host::LogLine>,
)> {
    let mut standing = Standing::of(ctx, tenant).await?;
    if let Some(usage) = usage {
        for (metric, used) in usage {
            catalogue::metric(&standing.metrics, metric, metric)?;
            standing.usage.insert(metric.clone(), *used);
        }
    }
    Ok(decision::evaluate_once(ctx, policy, tenant, &standing).await)
}

/// The policy that decides for `tenant`.
pub async fn policy_of(ctx: &Context, tenant: &Tenant) -> AppResult<policy::PolicyInForce> {
    let mut conn = ctx.db.conn().await?;
    policy::in_force(ctx, &mut conn, tenant).await
}

/// A policy's decision, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionView {
    pub metrics: Vec<MetricDecisionView>,
    pub allowed: bool,
    pub at_risk: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricDecisionView {
    pub metric: String,
    pub used: u64,
    pub limit: Option<u64>,
    pub percent: f64,
    pub severity: Level,
}

pub fn decision_view(decision: &crate::plugin_host::Decision) -> DecisionView {
    DecisionView {
        metrics: decision
            .metrics
            .iter()
            .map(|m| MetricDecisionView {
                metric: m.metric.clone(),
                used: m.used,
                limit: m.limit,
                percent: m.percent,
                severity: m.severity.into(),
            })
            .collect(),
        allowed: decision.allowed,
        at_risk: decision.at_risk,
    }
}

/// A question: would this use be admitted?
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub metric: String,
    /// How much more would be used (default 1).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub increment: Option<i64>,
}

/// The answer: whether the use would be admitted now (nothing is counted).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckAnswer {
    pub allowed: bool,
    pub metric: String,
    pub used: u64,
    pub increment: u64,
    pub limit: Option<u64>,
    pub hard: bool,
    /// What may still be used (none without a limit).
    pub remaining: Option<u64>,
    /// The severity after the use.
    pub severity: Level,
}

/// Answers whether `increment` more of `metric` would be admitted for `tenant`, without
/// counting it.
pub async fn check(
    ctx: &Context,
    tenant: &Tenant,
    request: &CheckRequest,
) -> AppResult<CheckAnswer> {
    let metrics = metrics(ctx);
    let metric = catalogue::metric(&metrics, "metric", &request.metric)?.clone();
    let increment = match request.increment {
        None => 1,
        Some(n) if n >= 1 => n as u64,
        Some(_) => {
            return Err(AppError::invalid(
                "increment",
                "minimum",
                "must be a whole number of at least 1",
            ));
        }
    };
    // Admission needs the limits only: the policy is not asked for new severities.
    let standing = Standing::of(ctx, tenant).await?;
    let decided = standing.decide(ctx, tenant, Need::Limits).await?;
    let view = standing
        .views(&decided)
        .into_iter()
        .find(|v| v.metric == metric.name)
        .ok_or_else(|| {
            AppError::internal(anyhow::anyhow!("metric {} not summarised", metric.name))
        })?;
    let after = view.used.saturating_add(increment);
    let allowed = match view.limit {
        Some(limit) if view.hard => after <= limit,
        _ => true,
    };
    Ok(CheckAnswer {
        allowed,
        metric: view.metric,
        used: view.used,
        increment,
        limit: view.limit,
        hard: view.hard,
        remaining: view.limit.map(|l| l.saturating_sub(view.used)),
        severity: level_of(after, view.limit),
    })
}

/// The default thresholds (80 %, 95 %, 100 %), for a use the policy has not seen yet.
fn level_of(used: u64, limit: Option<u64>) -> Level {
    match limit {
        None => Level::Ok,
        Some(0) if used == 0 => Level::Ok,
        Some(0) => Level::Blocked,
        Some(limit) => {
            let percent = used as f64 * 100.0 / limit as f64;
            if percent >= 100.0 {
                Level::Blocked
            } else if percent >= 95.0 {
                Level::Critical
            } else if percent >= 80.0 {
                Level::Warning
            } else {
                Level::Ok
            }
        }
    }
}
