//! The provisioning request (both shapes operators send: a platform connection template with
//! placeholders, or direct database settings with an asset bundle) and its validation into what
//! plugins plan from.

mod rendered;

use rendered::{rendered_assets, rendered_connections};
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::tenants::NewTenant;
use crate::tenants::input::ValidTenant;
use crate::tenants::model::Contact;

/// `POST /api/v1/tenant/provision`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// The tenant, as for `POST /api/v1/tenant`.
    pub tenant: NewTenant,
    /// Option A: the tenant's connection from an admin template.
    #[serde(default)]
    pub connection_template: Option<ConnectionTemplate>,
    /// Option B (or settings for Option A's connection): the backend database's settings.
    #[serde(default)]
    pub database: Option<DatabaseSettings>,
    /// Asset templates chosen by tag (Option A) or a ready bundle (Option B).
    #[serde(default)]
    pub assets: Option<Assets>,
    /// Overrides `tenant.tier`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Overrides `tenant.trial_days`.
    #[serde(default)]
    pub trial_days: Option<i64>,
    /// Overrides `tenant.contact`.
    #[serde(default)]
    pub contact: Option<Contact>,
    /// Which backend plugins, as a list of names or an object of name → that plugin's settings.
    /// Default: every enabled backend plugin.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub backends: Option<Value>,
    /// Same as the `Idempotency-Key` header.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTemplate {
    /// Must be true: the template is one of the platform's (admin) templates.
    #[serde(default = "yes")]
    pub use_admin_template: bool,
    pub template_name: String,
    /// A version of the template; default its newest.
    #[serde(default)]
    pub version: Option<i64>,
    /// The connection's name in the backends (default `primary`).
    #[serde(default)]
    pub name: Option<String>,
    /// A value for every placeholder the template declares; the tenant's own fields
    /// (`tenant_slug`, `tenant_name`, `tier`, `default_schema`) fill those it declares and
    /// this leaves out.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub placeholders: BTreeMap<String, Value>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    #[serde(default)]
    pub database_name: Option<String>,
    #[serde(default)]
    pub expose_in_sqllab: Option<bool>,
    #[serde(default)]
    pub allow_ctas: Option<bool>,
    #[serde(default)]
    pub allow_cvas: Option<bool>,
    #[serde(default)]
    pub allow_dml: Option<bool>,
    #[serde(default)]
    pub allow_run_async: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assets {
    /// Option A: use the platform's asset templates carrying any of `template_tags`.
    #[serde(default)]
    pub use_admin_templates: bool,
    #[serde(default)]
    pub template_tags: Vec<String>,
    /// Values for the asset templates' own placeholders (beyond the ones filled from the
    /// tenant: `tenant_slug`, `tenant_name`, `tier`, `default_schema`, `database_name`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub placeholders: BTreeMap<String, Value>,
    /// Option B: a ready asset bundle (a ZIP), base64-encoded. The CLI reads `bundle_path` and
    /// sends it so; the server never reads paths of the caller's machine.
    #[serde(default)]
    pub bundle_base64: Option<String>,
    /// Only accepted from the CLI, which turns it into `bundle_base64`.
    #[serde(default)]
    pub bundle_path: Option<String>,
    /// Replace assets that exist already.
    #[serde(default)]
    pub overwrite: bool,
}

/// Largest asset bundle, in bytes (decoded).
pub const MAX_BUNDLE: usize = 8 * 1024 * 1024;

/// A valid request, rendered, ready for plugins to plan from.
pub struct Prepared {
    pub tenant: ValidTenant,
    pub backends: Vec<String>,
    pub settings: BTreeMap<String, Value>,
    pub connections: Vec<Value>,
    /// The key of the database the connection names (see [`database_key`]), when it names one.
    pub database_key: Option<String>,
    pub assets: Vec<Value>,
    pub asset_bundle: Option<Value>,
}

