//! The `[auth]` section: OpenID Connect relying-party settings and the abuse limits of logins
//! and API keys.

use serde::{Deserialize, Serialize};

/// Logins and API keys: OpenID Connect relying-party settings and abuse limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Minutes a login attempt (the round trip to the identity provider) may take.
    pub login_attempt_minutes: u32,
    /// How long a provider's discovery document and keys are cached, in seconds. Keys are
    /// fetched again at once when a token names a key the cache does not hold.
    pub discovery_cache_seconds: u64,
    /// Longest a request to an identity provider may take, in milliseconds.
    pub provider_timeout_ms: u64,
    /// FOR DEVELOPMENT AND TESTS: identity providers on loopback (127.0.0.1, ::1, localhost)
    /// may be reached. Every other internal address (private, link-local, metadata) stays
    /// refused either way.
    pub allow_loopback_providers: bool,
    /// Logins one source address may start per minute.
    pub logins_per_address_per_minute: u32,
    /// Logins all users of one tenant may start per minute.
    pub logins_per_tenant_per_minute: u32,
    /// Failed API-key authentications one source address may make per minute; beyond, its
    /// failed attempts get 429 instead of 401 (one more every `60 / limit` seconds). A correct
    /// key is never refused for it.
    pub key_failures_per_address_per_minute: u32,
    /// Failed API-key authentications against one key (a token with that key's prefix and a
    /// wrong secret) per minute; beyond, they get 429 instead of 401. The key itself keeps
    /// working. (`key_failures_per_tenant_per_minute` is the name of earlier versions.)
    #[serde(alias = "key_failures_per_tenant_per_minute")]
    pub key_failures_per_key_per_minute: u32,
    /// Failed portal password logins one source address may make per minute; beyond, its
    /// attempts are refused (429) without checking the password, until the bucket allows one
    /// again (one every `60 / limit` seconds).
    pub password_failures_per_address_per_minute: u32,
    /// Failed portal password logins for one user name per minute, from anywhere; beyond,
    /// likewise.
    pub password_failures_per_user_per_minute: u32,
    /// Login callbacks from one source address per minute whose state no login holds (forged,
    /// used or expired long ago); beyond, that address's callbacks are refused (429) without a
    /// look at the database, until the bucket allows one again (one every `60 / limit`
    /// seconds). A callback is answered without any write until its state is found.
    pub callback_failures_per_address_per_minute: u32,
    /// Password checks (argon2, about 19 MiB and 50 ms of CPU each) running at once; a login
    /// that finds them all busy for a second is refused (503) rather than queued.
    pub max_concurrent_password_checks: u32,
    /// Default lifetime of an SSO setup link, in hours.
    pub setup_link_hours: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            login_attempt_minutes: 10,
            discovery_cache_seconds: 3600,
            provider_timeout_ms: 5_000,
            allow_loopback_providers: false,
            logins_per_address_per_minute: 30,
            logins_per_tenant_per_minute: 600,
            key_failures_per_address_per_minute: 20,
            key_failures_per_key_per_minute: 20,
            password_failures_per_address_per_minute: 10,
            password_failures_per_user_per_minute: 10,
            callback_failures_per_address_per_minute: 30,
            max_concurrent_password_checks: 4,
            setup_link_hours: 24,
        }
    }
}
