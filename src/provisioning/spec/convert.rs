//! `tenantry spec convert`: an Airflow tenant config (`tenant:`, `warehouse:`,
//! `resources:` at the top) as the `tenantry/v1` spec it stands for, with every field that has
//! no home in tenantry named and why. Nothing is guessed silently: what is carried is carried
//! whole (labels and annotations keep what the registry does not use), and what is not is
//! listed.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{SpecAuth, SpecBody, SpecMetadata, TenantSpec};
use crate::tenants::model::Contact;

/// A converted spec and what could not be carried.
pub struct Converted {
    pub spec: TenantSpec,
    /// One line per field left out or changed, with why.
    pub notes: Vec<String>,
}

impl Converted {
    /// The spec as YAML, without empty fields.
    pub fn yaml(&self) -> anyhow::Result<String> {
        let mut value = serde_json::to_value(&self.spec)?;
        strip_nulls(&mut value);
        Ok(serde_yaml_ng::to_string(&value)?)
    }
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// An Airflow tenant config's tiers, as tenantry's.
fn tier_of(airflow: &str) -> Option<&'static str> {
    match airflow.to_lowercase().as_str() {
        "free" => Some("free"),
        "basic" | "starter" => Some("starter"),
        "standard" | "professional" => Some("professional"),
        "enterprise" => Some("enterprise"),
        "custom" => Some("custom"),
        _ => None,
    }
}

/// Whether a value is a template expression (`{{ vault.get(…) }}`) rather than a value.
fn is_expression(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.contains("{{"))
}

