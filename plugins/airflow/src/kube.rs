//! The Kubernetes objects of a tenant's namespace, as the operators' spec has them: namespace
//! `airflow-<slug>` (labels `tenant`, `environment`, `tier`, `managed-by`), ResourceQuota
//! `tenant-quota` sized by tier, LimitRange `tenant-limits`, NetworkPolicy `tenant-isolation`
//! (default deny; same-namespace traffic and DNS allowed), ServiceAccount `airflow-worker`, Role
//! `airflow-worker-role`, RoleBinding `airflow-worker-binding`.

use serde_json::{Map, Value, json};

/// The ResourceQuota of a tier: requests (cpu, memory, storage, pods) and limits (cpu, memory).
/// `custom` starts from `enterprise`; `settings.kubernetes.quotas` overrides any entry.
pub fn tier_quota(tier: &str) -> Option<Map<String, Value>> {
    let (req_cpu, req_mem, req_storage, pods, lim_cpu, lim_mem) = match tier {
        "free" => ("1", "2Gi", "10Gi", "5", "2", "4Gi"),
        "starter" => ("2", "8Gi", "25Gi", "10", "4", "16Gi"),
        "professional" => ("4", "16Gi", "50Gi", "25", "8", "32Gi"),
        "enterprise" | "custom" => ("8", "32Gi", "100Gi", "50", "16", "64Gi"),
        _ => return None,
    };
    let mut hard = Map::new();
    for (k, v) in [
        ("requests.cpu", req_cpu),
        ("requests.memory", req_mem),
        ("requests.storage", req_storage),
        ("limits.cpu", lim_cpu),
        ("limits.memory", lim_mem),
        ("persistentvolumeclaims", "10"),
        ("pods", pods),
        ("services", "10"),
    ] {
        hard.insert(k.into(), Value::String(v.into()));
    }
    Some(hard)
}

fn quantity(value: &Value, at: &str) -> Result<Value, String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(Value::String(s.trim().into())),
        Value::Number(n) => Ok(Value::String(n.to_string())),
        _ => Err(format!(
            "settings.kubernetes.quotas.{at} must be a quantity (\"8\", \"32Gi\", 500m…)"
        )),
    }
}

/// Applies `settings.kubernetes.quotas` — `{"requests": {"cpu", "memory", "storage", "pods"},
/// "limits": {"cpu", "memory"}, "persistentvolumeclaims", "services"}` — to a tier's quota.
pub fn apply_overrides(hard: &mut Map<String, Value>, overrides: &Value) -> Result<(), String> {
    let Some(overrides) = overrides.as_object() else {
        return if overrides.is_null() {
            Ok(())
        } else {
            Err("settings.kubernetes.quotas must be an object".into())
        };
    };
    for (key, value) in overrides {
        match key.as_str() {
            "requests" | "limits" => {
                let entries = value.as_object().ok_or(format!(
                    "settings.kubernetes.quotas.{key} must be an object"
                ))?;
                for (resource, v) in entries {
                    let allowed: &[&str] = if key == "requests" {
                        &["cpu", "memory", "storage", "pods"]
                    } else {
                        &["cpu", "memory"]
                    };
                    if !allowed.contains(&resource.as_str()) {
                        return Err(format!(
                            "settings.kubernetes.quotas.{key}.{resource} is not known (known: {})",
                            allowed.join(", ")
                        ));
                    }
                    let name = if resource == "pods" {
                        "pods".to_string()
                    } else {
                        format!("{key}.{resource}")
                    };
                    hard.insert(name, quantity(v, &format!("{key}.{resource}"))?);
                }
            }
            "persistentvolumeclaims" | "services" => {
                hard.insert(key.clone(), quantity(value, key)?);
            }
            other => {
                return Err(format!(
                    "settings.kubernetes.quotas.{other} is not known \
                     (known: requests, limits, persistentvolumeclaims, services)"
                ));
            }
        }
    }
    Ok(())
}

/// What the manifests are made from.
pub struct Inputs<'a> {
    pub slug: &'a str,
    pub display_name: &'a str,
    pub tier: &'a str,
    pub environment: &'a str,
    pub contact_email: Option<&'a str>,
    pub quota: Map<String, Value>,
}

