//! The `airflow` backend plugin: provisions a tenant into Apache Airflow through its REST API
//! (v2) — a pool sized by the tenant's tier, one connection per rendered connection URI, the
//! tenant's variables — and renders (and, when a Kubernetes API is granted, applies) the objects
//! of the tenant's Kubernetes namespace. See docs/provisioning.md, section "Airflow".
//!
//! Steps (stable ids): `pool`, `connection:<name>` (one per connection), `variables`,
//! `kubernetes`. Names derive from the tenant's slug, so an `apply` repeated after a crash finds
//! what an earlier attempt created (GET first, create if missing, PATCH if different).

mod api;
mod kube;
mod uri;

use serde_json::{Map, Value, json};
use tenantry_plugin_sdk::provisioner::{
    BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Provisioner,
    Step, Tenant,
};
use tenantry_plugin_sdk::{log, state};

use api::{Airflow, Created, Kubernetes};
use tenantry_plugin_sdk::backend::{Redactor, permanent, transient};

/// Where `suspend` keeps the pool's slots to give back on `reactivate`.
const SUSPENDED_SLOTS_KEY: &str = "suspend/pool-slots";

/// The slots of the tenant's pool per tier (`custom`: `settings.pool_slots`, required).
pub fn tier_slots(tier: &str) -> Option<i64> {
    match tier {
        "free" => Some(1),
        "starter" => Some(4),
        "professional" => Some(16),
        "enterprise" => Some(64),
        _ => None,
    }
}

/// The tenant's slug as it appears in connection ids and variable keys: hyphens become
/// underscores (slugs have no underscores, so this stays unique), which keeps the keys usable
/// in templates (`{{ var.value.tenant_acme_corp_tier }}`).
fn key_slug(slug: &str) -> String {
    slug.replace('-', "_")
}

fn pool_name(slug: &str) -> String {
    format!("tenant-{slug}")
}

fn suspended_key(slug: &str) -> String {
    format!("tenant_{}_suspended", key_slug(slug))
}

fn input_of(step: &Step) -> Result<Value, PluginError> {
    serde_json::from_str(&step.input)
        .map_err(|e| permanent(format!("step `{}`: its input is not JSON: {e}", step.id)))
}

fn str_at<'a>(value: &'a Value, key: &str, step: &str) -> Result<&'a str, PluginError> {
    value[key]
        .as_str()
        .ok_or_else(|| permanent(format!("step `{step}`: its input has no `{key}`")))
}

