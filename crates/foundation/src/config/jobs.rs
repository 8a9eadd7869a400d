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
    /// When set, the `retention` job writes each tenant's export bundle to this directory
    /// (`<slug>-<time>.tar`, mode 0600) before it purges the tenant; a tenant whose export
    /// cannot be written is not purged (the run fails and says why).
    pub export_before_purge_dir: Option<std::path::PathBuf>,
    /// Seconds between looks for trials that end (the `trials` job): a trial past its end gets
    /// `trials.end_action`, one ending within `trials.notice_days` an alert. 0 turns it off.
    pub trials_interval_seconds: u64,
    /// Seconds between evaluations of every live tenant's alerts (quotas, at-risk), beside the
    /// evaluation each server makes of the tenants it serves (the `alerts` job); 0 turns it off.
    pub alerts_interval_seconds: u64,
    /// Seconds a server's lease of a running job lasts (renewed every third of it while the job
    /// runs): how long a job waits for another server when the one running it dies.
    pub lease_seconds: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            housekeeping_interval_seconds: 3600,
            retention_interval_seconds: 3600,
            export_before_purge_dir: None,
            trials_interval_seconds: 600,
            alerts_interval_seconds: 3600,
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

/// What happens when a trial ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialEndAction {
    /// The tenant is suspended (its users cannot log in) until an operator reactivates it.
    Suspend,
    /// The tenant becomes `active`, as an operator's `convert` would make it.
    Convert,
}

/// `[trials]`: the end of a tenant's trial.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrialsConfig {
    /// `suspend` (the default) or `convert`.
    pub end_action: TrialEndAction,
    /// Days before the end of a trial its `trial_ending` alert is raised (and its webhook
    /// sent); 0 raises none.
    pub notice_days: u32,
}

impl Default for TrialsConfig {
    fn default() -> Self {
        Self {
            end_action: TrialEndAction::Suspend,
            notice_days: 3,
        }
    }
}

impl TrialsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.notice_days <= 365, "trials.notice_days must be 0–365");
        Ok(())
    }
}

/// `[database_probes]`: the `database-probes` job, which probes each tenant database tenantry
/// knows (a tenant's own URI, or the connection it was provisioned with). Each run takes the
/// databases whose last probe is oldest, at most `per_second` a second, so a tenant's database is
/// probed every `interval_seconds` or, with more of them than `per_second × interval_seconds`,
/// every `databases / per_second` seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseProbesConfig {
    /// Seconds between two probes of one database at most often; 0 turns the job off.
    pub interval_seconds: u64,
    /// Seconds between runs of the job (each run probes what is due, paced).
    pub run_every_seconds: u64,
    /// Probes a second across the fleet at most (the job runs on one server at a time).
    pub per_second: u32,
    /// Probes under way at once at most.
    pub concurrency: u32,
    /// A database failing its probes this long raises a critical `database_down` alert.
    pub down_after_seconds: u64,
    /// A 95th-percentile probe time over this (milliseconds) raises a `database_slow` warning;
    /// it resolves below the line less `alerts.hysteresis_percent`.
    pub slow_p95_ms: f64,
    /// The answered probes the 95th percentile is taken over.
    pub samples: u32,
}

impl Default for DatabaseProbesConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 60,
            run_every_seconds: 30,
            per_second: 20,
            concurrency: 4,
            down_after_seconds: 300,
            slow_p95_ms: 1000.0,
            samples: 20,
        }
    }
}

impl DatabaseProbesConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=3600).contains(&self.run_every_seconds),
            "invalid configuration: database_probes.run_every_seconds must be 1–3600"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.per_second),
            "invalid configuration: database_probes.per_second must be 1–10000"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.concurrency),
            "invalid configuration: database_probes.concurrency must be 1–64"
        );
        anyhow::ensure!(
            (1..=1000).contains(&self.samples),
            "invalid configuration: database_probes.samples must be 1–1000"
        );
        anyhow::ensure!(
            self.slow_p95_ms.is_finite() && self.slow_p95_ms > 0.0,
            "invalid configuration: database_probes.slow_p95_ms must be above 0"
        );
        Ok(())
    }
}