/// Converts an Airflow tenant config.
pub fn from_airflow(text: &str) -> anyhow::Result<Converted> {
    let doc: Value =
        serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("the file is not YAML: {e}"))?;
    let Some(top) = doc.as_object() else {
        anyhow::bail!("the file is not a YAML mapping");
    };
    let tenant = top
        .get("tenant")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            anyhow::anyhow!("no `tenant:` mapping at the top: not an Airflow tenant config")
        })?;
    let mut notes = Vec::new();
    let text_at = |map: &Map<String, Value>, key: &str| {
        map.get(key).and_then(Value::as_str).map(str::to_owned)
    };

    let slug = text_at(tenant, "name")
        .ok_or_else(|| anyhow::anyhow!("tenant.name is required: it becomes the tenant's slug"))?;
    let name = text_at(tenant, "display_name").unwrap_or_else(|| slug.clone());
    let mut labels = BTreeMap::new();
    let mut annotations = Map::new();
    let mut body = SpecBody::default();

    for (key, value) in tenant {
        match key.as_str() {
            "name" | "display_name" => {}
            "tier" => match value.as_str().and_then(tier_of) {
                Some(tier) => {
                    if value.as_str() != Some(tier) {
                        notes.push(format!(
                            "tenant.tier `{}` is `{tier}` here (free, starter, professional, enterprise, custom)",
                            value.as_str().unwrap_or_default()
                        ));
                    }
                    body.tier = Some(tier.to_owned());
                }
                None => notes.push(format!(
                    "tenant.tier {value} has no match among free, starter, professional, enterprise, custom: left out (the tenant gets the default tier)"
                )),
            },
            "environment" => {
                labels.insert(
                    "environment".to_owned(),
                    value.as_str().map_or_else(|| value.to_string(), str::to_owned),
                );
            }
            "contacts" => {
                // The first technical contact is the tenant's contact; all of them are kept.
                let first = value
                    .get("technical")
                    .and_then(Value::as_array)
                    .and_then(|list| list.first())
                    .or_else(|| {
                        value
                            .as_object()
                            .and_then(|m| m.values().find_map(|v| v.as_array()?.first()))
                    });
                if let Some(first) = first {
                    body.contact = Some(Contact {
                        name: first.get("name").and_then(Value::as_str).map(str::to_owned),
                        email: first.get("email").and_then(Value::as_str).map(str::to_owned),
                        phone: first.get("phone").and_then(Value::as_str).map(str::to_owned),
                    });
                }
                annotations.insert("contacts".to_owned(), value.clone());
            }
            "authentication" => {
                let config = value.get("config").cloned().unwrap_or(Value::Null);
                let kind = value.get("type").and_then(Value::as_str).unwrap_or_default();
                if kind != "oauth2" && kind != "oidc" {
                    notes.push(format!(
                        "tenant.authentication.type `{kind}`: tenantry logs users in through OAuth 2 / OpenID Connect only; left out"
                    ));
                    continue;
                }
                let mut auth = SpecAuth::default();
                match config.get("client_id") {
                    Some(id) if is_expression(id) => notes.push(
                        "tenant.authentication.config.client_id is a template expression (a Vault lookup): set spec.auth.client_id to its value".to_owned(),
                    ),
                    Some(id) => auth.client_id = id.as_str().map(str::to_owned),
                    None => {}
                }
                if config.get("client_secret").is_some() {
                    auth.client_secret_env = Some("CLIENT_SECRET".to_owned());
                    notes.push(
                        "tenant.authentication.config.client_secret: read from the environment variable CLIENT_SECRET when applied (spec.auth.client_secret_env); a secret never sits in a spec".to_owned(),
                    );
                }
                if let Some(provider) = value.get("provider").and_then(Value::as_str) {
                    notes.push(format!(
                        "tenant.authentication.provider `{provider}`: set spec.auth.oauth_issuer to its issuer URL (for Okta, https://<org>.okta.com/oauth2/default)"
                    ));
                }
                if config.get("redirect_uri").is_some() {
                    notes.push(
                        "tenant.authentication.config.redirect_uri: tenantry gives each tenant its own (tenantry tenant sso show SLUG); register that one at the provider".to_owned(),
                    );
                }
                body.auth = Some(auth);
            }
            other => {
                annotations.insert(other.to_owned(), value.clone());
                notes.push(format!(
                    "tenant.{other}: kept as an annotation (tenantry does not act on it)"
                ));
            }
        }
    }

    if let Some(warehouse) = top.get("warehouse") {
        if let Some(db) = warehouse.get("database") {
            notes.push(format!(
                "warehouse.database ({}): a database URI carries a user and a password — give it as spec.database.uri_env (an environment variable), or provision it from a connection template (spec.connection_template)",
                db.get("host").and_then(Value::as_str).unwrap_or("its host")
            ));
            if let Some(prefix) = db.get("schema_prefix").and_then(Value::as_str) {
                notes.push(format!(
                    "warehouse.database.schema_prefix `{prefix}`: kept as an annotation; a tenant's default schema is spec.database.default_schema"
                ));
            }
        }
        annotations.insert("warehouse".to_owned(), warehouse.clone());
        notes.push(
            "warehouse (jobs, dbt models, quality checks): kept as an annotation; the DAGs that run them are the tenant's DAG factory's, not tenantry's".to_owned(),
        );
    }

    let mut backends = BTreeMap::new();
    if let Some(resources) = top.get("resources").and_then(Value::as_object) {
        for (key, value) in resources {
            match key.as_str() {
                "kubernetes" => {
                    let mut kubernetes = Map::new();
                    if let Some(quotas) = value.get("quotas") {
                        let mut quotas = quotas.clone();
                        if let Some(limits) = quotas.get_mut("limits").and_then(Value::as_object_mut)
                            && limits.remove("storage").is_some()
                        {
                            notes.push(
                                "resources.kubernetes.quotas.limits.storage: a ResourceQuota bounds storage by requests only (requests.storage); left out".to_owned(),
                            );
                        }
                        kubernetes.insert("quotas".to_owned(), quotas);
                    }
                    if let Some(ns) = value.get("namespace").and_then(Value::as_str) {
                        notes.push(format!(
                            "resources.kubernetes.namespace `{ns}`: the airflow plugin names it airflow-<slug> (airflow-{slug})"
                        ));
                    }
                    for extra in ["node_selector", "tolerations"] {
                        if value.get(extra).is_some() {
                            notes.push(format!(
                                "resources.kubernetes.{extra}: set on the workers' pod template by the Airflow deployment, not by tenantry; left out"
                            ));
                        }
                    }
                    backends.insert("airflow".to_owned(), json!({ "kubernetes": kubernetes }));
                }
                "airflow" => notes.push(
                    "resources.airflow (workers, scheduler, webserver): sized by the Airflow deployment; tenantry gives the tenant a pool sized by its tier (backends.airflow.pool_slots overrides it); left out".to_owned(),
                ),
                other => notes.push(format!("resources.{other}: no home in tenantry; left out")),
            }
        }
    }
    for key in top.keys() {
        if !matches!(key.as_str(), "tenant" | "warehouse" | "resources") {
            annotations.insert(key.clone(), top[key].clone());
            notes.push(format!(
                "{key}: kept as an annotation (tenantry does not act on it)"
            ));
        }
    }
    if !backends.is_empty() {
        body.backends = Some(backends);
    }
    Ok(Converted {
        spec: TenantSpec {
            api_version: "tenantry/v1".to_owned(),
            kind: "Tenant".to_owned(),
            metadata: SpecMetadata {
                slug,
                name,
                labels,
                annotations,
            },
            spec: body,
        },
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AIRFLOW: &str = r#"
tenant:
  name: acme-corp
  display_name: "ACME Corporation"
  tier: standard
  environment: production
  contacts:
    technical:
      - name: "John Smith"
        email: "john.smith@acme.com"
  authentication:
    type: oauth2
    provider: okta
    config:
      client_id: "{{ vault.get('acme/oauth/client_id') }}"
      client_secret: "{{ vault.get('acme/oauth/client_secret') }}"
warehouse:
  database:
    host: "warehouse-db.internal"
    schema_prefix: "acme_"
resources:
  kubernetes:
    namespace: "airflow-acme"
    quotas:
      requests: {cpu: "8", pods: "50"}
      limits: {cpu: "16", storage: "500Gi"}
"#;

    #[test]
    fn an_airflow_tenant_config_becomes_a_spec_and_says_what_it_left_out() {
        let converted = from_airflow(AIRFLOW).unwrap();
        let spec = &converted.spec;
        assert_eq!(spec.metadata.slug, "acme-corp");
        assert_eq!(spec.metadata.name, "ACME Corporation");
        assert_eq!(spec.metadata.labels["environment"], "production");
        assert_eq!(spec.spec.tier.as_deref(), Some("professional"));
        assert_eq!(
            spec.spec.contact.as_ref().unwrap().email.as_deref(),
            Some("john.smith@acme.com")
        );
        let airflow = &spec.spec.backends.as_ref().unwrap()["airflow"];
        assert_eq!(airflow["kubernetes"]["quotas"]["requests"]["cpu"], "8");
        assert!(
            airflow["kubernetes"]["quotas"]["limits"]
                .get("storage")
                .is_none()
        );
        let notes = converted.notes.join("\n");
        for expected in [
            "tenant.tier `standard` is `professional`",
            "client_id is a template expression",
            "CLIENT_SECRET",
            "warehouse.database",
            "limits.storage",
        ] {
            assert!(notes.contains(expected), "{expected}: {notes}");
        }
        // What it writes is a spec this version reads.
        let yaml = converted.yaml().unwrap();
        let again = TenantSpec::parse(&yaml).unwrap();
        assert_eq!(again.metadata.slug, "acme-corp");
        assert!(!yaml.contains("null"), "{yaml}");
        assert!(!yaml.contains("vault.get"), "{yaml}");
    }
}