pub fn namespace_of(slug: &str) -> String {
    format!("airflow-{slug}")
}

/// One object: its kind and name, the collection it is POSTed to, and its manifest.
pub fn object(kind: &str, name: &str, collection: String, body: Value) -> Value {
    json!({"kind": kind, "name": name, "collection": collection, "manifest": body})
}

/// Every object of the tenant's namespace, namespace first.
pub fn render(inputs: &Inputs) -> Vec<Value> {
    let ns = namespace_of(inputs.slug);
    let mut annotations = Map::new();
    annotations.insert(
        "tenant/display-name".into(),
        Value::String(inputs.display_name.into()),
    );
    if let Some(email) = inputs.contact_email {
        annotations.insert("tenant/contact".into(), Value::String(email.into()));
    }
    let core = format!("/api/v1/namespaces/{ns}");
    let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}");
    vec![
        object(
            "Namespace",
            &ns,
            "/api/v1/namespaces".into(),
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "labels": {
                        "tenant": inputs.slug,
                        "environment": inputs.environment,
                        "tier": inputs.tier,
                        "managed-by": "tenant-provisioner",
                    },
                    "annotations": annotations,
                },
            }),
        ),
        object(
            "ResourceQuota",
            "tenant-quota",
            format!("{core}/resourcequotas"),
            json!({
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "tenant-quota", "namespace": ns},
                "spec": {"hard": inputs.quota},
            }),
        ),
        object(
            "LimitRange",
            "tenant-limits",
            format!("{core}/limitranges"),
            json!({
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": {"name": "tenant-limits", "namespace": ns},
                "spec": {"limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "1", "memory": "1Gi"},
                        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                        "max": {"cpu": "4", "memory": "8Gi"},
                    },
                    {
                        "type": "PersistentVolumeClaim",
                        "min": {"storage": "1Gi"},
                        "max": {"storage": "100Gi"},
                    },
                ]},
            }),
        ),
        object(
            "NetworkPolicy",
            "tenant-isolation",
            format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "tenant-isolation", "namespace": ns},
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                    "egress": [
                        {"to": [{"podSelector": {}}]},
                        {
                            "to": [{"namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                            }}],
                            "ports": [
                                {"protocol": "UDP", "port": 53},
                                {"protocol": "TCP", "port": 53},
                            ],
                        },
                    ],
                },
            }),
        ),
        object(
            "ServiceAccount",
            "airflow-worker",
            format!("{core}/serviceaccounts"),
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "airflow-worker", "namespace": ns},
            }),
        ),
        object(
            "Role",
            "airflow-worker-role",
            format!("{rbac}/roles"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "airflow-worker-role", "namespace": ns},
                "rules": [
                    {"apiGroups": [""], "resources": ["pods", "pods/log", "pods/exec"], "verbs": ["*"]},
                    {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"]},
                    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["*"]},
                ],
            }),
        ),
        object(
            "RoleBinding",
            "airflow-worker-binding",
            format!("{rbac}/rolebindings"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "airflow-worker-binding", "namespace": ns},
                "subjects": [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": ns}],
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "airflow-worker-role",
                },
            }),
        ),
    ]
}

/// The objects a `kubernetes` step stands for now: the recorded ones, with the quota and the
/// namespace's `tier` label of `tier` — the tenant's tier as it is when the step is applied or
/// observed, so a tier change's run resizes the quota and a missed one shows as drift. Inputs
/// recorded before quotas followed the tier (no `by_tier`) stand as recorded.
pub fn for_tier(input: &Value, tier: &str) -> Result<Vec<Value>, String> {
    let mut objects = input["objects"]
        .as_array()
        .cloned()
        .ok_or("step `kubernetes`: its input has no `objects`")?;
    if input["by_tier"].as_bool() != Some(true) {
        return Ok(objects);
    }
    let Some(mut quota) = tier_quota(tier) else {
        return Ok(objects);
    };
    apply_overrides(&mut quota, &input["quota_overrides"])?;
    for object in &mut objects {
        match object["kind"].as_str() {
            Some("ResourceQuota") => {
                object["manifest"]["spec"]["hard"] = Value::Object(quota.clone())
            }
            Some("Namespace") => object["manifest"]["metadata"]["labels"]["tier"] = tier.into(),
            _ => {}
        }
    }
    Ok(objects)
}

