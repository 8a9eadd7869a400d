//! Rate limits kept by each server in memory (token buckets from `governor`): the per-minute
//! limit of an API key that has one ([`KeyLimits`]), and abuse limits on authentication
//! ([`AuthLimits`]):
//!
//! - logins started, per source address and per tenant;
//! - failed API-key authentications, per source address and per tenant (of the key the failed
//!   token named). Once a budget is spent, *every* key attempt from that address, or against that
//!   tenant's keys, is refused with 429 until the bucket has refilled — refusing only the failures
//!   would let a guesser go on and tell a hit by its different answer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::AuthConfig;

/// Keyed limiters hold a cell per key; above this many keys, stale ones are dropped.
const MAX_TRACKED_KEYS: usize = 10_000;

pub struct AuthLimits {
    logins_per_address: DefaultKeyedRateLimiter<String>,
    logins_per_tenant: DefaultKeyedRateLimiter<String>,
    key_failures_per_address: DefaultKeyedRateLimiter<String>,
    key_failures_per_tenant: DefaultKeyedRateLimiter<String>,
    /// `address:<ip>` / `tenant:<id>` → refused until then.
    blocked: Mutex<HashMap<String, Instant>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("non-zero"))
}

fn take(limiter: &DefaultKeyedRateLimiter<String>, key: &str) -> Result<(), Duration> {
    if limiter.len() > MAX_TRACKED_KEYS {
        limiter.retain_recent();
    }
    limiter
        .check_key(&key.to_owned())
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

impl AuthLimits {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            logins_per_address: RateLimiter::keyed(per_minute(
                config.logins_per_address_per_minute,
            )),
            logins_per_tenant: RateLimiter::keyed(per_minute(config.logins_per_tenant_per_minute)),
            key_failures_per_address: RateLimiter::keyed(per_minute(
                config.key_failures_per_address_per_minute,
            )),
            key_failures_per_tenant: RateLimiter::keyed(per_minute(
                config.key_failures_per_tenant_per_minute,
            )),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one login start from the address's and the tenant's budgets; the wait when either
    /// is spent.
    pub fn check_login(&self, tenant_id: &str, address: Option<&str>) -> Result<(), Duration> {
        if let Some(address) = address {
            take(&self.logins_per_address, address)?;
        }
        take(&self.logins_per_tenant, tenant_id)
    }

    /// How long key attempts from `address` or against `tenant_id`'s keys are still refused.
    pub fn key_blocked(&self, tenant_id: Option<&str>, address: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("auth limits lock");
        blocked.retain(|_, until| *until > now);
        [
            address.map(|a| format!("address:{a}")),
            tenant_id.map(|t| format!("tenant:{t}")),
        ]
        .into_iter()
        .flatten()
        .filter_map(|key| blocked.get(&key).map(|until| *until - now))
        .max()
    }

    /// Records a failed key attempt; once a budget is spent, its address or tenant is blocked
    /// until the bucket refills — and the wait, when this very attempt spent it.
    pub fn key_failed(&self, tenant_id: Option<&str>, address: Option<&str>) -> Option<Duration> {
        let mut blocks = Vec::new();
        if let Some(address) = address
            && let Err(wait) = take(&self.key_failures_per_address, address)
        {
            blocks.push((format!("address:{address}"), wait));
        }
        if let Some(tenant) = tenant_id
            && let Err(wait) = take(&self.key_failures_per_tenant, tenant)
        {
            blocks.push((format!("tenant:{tenant}"), wait));
        }
        let longest = blocks.iter().map(|(_, wait)| *wait).max();
        if !blocks.is_empty() {
            let now = Instant::now();
            let mut blocked = self.blocked.lock().expect("auth limits lock");
            for (key, wait) in blocks {
                // At least a second, so that a refill of one cell does not reopen at once.
                blocked.insert(key, now + wait.max(Duration::from_secs(1)));
            }
        }
        longest.map(|wait| wait.max(Duration::from_secs(1)))
    }
}

/// Per-key rate limits (requests per minute, per server), as token buckets (`governor`).
#[derive(Default)]
pub struct KeyLimits {
    limiters: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (u32, std::sync::Arc<governor::DefaultDirectRateLimiter>),
        >,
    >,
}

impl KeyLimits {
    /// Takes one request from the key's bucket; the wait until the next one when it is empty.
    pub fn check(&self, key_id: &str, per_minute: u32) -> Result<(), std::time::Duration> {
        use governor::clock::Clock as _;
        let limiter = {
            let mut map = self.limiters.lock().expect("key limits lock");
            let entry = map
                .entry(key_id.to_owned())
                .or_insert_with(|| (per_minute, std::sync::Arc::new(Self::limiter(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, std::sync::Arc::new(Self::limiter(per_minute)));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    fn limiter(per_minute: u32) -> governor::DefaultDirectRateLimiter {
        let n = std::num::NonZeroU32::new(per_minute.max(1)).expect("non-zero");
        governor::RateLimiter::direct(governor::Quota::per_minute(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(n: u32) -> AuthLimits {
        AuthLimits::new(&AuthConfig {
            logins_per_address_per_minute: n,
            logins_per_tenant_per_minute: 1000,
            key_failures_per_address_per_minute: n,
            key_failures_per_tenant_per_minute: 1000,
            ..AuthConfig::default()
        })
    }

    #[test]
    fn logins_beyond_the_address_budget_wait() {
        let limits = limits(2);
        assert!(limits.check_login("t", Some("10.0.0.1")).is_ok());
        assert!(limits.check_login("t", Some("10.0.0.1")).is_ok());
        let wait = limits.check_login("t", Some("10.0.0.1")).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(30));
        assert!(limits.check_login("t", Some("10.0.0.2")).is_ok());
    }

    #[test]
    fn spent_key_failures_block_the_address_but_not_others() {
        let limits = limits(2);
        for _ in 0..2 {
            assert!(limits.key_failed(Some("t"), Some("10.0.0.1")).is_none());
            assert!(limits.key_blocked(Some("t"), Some("10.0.0.1")).is_none());
        }
        assert!(limits.key_failed(Some("t"), Some("10.0.0.1")).is_some());
        assert!(limits.key_blocked(None, Some("10.0.0.1")).is_some());
        assert!(limits.key_blocked(Some("t"), Some("10.0.0.9")).is_none());
    }
}

/// The quota decisions of tenants as their policy last gave them, kept by each server so that
/// the policy is asked only when a tenant's tier, overrides or usage change, or when a decision
/// is older than its time to live.
#[derive(Default)]
pub struct QuotaDecisions {
    by_tenant: Mutex<HashMap<String, std::sync::Arc<CachedDecision>>>,
    /// Tenants whose policy is being asked in the background (one question at a time).
    refreshing: Mutex<std::collections::HashSet<String>>,
}

/// A policy's decision on a tenant.
#[derive(Debug, Clone)]
pub struct CachedDecision {
    /// What the decision was asked on: the policy, the tier and the overrides.
    pub key: String,
    /// The usage it was asked on (a fingerprint).
    pub usage: u64,
    pub decided_at: Instant,
    /// Each metric's limit without the tenant's overrides (the tier's default).
    pub defaults: HashMap<String, Option<u64>>,
    /// Whether each metric's quota is hard (refused past its limit).
    pub hard: HashMap<String, bool>,
    pub decision: crate::plugins::Decision,
}

impl QuotaDecisions {
    pub fn get(&self, tenant_id: &str) -> Option<std::sync::Arc<CachedDecision>> {
        self.by_tenant
            .lock()
            .expect("quota decisions")
            .get(tenant_id)
            .cloned()
    }

    pub fn put(&self, tenant_id: &str, decision: CachedDecision) -> std::sync::Arc<CachedDecision> {
        let decision = std::sync::Arc::new(decision);
        let mut map = self.by_tenant.lock().expect("quota decisions");
        if map.len() >= MAX_TRACKED_KEYS * 10 && !map.contains_key(tenant_id) {
            // Bounded: the oldest half goes (it is asked again when needed).
            let mut ages: Vec<(Instant, String)> =
                map.iter().map(|(k, v)| (v.decided_at, k.clone())).collect();
            ages.sort();
            for (_, key) in ages.into_iter().take(map.len() / 2) {
                map.remove(&key);
            }
        }
        map.insert(tenant_id.to_owned(), decision.clone());
        decision
    }

    /// The hard limit of `metric` in the tenant's decision, if it has one.
    pub fn hard_limit(decision: &CachedDecision, metric: &str) -> Option<u64> {
        if !decision.hard.get(metric).copied().unwrap_or(true) {
            return None;
        }
        decision
            .decision
            .metrics
            .iter()
            .find(|m| m.metric == metric)
            .and_then(|m| m.limit)
    }

    /// Marks a background question to the tenant's policy as begun; false when one is already
    /// under way.
    pub fn begin_refresh(&self, tenant_id: &str) -> bool {
        self.refreshing
            .lock()
            .expect("quota refreshes")
            .insert(tenant_id.to_owned())
    }

    pub fn end_refresh(&self, tenant_id: &str) {
        self.refreshing
            .lock()
            .expect("quota refreshes")
            .remove(tenant_id);
    }

    /// Forgets a tenant's decision: the next use asks its policy.
    pub fn forget(&self, tenant_id: &str) {
        self.by_tenant
            .lock()
            .expect("quota decisions")
            .remove(tenant_id);
    }
}

/// The API calls of each tenant as this server counts them: the calls of the current minute
/// (for its per-minute limit), and what is not yet written to the database (flushed every few
/// seconds by `quotas::meter`).
#[derive(Default)]
pub struct ApiCallMeter {
    by_tenant: Mutex<HashMap<String, TenantCalls>>,
}

#[derive(Debug, Default)]
struct TenantCalls {
    /// The minute counted (`2026-12-04T09:15`) and the calls in it on this server, plus what
    /// the other servers had counted in it at the last flush.
    minute: String,
    in_minute: u64,
    minute_base: u64,
    /// The month counted (`2026-12`), the calls in it at the last flush (every server's) and
    /// this server's since.
    month: String,
    month_base: u64,
    /// Calls not yet written, by (metric, period).
    pending: HashMap<(&'static str, String), u64>,
}

/// The counter of a tenant's API calls per day: not a quota, shown in the usage summary.
pub const API_CALLS_PER_DAY: &str = "api_calls_per_day";

/// The limits that apply to a tenant's API calls, from its quota decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLimits {
    pub per_minute: Option<u64>,
    pub per_month: Option<u64>,
}

/// A refused call: which limit, and how long until it resets.
#[derive(Debug, Clone)]
pub struct CallRefused {
    pub metric: &'static str,
    pub limit: u64,
    pub retry_after: Duration,
}

/// An admitted call: the per-minute budget after it (for the `RateLimit` headers).
#[derive(Debug, Clone, Copy)]
pub struct CallAdmitted {
    pub limit: Option<u64>,
    pub remaining: u64,
    pub reset: Duration,
}

impl ApiCallMeter {
    /// Counts one API call of `tenant_id` at `minute`/`month`, unless it would pass a hard
    /// limit; `reset_minute` and `reset_month` are the times left in each.
    pub fn record(
        &self,
        tenant_id: &str,
        (minute, reset_minute): (String, Duration),
        (month, reset_month): (String, Duration),
        limits: CallLimits,
    ) -> Result<CallAdmitted, CallRefused> {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let calls = map.entry(tenant_id.to_owned()).or_default();
        if calls.minute != minute {
            calls.minute = minute.clone();
            calls.in_minute = 0;
            calls.minute_base = 0;
        }
        if calls.month != month {
            calls.month = month.clone();
            calls.month_base = 0;
        }
        let minute_used = calls.minute_base + calls.in_minute;
        if let Some(limit) = limits.per_minute
            && minute_used >= limit
        {
            return Err(CallRefused {
                metric: "api_calls_per_minute",
                limit,
                retry_after: reset_minute,
            });
        }
        let month_pending = calls
            .pending
            .get(&("api_calls_per_month", month.clone()))
            .copied()
            .unwrap_or(0);
        if let Some(limit) = limits.per_month
            && calls.month_base + month_pending >= limit
        {
            return Err(CallRefused {
                metric: "api_calls_per_month",
                limit,
                retry_after: reset_month,
            });
        }
        calls.in_minute += 1;
        // The day's calls, for the usage summary (`2026-12-04T09:15` → `2026-12-04`).
        let day = minute.get(..10).unwrap_or(&minute).to_owned();
        *calls.pending.entry((API_CALLS_PER_DAY, day)).or_default() += 1;
        *calls
            .pending
            .entry(("api_calls_per_minute", minute))
            .or_default() += 1;
        *calls
            .pending
            .entry(("api_calls_per_month", month))
            .or_default() += 1;
        Ok(CallAdmitted {
            limit: limits.per_minute,
            remaining: limits
                .per_minute
                .map_or(u64::MAX, |l| l.saturating_sub(minute_used + 1)),
            reset: reset_minute,
        })
    }

    /// Takes what is not yet written: (tenant id, metric, period, calls).
    pub fn take_pending(&self) -> Vec<(String, &'static str, String, u64)> {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let mut taken = Vec::new();
        for (tenant, calls) in map.iter_mut() {
            for ((metric, period), n) in calls.pending.drain() {
                taken.push((tenant.clone(), metric, period, n));
            }
        }
        map.retain(|_, calls| calls.in_minute > 0 || calls.month_base > 0);
        taken
    }

    /// Gives back what could not be written, to be written with the next flush.
    pub fn restore_pending(&self, pending: Vec<(String, &'static str, String, u64)>) {
        let mut map = self.by_tenant.lock().expect("api call meter");
        for (tenant, metric, period, n) in pending {
            *map.entry(tenant)
                .or_default()
                .pending
                .entry((metric, period))
                .or_default() += n;
        }
    }

    /// What the database holds after a flush (every server's calls): the base this server
    /// counts on from now.
    pub fn set_base(&self, tenant_id: &str, metric: &str, period: &str, value: u64) {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let Some(calls) = map.get_mut(tenant_id) else {
            return;
        };
        match metric {
            "api_calls_per_month" if calls.month == period => calls.month_base = value,
            "api_calls_per_minute" if calls.minute == period => {
                // The database holds this server's calls too: the others' are the rest.
                calls.minute_base = value.saturating_sub(calls.in_minute);
            }
            _ => {}
        }
    }
}
