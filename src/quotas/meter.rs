//! What the server meters itself: every authenticated tenant API request, as
//! `api_calls_per_minute` and `api_calls_per_month`.
//!
//! The request path checks the limits of the tenant's kept decision in O(1) and counts in
//! memory ([`crate::throttle::ApiCallMeter`]). A decision older than
//! `quotas.decision_ttl_seconds` is asked for again in the background, the old one serving
//! meanwhile. A request that finds no decision in force — none yet, one forgotten because any
//! server changed the tenant or its overrides (an override's trigger notifies the change feed),
//! or one a temporary override has outlived — waits for the policy: admitting it under no limit,
//! or an old one, would not be exact. The counts reach the database every
//! `quotas.flush_interval_ms` (5 s at most) with atomic adds, so a crash loses at most that
//! interval of API-call counts. The per-minute budget is this server's, plus what the other
//! servers had written at the last flush.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Timelike, Utc};

use crate::auth::Principal;
use crate::clock;
use crate::config::Window;
use crate::context::Context;
use crate::error::AppResult;
use crate::store;
use crate::tenants::{self, TenantScope};
use crate::throttle::{CallAdmitted, CallLimits, CallRefused, Limited, QuotaDecisions, Refusal};
use crate::transaction;

use super::catalogue::period_of;
use super::decision::Need;

/// Why a request was not admitted.
#[derive(Debug, Clone)]
pub enum RequestRefused {
    /// Its key's own per-minute limit is spent.
    KeyLimit { per_minute: u32, wait: Duration },
    /// Its tenant's API calls are at a hard limit.
    Calls(CallRefused),
    /// The shared rate limits cannot be checked (`redis_on_failure = closed`).
    Unavailable(String),
}

/// Admits an authenticated request: its key's own limit and its tenant's API-call limits — with
/// `redis_url`, the key's limit and the tenant's calls of this minute in one round trip to the
/// shared budgets. Failed attempts of others play no part. A tenant's call is counted for the
/// usage counters either way.
pub async fn admit_request(
    ctx: &Context,
    principal: &Principal,
) -> Result<Option<CallAdmitted>, RequestRefused> {
    let key = principal
        .key
        .as_ref()
        .map(|(id, per_minute)| (id.as_str(), *per_minute));
    let tenant = principal
        .tenant
        .as_ref()
        .filter(|_| ctx.config.quotas.meter_api_calls);
    let now = Utc::now();
    let at = now.naive_utc();
    let minute = period_of(Some(Window::Minute), at);
    let reset_minute = Duration::from_secs(60 - u64::from(now.second()));
    let limits = match tenant {
        Some(t) => call_limits(ctx, t).await,
        None => CallLimits::default(),
    };
    let shared_calls = match (tenant, limits.per_minute) {
        (Some(t), Some(limit)) if ctx.limits.shared.is_some() => Some((
            ctx.limits.shared_key(&format!("calls:{}:{minute}", t.id)),
            limit,
            reset_minute,
        )),
        _ => None,
    };
    let shared = ctx
        .limits
        .admit(key, tenant.map(|t| t.id.as_str()), shared_calls)
        .await;
    let counted = match shared {
        Ok(counted) => counted,
        Err(Refusal::Spent {
            what: Limited::Key,
            wait,
        }) => {
            return Err(RequestRefused::KeyLimit {
                per_minute: key.and_then(|(_, n)| n).unwrap_or(0),
                wait,
            });
        }
        Err(Refusal::Spent { wait, .. }) => {
            return Err(RequestRefused::Calls(CallRefused {
                metric: "api_calls_per_minute",
                limit: limits.per_minute.unwrap_or(0),
                retry_after: wait,
            }));
        }
        Err(Refusal::Unavailable(detail)) => return Err(RequestRefused::Unavailable(detail)),
    };
    let Some(tenant) = tenant else {
        return Ok(None);
    };
    // The shared budget decided this minute: this server only counts it (and keeps the month).
    let local = CallLimits {
        per_minute: if counted.is_some() {
            None
        } else {
            limits.per_minute
        },
        per_month: limits.per_month,
    };
    let month = period_of(Some(Window::Month), at);
    let next_month = if now.month() == 12 {
        NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(now.year(), now.month() + 1, 1)
    }
    .and_then(|d| d.and_hms_opt(0, 0, 0))
    .unwrap_or(at);
    let reset_month = (next_month - at).to_std().unwrap_or(Duration::from_secs(1));
    let admitted = ctx
        .api_calls
        .record(
            &tenant.id,
            (minute, reset_minute),
            (month, reset_month),
            local,
        )
        .map_err(RequestRefused::Calls)?;
    Ok(Some(match counted {
        Some((remaining, _)) => CallAdmitted {
            limit: limits.per_minute,
            remaining,
            reset: reset_minute,
        },
        None => admitted,
    }))
}

