//! A provisioner built against the frozen `tenantry:plugin@0.1.0` with wit-bindgen alone, as a
//! third party's plugin from before 0.2.0 is: one step per name in the request's
//! `settings.names`, state kept per tenant, and a compensation whose manual follow-up travels,
//! as 0.1.0 has it, as a `warn` line that begins with `manual follow-up:`.

wit_bindgen::generate!({ world: "provisioner", path: "../../../wit/v0.1.0" });

use exports::tenantry::plugin::provision::Guest;
use tenantry::plugin::types::{
    Drift, LifecycleChange, Outcome, PluginError, PluginInfo, Step, Tenant,
};
use tenantry::plugin::{log, state};

const MANIFEST: &[u8] = include_bytes!("../tenantry-plugin.toml");

#[used]
#[unsafe(link_section = "tenantry-manifest")]
static MANIFEST_SECTION: [u8; MANIFEST.len()] = {
    let mut out = [0u8; MANIFEST.len()];
    let mut i = 0;
    while i < MANIFEST.len() {
        out[i] = MANIFEST[i];
        i += 1;
    }
    out
};

struct V1;

fn input(step: &Step) -> Result<serde_json::Value, PluginError> {
    serde_json::from_str(&step.input)
        .map_err(|e| PluginError::Permanent(format!("step `{}`: {e}", step.id)))
}

impl Guest for V1 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "provisioner-v1".into(),
            version: "0.1.0".into(),
            description: "Test plugin built against the frozen WIT 0.1.0.".into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        let request: serde_json::Value = serde_json::from_str(&request)
            .map_err(|e| PluginError::Permanent(format!("the request: {e}")))?;
        let names: Vec<String> = request["settings"]["names"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_else(|| vec!["db".to_owned()]);
        Ok(names
            .iter()
            .map(|name| Step {
                id: name.clone(),
                description: format!("create resource {}-{name}", tenant.slug),
                input: serde_json::json!({
                    "name": format!("{}-{name}", tenant.slug),
                    "follow_up_on_undo": request["settings"]["undo_follow_up"] == serde_json::json!(name),
                })
                .to_string(),
            })
            .collect())
    }

    fn apply(
        _tenant: Tenant,
        step: Step,
        _idempotency_key: String,
    ) -> Result<Outcome, PluginError> {
        let name = input(&step)?["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        state::set(&name, b"made").map_err(PluginError::Permanent)?;
        log::write(log::Level::Info, &format!("made {name}"));
        Ok(Outcome {
            output: serde_json::json!({ "name": name }).to_string(),
            manual_follow_up: None,
        })
    }

    fn compensate(
        _tenant: Tenant,
        step: Step,
        _outcome: Outcome,
        _idempotency_key: String,
    ) -> Result<(), PluginError> {
        let input = input(&step)?;
        let name = input["name"].as_str().unwrap_or_default();
        state::delete(name);
        if input["follow_up_on_undo"] == serde_json::json!(true) {
            log::write(
                log::Level::Warn,
                &format!("manual follow-up: archive the audit trail of {name} by hand"),
            );
        }
        Ok(())
    }

    fn observe(_tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Result<Vec<Drift>, PluginError> {
        let mut drift = Vec::new();
        for (step, _) in applied {
            let name = input(&step)?["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state::get(&name).is_none() {
                drift.push(Drift {
                    resource: format!("resource {name}"),
                    problem: "missing".into(),
                });
            }
        }
        Ok(drift)
    }

    fn transition(
        _tenant: Tenant,
        change: LifecycleChange,
        _reason: String,
    ) -> Result<Outcome, PluginError> {
        Ok(Outcome {
            output: serde_json::json!({ "change": format!("{change:?}") }).to_string(),
            manual_follow_up: None,
        })
    }
}

export!(V1);
