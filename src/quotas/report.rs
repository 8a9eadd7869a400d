//! Usage reported by operators' systems: `POST /api/v1/tenant/{slug}/usage`.
//!
//! Each event is counted once per id, however often and to however many servers it is sent: the
//! id's record and the counter change are written in one transaction, so a failed write that is
//! retried is counted exactly once. An increment that would take a metric past its hard limit is
//! refused with the whole batch, and nothing of the batch is counted (admission).
//!
//! A report costs a few statements whatever its size: the event ids in one multi-row insert
//! (a duplicate id is skipped), one upsert per metric and period returning the value admission
//! is decided on, and one read and one conditional write per gauge.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store::models::UsageEventRow;
use crate::store::{self};
use crate::tenants::Tenant;
use crate::transaction;

use super::catalogue::{self, Metric};
use super::decision::Need;
use crate::throttle::QuotaDecisions;

/// Events in one batch at the most.
pub const MAX_BATCH: usize = 1000;
/// How far in the past an event's timestamp may lie; ids are remembered at least as long.
pub const MAX_AGE_DAYS: i64 = 35;
/// How far in the future an event's timestamp may lie (clock skew).
pub const MAX_SKEW_MINUTES: i64 = 5;

/// One use of a metric.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The event's id, unique for the tenant: the same id is counted once.
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    pub metric: String,
    /// How much was used (a rate or a counter), at least 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub increment: Option<i64>,
    /// The current value (a gauge), at least 0.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub value: Option<i64>,
    /// When it was used (default: now); at most 35 days ago and 5 minutes ahead.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// A batch of events.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// 1 to 1,000 events.
    pub events: Vec<UsageEvent>,
}

/// What happened to each event of a report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReportOutcome {
    /// Events counted now.
    pub counted: usize,
    /// Events whose id was counted before (or earlier in this batch): not counted again.
    pub duplicates: usize,
    /// Gauge values older than the value held: kept for their id, not applied.
    pub stale: usize,
    pub events: Vec<EventOutcome>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventOutcome {
    pub id: String,
    /// `counted`, `duplicate` or `stale`.
    pub outcome: &'static str,
    /// The event's metric in its period once the report was counted: a counter's total (this
    /// event's increment included when it was counted), a gauge's value held.
    pub total: i64,
}

/// A checked event.
struct Checked<'a> {
    /// The event's place in the report.
    index: usize,
    event: &'a UsageEvent,
    metric: &'a Metric,
    period: String,
    amount: i64,
    at: chrono::NaiveDateTime,
}