impl Prepared {
    /// The request document `plan` of `plugin` receives (docs/provisioning.md).
    pub fn plan_request(&self, run: &str, plugin: &str) -> Value {
        let t = &self.tenant;
        json!({
            "run": run,
            "tenant": {
                "slug": t.slug.as_str(),
                "name": t.name,
                "tier": t.tier.as_str(),
                "default_schema": t.default_schema,
                "contact": if t.contact == Contact::default() { Value::Null } else { json!(t.contact) },
                "trial_days": (t.trial_days > 0).then_some(t.trial_days),
            },
            "connections": self.connections,
            "assets": self.assets,
            "asset_bundle": self.asset_bundle,
            "settings": self.settings.get(plugin).cloned().unwrap_or_else(|| json!({})),
        })
    }
}

fn prefixed(err: AppError, prefix: &str, top_level: &[&str]) -> AppError {
    match err {
        AppError::Validation(fields) => AppError::Validation(
            fields
                .into_iter()
                .map(|mut f| {
                    if !top_level.contains(&f.field.as_str()) {
                        f.field = format!("{prefix}{}", f.field);
                    }
                    f
                })
                .collect(),
        ),
        other => other,
    }
}

/// Validates everything, renders the templates, and resolves the backends. Changes nothing.
pub async fn prepare(ctx: &Context, req: &ProvisionRequest) -> AppResult<Prepared> {
    let valid = valid_tenant(req)?;
    let mut errors: Vec<FieldError> = Vec::new();
    let (backends, settings) = backends(ctx, req.backends.as_ref(), &mut errors).await?;
    let bundle = checked_assets(req, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let (database_name, database) = database_settings(req, &valid);
    let auto = tenant_values(
        valid.slug.as_str(),
        &valid.name,
        valid.tier.as_str(),
        valid.default_schema.as_deref(),
        Some(&database_name),
    );
    let connections = rendered_connections(ctx, req, &valid, &auto, database).await?;
    let assets = rendered_assets(ctx, req, &auto).await?;
    let database_key = match connections.first().and_then(|c| c["uri"].as_str()) {
        Some(uri) => database_key(uri),
        None => None,
    };
    if let Some(key) = &database_key {
        refuse_another_tenants_database(ctx, key, valid.slug.as_str(), &connections[0]).await?;
    }
    Ok(Prepared {
        tenant: valid,
        backends,
        settings,
        connections,
        database_key,
        assets,
        asset_bundle: bundle,
    })
}

/// The request's tenant, with the top-level `tier`, `trial_days` and `contact` over its own,
/// checked (a top-level field's error is named as given).
fn valid_tenant(req: &ProvisionRequest) -> AppResult<ValidTenant> {
    let mut tenant = req.tenant.clone();
    let mut top_level = Vec::new();
    if let Some(tier) = &req.tier {
        tenant.tier = Some(tier.clone());
        top_level.push("tier");
    }
    if let Some(days) = req.trial_days {
        tenant.trial_days = Some(days);
        top_level.push("trial_days");
    }
    if let Some(contact) = &req.contact {
        tenant.contact = Some(contact.clone());
        top_level.push("contact");
    }
    tenant
        .validate(true)
        .map_err(|e| prefixed(e, "tenant.", &top_level))
}

/// The rules between the request's connection and asset parts; the asset bundle, decoded and
/// checked, as plugins receive it.
fn checked_assets(req: &ProvisionRequest, errors: &mut Vec<FieldError>) -> Option<Value> {
    if req
        .connection_template
        .as_ref()
        .is_some_and(|c| !c.use_admin_template)
    {
        errors.push(FieldError::new(
            "connection_template.use_admin_template",
            "must_be_true",
            "only the platform's templates can be used; give the URI as tenant.db_sqlalchemy_uri for a direct connection",
        ));
    }
    let bundle = match &req.assets {
        Some(a) if a.bundle_path.is_some() => {
            errors.push(FieldError::new(
                "assets.bundle_path",
                "not_accepted",
                "the server does not read files of the caller; send the ZIP as assets.bundle_base64 (the CLI does this for a path)",
            ));
            None
        }
        Some(a) => match &a.bundle_base64 {
            None => None,
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                Err(_) => {
                    errors.push(FieldError::new(
                        "assets.bundle_base64",
                        "base64",
                        "must be a base64-encoded ZIP file",
                    ));
                    None
                }
                Ok(bytes) if bytes.len() > MAX_BUNDLE => {
                    errors.push(FieldError::new(
                        "assets.bundle_base64",
                        "max_size",
                        format!("must be at most {MAX_BUNDLE} bytes"),
                    ));
                    None
                }
                Ok(bytes) if !bytes.starts_with(b"PK") => {
                    errors.push(FieldError::new(
                        "assets.bundle_base64",
                        "zip",
                        "is not a ZIP file",
                    ));
                    None
                }
                Ok(_) => Some(json!({ "base64": b64.trim(), "overwrite": a.overwrite })),
            },
        },
        None => None,
    };
    if let Some(a) = &req.assets
        && a.use_admin_templates
        && a.template_tags.is_empty()
    {
        errors.push(FieldError::new(
            "assets.template_tags",
            "required",
            "name at least one tag of the asset templates to use",
        ));
    }
    if let Some(a) = &req.assets
        && a.use_admin_templates
        && a.bundle_base64.is_some()
    {
        errors.push(FieldError::new(
            "assets",
            "one_of",
            "use admin templates or a bundle, not both",
        ));
    }
    bundle
}

