//! The closed sets of values the store keeps as text: what a provisioning run is for and where
//! it stands, what each of its steps does and where it stands, and the lifecycle change a run
//! carries into the backends.
//!
//! Each is an enum stored as the same lowercase word as before. Reading is strict: a stored
//! value outside the set is an error that names the value and what it should have been (the
//! query fails; nothing goes on with a guess). Writing can only produce a value of the set.

use std::fmt;

/// A stored word that is not one of its set's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares an enum kept in a text column: `as_str`, `Display`, a strict `FromStr`, serde as the
/// same words, an OpenAPI schema, and diesel's text mapping on both backends. The words are the
/// variants' names in lowercase (serde's and the schema's `rename_all`); a test checks that
/// `as_str` agrees.
macro_rules! stored_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        what: $what,
                        value: other.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    DB,
                >>::from_sql(bytes)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
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
    fn the_words_are_the_lowercase_variant_names_everywhere() {
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