fn outcome(output: Value) -> Outcome {
    Outcome {
        output: output.to_string(),
        manual_follow_up: None,
    }
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

// ---------------------------------------------------------------------------------------------
// plan

const SETTINGS: &[&str] = &["pool_slots", "variables", "kubernetes", "environment"];

fn plan(tenant: &Tenant, request: &str) -> Result<Vec<Step>, PluginError> {
    let request: Value = serde_json::from_str(request)
        .map_err(|e| permanent(format!("the request is not JSON: {e}")))?;
    let settings = match &request["settings"] {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(permanent("settings must be an object")),
    };
    if let Some(unknown) = settings.keys().find(|k| !SETTINGS.contains(&k.as_str())) {
        return Err(permanent(format!(
            "settings.{unknown} is not a setting of the airflow plugin (known: {})",
            SETTINGS.join(", ")
        )));
    }
    let slug = tenant.slug.as_str();
    let tier = tenant.tier.as_str();
    let ks = key_slug(slug);
    let mut steps = Vec::new();

    // The pool.
    let slots = match settings.get("pool_slots") {
        Some(v) => v
            .as_i64()
            .filter(|n| (0..=100_000).contains(n))
            .ok_or_else(|| {
                permanent("settings.pool_slots must be a whole number from 0 to 100000")
            })?,
        None => tier_slots(tier).ok_or_else(|| {
            permanent(format!(
                "tier `{tier}` has no pool size: set settings.pool_slots (required for custom)"
            ))
        })?,
    };
    let pool = pool_name(slug);
    steps.push(Step {
        id: "pool".into(),
        description: format!("Airflow pool `{pool}` with {slots} slots (tier {tier})"),
        input: json!({
            "name": pool,
            "slots": slots,
            // The tier's slots: applied and observed as the tenant's tier is then, so that a
            // tier change reaches the pool.
            "by_tier": !settings.contains_key("pool_slots"),
            "description": format!("Tenant {} ({slug}), tier {tier}", tenant.name),
        })
        .to_string(),
    });

    // One connection per rendered URI.
    let connections = match &request["connections"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        _ => return Err(permanent("connections must be a list")),
    };
    let mut seen = Vec::new();
    for connection in &connections {
        let name = connection["name"]
            .as_str()
            .filter(|n| is_identifier(n))
            .ok_or_else(|| {
                permanent("every connection needs a name of letters, digits, `_`, `-` or `.`")
            })?;
        if seen.contains(&name) {
            return Err(permanent(format!("connection `{name}` is given twice")));
        }
        seen.push(name);
        let uri = connection["uri"]
            .as_str()
            .ok_or_else(|| permanent(format!("connection `{name}` has no uri")))?;
        let parsed = uri::parse(uri).map_err(|e| permanent(format!("connection `{name}`: {e}")))?;
        let id = format!("tenant_{ks}_{name}");
        let target = match (&parsed.host, parsed.port) {
            (Some(h), Some(p)) => format!(" to {h}:{p}"),
            (Some(h), None) => format!(" to {h}"),
            _ => String::new(),
        };
        steps.push(Step {
            id: format!("connection:{name}"),
            description: format!("Airflow connection `{id}` ({}{target})", parsed.conn_type),
            input: json!({
                "name": name,
                // The template that produced the URI (the host records it with the resource).
                "source": if connection["fingerprint"].is_string() {
                    json!({
                        "template": connection["template"],
                        "version": connection["version"],
                        "fingerprint": connection["fingerprint"],
                    })
                } else {
                    Value::Null
                },
                "connection": {
                    "connection_id": id,
                    "conn_type": parsed.conn_type,
                    "host": parsed.host,
                    "port": parsed.port,
                    "login": parsed.login,
                    "password": parsed.password,
                    "schema": parsed.schema,
                    "extra": parsed.extra,
                    "description": format!("Tenant {slug}: connection {name}"),
                },
            })
            .to_string(),
        });
    }

    // Variables.
    let t = &request["tenant"];
    let mut variables = vec![
        (format!("tenant_{ks}_slug"), slug.to_string()),
        (format!("tenant_{ks}_name"), tenant.name.clone()),
        (format!("tenant_{ks}_tier"), tier.to_string()),
        (
            format!("tenant_{ks}_schema"),
            t["default_schema"].as_str().unwrap_or_default().to_string(),
        ),
    ];
    match settings.get("variables") {
        None | Some(Value::Null) => {}
        Some(Value::Object(extra)) => {
            for (key, value) in extra {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(permanent(format!(
                        "settings.variables.{key}: a variable name is letters, digits and `_`"
                    )));
                }
                if ["slug", "name", "tier", "schema", "suspended"].contains(&key.as_str()) {
                    return Err(permanent(format!(
                        "settings.variables.{key}: `{key}` is set by the plugin itself"
                    )));
                }
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                variables.push((format!("tenant_{ks}_{key}"), value));
            }
        }
        Some(_) => return Err(permanent("settings.variables must be an object")),
    }
    steps.push(Step {
        id: "variables".into(),
        description: format!("Airflow variables tenant_{ks}_* ({} keys)", variables.len()),
        input: json!({
            // Its value is the tenant's tier as it is when applied and observed.
            "tier_key": format!("tenant_{ks}_tier"),
            "variables": variables
                .iter()
                .map(|(k, v)| json!({
                    "key": k,
                    "value": v,
                    "description": format!("Tenant {slug}"),
                }))
                .collect::<Vec<_>>(),
        })
        .to_string(),
    });

    // The Kubernetes namespace.
    let k8s = settings.get("kubernetes").cloned().unwrap_or(Value::Null);
    if !(k8s.is_null() || k8s.is_object()) {
        return Err(permanent("settings.kubernetes must be an object"));
    }
    if let Some(unknown) = k8s
        .as_object()
        .and_then(|m| m.keys().find(|k| k.as_str() != "quotas"))
    {
        return Err(permanent(format!(
            "settings.kubernetes.{unknown} is not known (known: quotas)"
        )));
    }
    let mut quota =
        kube::tier_quota(tier).ok_or_else(|| permanent(format!("tier `{tier}` is not known")))?;
    kube::apply_overrides(&mut quota, &k8s["quotas"]).map_err(permanent)?;
    let environment = match settings.get("environment") {
        None => "production",
        Some(v) => v.as_str().filter(|e| is_identifier(e)).ok_or_else(|| {
            permanent("settings.environment must be a word (production, staging…)")
        })?,
    };
    let namespace = kube::namespace_of(slug);
    let objects = kube::render(&kube::Inputs {
        slug,
        display_name: &tenant.name,
        tier,
        environment,
        contact_email: t["contact"]["email"].as_str(),
        quota,
    });
    steps.push(Step {
        id: "kubernetes".into(),
        description: format!(
            "Kubernetes namespace `{namespace}`: quota, limits, network policy, worker service account and role"
        ),
        // The quota and the namespace's tier label follow the tenant's tier when applied and
        // observed; the operator's overrides stay on top of whichever tier that is.
        input: json!({
            "namespace": namespace,
            "objects": objects,
            "by_tier": true,
            "quota_overrides": k8s["quotas"],
        })
        .to_string(),
    });
    Ok(steps)
}

// ---------------------------------------------------------------------------------------------
// apply

/// The slots a pool step stands for now: its tier's (as the tenant's tier is) or the settings'.
fn pool_slots(tenant: &Tenant, input: &Value) -> Result<i64, PluginError> {
    if input["by_tier"].as_bool() == Some(true)
        && let Some(slots) = tier_slots(&tenant.tier)
    {
        return Ok(slots);
    }
    input["slots"]
        .as_i64()
        .ok_or_else(|| permanent("step `pool`: its input has no `slots`"))
}