/// The tenant's hard limits on API calls, from its kept decision (asked for in the background
/// when missing or old: the request is not held up).
async fn call_limits(ctx: &Context, tenant: &TenantScope) -> CallLimits {
    let mut kept = ctx.quota_decisions.get(&tenant.id);
    // Without a decision in force (none yet, one forgotten because an override changed on
    // any server, or one a temporary override has outlived) the request waits for the policy:
    // admitting it under no limit, or an old one, would not be exact.
    if kept.as_ref().is_none_or(|d| d.outlived()) {
        if let Err(err) = refresh(ctx, &tenant.slug).await {
            tracing::warn!(tenant = %tenant.slug, "cannot decide the quota limits: {err}");
        }
        kept = ctx.quota_decisions.get(&tenant.id);
    }
    let ttl = Duration::from_secs(ctx.config.quotas.decision_ttl_seconds);
    if kept.as_ref().is_none_or(|d| d.decided_at.elapsed() >= ttl) {
        refresh_in_background(ctx, tenant);
    }
    kept.map_or(CallLimits::default(), |d| CallLimits {
        per_minute: QuotaDecisions::hard_limit(&d, "api_calls_per_minute"),
        per_month: QuotaDecisions::hard_limit(&d, "api_calls_per_month"),
    })
}

/// Asks the tenant's policy for a decision without holding up the request that found it
/// missing or old (one question per tenant at a time).
fn refresh_in_background(ctx: &Context, tenant: &TenantScope) {
    if !ctx.quota_decisions.begin_refresh(&tenant.id) {
        return;
    }
    let ctx = ctx.clone();
    let tenant = tenant.clone();
    tokio::spawn(async move {
        if let Err(err) = refresh(&ctx, &tenant.slug).await {
            tracing::warn!(tenant = %tenant.slug, "cannot refresh the quota decision: {err}");
        }
        ctx.quota_decisions.end_refresh(&tenant.id);
    });
}

async fn refresh(ctx: &Context, slug: &str) -> AppResult<()> {
    let tenant = tenants::get(ctx, slug).await?;
    // The kept decision is old (or missing), so `decide` asks the policy; a policy that fails
    // leaves the kept one in force.
    let standing = super::Standing::of(ctx, &tenant).await?;
    standing.decide(ctx, &tenant, Need::Limits).await?;
    Ok(())
}

/// Writes the API calls counted since the last flush; what cannot be written is kept for the
/// next one (the calls of a tenant purged since are dropped).
pub async fn flush(ctx: &Context) -> AppResult<()> {
    let _flushing = ctx.api_calls.flushing().await;
    let pending = ctx.api_calls.take_pending();
    if pending.is_empty() {
        return Ok(());
    }
    let now = clock::now();
    // Tenants purged since their calls were counted have nowhere to keep them.
    let ids: Vec<String> = pending
        .iter()
        .map(|(tenant, ..)| tenant.clone())
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let existing = match ctx.db.conn().await {
        Ok(mut conn) => store::tenants::existing_ids(&mut conn, &ids).await,
        Err(err) => Err(err),
    };
    let pending: Vec<_> = match existing {
        Ok(existing) => pending
            .into_iter()
            .filter(|(tenant, ..)| existing.contains(tenant))
            .collect(),
        Err(err) => {
            ctx.api_calls.restore_pending(pending);
            return Err(err);
        }
    };
    let written = transaction!(ctx.db, |tx| {
        let mut values = Vec::with_capacity(pending.len());
        for (tenant, metric, period, n) in &pending {
            values.push(store::usage::add(tx, tenant, metric, period, *n as i64, now).await?);
        }
        Ok(values)
    });
    match written {
        Ok(values) => {
            for ((tenant, metric, period, _), value) in pending.iter().zip(values) {
                ctx.api_calls
                    .set_base(tenant, metric, period, value.max(0) as u64);
                // Only a limit can make API calls raise or resolve an alert.
                let limited = ctx.quota_decisions.get(tenant).is_some_and(|d| {
                    d.decision
                        .metrics
                        .iter()
                        .any(|m| m.metric == *metric && m.limit.is_some())
                });
                if limited {
                    ctx.alert_signals.mark(tenant);
                }
            }
            Ok(())
        }
        Err(err) => {
            ctx.api_calls.restore_pending(pending);
            Err(err)
        }
    }
}

/// Flushes every `quotas.flush_interval_ms`, and hourly forgets the ids of reported events
/// older than they may be sent, until the server stops.
pub fn spawn_flusher(ctx: &Context) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    let every = Duration::from_millis(ctx.config.quotas.flush_interval_ms);
    tokio::spawn(async move {
        // (Reported events' ids too old to come again are forgotten by the `housekeeping` job.)
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = flush(&ctx).await {
                tracing::warn!("cannot write the counted API calls: {err}");
            }
            if let Err(err) = super::traffic::flush(&ctx).await {
                tracing::warn!("cannot write the tenants' API traffic: {err}");
            }
        }
    })
}