/// Checks every event; the errors name each event's field (`events[3].increment`).
fn check_events<'a>(
    metrics: &'a [Metric],
    events: &'a [UsageEvent],
    prefix: &(dyn Fn(usize) -> String + Sync),
) -> AppResult<Vec<Checked<'a>>> {
    if events.is_empty() {
        return Err(AppError::invalid(
            "events",
            "min_items",
            "must hold at least one event",
        ));
    }
    if events.len() > MAX_BATCH {
        return Err(AppError::invalid(
            "events",
            "max_items",
            format!(
                "holds {} events; a batch holds at most {MAX_BATCH}",
                events.len()
            ),
        ));
    }
    let now = Utc::now();
    let mut errors: Vec<FieldError> = Vec::new();
    let mut checked = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let field = |name: &str| format!("{}{name}", prefix(i));
        let before = errors.len();
        if event.id.is_empty() || event.id.chars().count() > 200 {
            errors.push(FieldError::new(
                field("id"),
                "length",
                "must be 1 to 200 characters",
            ));
        } else if event.id.chars().any(char::is_control) {
            errors.push(FieldError::new(
                field("id"),
                "pattern",
                "must not hold control characters",
            ));
        }
        let metric = match catalogue::metric(metrics, &field("metric"), &event.metric) {
            Ok(metric) => Some(metric),
            Err(err) => {
                errors.extend(err.field_errors().iter().cloned());
                None
            }
        };
        if let Some(metric) = metric.filter(|m| m.metered) {
            errors.push(FieldError::new(
                field("metric"),
                "metered",
                format!(
                    "`{}` is metered by the server and cannot be reported",
                    metric.name
                ),
            ));
        }
        let amount = match (metric.map(Metric::is_gauge), event.increment, event.value) {
            (_, Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    field("value"),
                    "exclusive",
                    "give either `increment` or `value`, not both",
                ));
                None
            }
            (Some(true), None, Some(v)) if v >= 0 => Some(v),
            (Some(true), None, Some(_)) => {
                errors.push(FieldError::new(
                    field("value"),
                    "minimum",
                    "must be at least 0",
                ));
                None
            }
            (Some(true), _, None) => {
                errors.push(FieldError::new(
                    field("value"),
                    "required",
                    format!("`{}` is a gauge: report its current `value`", event.metric),
                ));
                None
            }
            (Some(false), Some(n), None) if n >= 1 => Some(n),
            (Some(false), Some(_), None) => {
                errors.push(FieldError::new(
                    field("increment"),
                    "minimum",
                    "must be a whole number of at least 1",
                ));
                None
            }
            (Some(false), None, _) => {
                errors.push(FieldError::new(
                    field("increment"),
                    "required",
                    format!("`{}` counts use: report an `increment`", event.metric),
                ));
                None
            }
            (None, _, _) => None,
        };
        let at = event.timestamp.unwrap_or(now);
        if at < now - Duration::days(MAX_AGE_DAYS) {
            errors.push(FieldError::new(
                field("timestamp"),
                "window",
                format!("lies more than {MAX_AGE_DAYS} days in the past"),
            ));
        } else if at > now + Duration::minutes(MAX_SKEW_MINUTES) {
            errors.push(FieldError::new(
                field("timestamp"),
                "window",
                format!("lies more than {MAX_SKEW_MINUTES} minutes in the future"),
            ));
        }
        if errors.len() == before
            && let (Some(metric), Some(amount)) = (metric, amount)
        {
            let at = at.naive_utc();
            checked.push(Checked {
                index: i,
                event,
                metric,
                period: metric.period(at),
                amount,
                at,
            });
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(AppError::Validation(errors))
    }
}

