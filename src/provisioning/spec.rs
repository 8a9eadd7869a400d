//! Declarative tenants: a tenant spec (YAML, see `docs/provisioning.md`) compared with what the
//! registry and the backends hold, as a plan (create, change, leave), and converged to it.
//!
//! Secrets never sit in a spec: it names the environment variables that hold them
//! (`client_secret_env`, `uri_env`, `placeholders_env`), which the command line reads.

pub mod convert;
mod plan;
pub(crate) use plan::{plan_steps, queue_apply};

pub use plan::{Applied, ApplyPlan, PlanItem, apply, plan};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::request::{Assets, ConnectionTemplate, DatabaseSettings, ProvisionRequest};
use crate::tenants::NewTenant;
use crate::tenants::input::Scopes;
use crate::tenants::model::Contact;

/// `apiVersion: tenantry/v1`, `kind: Tenant`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TenantSpec {
    pub api_version: String,
    pub kind: String,
    pub metadata: SpecMetadata,
    pub spec: SpecBody,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecMetadata {
    pub slug: String,
    pub name: String,
    /// Short words that describe the tenant (`environment: production`, `cost-centre: 4711`):
    /// kept in its registry `metadata` under `labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Anything else the operator keeps with the tenant (contacts, SLA, billing, features):
    /// kept in its registry `metadata`, key by key.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

impl SpecMetadata {
    /// The registry `metadata` the labels and annotations stand for; none when the spec has
    /// neither (the tenant's metadata is then left as it is).
    pub fn registry_metadata(&self) -> Option<Map<String, Value>> {
        if self.labels.is_empty() && self.annotations.is_empty() {
            return None;
        }
        let mut metadata = self.annotations.clone();
        if !self.labels.is_empty() {
            metadata.insert("labels".into(), serde_json::json!(self.labels));
        }
        Some(metadata)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecBody {
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub trial_days: Option<i64>,
    #[serde(default)]
    pub contact: Option<Contact>,
    #[serde(default)]
    pub auth: Option<SpecAuth>,
    #[serde(default)]
    pub database: Option<SpecDatabase>,
    #[serde(default)]
    pub connection_template: Option<SpecConnection>,
    #[serde(default)]
    pub assets: Option<SpecAssets>,
    /// Backend plugin → its settings. Absent: every enabled backend plugin, as a provisioning
    /// request without `backends` has it; `{}`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecAuth {
    #[serde(default)]
    pub oauth_issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecDatabase {
    /// Environment variable holding the tenant's database URI (Option B).
    #[serde(default)]
    pub uri_env: Option<String>,
    #[serde(default)]
    pub default_schema: Option<String>,
    #[serde(default)]
    pub settings: Option<DatabaseSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecConnection {
    pub template_name: String,
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub placeholders: BTreeMap<String, Value>,
    /// Placeholder → environment variable holding its value (passwords).
    #[serde(default)]
    pub placeholders_env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecAssets {
    #[serde(default)]
    pub template_tags: Vec<String>,
    #[serde(default)]
    pub placeholders: BTreeMap<String, Value>,
}

impl TenantSpec {
    /// Parses a YAML (or JSON) spec; errors name the line and the field.
    pub fn parse(text: &str) -> anyhow::Result<TenantSpec> {
        let spec: TenantSpec = serde_yaml_ng::from_str(text).map_err(|e| {
            // A document shaped like an Airflow tenant config (`tenant:` at the top,
            // no `apiVersion`) is named as such, with where to look.
            let airflow_shaped = serde_yaml_ng::from_str::<serde_json::Value>(text)
                .ok()
                .is_some_and(|v| v.get("tenant").is_some() && v.get("apiVersion").is_none());
            if airflow_shaped {
                anyhow::anyhow!(
                    "invalid tenant spec: {e}. This is the shape of an Airflow tenant config \
                     (`tenant:` at the top); `tenantry spec convert FILE` writes the \
                     `tenantry/v1` spec it stands for (docs/provisioning.md \"Declarative tenants\")"
                )
            } else {
                anyhow::anyhow!("invalid tenant spec: {e}")
            }
        })?;
        anyhow::ensure!(
            spec.api_version == "tenantry/v1",
            "invalid tenant spec: apiVersion must be `tenantry/v1`"
        );
        anyhow::ensure!(
            spec.kind == "Tenant",
            "invalid tenant spec: kind must be `Tenant`"
        );
        Ok(spec)
    }

    /// The provisioning request the spec stands for, secrets read through `env`.
    pub fn to_request(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<ProvisionRequest> {
        let read = |var: &str, what: &str| {
            env(var).ok_or_else(|| anyhow::anyhow!("{what}: environment variable {var} is not set"))
        };
        let s = &self.spec;
        let auth = s.auth.clone().unwrap_or_default();
        let db = s.database.clone().unwrap_or_default();
        let tenant = NewTenant {
            slug: self.metadata.slug.clone(),
            name: self.metadata.name.clone(),
            tier: s.tier.clone(),
            trial_days: s.trial_days,
            contact: s.contact.clone(),
            metadata: self.metadata.registry_metadata(),
            oauth_issuer: auth.oauth_issuer.clone(),
            client_id: auth.client_id.clone(),
            client_secret: auth
                .client_secret_env
                .as_deref()
                .map(|v| read(v, "spec.auth.client_secret_env"))
                .transpose()?,
            scopes: auth.scopes.as_ref().map(|list| Scopes::List(list.clone())),
            db_uri: db
                .uri_env
                .as_deref()
                .map(|v| read(v, "spec.database.uri_env"))
                .transpose()?,
            default_schema: db.default_schema.clone(),
            role_mapping: None,
        };
        let connection_template = match &s.connection_template {
            None => None,
            Some(c) => {
                let mut placeholders = c.placeholders.clone();
                for (name, var) in &c.placeholders_env {
                    placeholders.insert(
                        name.clone(),
                        Value::String(read(
                            var,
                            &format!("spec.connection_template.placeholders_env.{name}"),
                        )?),
                    );
                }
                Some(ConnectionTemplate {
                    use_admin_template: true,
                    template_name: c.template_name.clone(),
                    version: c.version,
                    name: c.name.clone(),
                    placeholders,
                })
            }
        };
        Ok(ProvisionRequest {
            tenant,
            connection_template,
            database: db.settings.clone(),
            assets: s.assets.as_ref().map(|a| Assets {
                use_admin_templates: !a.template_tags.is_empty(),
                template_tags: a.template_tags.clone(),
                placeholders: a.placeholders.clone(),
                ..Assets::default()
            }),
            tier: None,
            trial_days: None,
            contact: None,
            backends: s.backends.as_ref().map(|b| json!(b)),
            idempotency_key: None,
        })
    }
}
