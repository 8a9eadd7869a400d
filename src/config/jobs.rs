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
