//! The `validate` step that ends a provision run in each backend: the backend is asked
//! (`observe`) whether it holds what the run's `apply` steps in it created.

use serde_json::json;

use super::Executor;
use super::outcome::{Failure, split};
use crate::error::AppResult;
use crate::plugin_host::{Outcome, Step};
use crate::provisioning::{StepAction, StepState};
use crate::store::models::StepRow;

impl Executor<'_> {
    /// Asks the step's backend whether it holds what this run's `apply` steps in it created:
    /// drift is a permanent failure (the run is compensated), an unreachable backend a
    /// transient one.
    pub(super) async fn validate(
        &self,
        step: &StepRow,
    ) -> AppResult<(Result<Outcome, Failure>, Vec<crate::plugin_host::LogLine>)> {
        let mut applied = Vec::new();
        for done in self.steps().await? {
            if done.plugin == step.plugin
                && done.action == StepAction::Apply
                && done.state == StepState::Done
            {
                applied.push((
                    Step {
                        id: done.step_id.clone(),
                        description: done.description.clone(),
                        input: self.input(&done)?,
                    },
                    Outcome {
                        output: done.output.clone().unwrap_or_default(),
                        manual_follow_up: None,
                    },
                ));
            }
        }
        let checked = applied.len();
        let logged = self
            .ctx
            .plugins
            .observe(&step.plugin, &self.tenant, applied)
            .await;
        let (result, log) = split(logged);
        let result = result.and_then(|drift| {
            if drift.is_empty() {
                Ok(Outcome {
                    output: json!({ "validated": checked }).to_string(),
                    manual_follow_up: None,
                })
            } else {
                let found: Vec<String> = drift
                    .iter()
                    .map(|d| format!("{}: {}", d.resource, d.problem))
                    .collect();
                Err(Failure::Permanent(format!(
                    "{} does not hold what this run created: {}",
                    step.plugin,
                    found.join("; ")
                )))
            }
        });
        Ok((result, log))
    }
}
