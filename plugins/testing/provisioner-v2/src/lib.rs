//! A provisioner built against `tenantry:plugin@0.2.0` with wit-bindgen alone: it reads its
//! configuration, returns a typed compensation, measures, exports and imports, and tries the
//! `sql` interface on a database it was not granted.

wit_bindgen::generate!({ world: "provisioner", path: "../../../wit/v0.2.0" });

use exports::tenantry::plugin::provision::Guest;
use tenantry::plugin::types::{
    BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Step, Tenant,
};
use tenantry::plugin::{config, log, sql};

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

struct V2;

fn seats() -> u64 {
    config::get("seats")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn outcome(output: serde_json::Value) -> Outcome {
    Outcome {
        output: output.to_string(),
        manual_follow_up: None,
    }
}

impl Guest for V2 {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "provisioner-v2".into(),
            version: "0.2.0".into(),
            description: "Test plugin built against WIT 0.2.0.".into(),
        }
    }

    fn plan(tenant: Tenant, _request: String) -> Result<Vec<Step>, PluginError> {
        Ok(vec![Step {
            id: "seats".into(),
            description: format!("give {} its seats", tenant.slug),
            input: serde_json::json!({ "config": config::all() }).to_string(),
        }])
    }

    fn apply(_tenant: Tenant, _step: Step, _key: String) -> Result<Outcome, PluginError> {
        Ok(outcome(serde_json::json!({ "seats": seats() })))
    }

    fn compensate(
        tenant: Tenant,
        _step: Step,
        _outcome: Outcome,
        _key: String,
    ) -> Result<Outcome, PluginError> {
        Ok(Outcome {
            output: "{}".into(),
            manual_follow_up: Some(format!(
                "return the seat licences of {} by hand",
                tenant.slug
            )),
        })
    }

    fn observe(_tenant: Tenant, _applied: Vec<(Step, Outcome)>) -> Result<Vec<Drift>, PluginError> {
        Ok(Vec::new())
    }

    fn transition(
        _tenant: Tenant,
        change: LifecycleChange,
        _reason: String,
    ) -> Result<Outcome, PluginError> {
        Ok(outcome(
            serde_json::json!({ "change": format!("{change:?}") }),
        ))
    }

    fn measure(_tenant: Tenant) -> Result<Vec<Measurement>, PluginError> {
        if let Err(err) = sql::query("warehouse", "select 1", &[]) {
            log::write(log::Level::Info, &format!("sql: {err:?}"));
        }
        Ok(vec![Measurement {
            metric: "users".into(),
            value: seats() as f64,
        }])
    }

    fn export_tenant(
        tenant: Tenant,
        _applied: Vec<(Step, Outcome)>,
    ) -> Result<Option<BundlePart>, PluginError> {
        Ok(Some(BundlePart {
            media_type: "application/json".into(),
            data: serde_json::json!({ "tenant": tenant.slug, "seats": seats() })
                .to_string()
                .into_bytes(),
            instance_specific: vec!["/tenant".into()],
        }))
    }

    fn import_tenant(_tenant: Tenant, part: BundlePart) -> Result<Outcome, PluginError> {
        let data: serde_json::Value = serde_json::from_slice(&part.data)
            .map_err(|e| PluginError::Permanent(format!("not this plugin's part: {e}")))?;
        Ok(outcome(serde_json::json!({ "restored": data })))
    }
}

export!(V2);