fn apply_pool(tenant: &Tenant, input: &Value) -> Result<Outcome, PluginError> {
    let name = str_at(input, "name", "pool")?;
    let slots = pool_slots(tenant, input)?;
    // While the tenant is suspended the pool stays at 0 slots; the tier's slots are what
    // `reactivate` gives back.
    let wanted = slots;
    let slots = if state::get(SUSPENDED_SLOTS_KEY).is_some() {
        state::set(SUSPENDED_SLOTS_KEY, wanted.to_string().as_bytes())
            .map_err(|e| transient(format!("plugin state: {e}")))?;
        0
    } else {
        wanted
    };
    let af = Airflow::connect(Redactor::new())?;
    for _ in 0..2 {
        match af.get("pools", name)? {
            None => {
                let body = json!({
                    "name": name,
                    "slots": slots,
                    "description": input["description"],
                    "include_deferred": false,
                });
                if af.create("pools", name, &body)? == Created::Created {
                    log::info(&format!("pool {name} created with {slots} slots"));
                    return Ok(outcome(
                        json!({"pool": name, "slots": slots, "action": "created"}),
                    ));
                }
                // Created meanwhile (409): compare it like an existing one.
            }
            Some(current) => {
                let had = current["slots"].as_i64();
                if had == Some(slots) {
                    return Ok(outcome(
                        json!({"pool": name, "slots": slots, "action": "unchanged"}),
                    ));
                }
                let body = json!({
                    "name": name,
                    "slots": slots,
                    "include_deferred": current["include_deferred"].as_bool().unwrap_or(false),
                });
                af.patch("pools", name, Some("slots"), &body)?;
                log::info(&format!("pool {name}: slots {had:?} → {slots}"));
                return Ok(outcome(
                    json!({"pool": name, "slots": slots, "action": "updated", "previous_slots": had}),
                ));
            }
        }
    }
    Err(transient(format!(
        "pool `{name}`: Airflow says it exists but does not show it; try again"
    )))
}

fn apply_connection(step: &Step, input: &Value) -> Result<Outcome, PluginError> {
    let body = &input["connection"];
    let id = str_at(body, "connection_id", &step.id)?;
    let mut scrub = Redactor::new();
    if let Some(p) = body["password"].as_str() {
        scrub.add(p);
    }
    let af = Airflow::connect(scrub)?;
    let existed = match af.get("connections", id)? {
        None => af.create("connections", id, body)? == Created::Existed,
        Some(_) => true,
    };
    if existed {
        // The password is masked in Airflow's answers, so it cannot be compared: the whole
        // connection is written again (PATCH is idempotent).
        af.patch("connections", id, None, body)?;
    }
    let action = if existed { "updated" } else { "created" };
    log::info(&format!("connection {id} {action}"));
    Ok(outcome(json!({
        "connection_id": id,
        "conn_type": body["conn_type"],
        "host": body["host"],
        "port": body["port"],
        "login": body["login"],
        "schema": body["schema"],
        "action": action,
    })))
}

fn variables_of(input: &Value) -> Result<Vec<(String, String, Value)>, PluginError> {
    input["variables"]
        .as_array()
        .ok_or_else(|| permanent("step `variables`: its input has no `variables`"))?
        .iter()
        .map(|v| {
            Ok((
                str_at(v, "key", "variables")?.to_string(),
                str_at(v, "value", "variables")?.to_string(),
                v["description"].clone(),
            ))
        })
        .collect()
}

/// The variables of a step as they stand for `tenant` now: the tier's variable holds its
/// current tier (a tier change applies the step again).
fn variables_for(
    tenant: &Tenant,
    input: &Value,
) -> Result<Vec<(String, String, Value)>, PluginError> {
    let tier_key = input["tier_key"].as_str();
    Ok(variables_of(input)?
        .into_iter()
        .map(|(key, value, description)| {
            if Some(key.as_str()) == tier_key {
                (key, tenant.tier.clone(), description)
            } else {
                (key, value, description)
            }
        })
        .collect())
}

fn put_variable(
    af: &Airflow,
    key: &str,
    value: &str,
    description: &Value,
) -> Result<&'static str, PluginError> {
    let body = json!({"key": key, "value": value, "description": description});
    match af.get("variables", key)? {
        None => match af.create("variables", key, &body)? {
            Created::Created => Ok("created"),
            Created::Existed => {
                af.patch("variables", key, None, &body)?;
                Ok("updated")
            }
        },
        Some(current) if current["value"].as_str() == Some(value) => Ok("unchanged"),
        Some(_) => {
            af.patch("variables", key, None, &body)?;
            Ok("updated")
        }
    }
}