/// Counts `events` for `tenant`: all of them or, when one breaks a rule or a hard limit, none.
/// `single`: the body was one event (errors name its fields without `events[i].`).
pub async fn report(
    ctx: &Context,
    tenant: &Tenant,
    events: &[UsageEvent],
    single: bool,
) -> AppResult<ReportOutcome> {
    if !tenant.status.is_active() {
        return Err(AppError::forbidden(format!(
            "tenant {} is {}: its usage is not counted",
            tenant.slug, tenant.status
        )));
    }
    let metrics = super::metrics(ctx);
    let prefix = |i: usize| {
        if single {
            String::new()
        } else {
            format!("events[{i}].")
        }
    };
    let checked = check_events(&metrics, events, &prefix)?;

    // The limits in effect (admission needs no fresh severities).
    let standing = super::Standing::of(ctx, tenant).await?;
    let decided = standing.decide(ctx, tenant, Need::Limits).await?;
    let hard_limit: HashMap<&str, u64> = metrics
        .iter()
        .filter_map(|m| {
            QuotaDecisions::hard_limit(&decided, &m.name).map(|limit| (m.name.as_str(), limit))
        })
        .collect();

    let now = clock::now();
    // An id repeated within the report counts once, at its first place.
    let mut seen: HashSet<&str> = HashSet::new();
    let firsts: Vec<bool> = checked
        .iter()
        .map(|c| seen.insert(c.event.id.as_str()))
        .collect();
    let rows: Vec<UsageEventRow> = checked
        .iter()
        .zip(&firsts)
        .filter(|(_, first)| **first)
        .map(|(c, _)| UsageEventRow {
            tenant_id: tenant.id.clone(),
            event_id: c.event.id.clone(),
            metric: c.metric.name.clone(),
            period: c.period.clone(),
            amount: c.amount,
            received_at: now,
        })
        .collect();
    let outcome = transaction!(ctx.db, |tx| {
        let fresh = store::usage::insert_events(tx, &rows).await?;
        let counted: Vec<&Checked<'_>> = checked
            .iter()
            .zip(&firsts)
            .filter(|(c, first)| **first && fresh.contains(&c.event.id))
            .map(|(c, _)| c)
            .collect();
        let stale = apply_gauges(tx, tenant, &counted, now).await?;
        add_counters(tx, tenant, &counted, &hard_limit, &prefix, now).await?;
        // Each metric's total now, read in the same transaction.
        let mut periods: Vec<String> = checked.iter().map(|c| c.period.clone()).collect();
        periods.sort();
        periods.dedup();
        let totals: HashMap<(String, String), i64> =
            store::usage::counters_in(tx, &tenant.id, &periods)
                .await?
                .into_iter()
                .map(|row| ((row.metric, row.period), row.value))
                .collect();
        Ok(checked
            .iter()
            .zip(&firsts)
            .map(|(c, first)| EventOutcome {
                id: c.event.id.clone(),
                outcome: if !*first || !fresh.contains(&c.event.id) {
                    "duplicate"
                } else if stale.contains(&c.index) {
                    "stale"
                } else {
                    "counted"
                },
                total: totals
                    .get(&(c.metric.name.clone(), c.period.clone()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect::<Vec<_>>())
    });
    let events = match outcome {
        Ok(events) => events,
        Err(err @ AppError::QuotaExceeded { .. }) => {
            ctx.metrics.refusals.count(crate::metrics::Throttle::Quota);
            ctx.metrics
                .quota_rejections
                .with_label_values(&[
                    err.details()["metric"].as_str().unwrap_or(""),
                    tenant.tier.as_str(),
                ])
                .inc();
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    ctx.alert_signals.mark(&tenant.id);
    let count = |what: &str| events.iter().filter(|e| e.outcome == what).count();
    Ok(ReportOutcome {
        counted: count("counted"),
        duplicates: count("duplicate"),
        stale: count("stale"),
        events,
    })
}

/// Applies the gauge values among `counted`, in the report's order: a value measured before the
/// one held is stale (kept for its id, not applied). One read and at most two writes a gauge.
/// The places of the stale events.
async fn apply_gauges(
    tx: &mut store::Conn,
    tenant: &Tenant,
    counted: &[&Checked<'_>],
    now: chrono::NaiveDateTime,
) -> AppResult<HashSet<usize>> {
    let mut stale = HashSet::new();
    let mut gauges: Vec<&str> = Vec::new();
    for c in counted.iter().filter(|c| c.metric.is_gauge()) {
        if !gauges.contains(&c.metric.name.as_str()) {
            gauges.push(&c.metric.name);
        }
    }
    for name in gauges {
        let mut held = store::usage::gauge(tx, &tenant.id, name).await?;
        let before = held;
        for c in counted.iter().filter(|c| c.metric.name == name) {
            match held {
                Some((_, at)) if at > c.at => {
                    stale.insert(c.index);
                }
                _ => held = Some((c.amount, c.at)),
            }
        }
        if let Some((value, at)) = held.filter(|h| Some(*h) != before)
            && !store::usage::set_gauge(tx, &tenant.id, name, value, at, now).await?
        {
            // Another server wrote a later measurement meanwhile: this report's values are stale.
            stale.extend(
                counted
                    .iter()
                    .filter(|c| c.metric.name == name)
                    .map(|c| c.index),
            );
        }
    }
    Ok(stale)
}

/// Adds the increments among `counted` to their counters, one upsert per metric and period;
/// refuses (and so rolls back) an increment that would wrap a counter or take it past a hard
/// limit, naming the event that would.
async fn add_counters(
    tx: &mut store::Conn,
    tenant: &Tenant,
    counted: &[&Checked<'_>],
    hard_limit: &HashMap<&str, u64>,
    prefix: &(dyn Fn(usize) -> String + Sync),
    now: chrono::NaiveDateTime,
) -> AppResult<()> {
    // Grouped by (metric, period), in the order of their first event.
    let mut groups: Vec<((&str, &str), Vec<&Checked<'_>>)> = Vec::new();
    for c in counted.iter().filter(|c| !c.metric.is_gauge()) {
        let key = (c.metric.name.as_str(), c.period.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, events)) => events.push(c),
            None => groups.push((key, vec![c])),
        }
    }
    if groups.is_empty() {
        return Ok(());
    }
    let mut periods: Vec<String> = groups.iter().map(|((_, p), _)| (*p).to_owned()).collect();
    periods.sort();
    periods.dedup();
    let current: HashMap<(String, String), i64> =
        store::usage::counters_in(tx, &tenant.id, &periods)
            .await?
            .into_iter()
            .map(|row| ((row.metric, row.period), row.value))
            .collect();
    for ((metric, period), events) in &groups {
        // Overflow-checked: a counter never wraps or turns into a float.
        let mut sum: i64 = 0;
        let base = current
            .get(&((*metric).to_owned(), (*period).to_owned()))
            .copied()
            .unwrap_or(0);
        for c in events {
            sum = match sum
                .checked_add(c.amount)
                .filter(|s| base.checked_add(*s).is_some())
            {
                Some(sum) => sum,
                None => {
                    return Err(AppError::invalid(
                        format!("{}increment", prefix(c.index)),
                        "overflow",
                        format!(
                            "would take `{metric}` past the largest count ({}); nothing of this report was counted",
                            i64::MAX
                        ),
                    ));
                }
            };
        }
        let value = store::usage::add(tx, &tenant.id, metric, period, sum, now).await?;
        if let Some(&limit) = hard_limit.get(metric)
            && value.max(0) as u64 > limit
        {
            // The event that crosses the line, counting from the value before this report.
            let mut reached = value - sum;
            for c in events {
                reached += c.amount;
                if reached.max(0) as u64 > limit {
                    return Err(exceeded(tenant, c, reached, limit));
                }
            }
        }
    }
    Ok(())
}

fn exceeded(tenant: &Tenant, c: &Checked<'_>, value: i64, limit: u64) -> AppError {
    let used = (value - c.amount).max(0);
    AppError::QuotaExceeded {
        message: format!(
            "event `{}` would take `{}` to {value}, past the limit of {limit} of tenant {} (tier {}); nothing of this report was counted. Raise the tenant's limit or tier, or wait for the next period",
            c.event.id, c.metric.name, tenant.slug, tenant.tier
        ),
        details: json!({
            "metric": c.metric.name,
            "event": c.event.id,
            "used": used,
            "increment": c.amount,
            "limit": limit,
            "tier": tenant.tier,
            "period": c.period,
        }),
    }
}

/// How long a reported event's id is remembered: past the oldest timestamp a report may carry,
/// so that an event is never counted twice, and a day more.
pub const REMEMBER_IDS_DAYS: i64 = MAX_AGE_DAYS + 1;

/// Forgets the ids of events received before `before`; how many.
pub async fn forget_events_before(
    ctx: &Context,
    before: chrono::NaiveDateTime,
) -> AppResult<usize> {
    let mut conn = ctx.db.conn().await?;
    store::usage::sweep_events(&mut conn, before).await
}

/// Forgets the ids older than [`REMEMBER_IDS_DAYS`].
pub async fn forget_old_events(ctx: &Context) -> AppResult<usize> {
    forget_events_before(ctx, crate::clock::now() - Duration::days(REMEMBER_IDS_DAYS)).await
}
