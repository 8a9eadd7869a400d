//! Rate limits ([`Limits`]): kept by each server in memory (token buckets from `governor`), or
//! with `redis_url` shared by every server through Redis ([`shared`]) — the same budgets, one
//! round trip a check, or none while a tenant's calls come from a lease of its minute budget
//! ([`lease`]) and this server hears every block set ([`shared::BlocksFeed`]). The budgets are the per-minute limit of an API key that has one
//! ([`KeyLimits`]), a tenant's API calls a minute, and abuse limits on authentication
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

use crate::config::{AuthConfig, Config, FailMode};
use crate::metrics::Metrics;

mod calls;
mod decisions;
pub mod lease;
pub mod shared;
pub use calls::{API_CALLS_PER_DAY, ApiCallMeter, CallAdmitted, CallLimits, CallRefused};
pub use decisions::{CachedDecision, QuotaDecisions};
pub use shared::{Budget, Granted, Outcome, SharedBudgets, Unreachable};

/// Why a rate limit refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Key attempts from this address, or against this tenant's keys, are blocked for a while.
    Blocked(Duration),
    /// A budget is spent: which one, and the wait until it allows again.
    Spent { what: Limited, wait: Duration },
    /// The shared budgets cannot be checked and `redis_on_failure` is `closed`.
    Unavailable(String),
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Logins,
    Key,
    TenantCalls,
}