fn apply_variables(tenant: &Tenant, input: &Value) -> Result<Outcome, PluginError> {
    let variables = variables_for(tenant, input)?;
    let af = Airflow::connect(Redactor::new())?;
    let mut report = Map::new();
    for (key, value, description) in &variables {
        let action = put_variable(&af, key, value, description)?;
        report.insert(key.clone(), Value::String(action.into()));
    }
    log::info(&format!("{} variables in place", variables.len()));
    Ok(outcome(json!({
        "variables": variables.iter().map(|(k, _, _)| k).collect::<Vec<_>>(),
        "actions": report,
    })))
}

/// The step's objects as they stand for the tenant's tier now.
fn kube_objects(tenant: &Tenant, input: &Value) -> Result<Vec<Value>, PluginError> {
    kube::for_tier(input, &tenant.tier).map_err(permanent)
}

/// Where an object lives in the API: a namespace at its own path, the rest in their collection.
fn kube_path(object: &Value) -> Result<String, PluginError> {
    let (kind, name) = (
        str_at(object, "kind", "kubernetes")?,
        str_at(object, "name", "kubernetes")?,
    );
    Ok(if kind == "Namespace" {
        format!("/api/v1/namespaces/{name}")
    } else {
        format!("{}/{name}", str_at(object, "collection", "kubernetes")?)
    })
}

fn apply_kubernetes(tenant: &Tenant, input: &Value) -> Result<Outcome, PluginError> {
    let namespace = str_at(input, "namespace", "kubernetes")?;
    let objects = kube_objects(tenant, input)?;
    let artifacts: Vec<Value> = objects.iter().map(|o| o["manifest"].clone()).collect();
    let Some(kube) = Kubernetes::configured(Redactor::new()) else {
        log::info("no Kubernetes API configured: manifests rendered only");
        return Ok(outcome(json!({
            "namespace": namespace,
            "applied": false,
            "note": "rendered, not applied: no Kubernetes API configured",
            "artifacts": artifacts,
        })));
    };
    let mut results = Vec::new();
    for object in &objects {
        let kind = str_at(object, "kind", "kubernetes")?;
        let name = str_at(object, "name", "kubernetes")?;
        let collection = str_at(object, "collection", "kubernetes")?;
        let what = format!("creating Kubernetes {kind} `{name}`");
        let created = match kube.create(collection, &object["manifest"], &what) {
            Ok(created) => created,
            Err(PluginError::Permanent(message)) if api::is_not_granted(&message) => {
                return Ok(Outcome {
                    output: json!({
                        "namespace": namespace,
                        "applied": false,
                        "note": "rendered, not applied: the Kubernetes API's host is not granted",
                        "artifacts": artifacts,
                    })
                    .to_string(),
                    manual_follow_up: Some(format!(
                        "Kubernetes objects of namespace {namespace} not applied: {message}; \
                         grant the host and apply again, or apply the run's artifacts by hand"
                    )),
                });
            }
            Err(err) => return Err(err),
        };
        let mut changes = Vec::new();
        let result = match created {
            Created::Created => "created",
            Created::Existed => {
                // Found: brought back to its manifest where it differs (a tier change's quota,
                // an edit by hand).
                let path = kube_path(object)?;
                let manifest = &object["manifest"];
                match kube.get(&path, &format!("reading Kubernetes {kind} `{name}`"))? {
                    Some(have) => {
                        changes = kube::differences(kind, manifest, &have);
                        if changes.is_empty() {
                            "exists"
                        } else {
                            let patch = kube::patch(kind, manifest, &have)
                                .expect("an object with differences has owned fields");
                            kube.merge_patch(
                                &path,
                                &patch,
                                &format!("updating Kubernetes {kind} `{name}`"),
                            )?;
                            "updated"
                        }
                    }
                    // Deleted between the POST and the GET: the next apply creates it.
                    None => {
                        return Err(transient(format!(
                            "Kubernetes {kind} `{name}` was deleted while being applied"
                        )));
                    }
                }
            }
        };
        log::info(&format!("Kubernetes {kind} {name}: {result}"));
        let mut entry = json!({"kind": kind, "name": name, "result": result});
        if !changes.is_empty() {
            entry["changes"] = json!(changes);
        }
        results.push(entry);
    }
    Ok(outcome(json!({
        "namespace": namespace,
        "applied": true,
        "api": kube.host(),
        "objects": results,
        "artifacts": artifacts,
    })))
}

// ---------------------------------------------------------------------------------------------
// measure, export, import

/// Today's start (UTC) as Airflow's API takes a time: `YYYY-MM-DDT00:00:00Z`.
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T00:00:00Z")
}

