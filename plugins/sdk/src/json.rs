//! Typed JSON for what WIT carries as JSON text: a provisioner's `request`, each step's `input`
//! and each outcome's `output`.
//!
//! ```text
//! #[derive(serde::Deserialize)]
//! struct Settings { url: String }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Create { name: String }
//!
//! fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
//!     let settings: Settings = tenantry_plugin_sdk::json::request(&request)?;
//!     Ok(vec![Step::new("create", "Create the workspace", &Create { name: tenant.slug })])
//! }
//!
//! fn apply(tenant: Tenant, step: Step, key: String) -> Result<Outcome, PluginError> {
//!     let create: Create = step.input_as()?;
//!     Ok(Outcome::done(&serde_json::json!({ "id": 7 })))
//! }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::provisioner::{Outcome, PluginError, Step};

/// The request of a `plan` call (for a provisioning request, the backend's settings), as `T`.
/// Text that is not a `T` is a permanent error that says why.
pub fn request<T: DeserializeOwned>(request: &str) -> Result<T, PluginError> {
    parse("the request", request)
}

fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, PluginError> {
    serde_json::from_str(text)
        .map_err(|e| PluginError::Permanent(format!("{what} is not what this plugin expects: {e}")))
}

fn text(value: &impl Serialize) -> String {
    // Serializing a value to a string fails only for maps with non-string keys.
    serde_json::to_string(value).expect("a step's input and an outcome are JSON documents")
}

impl Step {
    /// A step whose input is `input` as JSON.
    pub fn new(
        id: impl Into<String>,
        description: impl Into<String>,
        input: &impl Serialize,
    ) -> Step {
        Step {
            id: id.into(),
            description: description.into(),
            input: text(input),
        }
    }

    /// The step's input, as `T`.
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        parse(&format!("the input of step `{}`", self.id), &self.input)
    }
}

impl Outcome {
    /// A step (or transition) done, with `output` as what the backend now holds.
    pub fn done(output: &impl Serialize) -> Outcome {
        Outcome {
            output: text(output),
            manual_follow_up: None,
        }
    }

    /// Done only in part: `follow_up` says what a person must still do.
    pub fn with_follow_up(output: &impl Serialize, follow_up: impl Into<String>) -> Outcome {
        Outcome {
            output: text(output),
            manual_follow_up: Some(follow_up.into()),
        }
    }

    /// The outcome's output, as `T`.
    pub fn output_as<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        parse("a step's output", &self.output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Create {
        name: String,
        replicas: u8,
    }

    #[test]
    fn steps_and_outcomes_carry_typed_json() {
        let step = Step::new(
            "create",
            "Create it",
            &Create {
                name: "acme".into(),
                replicas: 2,
            },
        );
        assert_eq!(step.input, r#"{"name":"acme","replicas":2}"#);
        assert_eq!(
            step.input_as::<Create>().unwrap(),
            Create {
                name: "acme".into(),
                replicas: 2
            }
        );
        let outcome = Outcome::done(&serde_json::json!({ "id": 7 }));
        assert_eq!(outcome.output_as::<serde_json::Value>().unwrap()["id"], 7);
        assert!(outcome.manual_follow_up.is_none());
    }

    #[test]
    fn text_that_is_not_the_type_is_a_permanent_error_naming_what() {
        let step = Step::new("create", "Create it", &serde_json::json!({ "name": 1 }));
        match step.input_as::<Create>() {
            Err(PluginError::Permanent(message)) => assert!(
                message.starts_with(
                    "the input of step `create` is not what this plugin expects: invalid type"
                ),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        match request::<Create>("not json") {
            Err(PluginError::Permanent(message)) => {
                assert!(
                    message.starts_with("the request is not what this plugin expects"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
