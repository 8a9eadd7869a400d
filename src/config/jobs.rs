//! `[jobs]`: the scheduled jobs every server runs (each job once per interval across replicas).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Seconds between sweeps of expired sessions, login attempts, setup links, idempotency keys
    /// and old reported-event ids (the `housekeeping` job); 0 turns it off.
    pub housekeeping_interval_seconds: u64,
    /// Seconds between looks for canceled and deleted tenants whose retention period
    /// (`retention_days`) has ended; each is purged across its backends (the `retention` job).
    /// 0 turns it off: such tenants then wait for an operator's purge.
    pub retention_interval_seconds: u64,
    /// Seconds a server's lease of a running job lasts (renewed every third of it while the job
    /// runs): how long a job waits for another server when the one running it dies.
    pub lease_seconds: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            housekeeping_interval_seconds: 3600,
            retention_interval_seconds: 3600,
            lease_seconds: 120,
        }
    }
}

impl JobsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (3..=3600).contains(&self.lease_seconds),
            "jobs.lease_seconds must be 3–3600"
        );
        Ok(())
    }
}
