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

fn param(value: &serde_json::Value) -> sql::Value {
    match value {
        serde_json::Value::Null => sql::Value::Null,
        serde_json::Value::Bool(b) => sql::Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => sql::Value::Int(i),
            None => sql::Value::Float(n.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(s) => sql::Value::Text(s.clone()),
        other => sql::Value::Bytes(other.to_string().into_bytes()),
    }
}

fn json(value: &sql::Value) -> serde_json::Value {
    match value {
        sql::Value::Null => serde_json::Value::Null,
        sql::Value::Boolean(b) => (*b).into(),
        sql::Value::Int(i) => (*i).into(),
        sql::Value::Float(f) => (*f).into(),
        sql::Value::Text(t) => t.clone().into(),
        sql::Value::Bytes(b) => serde_json::json!({ "bytes": b }),
    }
}

/// Runs one statement of a request; what it answered, as JSON.
fn run(statement: &serde_json::Value) -> serde_json::Value {
    let alias = statement["alias"].as_str().unwrap_or("warehouse");
    let params: Vec<sql::Value> = statement["params"]
        .as_array()
        .map(|p| p.iter().map(param).collect())
        .unwrap_or_default();
    if let Some(text) = statement["execute"].as_str() {
        return match sql::execute(alias, text, &params) {
            Ok(changed) => serde_json::json!({ "changed": changed }),
            Err(err) => serde_json::json!({ "error": format!("{err:?}") }),
        };
    }
    let text = statement["query"].as_str().unwrap_or_default();
    match sql::query(alias, text, &params) {
        Ok(rows) => serde_json::json!({
            "columns": rows.columns,
            "rows": rows.rows.iter().map(|r| r.iter().map(json).collect::<Vec<_>>()).collect::<Vec<_>>(),
        }),
        Err(err) => serde_json::json!({ "error": format!("{err:?}") }),
    }
}

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

    /// A request `{"sql": [{"alias", "query" | "execute", "params"}]}` runs each statement and
    /// reports what it answered in the step's input (for the host's tests).
    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        let request: serde_json::Value = serde_json::from_str(&request).unwrap_or_default();
        let answers: Vec<serde_json::Value> = request["sql"]
            .as_array()
            .map(|statements| statements.iter().map(run).collect())
            .unwrap_or_default();
        Ok(vec![Step {
            id: "seats".into(),
            description: format!("give {} its seats", tenant.slug),
            input: serde_json::json!({ "config": config::all(), "sql": answers }).to_string(),
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

    fn measure(
        tenant: Tenant,
        _applied: Vec<(Step, Outcome)>,
    ) -> Result<Vec<Measurement>, PluginError> {
        if config::get("unreachable").as_deref() == Some("true") {
            return Err(PluginError::Transient(
                "the warehouse cannot be reached".into(),
            ));
        }
        if let Err(err) = sql::query("warehouse", "select 1", &[]) {
            log::write(log::Level::Info, &format!("sql: {err:?}"));
        }
        Ok(vec![
            Measurement {
                metric: "users".into(),
                value: seats() as f64,
            },
            Measurement {
                metric: "storage_gb".into(),
                value: seats() as f64 / 2.0,
            },
            Measurement {
                metric: "dashboards".into(),
                value: 4.0,
            },
            Measurement {
                metric: "data_retention_days".into(),
                value: 30.0,
            },
            // A lie past any bound for a tenant whose slug starts with `huge`.
            Measurement {
                metric: "concurrent_agents".into(),
                value: if tenant.slug.starts_with("huge") {
                    1e300
                } else {
                    2.0
                },
            },
        ])
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
