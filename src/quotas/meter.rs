//! What the server meters itself: every authenticated tenant API request, as
//! `api_calls_per_minute` and `api_calls_per_month`.
//!
//! The request path checks the limits of the tenant's kept decision in O(1) and counts in
//! memory ([`crate::limits::ApiCallMeter`]); it never waits for the policy (a decision that is
//! missing or old is asked for in the background, and the call is admitted meanwhile). The
//! counts reach the database every `quotas.flush_interval_ms` (5 s at most) with atomic adds,
//! so a crash loses at most that interval of API-call counts. The per-minute budget is this
//! server's, plus what the other servers had written at the last flush.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Timelike, Utc};

use crate::clock;
use crate::config::Window;
use crate::context::Context;
use crate::error::AppResult;
use crate::limits::{CallAdmitted, CallLimits, CallRefused, QuotaDecisions};
use crate::store;
use crate::tenants::{self, TenantScope};
use crate::transaction;

use super::catalogue::period_of;
use super::decision::Need;

/// Counts one API call of `tenant`, unless it would pass a hard limit on API calls.
pub fn admit_api_call(ctx: &Context, tenant: &TenantScope) -> Result<CallAdmitted, CallRefused> {
    let kept = ctx.quota_decisions.get(&tenant.id);
    let ttl = Duration::from_secs(ctx.config.quotas.decision_ttl_seconds);
    if kept.as_ref().is_none_or(|d| d.decided_at.elapsed() >= ttl) {
        refresh_in_background(ctx, tenant);
    }
    let limits = kept.map_or(CallLimits::default(), |d| CallLimits {
        per_minute: QuotaDecisions::hard_limit(&d, "api_calls_per_minute"),
        per_month: QuotaDecisions::hard_limit(&d, "api_calls_per_month"),
    });
    let now = Utc::now();
    let at = now.naive_utc();
    let minute = period_of(Some(Window::Minute), at);
    let month = period_of(Some(Window::Month), at);
    let reset_minute = Duration::from_secs(60 - u64::from(now.second()));
    let next_month = if now.month() == 12 {
        NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(now.year(), now.month() + 1, 1)
    }
    .and_then(|d| d.and_hms_opt(0, 0, 0))
    .unwrap_or(at);
    let reset_month = (next_month - at).to_std().unwrap_or(Duration::from_secs(1));
    ctx.api_calls.record(
        &tenant.id,
        (minute, reset_minute),
        (month, reset_month),
        limits,
    )
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
                ctx.alerting.mark(tenant);
            }
            Ok(())
        }
        Err(err) => {
            ctx.api_calls.restore_pending(pending);
            Err(err)
        }
    }
}

/// Flushes every `quotas.flush_interval_ms` until the context is dropped by everyone else.
pub fn spawn_flusher(ctx: &Context) -> tokio::task::JoinHandle<()> {
    let ctx = ctx.clone();
    let every = Duration::from_millis(ctx.config.quotas.flush_interval_ms);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = flush(&ctx).await {
                tracing::warn!("cannot write the counted API calls: {err}");
            }
        }
    })
}
