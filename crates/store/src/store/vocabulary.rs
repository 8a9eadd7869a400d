//! The closed sets of words the store keeps as text: a tenant's status and tier; what a
//! provisioning run is for and where it stands, what each of its steps does and where it
//! stands, and the lifecycle change a run carries into the backends; a plugin's world; an
//! alert's kind, severity and status; a webhook delivery's status. (A principal's role is the
//! foundation's `roles::Role`.)
//!
//! Each is an enum stored as its word (`crate::words`). Reading is strict: a stored word
//! outside the set is an error that names it and the set (the query fails; nothing goes on
//! with a guess). Writing can only produce a word of the set.

pub use crate::words::UnknownValue;
use crate::words::stored_words;

stored_words! {
    /// A tenant's plan; it selects the default quotas (the tier table of `docs/quotas.md`).
    pub enum Tier ("tier") {
        Free = "free",
        Starter = "starter",
        Professional = "professional",
        Enterprise = "enterprise",
        Custom = "custom",
    }
}

stored_words! {
    /// Where a tenant is in its lifecycle. A purged tenant no longer exists.
    pub enum TenantStatus ("tenant status") {
        Provisioning = "provisioning",
        Trial = "trial",
        Active = "active",
        Suspended = "suspended",
        Canceled = "canceled",
        Deleted = "deleted",
        Failed = "failed",
    }
}

impl TenantStatus {
    /// Whether the tenant's users may log in and its keys work.
    pub fn is_active(self) -> bool {
        matches!(self, TenantStatus::Trial | TenantStatus::Active)
    }

    /// States from which a tenant may be purged (once its retention period has passed).
    pub fn is_purgeable(self) -> bool {
        matches!(
            self,
            TenantStatus::Canceled | TenantStatus::Deleted | TenantStatus::Failed
        )
    }
}

stored_words! {
    /// A plugin's world: what it exports and may import.
    pub enum World ("plugin world") {
        Provisioner = "provisioner",
        Renderer = "renderer",
        QuotaPolicy = "quota-policy",
    }
}

impl World {
    /// The interface the world exports.
    pub fn export_interface(self) -> &'static str {
        match self {
            World::Provisioner => "provision",
            World::Renderer => "render",
            World::QuotaPolicy => "policy",
        }
    }

    /// Whether the world may use the network, state and secrets.
    pub fn has_capabilities(self) -> bool {
        self == World::Provisioner
    }
}

stored_words! {
    /// What an alert watches.
    pub enum AlertKind ("alert kind") {
        /// A metric's use against its limit (subject: the metric).
        Quota = "quota",
        /// The tenant as a whole is above its policy's at-risk line.
        AtRisk = "at_risk",
        /// The tenant's quota policy fails (subject: the policy); its last decision stays in
        /// force.
        PolicyFailing = "policy_failing",
        /// The share of the tenant's API requests answered 5xx over the traffic window.
        ErrorRate = "error_rate",
        /// The 95th-percentile response time of the tenant's API requests over the window.
        Latency = "latency",
        /// The tenant's trial ends within `trials.notice_days` (period: the day it ends).
        TrialEnding = "trial_ending",
        /// A scheduled job failed (subject: the job; raised on the platform's own tenant).
        JobFailing = "job_failing",
        /// The share of the tenant's API requests refused (429) at its API-call budget over
        /// the traffic window.
        Throttled = "throttled",
        /// The tenant's database did not answer its probes for `probes.down_after_seconds`.
        DatabaseDown = "database_down",
        /// The tenant's database answered its probes slowly (their 95th percentile).
        DatabaseSlow = "database_slow",
    }
}

stored_words! {
    /// How urgent an alert is, least first.
    #[derive(PartialOrd, Ord)]
    pub enum AlertSeverity ("alert severity") {
        Warning = "warning",
        Critical = "critical",
        Blocked = "blocked",
    }
}

stored_words! {
    /// Whether an alert is open.
    pub enum AlertStatus ("alert status") {
        Open = "open",
        Resolved = "resolved",
    }
}

stored_words! {
    /// Where a webhook delivery stands.
    pub enum DeliveryStatus ("delivery status") {
        /// Waiting for its first or next attempt.
        Pending = "pending",
        Delivered = "delivered",
        /// Given up after the last attempt.
        Failed = "failed",
    }
}