/// The backend database's name and settings, as plugins receive them.
fn database_settings(req: &ProvisionRequest, valid: &ValidTenant) -> (String, Value) {
    let db = req.database.clone().unwrap_or_default();
    let database_name = db
        .database_name
        .clone()
        .unwrap_or_else(|| format!("{} Database", valid.name));
    let database = json!({
        "database_name": database_name,
        "expose_in_sqllab": db.expose_in_sqllab.unwrap_or(true),
        "allow_ctas": db.allow_ctas.unwrap_or(false),
        "allow_cvas": db.allow_cvas.unwrap_or(false),
        "allow_dml": db.allow_dml.unwrap_or(false),
        "allow_run_async": db.allow_run_async.unwrap_or(false),
    });
    (database_name, database)
}

/// The key of the database and user a connection URI names: a digest of
/// `user@host:port/database` (the host in lower case, the scheme's default port when none is
/// given), so that two URIs naming the same database as the same user — whatever their
/// password or options — have the same key, and the key tells nothing of the URI. (Tenants may
/// share a database as different users: a schema each, or rows of shared tables.) None for a
/// URI that names no database this way.
pub(crate) fn database_key(uri: &str) -> Option<String> {
    use sha2::{Digest as _, Sha256};
    let url = url::Url::parse(uri).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let scheme = url.scheme().split('+').next().unwrap_or_default();
    let port = url.port().or(match scheme {
        "postgres" | "postgresql" => Some(5432),
        "mysql" | "mariadb" => Some(3306),
        _ => None,
    })?;
    let database = url.path().trim_start_matches('/');
    if database.is_empty() {
        return None;
    }
    let user = url.username();
    Some(hex::encode(Sha256::digest(
        format!("{user}@{host}:{port}/{database}").as_bytes(),
    )))
}

/// Refuses a connection whose database and user another tenant's recorded connection names (a
/// failed tenant's excepted).
async fn refuse_another_tenants_database(
    ctx: &Context,
    key: &str,
    slug: &str,
    connection: &Value,
) -> AppResult<()> {
    let mut conn = ctx.db.conn().await?;
    for holder in crate::store::tenant_requests::holders_of(&mut conn, key).await? {
        let Some(other) = crate::store::tenants::find_by_id(&mut conn, &holder).await? else {
            continue;
        };
        // A tenant whose provision failed holds nothing (what it made was undone); its retry
        // is checked the same way when it comes.
        if other.slug != slug && other.status != crate::tenants::TenantStatus::Failed {
            let field = if connection["template"].is_null() {
                "tenant.db_sqlalchemy_uri"
            } else {
                "connection_template"
            };
            return Err(AppError::invalid(
                field,
                "unique",
                format!(
                    "the connection names the database and user of tenant `{}`; each tenant's connection must be its own",
                    other.slug
                ),
            ));
        }
    }
    Ok(())
}