/// The fields of an object that the plugin keeps as its manifest has them, shaped as a JSON
/// merge patch (RFC 7386). What Kubernetes adds (defaults, its own labels, status) is not among
/// them; a ServiceAccount has none.
fn owned(kind: &str, manifest: &Value) -> Option<Value> {
    match kind {
        "Namespace" => Some(json!({"metadata": {
            "labels": manifest["metadata"]["labels"],
            "annotations": manifest["metadata"]["annotations"],
        }})),
        "ResourceQuota" => Some(json!({"spec": {"hard": manifest["spec"]["hard"]}})),
        "LimitRange" | "NetworkPolicy" => Some(json!({"spec": manifest["spec"]})),
        "Role" => Some(json!({"rules": manifest["rules"]})),
        "RoleBinding" => Some(json!({"subjects": manifest["subjects"]})),
        _ => None,
    }
}

/// Whether `have` holds everything of `want`: objects key by key (extra keys allowed, as the
/// API server adds defaults), arrays element by element, other values equal.
fn holds(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (_, Value::Null) => true,
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| wv.is_null() || h.get(k).is_some_and(|hv| holds(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| holds(hv, wv))
        }
        _ => have == want,
    }
}

fn quantity_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// How the object Kubernetes holds differs from its manifest, one entry per difference: each
/// quota entry (`pods 25 → 50`: wanted, then found; an entry the plugin no longer sets counts),
/// else the field that differs. Empty when it is in step.
pub fn differences(kind: &str, manifest: &Value, have: &Value) -> Vec<String> {
    let Some(want) = owned(kind, manifest) else {
        return Vec::new();
    };
    if kind == "ResourceQuota" {
        let (w, h) = (&want["spec"]["hard"], &have["spec"]["hard"]);
        let mut keys: Vec<&String> = w.as_object().into_iter().flat_map(|m| m.keys()).collect();
        keys.extend(h.as_object().into_iter().flat_map(|m| m.keys()));
        keys.sort();
        keys.dedup();
        return keys
            .into_iter()
            .filter(|k| w.get(k.as_str()) != h.get(k.as_str()))
            .map(|k| {
                format!(
                    "{k} {} → {}",
                    quantity_text(w.get(k.as_str())),
                    quantity_text(h.get(k.as_str()))
                )
            })
            .collect();
    }
    let mut fields = Vec::new();
    for (field, part) in want.as_object().into_iter().flatten() {
        match part.as_object() {
            // `metadata` and `spec` name their own parts (`labels`, `annotations`, `spec`).
            Some(inner) if field == "metadata" => {
                for (name, value) in inner {
                    if !holds(&have[field][name], value) {
                        fields.push(name.clone());
                    }
                }
            }
            _ => {
                if !holds(&have[field], part) {
                    fields.push(field.clone());
                }
            }
        }
    }
    fields
}