stored_words! {
    /// What a provisioning run is for.
    pub enum RunKind ("run kind") {
        /// Bring a new tenant into its backends.
        Provision = "provision",
        Suspend = "suspend",
        Reactivate = "reactivate",
        Cancel = "cancel",
        /// Undo everything the tenant holds in every backend.
        Purge = "purge",
        /// Converge an existing tenant to a declarative spec.
        Apply = "apply",
    }
}

stored_words! {
    /// Where a run stands.
    pub enum RunStatus ("run status") {
        Queued = "queued",
        Running = "running",
        /// Undoing the done steps of a provision run after a permanent failure.
        Compensating = "compensating",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

impl RunStatus {
    /// Statuses of a run that still has work to do.
    pub const OPEN: [RunStatus; 3] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Compensating,
    ];

    pub fn is_open(self) -> bool {
        Self::OPEN.contains(&self)
    }
}

stored_words! {
    /// What a step does with its plugin.
    pub enum StepAction ("step action") {
        /// `apply`: create or converge something in the backend.
        Apply = "apply",
        /// `compensate`: undo what an earlier `apply` did (a purge carries these).
        Compensate = "compensate",
        /// `transition`: carry a lifecycle change into the backend.
        Transition = "transition",
        /// `validate`: ask the backend (`observe`) whether it holds what the run's `apply`
        /// steps created; drift fails the run.
        Validate = "validate",
    }
}

stored_words! {
    /// Where a step stands.
    pub enum StepState ("step state") {
        /// Not started yet, or waiting for its next attempt.
        Pending = "pending",
        Running = "running",
        Done = "done",
        Failed = "failed",
        Compensating = "compensating",
        Compensated = "compensated",
    }
}

stored_words! {
    /// A lifecycle change carried into the backends by a run of its own.
    pub enum LifecycleChange ("lifecycle change") {
        Suspend = "suspend",
        Reactivate = "reactivate",
        Cancel = "cancel",
        Purge = "purge",
    }
}

impl From<LifecycleChange> for RunKind {
    fn from(change: LifecycleChange) -> RunKind {
        match change {
            LifecycleChange::Suspend => RunKind::Suspend,
            LifecycleChange::Reactivate => RunKind::Reactivate,
            LifecycleChange::Cancel => RunKind::Cancel,
            LifecycleChange::Purge => RunKind::Purge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_writes_the_stored_words() {
        for tier in Tier::ALL {
            assert_eq!(serde_json::to_value(tier).unwrap(), tier.as_str());
        }
        for status in TenantStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for world in World::ALL {
            assert_eq!(serde_json::to_value(world).unwrap(), world.as_str());
        }
        for kind in AlertKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for severity in AlertSeverity::ALL {
            assert_eq!(serde_json::to_value(severity).unwrap(), severity.as_str());
        }
        for status in DeliveryStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for kind in RunKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        for status in RunStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for action in StepAction::ALL {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
        for state in StepState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for change in LifecycleChange::ALL {
            assert_eq!(serde_json::to_value(change).unwrap(), change.as_str());
        }
    }

    #[test]
    fn the_openapi_schema_lists_the_stored_words() {
        use utoipa::PartialSchema as _;
        let schema = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(s).unwrap()["enum"].clone()
        };
        assert_eq!(
            schema(Tier::schema()),
            serde_json::json!(["free", "starter", "professional", "enterprise", "custom"])
        );
        assert_eq!(
            schema(World::schema()),
            serde_json::json!(["provisioner", "renderer", "quota-policy"])
        );
        assert_eq!(
            schema(RunStatus::schema()),
            serde_json::json!(["queued", "running", "compensating", "succeeded", "failed"])
        );
    }

    #[test]
    fn every_word_reads_back_as_itself() {
        for kind in RunKind::ALL {
            assert_eq!(kind.as_str().parse::<RunKind>(), Ok(*kind));
        }
        for state in StepState::ALL {
            assert_eq!(state.to_string().parse::<StepState>(), Ok(*state));
        }
    }

    #[test]
    fn an_unknown_word_is_an_error_that_names_it() {
        let err = "purgee".parse::<LifecycleChange>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown lifecycle change `purgee` (expected one of: suspend, reactivate, cancel, purge)"
        );
        assert!("".parse::<RunStatus>().is_err());
        assert!("Queued".parse::<RunStatus>().is_err(), "case matters");
    }

    #[test]
    fn serde_uses_the_stored_words_and_refuses_others() {
        assert_eq!(
            serde_json::to_string(&StepAction::Transition).unwrap(),
            "\"transition\""
        );
        assert!(serde_json::from_str::<LifecycleChange>("\"delete\"").is_err());
    }
}
