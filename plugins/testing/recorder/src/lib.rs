//! A test backend plugin. Each planned step creates one named resource (`<slug>-<step>`) in a
//! recording HTTP test double (the tests' `common::recorder`), looking it up first so that a
//! repeated `apply` creates it once. Without the `recorder-url` secret it touches nothing: a
//! no-op backend for benchmarks.
//!
//! The request's `settings` choose the steps and failures:
//! `{"steps": ["alpha", "beta"], "fail": {"step": "beta", "kind": "permanent" | "transient",
//! "times": 2}, "undo_follow_up": "alpha"}` — a transient failure happens `times` times (counted
//! in plugin state), then the step succeeds; undoing the `undo_follow_up` step reports a manual
//! follow-up.

use serde_json::{Value, json};
use tenantry_plugin_sdk::http::{self, HttpError, Request};
use tenantry_plugin_sdk::provisioner::{
    Drift, LifecycleChange, Outcome, PluginError, PluginInfo, Provisioner, Step, Tenant,
};
use tenantry_plugin_sdk::{log, secrets, state};

struct Recorder;

fn base() -> Option<String> {
    secrets::get("recorder-url").ok()
}

fn call(method: &str, url: String, body: Option<Value>) -> Result<(u16, Value), PluginError> {
    let response = http::send(&Request {
        method: method.into(),
        url,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.map(|b| b.to_string().into_bytes()),
        timeout_ms: Some(5_000),
    })
    .map_err(|e| match e {
        HttpError::Timeout | HttpError::Connection(_) => {
            PluginError::Transient(format!("recorder unreachable: {e:?}"))
        }
        other => PluginError::Permanent(format!("recorder request refused: {other:?}")),
    })?;
    if response.status >= 500 {
        return Err(PluginError::Transient(format!(
            "recorder answered {}",
            response.status
        )));
    }
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    Ok((response.status, value))
}

fn parse(input: &str) -> Result<Value, PluginError> {
    serde_json::from_str(input).map_err(|e| PluginError::Permanent(format!("bad input: {e}")))
}

impl Provisioner for Recorder {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "recorder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        let request = parse(&request)?;
        let settings = &request["settings"];
        let steps: Vec<String> = match settings["steps"].as_array() {
            Some(list) => list
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            None => vec!["alpha".into(), "beta".into(), "gamma".into()],
        };
        if steps.iter().any(|s| s == "refuse-plan") {
            return Err(PluginError::Permanent(
                "settings ask for a plan to be refused".into(),
            ));
        }
        log::info(&format!(
            "planning {} steps for {}",
            steps.len(),
            tenant.slug
        ));
        Ok(steps
            .iter()
            .enumerate()
            .map(|(i, step)| Step {
                id: step.clone(),
                description: format!("create resource {}-{step}", tenant.slug),
                input: json!({
                    "name": format!("{}-{step}", tenant.slug),
                    "step": step,
                    "fail": if settings["fail"]["step"] == json!(step) { settings["fail"].clone() } else { Value::Null },
                    "follow_up_on_undo": settings["undo_follow_up"] == json!(step),
                    // The first step carries the connection, so that the host records the
                    // template that produced it.
                    "connection": if i == 0 { request["connections"].get(0).cloned().unwrap_or(Value::Null) } else { Value::Null },
                })
                .to_string(),
            })
            .collect())
    }

    fn apply(_tenant: Tenant, step: Step, idempotency_key: String) -> Result<Outcome, PluginError> {
        let input = parse(&step.input)?;
        let name = input["name"].as_str().unwrap_or_default().to_owned();
        let fail = &input["fail"];
        match fail["kind"].as_str() {
            Some("permanent") => {
                log::error(&format!("refusing {name} as asked"));
                return Err(PluginError::Permanent(format!(
                    "backend refused {name}: duplicate name (asked to fail)"
                )));
            }
            Some("transient") => {
                let key = format!("failures-{}", step.id);
                let done = state::get(&key)
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if done < fail["times"].as_u64().unwrap_or(u64::MAX) {
                    let _ = state::set(&key, (done + 1).to_string().as_bytes());
                    log::warn(&format!("backend busy for {name} (failure {})", done + 1));
                    return Err(PluginError::Transient(format!(
                        "backend busy (failure {} of {name})",
                        done + 1
                    )));
                }
            }
            _ => {}
        }
        let Some(base) = base() else {
            return Ok(Outcome {
                output: json!({ "name": name, "recorded": false }).to_string(),
                manual_follow_up: None,
            });
        };
        let (status, found) = call("GET", format!("{base}/resources/{name}"), None)?;
        if status == 200 {
            log::info(&format!("{name} exists already"));
            return Ok(Outcome {
                output: json!({ "name": name, "id": found["id"], "recorded": true }).to_string(),
                manual_follow_up: None,
            });
        }
        let (status, created) = call(
            "POST",
            format!("{base}/resources"),
            Some(json!({ "name": name, "key": idempotency_key })),
        )?;
        if status != 201 {
            return Err(PluginError::Permanent(format!(
                "recorder refused {name}: {status} {created}"
            )));
        }
        log::info(&format!("created {name}"));
        Ok(Outcome {
            output: json!({ "name": name, "id": created["id"], "recorded": true }).to_string(),
            manual_follow_up: None,
        })
    }

    fn compensate(
        _tenant: Tenant,
        step: Step,
        _outcome: Outcome,
        _idempotency_key: String,
    ) -> Result<Outcome, PluginError> {
        let input = parse(&step.input)?;
        let name = input["name"].as_str().unwrap_or_default();
        let undone = Outcome {
            output: json!({ "removed": name }).to_string(),
            manual_follow_up: (input["follow_up_on_undo"] == json!(true))
                .then(|| format!("archive the audit trail of {name} by hand")),
        };
        let Some(base) = base() else {
            return Ok(undone);
        };
        let (status, body) = call("DELETE", format!("{base}/resources/{name}"), None)?;
        if status == 200 || status == 204 || status == 404 {
            log::info(&format!("removed {name}"));
            Ok(undone)
        } else {
            Err(PluginError::Permanent(format!(
                "recorder refused to remove {name}: {status} {body}"
            )))
        }
    }

    fn observe(_tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Result<Vec<Drift>, PluginError> {
        let Some(base) = base() else {
            return Ok(Vec::new());
        };
        let mut drift = Vec::new();
        for (step, _) in applied {
            let input = parse(&step.input)?;
            let name = input["name"].as_str().unwrap_or_default();
            let (status, _) = call("GET", format!("{base}/resources/{name}"), None)?;
            if status == 404 {
                drift.push(Drift {
                    resource: format!("resource {name}"),
                    problem: "missing".into(),
                });
            }
        }
        Ok(drift)
    }

    fn transition(
        tenant: Tenant,
        change: LifecycleChange,
        reason: String,
    ) -> Result<Outcome, PluginError> {
        let change = match change {
            LifecycleChange::Suspend => "suspend",
            LifecycleChange::Reactivate => "reactivate",
            LifecycleChange::Cancel => "cancel",
            LifecycleChange::Purge => "purge",
        };
        if let Some(base) = base() {
            call(
                "POST",
                format!("{base}/events"),
                Some(json!({ "tenant": tenant.slug, "change": change, "reason": reason })),
            )?;
        }
        Ok(Outcome {
            output: json!({ "change": change }).to_string(),
            manual_follow_up: None,
        })
    }
}

tenantry_plugin_sdk::register_provisioner!(Recorder);
