//! The `[cache]` section: what each server keeps in memory of the rows every request reads
//! (API keys, sessions, tenants), forgotten at once when they change.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache API keys, sessions and tenants (off: every request reads them from the database).
    pub enabled: bool,
    /// Entries each cache holds at most (the least used go first), so that memory does not grow
    /// with the number of tenants, keys and sessions seen.
    pub max_entries: u64,
    /// Seconds an entry is kept at most: a backstop, since a change is heard at once.
    pub ttl_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            ttl_seconds: 300,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=10_000_000).contains(&self.max_entries),
            "invalid configuration: cache.max_entries must be from 1 to 10000000"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&self.ttl_seconds),
            "invalid configuration: cache.ttl_seconds must be from 1 to 86400"
        );
        Ok(())
    }
}