/// What every template may use without the request naming it: the tenant's own fields
/// (`database_name`, the database's display name, when there is one).
pub(crate) fn tenant_values(
    slug: &str,
    name: &str,
    tier: &str,
    default_schema: Option<&str>,
    database_name: Option<&str>,
) -> BTreeMap<&'static str, String> {
    let mut values: BTreeMap<&'static str, String> = [
        ("tenant_slug", slug.to_owned()),
        ("tenant_name", name.to_owned()),
        ("tier", tier.to_owned()),
        (
            "default_schema",
            default_schema.unwrap_or("public").to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    if let Some(database_name) = database_name {
        values.insert("database_name", database_name.to_owned());
    }
    values
}

/// `given`, with the tenant's value of each placeholder in `declared` that it leaves out. A
/// connection's `database_name` is never the display name (it names the database itself), so
/// a connection template gets the others only.
pub(crate) fn with_tenant_values(
    given: &BTreeMap<String, Value>,
    declared: &[String],
    tenant: &BTreeMap<&'static str, String>,
    connection: bool,
) -> BTreeMap<String, Value> {
    let mut values = given.clone();
    for p in declared {
        if let Some(v) = tenant.get(p.as_str())
            && !(connection && p == "database_name")
            && !values.contains_key(p)
        {
            values.insert(p.clone(), Value::String(v.clone()));
        }
    }
    values
}

/// The backends of the request: a list of names, an object of name → settings, or absent (every
/// enabled backend plugin).
async fn backends(
    ctx: &Context,
    given: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> AppResult<(Vec<String>, BTreeMap<String, Value>)> {
    let enabled = super::enabled_backends(ctx).await?;
    let mut names = Vec::new();
    let mut settings = BTreeMap::new();
    match given {
        None | Some(Value::Null) => names = enabled.clone(),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(name) => names.push(name.to_owned()),
                    None => errors.push(FieldError::new(
                        format!("backends[{i}]"),
                        "string",
                        "must be a plugin name",
                    )),
                }
            }
        }
        Some(Value::Object(map)) => {
            for (name, value) in map {
                if !value.is_object() && !value.is_null() {
                    errors.push(FieldError::new(
                        format!("backends.{name}"),
                        "object",
                        "must be an object of the plugin's settings",
                    ));
                }
                names.push(name.clone());
                settings.insert(
                    name.clone(),
                    if value.is_null() {
                        Value::Object(Map::new())
                    } else {
                        value.clone()
                    },
                );
            }
        }
        Some(_) => errors.push(FieldError::new(
            "backends",
            "type",
            "must be a list of plugin names or an object of plugin name → settings",
        )),
    }
    let mut seen = Vec::new();
    for name in &names {
        if seen.contains(name) {
            errors.push(FieldError::new(
                format!("backends.{name}"),
                "unique",
                "is named twice",
            ));
        } else if !enabled.contains(name) {
            let why = match ctx.plugins.loaded(name).await {
                Err(crate::plugin_host::CallError::NotInstalled(_)) => {
                    "is not an installed plugin".to_owned()
                }
                Err(err) => return Err(AppError::Unavailable(err.to_string())),
                // The list of enabled provisioners was read first: a provisioner missing from
                // it was disabled, even if this server's copy has not heard so yet.
                Ok(p)
                    if !p.enabled || p.manifest.world == crate::plugin_host::World::Provisioner =>
                {
                    "is disabled".to_owned()
                }
                Ok(p) => format!("is a {} plugin, not a provisioner", p.manifest.world),
            };
            errors.push(FieldError::new(
                format!("backends.{name}"),
                "enabled_provisioner",
                format!("`{name}` {why}"),
            ));
        }
        seen.push(name.clone());
    }
    // Plugins that make the connections' databases real go before the backends that connect
    // to them; otherwise the order given (or the names') stands.
    let mut first = Vec::new();
    for name in &names {
        if let Ok(p) = ctx.plugins.loaded(name).await
            && p.manifest.makes_connections
        {
            first.push(name.clone());
        }
    }
    names.sort_by_key(|n| !first.contains(n));
    Ok((names, settings))
}
