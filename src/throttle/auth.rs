//! This server's own abuse budgets on authentication ([`AuthLimits`]): logins started, and
//! failed API-key and password attempts, as `governor` token buckets; used alone without
//! `redis_url`, and when Redis does not answer and `redis_on_failure` is `open`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{Credential, MAX_TRACKED_KEYS};
use crate::config::AuthConfig;

pub struct AuthLimits {
    logins_per_address: DefaultKeyedRateLimiter<String>,
    logins_per_tenant: DefaultKeyedRateLimiter<String>,
    key_failures_per_address: DefaultKeyedRateLimiter<String>,
    key_failures_per_key: DefaultKeyedRateLimiter<String>,
    password_failures_per_address: DefaultKeyedRateLimiter<String>,
    password_failures_per_user: DefaultKeyedRateLimiter<String>,
    state_failures_per_address: DefaultKeyedRateLimiter<String>,
    /// `<kind>-address:<ip>` / `key-key:<prefix>` / `password-user:<name>` → failed attempts
    /// refused until then.
    blocked: Mutex<HashMap<String, Instant>>,
    /// Password checks running at once (`auth.max_concurrent_password_checks`).
    pub password_checks: tokio::sync::Semaphore,
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
        let keyed = |n| RateLimiter::keyed(per_minute(n));
        Self {
            logins_per_address: keyed(config.logins_per_address_per_minute),
            logins_per_tenant: keyed(config.logins_per_tenant_per_minute),
            key_failures_per_address: keyed(config.key_failures_per_address_per_minute),
            key_failures_per_key: keyed(config.key_failures_per_key_per_minute),
            password_failures_per_address: keyed(config.password_failures_per_address_per_minute),
            password_failures_per_user: keyed(config.password_failures_per_user_per_minute),
            state_failures_per_address: keyed(config.callback_failures_per_address_per_minute),
            blocked: Mutex::new(HashMap::new()),
            password_checks: tokio::sync::Semaphore::new(
                config.max_concurrent_password_checks.max(1) as usize,
            ),
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

    fn block_names(
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> [Option<String>; 2] {
        kind.names(subject, address)
            .map(|name| name.map(|n| format!("{}-{n}", kind.word())))
    }

    /// How long failed attempts of `kind` from `address` or against `subject` stay refused.
    pub fn blocked(
        &self,
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> Option<Duration> {
        let now = Instant::now();
        let blocked = self.blocked.lock().expect("auth limits lock");
        Self::block_names(kind, subject, address)
            .iter()
            .flatten()
            .filter_map(|name| blocked.get(name))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max()
    }

    /// Records a failed attempt of `kind`: the wait when the address or the subject is
    /// blocked, already or by this very attempt (a spent budget blocks them until its bucket
    /// allows again, at least a second).
    pub fn failed(
        &self,
        kind: Credential,
        subject: Option<&str>,
        address: Option<&str>,
    ) -> Option<Duration> {
        if let Some(held) = self.blocked(kind, subject, address) {
            return Some(held);
        }
        let (by_address, by_subject) = match kind {
            Credential::ApiKey => (
                &self.key_failures_per_address,
                Some(&self.key_failures_per_key),
            ),
            Credential::Password => (
                &self.password_failures_per_address,
                Some(&self.password_failures_per_user),
            ),
            Credential::LoginState => (&self.state_failures_per_address, None),
        };
        let spent = [
            address.and_then(|a| take(by_address, a).err()),
            subject
                .zip(by_subject)
                .and_then(|(s, limiter)| take(limiter, s).err()),
        ];
        let now = Instant::now();
        let mut blocked = self.blocked.lock().expect("auth limits lock");
        if blocked.len() > MAX_TRACKED_KEYS {
            blocked.retain(|_, until| *until > now);
        }
        let mut longest = None;
        for (name, wait) in Self::block_names(kind, subject, address)
            .into_iter()
            .zip(spent)
        {
            if let (Some(name), Some(wait)) = (name, wait) {
                let wait = wait.max(Duration::from_secs(1));
                blocked.insert(name, now + wait);
                longest = longest.max(Some(wait));
            }
        }
        longest
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
            key_failures_per_key_per_minute: 1000,
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
            assert!(
                limits
                    .failed(Credential::ApiKey, Some("k"), Some("10.0.0.1"))
                    .is_none()
            );
        }
        let wait = limits
            .failed(Credential::ApiKey, Some("k"), Some("10.0.0.1"))
            .unwrap();
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(31));
        assert!(
            limits
                .blocked(Credential::ApiKey, None, Some("10.0.0.1"))
                .is_some()
        );
        assert!(
            limits
                .blocked(Credential::Password, None, Some("10.0.0.1"))
                .is_none(),
            "passwords have budgets of their own"
        );
        assert!(
            limits
                .failed(Credential::ApiKey, Some("k"), Some("10.0.0.9"))
                .is_none(),
            "another address"
        );
    }

    #[test]
    fn spent_failures_against_one_key_block_that_key_only() {
        let limits = AuthLimits::new(&AuthConfig {
            key_failures_per_address_per_minute: 1000,
            key_failures_per_key_per_minute: 2,
            ..AuthConfig::default()
        });
        let fail =
            |key: &str, address: &str| limits.failed(Credential::ApiKey, Some(key), Some(address));
        for n in 0..2 {
            assert!(fail("k", &format!("10.0.1.{n}")).is_none());
        }
        assert!(fail("k", "10.0.1.9").is_some());
        assert!(fail("other", "10.0.1.9").is_none());
    }
}