/// The tenant's task runs today (task instances started since midnight UTC in its pool) and
/// its DAGs (tagged with its slug, as the tenant's DAG factory tags them).
fn measure(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Result<Vec<Measurement>, PluginError> {
    let Some((pool_step, _)) = applied.iter().find(|(s, _)| s.id == "pool") else {
        return Ok(Vec::new());
    };
    let pool = str_at(&input_of(pool_step)?, "name", "pool")?.to_owned();
    let af = Airflow::connect(Redactor::new())?;
    let task_runs = af.count(
        &format!(
            "dags/~/dagRuns/~/taskInstances?pool={}&start_date_gte={}&limit=1",
            tenantry_plugin_sdk::backend::uri::percent_encode(&pool),
            tenantry_plugin_sdk::backend::uri::percent_encode(&today_utc())
        ),
        "counting today's task runs",
    )?;
    let dags = af.count(
        &format!(
            "dags?tags={}&limit=1",
            tenantry_plugin_sdk::backend::uri::percent_encode(&tenant.slug)
        ),
        "counting the tenant's DAGs",
    )?;
    Ok(vec![
        Measurement {
            metric: "task_runs".into(),
            value: task_runs as f64,
        },
        Measurement {
            metric: "dags".into(),
            value: dags as f64,
        },
    ])
}

/// The tenant's pool, variables and connections as Airflow holds them now, as JSON. What may
/// hold a secret — each variable's value, each connection's `extra` — is named in the part's
/// `sealed` list, and the bundle carries it sealed with the master key. Connection passwords
/// are not in the part at all: Airflow masks them in its answers.
fn export(applied: &[(Step, Outcome)]) -> Result<Option<BundlePart>, PluginError> {
    if applied.iter().all(|(s, _)| s.id == "kubernetes") {
        return Ok(None);
    }
    let af = Airflow::connect(Redactor::new())?;
    let mut pool = Value::Null;
    let mut variables = Vec::new();
    let mut connections = Vec::new();
    let mut sealed: Vec<String> = Vec::new();
    for (step, _) in applied {
        let input = input_of(step)?;
        match step.id.as_str() {
            "pool" => {
                if let Some(p) = af.get("pools", str_at(&input, "name", "pool")?)? {
                    pool = json!({ "name": p["name"], "slots": p["slots"], "description": p["description"] });
                }
            }
            "variables" => {
                for (key, _, _) in variables_of(&input)? {
                    if let Some(v) = af.get("variables", &key)? {
                        sealed.push(format!("/variables/{}/value", variables.len()));
                        variables.push(json!({ "key": v["key"], "value": v["value"], "description": v["description"] }));
                    }
                }
            }
            id if id.starts_with("connection:") => {
                let conn_id = str_at(&input["connection"], "connection_id", id)?;
                if let Some(c) = af.get("connections", conn_id)? {
                    connections.push(json!({
                        "connection_id": c["connection_id"],
                        "conn_type": c["conn_type"],
                        "description": c["description"],
                        "host": c["host"],
                        "port": c["port"],
                        "login": c["login"],
                        "schema": c["schema"],
                        "extra": c["extra"],
                    }));
                    sealed.push(format!("/connections/{}/extra", connections.len() - 1));
                }
            }
            _ => {}
        }
    }
    let data = json!({
        "pool": pool,
        "variables": variables,
        "connections": connections,
        "sealed": sealed,
    });
    Ok(Some(BundlePart {
        media_type: "application/json".into(),
        data: data.to_string().into_bytes(),
        instance_specific: Vec::new(),
    }))
}

/// Restores a part of [`export`] (its sealed values opened by the host): the pool's slots and
/// the variables are written; a connection that exists gets its fields (its password stays); a
/// missing one is created without a password, which is the outcome's manual follow-up. A
/// variable the part carries without a value keeps the one it has, or, missing, is a follow-up
/// too.
fn import(part: &BundlePart) -> Result<Outcome, PluginError> {
    if part.media_type != "application/json" {
        return Err(permanent(format!(
            "the airflow plugin imports its own export (application/json), not {}",
            part.media_type
        )));
    }
    let data: Value = serde_json::from_slice(&part.data)
        .map_err(|e| permanent(format!("the bundle part is not JSON: {e}")))?;
    let af = Airflow::connect(Redactor::new())?;
    let mut restored = Map::new();
    if let Some(name) = data["pool"]["name"].as_str() {
        let slots = data["pool"]["slots"].as_i64().unwrap_or(0);
        let body = json!({ "name": name, "slots": slots, "description": data["pool"]["description"], "include_deferred": false });
        match af.get("pools", name)? {
            None => {
                af.create("pools", name, &body)?;
            }
            Some(_) => {
                af.patch("pools", name, Some("slots"), &body)?;
            }
        }
        restored.insert("pool".into(), json!({ "name": name, "slots": slots }));
    }
    let mut keys = Vec::new();
    let mut without_value = Vec::new();
    for v in data["variables"].as_array().into_iter().flatten() {
        let key = str_at(v, "key", "variables")?;
        match (v["value"].as_str(), af.get("variables", key)?) {
            (Some(value), _) => {
                put_variable(&af, key, value, &v["description"])?;
            }
            (None, Some(have)) => {
                let value = have["value"].as_str().unwrap_or_default();
                put_variable(&af, key, value, &v["description"])?;
            }
            (None, None) => {
                without_value.push(key.to_owned());
                continue;
            }
        }
        keys.push(key.to_owned());
    }
    restored.insert("variables".into(), json!(keys));
    let mut without_password = Vec::new();
    let mut ids = Vec::new();
    for c in data["connections"].as_array().into_iter().flatten() {
        let id = str_at(c, "connection_id", "connections")?;
        let fields = if c.get("extra").is_some() {
            "conn_type,description,host,port,login,schema,extra"
        } else {
            "conn_type,description,host,port,login,schema"
        };
        match af.get("connections", id)? {
            Some(_) => {
                af.patch("connections", id, Some(fields), c)?;
            }
            None => {
                af.create("connections", id, c)?;
                without_password.push(id.to_owned());
            }
        }
        ids.push(id.to_owned());
    }
    restored.insert("connections".into(), json!(ids));
    let mut follow_ups = Vec::new();
    if !without_password.is_empty() {
        follow_ups.push(format!(
            "set the password of the Airflow connection(s) {} (a bundle carries no passwords)",
            without_password.join(", ")
        ));
    }
    if !without_value.is_empty() {
        follow_ups.push(format!(
            "set the Airflow variable(s) {} (a bundle carries no variable values)",
            without_value.join(", ")
        ));
    }
    let follow_up = (!follow_ups.is_empty())
        .then(|| format!("{}, or provision the tenant again", follow_ups.join("; ")));
    Ok(Outcome {
        output: Value::Object(restored).to_string(),
        manual_follow_up: follow_up,
    })
}

// ---------------------------------------------------------------------------------------------
// compensate

fn compensate(tenant: &Tenant, step: &Step, outcome: &Outcome) -> Result<(), PluginError> {
    let input = input_of(step)?;
    match step.id.as_str() {
        "pool" => {
            let name = str_at(&input, "name", "pool")?;
            let gone = !Airflow::connect(Redactor::new())?.delete("pools", name)?;
            state::delete(SUSPENDED_SLOTS_KEY);
            log::info(&format!(
                "pool {name} {}",
                if gone { "was already gone" } else { "deleted" }
            ));
        }
        "variables" => {
            let af = Airflow::connect(Redactor::new())?;
            let mut keys: Vec<String> = variables_of(&input)?.into_iter().map(|v| v.0).collect();
            keys.push(suspended_key(&tenant.slug));
            for key in keys {
                af.delete("variables", &key)?;
            }
            log::info("variables deleted");
        }
        "kubernetes" => {
            let output: Value = serde_json::from_str(&outcome.output).unwrap_or(Value::Null);
            if output["applied"].as_bool() != Some(true) {
                return Ok(());
            }
            let namespace = str_at(&input, "namespace", "kubernetes")?;
            let kube = Kubernetes::configured(Redactor::new()).ok_or_else(|| {
                permanent(format!(
                    "namespace {namespace} was created in Kubernetes but kubernetes-url is no \
                     longer granted: delete it by hand"
                ))
            })?;
            // Deleting the namespace deletes every object in it.
            kube.delete(
                &format!("/api/v1/namespaces/{namespace}"),
                &format!("deleting Kubernetes Namespace `{namespace}`"),
            )?;
            log::info(&format!("namespace {namespace} deleted"));
        }
        id if id.starts_with("connection:") => {
            let id = str_at(&input["connection"], "connection_id", id)?;
            Airflow::connect(Redactor::new())?.delete("connections", id)?;
            log::info(&format!("connection {id} deleted"));
        }
        other => {
            return Err(permanent(format!(
                "step `{other}` is not a step of this plugin"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// observe

fn same_extra(a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| -> Value {
        match v.as_str() {
            None | Some("") => Value::Null,
            Some(s) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(|v| !v.as_object().is_some_and(|m| m.is_empty()))
                .unwrap_or(Value::Null),
        }
    };
    parse(a) == parse(b)
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) if s.is_empty() => "none".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn observe(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Result<Vec<Drift>, PluginError> {
    let mut drifts = Vec::new();
    let mut drift = |resource: String, problem: String| drifts.push(Drift { resource, problem });
    // Signed in on first need only (a plan may have nothing to check in Airflow).
    let mut airflow: Option<Airflow> = None;
    fn lazy(airflow: &mut Option<Airflow>) -> Result<&Airflow, PluginError> {
        if airflow.is_none() {
            *airflow = Some(Airflow::connect(Redactor::new())?);
        }
        Ok(airflow.as_ref().expect("just set"))
    }
    for (step, outcome) in applied {
        let input = input_of(step)?;
        match step.id.as_str() {
            "pool" => {
                let name = str_at(&input, "name", "pool")?;
                let resource = format!("Airflow pool {name}");
                // A suspended tenant's pool has 0 slots on purpose.
                let expected = if state::get(SUSPENDED_SLOTS_KEY).is_some() {
                    0
                } else {
                    pool_slots(tenant, &input)?
                };
                match lazy(&mut airflow)?.get("pools", name)? {
                    None => drift(resource, "missing".into()),
                    Some(pool) => {
                        let slots = pool["slots"].as_i64().unwrap_or_default();
                        if slots != expected {
                            drift(resource, format!("changed: slots {expected} → {slots}"));
                        }
                    }
                }
            }
            "variables" => {
                for (key, value, _) in variables_for(tenant, &input)? {
                    let resource = format!("Airflow variable {key}");
                    match lazy(&mut airflow)?.get("variables", &key)? {
                        None => drift(resource, "missing".into()),
                        Some(current) if current["value"].as_str() != Some(value.as_str()) => {
                            drift(resource, "changed: value".into())
                        }
                        Some(_) => {}
                    }
                }
            }
            "kubernetes" => {
                let output: Value = serde_json::from_str(&outcome.output).unwrap_or(Value::Null);
                if output["applied"].as_bool() != Some(true) {
                    continue;
                }
                let Some(kube) = Kubernetes::configured(Redactor::new()) else {
                    continue;
                };
                // Judged against the tenant's tier now: a missed tier change is drift.
                for object in kube_objects(tenant, &input)? {
                    let (kind, name) = (
                        str_at(&object, "kind", "kubernetes")?,
                        str_at(&object, "name", "kubernetes")?,
                    );
                    let resource = format!("Kubernetes {kind} {name}");
                    let what = format!("reading Kubernetes {kind} `{name}`");
                    match kube.get(&kube_path(&object)?, &what)? {
                        None => drift(resource, "missing".into()),
                        Some(have) => {
                            let changes = kube::differences(kind, &object["manifest"], &have);
                            if !changes.is_empty() {
                                drift(resource, format!("changed: {}", changes.join(", ")));
                            }
                        }
                    }
                }
            }
            id if id.starts_with("connection:") => {
                let want = &input["connection"];
                let cid = str_at(want, "connection_id", id)?;
                let resource = format!("Airflow connection {cid}");
                match lazy(&mut airflow)?.get("connections", cid)? {
                    None => drift(resource, "missing".into()),
                    Some(have) => {
                        let mut changes = Vec::new();
                        for field in ["conn_type", "host", "port", "login", "schema"] {
                            let (w, h) = (&want[field], &have[field]);
                            let differs = match (w, h) {
                                (Value::Null, Value::String(s))
                                | (Value::String(s), Value::Null) => !s.is_empty(),
                                _ => w != h,
                            };
                            if differs {
                                changes.push(format!("{field} {} → {}", show(w), show(h)));
                            }
                        }
                        if !same_extra(&want["extra"], &have["extra"]) {
                            changes.push("extra".into());
                        }
                        if !changes.is_empty() {
                            drift(resource, format!("changed: {}", changes.join(", ")));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(drifts)
}

// ---------------------------------------------------------------------------------------------
// transition

fn transition(
    tenant: &Tenant,
    change: LifecycleChange,
    reason: &str,
) -> Result<Outcome, PluginError> {
    let pool = pool_name(&tenant.slug);
    let flag = suspended_key(&tenant.slug);
    let af = Airflow::connect(Redactor::new())?;
    match change {
        LifecycleChange::Suspend | LifecycleChange::Cancel => {
            let mut output = json!({"pool": pool, "slots": 0, "suspended": true, "reason": reason});
            match af.get("pools", &pool)? {
                None => {
                    output["note"] = json!("the tenant has no pool in Airflow");
                }
                Some(current) => {
                    let slots = current["slots"].as_i64().unwrap_or_default();
                    // A second suspend must not overwrite the slots to give back with 0.
                    let previous = match state::get(SUSPENDED_SLOTS_KEY) {
                        Some(kept) => String::from_utf8_lossy(&kept).parse().unwrap_or(slots),
                        None => {
                            state::set(SUSPENDED_SLOTS_KEY, slots.to_string().as_bytes())
                                .map_err(|e| transient(format!("plugin state: {e}")))?;
                            slots
                        }
                    };
                    if slots != 0 {
                        set_pool_slots(&af, &pool, &current, 0)?;
                    }
                    output["previous_slots"] = json!(previous);
                }
            }
            put_variable(
                &af,
                &flag,
                "true",
                &json!("Set while the tenant is suspended"),
            )?;
            log::info(&format!("{change:?}: pool {pool} at 0 slots, {flag}=true"));
            Ok(outcome(output))
        }
        LifecycleChange::Reactivate => {
            let mut output = json!({"pool": pool, "suspended": false});
            match state::get(SUSPENDED_SLOTS_KEY) {
                None => {
                    output["note"] = json!("nothing to restore: the pool was not suspended");
                }
                Some(kept) => {
                    let slots: i64 = String::from_utf8_lossy(&kept).parse().map_err(|_| {
                        permanent("the pool's slots kept at suspension are unreadable")
                    })?;
                    match af.get("pools", &pool)? {
                        None => output["note"] = json!("the tenant has no pool in Airflow"),
                        Some(current) => {
                            set_pool_slots(&af, &pool, &current, slots)?;
                            output["slots"] = json!(slots);
                        }
                    }
                    state::delete(SUSPENDED_SLOTS_KEY);
                }
            }
            af.delete("variables", &flag)?;
            log::info(&format!("reactivate: pool {pool} restored"));
            Ok(outcome(output))
        }
        LifecycleChange::Purge => {
            // The purge compensated every applied step before this call: what may remain is
            // what transitions left (the suspension flag and the kept slots).
            af.delete("variables", &flag)?;
            for key in state::keys() {
                state::delete(&key);
            }
            let leftover = af.get("pools", &pool)?.is_some();
            let mut out = outcome(json!({
                "purged": true,
                "note": if leftover {
                    "the pool is still in Airflow"
                } else {
                    "nothing left in Airflow: every applied step was compensated"
                },
            }));
            if leftover {
                out.manual_follow_up = Some(format!("delete the Airflow pool {pool} by hand"));
            }
            Ok(out)
        }
    }
}

/// Sets the slots of the tenant's pool (`current`: the pool as Airflow has it), keeping its
/// other settings.
fn set_pool_slots(
    af: &Airflow,
    pool: &str,
    current: &Value,
    slots: i64,
) -> Result<(), PluginError> {
    af.patch(
        "pools",
        pool,
        Some("slots"),
        &json!({
            "name": pool,
            "slots": slots,
            "include_deferred": current["include_deferred"].as_bool().unwrap_or(false),
        }),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------

struct AirflowPlugin;

impl Provisioner for AirflowPlugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "airflow".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        plan(&tenant, &request)
    }

    fn apply(tenant: Tenant, step: Step, _key: String) -> Result<Outcome, PluginError> {
        // Names derive from the tenant, so the idempotency key is not needed to find what an
        // earlier attempt created.
        let input = input_of(&step)?;
        match step.id.as_str() {
            "pool" => apply_pool(&tenant, &input),
            "variables" => apply_variables(&tenant, &input),
            "kubernetes" => apply_kubernetes(&tenant, &input),
            id if id.starts_with("connection:") => apply_connection(&step, &input),
            other => Err(permanent(format!(
                "step `{other}` is not a step of this plugin"
            ))),
        }
    }

    fn compensate(
        tenant: Tenant,
        step: Step,
        outcome: Outcome,
        _key: String,
    ) -> Result<Outcome, PluginError> {
        compensate(&tenant, &step, &outcome)?;
        Ok(Outcome::done(&json!({ "undone": step.id })))
    }

    fn observe(tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Result<Vec<Drift>, PluginError> {
        observe(&tenant, &applied)
    }

    fn measure(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Result<Vec<Measurement>, PluginError> {
        measure(&tenant, &applied)
    }

    fn export_tenant(
        _tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Result<Option<BundlePart>, PluginError> {
        export(&applied)
    }

    fn import_tenant(_tenant: Tenant, part: BundlePart) -> Result<Outcome, PluginError> {
        import(&part)
    }

    fn transition(
        tenant: Tenant,
        change: LifecycleChange,
        reason: String,
    ) -> Result<Outcome, PluginError> {
        transition(&tenant, change, &reason)
    }
}

tenantry_plugin_sdk::register_provisioner!(AirflowPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(tier: &str) -> Tenant {
        Tenant {
            id: "t1".into(),
            slug: "acme-corp".into(),
            name: "Acme Corporation".into(),
            tier: tier.into(),
            status: "provisioning".into(),
        }
    }

    #[test]
    fn the_plan_has_stable_steps() {
        let request = json!({
            "run": "r1",
            "tenant": {"slug": "acme-corp", "default_schema": "acme", "contact": {"email": "ops@acme.example"}},
            "connections": [{"name": "primary", "uri": "postgresql://u:p%40ss@db:5432/acme"}],
            "settings": {"variables": {"region": "eu", "retries": 3}},
        });
        let steps = plan(&tenant("professional"), &request.to_string()).unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["pool", "connection:primary", "variables", "kubernetes"]
        );
        let pool: Value = serde_json::from_str(&steps[0].input).unwrap();
        assert_eq!(pool["slots"], 16);
        assert_eq!(pool["name"], "tenant-acme-corp");
        let conn: Value = serde_json::from_str(&steps[1].input).unwrap();
        assert_eq!(
            conn["connection"]["connection_id"],
            "tenant_acme_corp_primary"
        );
        assert_eq!(conn["connection"]["password"], "p@ss");
        assert!(!steps[1].description.contains("p@ss"));
        let vars: Value = serde_json::from_str(&steps[2].input).unwrap();
        let keys: Vec<&str> = vars["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&"tenant_acme_corp_region"));
        assert!(keys.contains(&"tenant_acme_corp_schema"));
    }

    #[test]
    fn custom_needs_pool_slots_and_unknown_settings_are_refused() {
        assert!(plan(&tenant("custom"), "{}").is_err());
        let steps = plan(&tenant("custom"), r#"{"settings": {"pool_slots": 7}}"#).unwrap();
        assert!(steps[0].input.contains("\"slots\":7"));
        assert!(plan(&tenant("free"), r#"{"settings": {"pool_size": 7}}"#).is_err());
    }
}