/// The JSON merge patch that brings `have` back to its manifest: the owned fields, and `null`
/// for each quota entry the plugin no longer sets.
pub fn patch(kind: &str, manifest: &Value, have: &Value) -> Option<Value> {
    let mut patch = owned(kind, manifest)?;
    if kind == "ResourceQuota"
        && let (Some(want), Some(have)) = (
            patch["spec"]["hard"].as_object_mut(),
            have["spec"]["hard"].as_object(),
        )
    {
        for key in have.keys() {
            want.entry(key.clone()).or_insert(Value::Null);
        }
    }
    Some(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_follows_the_tier_and_the_overrides() {
        let mut hard = tier_quota("professional").unwrap();
        assert_eq!(hard["requests.cpu"], "4");
        apply_overrides(
            &mut hard,
            &json!({"requests": {"cpu": 6, "pods": "30"}, "limits": {"memory": "48Gi"}}),
        )
        .unwrap();
        assert_eq!(hard["requests.cpu"], "6");
        assert_eq!(hard["pods"], "30");
        assert_eq!(hard["limits.memory"], "48Gi");
        assert!(apply_overrides(&mut hard, &json!({"limits": {"storage": "1Ti"}})).is_err());
        assert!(tier_quota("platinum").is_none());
    }

    #[test]
    fn seven_objects_in_the_tenant_namespace() {
        let objects = render(&Inputs {
            slug: "acme-corp",
            display_name: "Acme",
            tier: "starter",
            environment: "production",
            contact_email: Some("ops@acme.example"),
            quota: tier_quota("starter").unwrap(),
        });
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ResourceQuota",
                "LimitRange",
                "NetworkPolicy",
                "ServiceAccount",
                "Role",
                "RoleBinding"
            ]
        );
        assert_eq!(
            objects[0]["manifest"]["metadata"]["labels"]["tier"],
            "starter"
        );
        for o in &objects[1..] {
            assert_eq!(o["manifest"]["metadata"]["namespace"], "airflow-acme-corp");
        }
    }
    #[test]
    fn the_quota_and_the_tier_label_follow_the_tenants_tier() {
        let objects = render(&Inputs {
            slug: "acme",
            display_name: "Acme",
            tier: "free",
            environment: "production",
            contact_email: None,
            quota: tier_quota("free").unwrap(),
        });
        let input = json!({
            "objects": objects,
            "by_tier": true,
            "quota_overrides": {"requests": {"pods": "7"}},
        });
        let now = for_tier(&input, "enterprise").unwrap();
        assert_eq!(
            now[0]["manifest"]["metadata"]["labels"]["tier"],
            "enterprise"
        );
        assert_eq!(now[1]["manifest"]["spec"]["hard"]["requests.cpu"], "8");
        assert_eq!(
            now[1]["manifest"]["spec"]["hard"]["pods"], "7",
            "overrides still apply"
        );
        // Recorded before the quota followed the tier: as recorded.
        let old = for_tier(&json!({"objects": objects}), "enterprise").unwrap();
        assert_eq!(old[1]["manifest"]["spec"]["hard"]["requests.cpu"], "1");

        // The free quota found where the enterprise one is wanted: one difference per entry.
        let mut have = objects[1]["manifest"].clone();
        have["status"] = json!({"used": {"pods": "0"}});
        have["spec"]["hard"]["count/jobs.batch"] = "3".into();
        let changes = differences("ResourceQuota", &now[1]["manifest"], &have);
        assert!(
            changes.contains(&"requests.cpu 8 → 1".to_string()),
            "{changes:?}"
        );
        assert!(changes.contains(&"pods 7 → 5".to_string()), "{changes:?}");
        assert!(
            changes.contains(&"count/jobs.batch none → 3".to_string()),
            "{changes:?}"
        );
        let p = patch("ResourceQuota", &now[1]["manifest"], &have).unwrap();
        assert_eq!(p["spec"]["hard"]["requests.cpu"], "8");
        assert_eq!(p["spec"]["hard"]["count/jobs.batch"], Value::Null);
        assert!(differences("ResourceQuota", &now[1]["manifest"], &now[1]["manifest"]).is_empty());

        // What the API server adds (a label of its own, defaults) is no difference.
        let mut ns = objects[0]["manifest"].clone();
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"] = "airflow-acme".into();
        ns["spec"] = json!({"finalizers": ["kubernetes"]});
        assert!(differences("Namespace", &objects[0]["manifest"], &ns).is_empty());
        assert_eq!(
            differences("Namespace", &now[0]["manifest"], &ns),
            ["labels"]
        );
        let mut policy = objects[3]["manifest"].clone();
        assert!(differences("NetworkPolicy", &objects[3]["manifest"], &policy).is_empty());
        policy["spec"]["ingress"] = json!([{}]);
        assert_eq!(
            differences("NetworkPolicy", &objects[3]["manifest"], &policy),
            ["spec"]
        );
        assert!(differences("ServiceAccount", &objects[4]["manifest"], &json!({})).is_empty());
    }
}