/// Every rate limit of the server: in this server's memory, or — with `redis_url` — in one
/// Redis shared by every server, one round trip a check. While Redis cannot answer,
/// `redis_on_failure` decides: `open` falls back to this server's own budgets, `closed` refuses.
pub struct Limits {
    pub auth: AuthLimits,
    pub keys: KeyLimits,
    pub shared: Option<SharedBudgets>,
    /// Calls of tenants' minute budgets this server leased from the shared ones.
    leases: lease::Leases,
    on_failure: FailMode,
    config: AuthConfig,
    /// What every shared budget's Redis key starts with.
    prefix: String,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Limits {
    pub fn new(config: &Config, metrics: std::sync::Arc<Metrics>) -> anyhow::Result<Self> {
        let shared = match &config.redis_url {
            Some(url) => {
                metrics.register_redis();
                Some(SharedBudgets::new(
                    url,
                    &config.redis_prefix,
                    Duration::from_millis(config.redis_timeout_ms),
                    metrics,
                )?)
            }
            None => None,
        };
        Ok(Self {
            auth: AuthLimits::new(&config.auth),
            keys: KeyLimits::default(),
            shared,
            leases: lease::Leases::default(),
            on_failure: config.redis_on_failure,
            config: config.auth.clone(),
            prefix: config.redis_prefix.clone(),
        })
    }

    /// With shared budgets, starts hearing the blocks every server sets and giving back the
    /// leased calls this server leaves unspent (each task ends when `limits` is dropped).
    pub fn spawn(limits: &std::sync::Arc<Self>) {
        let Some(shared) = &limits.shared else {
            return;
        };
        let weak = std::sync::Arc::downgrade(limits);
        tokio::spawn(shared.feed().run(move |block| {
            let Some(limits) = weak.upgrade() else {
                return false;
            };
            if let Some((name, wait)) = block {
                limits.auth.block(name.to_owned(), wait);
            }
            true
        }));
        let weak = std::sync::Arc::downgrade(limits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease::IDLE / 5);
            loop {
                tick.tick().await;
                let Some(limits) = weak.upgrade() else {
                    return;
                };
                limits.give_back(limits.leases.idle(Instant::now())).await;
            }
        });
    }

    /// Gives back every leased call this server has not spent (a server stopping).
    pub async fn give_back_all(&self) {
        self.give_back(self.leases.drain()).await;
    }

    async fn give_back(&self, unspent: Vec<(String, u64)>) {
        let Some(shared) = &self.shared else {
            return;
        };
        for (counter, calls) in unspent {
            if let Err(err) = shared.give_back(&counter, calls).await {
                tracing::debug!("cannot give back {calls} leased calls: {err}");
            }
        }
    }

    /// The Redis key of a shared budget named `name`.
    pub fn shared_key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// What to do when Redis did not answer: `Ok` to decide with this server's own budgets
    /// (fail open), else the refusal (fail closed).
    fn unreachable(&self, err: Unreachable) -> Result<(), Refusal> {
        match self.on_failure {
            FailMode::Open => Ok(()),
            FailMode::Closed => Err(Refusal::Unavailable(format!(
                "{err}: rate limits cannot be checked, so requests are refused (redis_on_failure = closed)"
            ))),
        }
    }

    /// Takes one login start from the address's and the tenant's budgets.
    pub async fn check_login(&self, tenant_id: &str, address: Option<&str>) -> Result<(), Refusal> {
        if let Some(shared) = &self.shared {
            let mut budgets = Vec::new();
            if let Some(address) = address {
                budgets.push(Budget::Gcra {
                    key: format!("{}:logins:address:{address}", self.prefix),
                    limit: u64::from(self.config.logins_per_address_per_minute),
                    period: MINUTE,
                });
            }
            budgets.push(Budget::Gcra {
                key: format!("{}:logins:tenant:{tenant_id}", self.prefix),
                limit: u64::from(self.config.logins_per_tenant_per_minute),
                period: MINUTE,
            });
            match shared.admit(&[], &budgets).await {
                Ok(Outcome::Spent { wait, .. } | Outcome::Blocked(wait)) => {
                    return Err(Refusal::Spent {
                        what: Limited::Logins,
                        wait,
                    });
                }
                Ok(Outcome::Admitted(_)) => return Ok(()),
                Err(err) => self.unreachable(err)?,
            }
        }
        self.auth
            .check_login(tenant_id, address)
            .map_err(|wait| Refusal::Spent {
                what: Limited::Logins,
                wait,
            })
    }

    fn block_keys(&self, tenant_id: Option<&str>, address: Option<&str>) -> Vec<String> {
        [
            address.map(|a| format!("{}:block:address:{a}", self.prefix)),
            tenant_id.map(|t| format!("{}:block:tenant:{t}", self.prefix)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Records a failed key attempt: the wait when its address or tenant is blocked, already
    /// or by this very attempt.
    pub async fn key_failed(
        &self,
        tenant_id: Option<&str>,
        address: Option<&str>,
    ) -> Result<Option<Duration>, Refusal> {
        if let Some(shared) = &self.shared {
            let mut budgets = Vec::new();
            if let Some(a) = address {
                budgets.push((
                    format!("{}:key-failures:address:{a}", self.prefix),
                    format!("{}:block:address:{a}", self.prefix),
                    u64::from(self.config.key_failures_per_address_per_minute),
                ));
            }
            if let Some(t) = tenant_id {
                budgets.push((
                    format!("{}:key-failures:tenant:{t}", self.prefix),
                    format!("{}:block:tenant:{t}", self.prefix),
                    u64::from(self.config.key_failures_per_tenant_per_minute),
                ));
            }
            match shared
                .fail(&self.block_keys(tenant_id, address), &budgets)
                .await
            {
                Ok(None) => return Ok(None),
                Ok(Some((wait, held))) => {
                    // Kept here too: this server refuses the next attempts before any lookup.
                    let names = [
                        address.map(|a| format!("address:{a}")),
                        tenant_id.map(|t| format!("tenant:{t}")),
                    ];
                    for (name, held) in names.into_iter().flatten().zip(held) {
                        if held {
                            self.auth.block(name, wait);
                        }
                    }
                    return Ok(Some(wait));
                }
                Err(err) => self.unreachable(err)?,
            }
        }
        if let Some(wait) = self.auth.key_blocked(tenant_id, address) {
            return Ok(Some(wait));
        }
        Ok(self.auth.key_failed(tenant_id, address))
    }

    /// Admits an authenticated request: the blocks on its key's address and tenant, its key's
    /// own per-minute limit, and its tenant's API calls of this minute (`calls`: the counter's
    /// key, the limit and the time left in the minute). The remaining calls when the shared
    /// budgets counted them; `None` when this server's meter is to count them.
    ///
    /// While this server hears every block set (so that its own record of blocks is whole), a
    /// request whose key has no limit of its own takes its tenant's call from this server's
    /// lease, and asks Redis only for a new lease.
    pub async fn admit(
        &self,
        key: Option<(&str, Option<u32>)>,
        tenant_id: Option<&str>,
        address: Option<&str>,
        calls: Option<(String, u64, Duration)>,
    ) -> Result<Option<(u64, Duration)>, Refusal> {
        if let Some(shared) = &self.shared {
            let own_limit = matches!(key, Some((_, Some(_))));
            let mut lease = 1;
            let mut leasing = None;
            if !own_limit && shared.feed_live() {
                match (&calls, tenant_id) {
                    (None, _) => return Ok(None),
                    (Some((counter, limit, left)), Some(tenant)) => {
                        match self.leases.take(tenant, counter, *limit, Instant::now()) {
                            lease::Take::Local { remaining } => {
                                shared.count_leased();
                                return Ok(Some((remaining, *left)));
                            }
                            lease::Take::Lease(n) => {
                                lease = n;
                                leasing = Some(tenant);
                            }
                            lease::Take::One => {}
                        }
                    }
                    (Some(_), None) => {}
                }
            }
            let blocks = if key.is_some() {
                self.block_keys(tenant_id, address)
            } else {
                Vec::new()
            };
            let mut budgets = Vec::new();
            let mut whats = Vec::new();
            if let Some((id, Some(per_minute))) = key {
                budgets.push(Budget::Gcra {
                    key: format!("{}:key:{id}", self.prefix),
                    limit: u64::from(per_minute),
                    period: MINUTE,
                });
                whats.push(Limited::Key);
            }
            if let Some((counter, limit, left)) = &calls {
                budgets.push(Budget::Window {
                    key: counter.clone(),
                    limit: *limit,
                    window: *left,
                    lease,
                });
                whats.push(Limited::TenantCalls);
            }
            if blocks.is_empty() && budgets.is_empty() {
                return Ok(None);
            }
            let outcome = shared.admit(&blocks, &budgets).await;
            if let Some(tenant) = leasing
                && !matches!(outcome, Ok(Outcome::Admitted(_)))
            {
                self.leases.not_granted(tenant);
            }
            match outcome {
                Ok(Outcome::Blocked(wait)) => return Err(Refusal::Blocked(wait)),
                Ok(Outcome::Spent { index, wait }) => {
                    return Err(Refusal::Spent {
                        what: whats.get(index).copied().unwrap_or(Limited::TenantCalls),
                        wait,
                    });
                }
                Ok(Outcome::Admitted(granted)) => {
                    let Some((counter, limit, _)) = &calls else {
                        return Ok(None);
                    };
                    let Some(window) = granted.last().copied() else {
                        return Ok(None);
                    };
                    if let Some(tenant) = leasing {
                        self.leases.granted(
                            tenant,
                            counter,
                            *limit,
                            window.granted,
                            window.remaining,
                            Instant::now(),
                        );
                    }
                    // What this server leased is the tenant's to spend too.
                    return Ok(Some((
                        window.remaining + window.granted.saturating_sub(1),
                        window.reset,
                    )));
                }
                Err(err) => self.unreachable(err)?,
            }
        }
        // This server's blocks were checked when the key was (`auth::authenticate_key`).
        if let Some((id, Some(per_minute))) = key
            && let Err(wait) = self.keys.check(id, per_minute)
        {
            return Err(Refusal::Spent {
                what: Limited::Key,
                wait,
            });
        }
        Ok(None)
    }
}

/// Keyed limiters hold a cell per key; above this many keys, stale ones are dropped.
pub(super) const MAX_TRACKED_KEYS: usize = 10_000;

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

    /// Blocks `name` (`address:<ip>`, `tenant:<id>`) here for `wait`: a block the shared budgets
    /// set, kept so that this server refuses before any lookup.
    pub fn block(&self, name: String, wait: Duration) {
        let until = Instant::now() + wait;
        let mut blocked = self.blocked.lock().expect("auth limits lock");
        let at = blocked.entry(name).or_insert(until);
        *at = (*at).max(until);
    }

    /// How long key attempts from `address` or against `tenant_id`'s keys are still refused.
    pub fn key_blocked(&self, tenant_id: Option<&str>, address: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("auth limits lock");
        if blocked.is_empty() {
            return None;
        }
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
