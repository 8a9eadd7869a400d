//! Rate limits ([`Limits`]): kept by each server in memory (token buckets from `governor`), or
//! with `redis_url` shared by every server through Redis ([`shared`]) — the same budgets, one
//! round trip a check, or none while a tenant's calls come from a lease of its minute budget
//! ([`lease`]). The budgets are the per-minute limit of an API key that has one
//! ([`KeyLimits`]), a tenant's API calls a minute, and abuse limits on authentication
//! ([`AuthLimits`]):
//!
//! - logins started, per source address and per tenant;
//! - failed API-key authentications, per source address and per key (the key whose prefix the
//!   failed token named). Once a budget is spent, further *failed* attempts from that address,
//!   or against that key, are answered 429 instead of 401 until the bucket allows one again
//!   (one attempt every `60 / limit` seconds, at least a second). A correct key is never
//!   refused because of others' failures: a key's secret has 128 random bits, so these budgets
//!   only slow guessing down, and blocking the right key would let anyone who shares a proxy
//!   with its owner, or who knows its public prefix, lock it out.

use std::time::{Duration, Instant};

use crate::config::{AuthConfig, Config, FailMode};
use crate::metrics::Metrics;

mod auth;
mod calls;
mod decisions;
pub mod lease;
pub mod shared;
pub use auth::AuthLimits;
pub use calls::{API_CALLS_PER_DAY, ApiCallMeter, CallAdmitted, CallLimits, CallRefused};
pub use decisions::{CachedDecision, QuotaDecisions};
pub use shared::{Budget, Granted, Outcome, SharedBudgets, Unreachable};

/// Why a rate limit refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
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

/// What a failed attempt tried, for the failure budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An API key (budgets per address and per key).
    ApiKey,
    /// A portal password (budgets per address and per user name).
    Password,
    /// The state a login callback carries (a budget per address only).
    LoginState,
}

impl Credential {
    fn word(self) -> &'static str {
        match self {
            Credential::ApiKey => "key",
            Credential::Password => "password",
            Credential::LoginState => "state",
        }
    }

    /// The names of the address's and the subject's budgets and blocks.
    fn names(self, subject: Option<&str>, address: Option<&str>) -> [Option<String>; 2] {
        let subject_word = match self {
            Credential::ApiKey => "key",
            Credential::Password => "user",
            Credential::LoginState => "state",
        };
        [
            address.map(|a| format!("address:{a}")),
            subject.map(|s| format!("{subject_word}:{s}")),
        ]
    }
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

    /// With shared budgets, starts giving back the leased calls this server leaves unspent (the
    /// task ends when `limits` is dropped).
    pub fn spawn(limits: &std::sync::Arc<Self>) {
        if limits.shared.is_none() {
            return;
        }
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
            match shared.admit(&budgets).await {
                Ok(Outcome::Spent { wait, .. }) => {
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

    /// The failure budgets of `kind` that `subject` (a key's prefix, a user name) and `address`
    /// spend: (budget key, block key, limit per minute).
    fn failure_budgets(
        &self,
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> Vec<(String, String, u64)> {
        let (by_address, by_subject) = match kind {
            Credential::ApiKey => (
                self.config.key_failures_per_address_per_minute,
                self.config.key_failures_per_key_per_minute,
            ),
            Credential::Password => (
                self.config.password_failures_per_address_per_minute,
                self.config.password_failures_per_user_per_minute,
            ),
            // No subject: a state no login holds names nothing.
            Credential::LoginState => (self.config.callback_failures_per_address_per_minute, 1),
        };
        kind.names(subject, address)
            .into_iter()
            .zip([by_address, by_subject])
            .filter_map(|(name, limit)| {
                name.map(|name| {
                    (
                        format!("{}:{}-failures:{name}", self.prefix, kind.word()),
                        format!("{}:block:{}-{name}", self.prefix, kind.word()),
                        u64::from(limit),
                    )
                })
            })
            .collect()
    }

    /// Records a failed attempt of `kind` from `address` against `subject` (an API key's prefix
    /// when the token named a key that exists; a user name): the wait when the address or the
    /// subject is blocked, already or by this very attempt.
    pub async fn failed(
        &self,
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> Result<Option<Duration>, Refusal> {
        if let Some(shared) = &self.shared {
            let budgets = self.failure_budgets(kind, subject, address);
            let blocks: Vec<String> = budgets.iter().map(|(_, block, _)| block.clone()).collect();
            match shared.fail(&blocks, &budgets).await {
                Ok(wait) => return Ok(wait),
                Err(err) => self.unreachable(err)?,
            }
        }
        Ok(self.auth.failed(kind, subject, address))
    }

    /// How long attempts of `kind` from `address` or against `subject` are still refused
    /// without being checked (only password logins ask first: a password check is expensive,
    /// and a correct key is never refused).
    pub async fn blocked(
        &self,
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> Result<Option<Duration>, Refusal> {
        if let Some(shared) = &self.shared {
            let blocks: Vec<String> = self
                .failure_budgets(kind, subject, address)
                .into_iter()
                .map(|(_, block, _)| block)
                .collect();
            match shared.blocked(&blocks).await {
                Ok(wait) => return Ok(wait),
                Err(err) => self.unreachable(err)?,
            }
        }
        Ok(self.auth.blocked(kind, subject, address))
    }

    /// Records a failed key attempt (see [`Limits::failed`]).
    pub async fn key_failed(
        &self,
        key_prefix: Option<&str>,
        address: Option<&str>,
    ) -> Result<Option<Duration>, Refusal> {
        self.failed(Credential::ApiKey, key_prefix, address).await
    }

    /// Admits an authenticated request: its key's own per-minute limit, and its tenant's API
    /// calls of this minute (`calls`: the counter's key, the limit and the time left in the
    /// minute). The remaining calls when the shared budgets counted them; `None` when this
    /// server's meter is to count them. Failure budgets play no part: an authenticated request
    /// is never refused because of failed attempts.
    ///
    /// A request whose key has no limit of its own takes its tenant's call from this server's
    /// lease, and asks Redis only for a new lease.
    pub async fn admit(
        &self,
        key: Option<(&str, Option<u32>)>,
        tenant_id: Option<&str>,
        calls: Option<(String, u64, Duration)>,
    ) -> Result<Option<(u64, Duration)>, Refusal> {
        if let Some(shared) = &self.shared {
            let own_limit = matches!(key, Some((_, Some(_))));
            let mut lease = 1;
            let mut leasing = None;
            if !own_limit {
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
            if budgets.is_empty() {
                return Ok(None);
            }
            let outcome = shared.admit(&budgets).await;
            if let Some(tenant) = leasing
                && !matches!(outcome, Ok(Outcome::Admitted(_)))
            {
                self.leases.not_granted(tenant);
            }
            match outcome {
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
pub(crate) const MAX_TRACKED_KEYS: usize = 10_000;

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
