//! The `superset` backend plugin: brings a tenant into Apache Superset through its REST API.
//!
//! Steps (see docs/provisioning.md, section "Superset"): `database-<connection>` (a database
//! connection per rendered connection), `role` (the tenant's role with access to its databases),
//! `rls` (a row-level security filter, when `settings.rls` is given) and `assets` (dashboards,
//! charts and datasets imported as a bundle, when asset templates or a bundle are given).
//! Every resource has a name derived from the tenant's slug, so `apply` looks it up before creating
//! it, and two tenants never share one.

mod client;
mod logic;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry_plugin_sdk::log;
use tenantry_plugin_sdk::provisioner::{
    BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Provisioner,
    Step, Tenant,
};
use tenantry_plugin_sdk::state;

use client::Session;
use logic::RisonValue;
use tenantry_plugin_sdk::backend::permanent;
use tenantry_plugin_sdk::backend::uri::{self, DatabaseUrl};

struct Superset;

/// The state key holding the permissions taken from the tenant's role on suspend.
const SUSPENDED_KEY: &str = "suspended-permissions";

type Res<T> = std::result::Result<T, PluginError>;

// ---------------------------------------------------------------------------------------------
// The request (docs/provisioning.md) and the steps' inputs.

#[derive(Deserialize, Default)]
#[serde(default)]
struct Request {
    connections: Vec<Connection>,
    assets: Vec<Asset>,
    asset_bundle: Option<AssetBundle>,
    settings: Settings,
}

#[derive(Deserialize)]
struct Connection {
    name: String,
    uri: String,
    #[serde(default)]
    database: Option<DatabaseSettings>,
    /// The template that produced the URI (null for a direct URI): carried into the step input
    /// as `source`, so that the host records it with the resource.
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Where a step's input came from: `{"template", "version", "fingerprint"}` or nothing.
fn source(
    template: &Option<String>,
    version: Option<i64>,
    fingerprint: &Option<String>,
) -> Option<serde_json::Value> {
    match (template, fingerprint) {
        (Some(t), Some(f)) => {
            Some(serde_json::json!({ "template": t, "version": version, "fingerprint": f }))
        }
        _ => None,
    }
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(default)]
struct DatabaseSettings {
    database_name: Option<String>,
    expose_in_sqllab: bool,
    allow_ctas: bool,
    allow_cvas: bool,
    allow_dml: bool,
    allow_run_async: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            database_name: None,
            expose_in_sqllab: true,
            allow_ctas: false,
            allow_cvas: false,
            allow_dml: false,
            allow_run_async: false,
        }
    }
}

#[derive(Deserialize)]
struct Asset {
    name: String,
    body: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct AssetBundle {
    base64: String,
    #[serde(default = "yes")]
    overwrite: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Settings {
    rls: Option<RlsSettings>,
}

#[derive(Deserialize)]
struct RlsSettings {
    table: String,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default = "tenant_id")]
    column: String,
    /// The connection whose database holds the table (default: the first).
    #[serde(default)]
    connection: Option<String>,
}

fn tenant_id() -> String {
    "tenant_id".into()
}

#[derive(Serialize, Deserialize)]
struct DatabaseInput {
    connection: String,
    database_name: String,
    /// The connection URI with its password (the step needs it to create the connection).
    uri: String,
    settings: DatabaseSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct RoleInput {
    role: String,
    databases: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct RlsInput {
    name: String,
    role: String,
    database_name: String,
    schema: Option<String>,
    table: String,
    clause: String,
}

#[derive(Serialize, Deserialize)]
struct AssetsInput {
    /// Connection name → Superset database name, in the request's order.
    databases: Vec<(String, String)>,
    /// The tenant's copy of the templates' files (UUIDs already the tenant's).
    files: BTreeMap<String, String>,
    /// `dashboards`/`charts`/`datasets` → the UUIDs the files create.
    uuids: BTreeMap<String, Vec<String>>,
    bundle_base64: Option<String>,
    overwrite: bool,
    /// The asset templates the files came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sources: Vec<serde_json::Value>,
}

fn input<T: for<'a> Deserialize<'a>>(step: &Step) -> Res<T> {
    serde_json::from_str(&step.input)
        .map_err(|e| permanent(format!("step `{}`: invalid input: {e}", step.id)))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serializable")
}

/// An input's name must be this tenant's (the host hands back what `plan` made).
fn owned(tenant: &Tenant, name: &str) -> Res<()> {
    let ours = name.starts_with(&format!("tenantry-{}-", tenant.slug))
        || name == logic::role_name(&tenant.slug);
    if ours {
        Ok(())
    } else {
        Err(permanent(format!(
            "`{name}` is not a resource of tenant `{}`",
            tenant.slug
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// plan

fn plan(tenant: &Tenant, request: &str) -> Res<Vec<Step>> {
    let request: Request = serde_json::from_str(request)
        .map_err(|e| permanent(format!("invalid provisioning request: {e}")))?;
    let slug = &tenant.slug;
    let mut steps = Vec::new();
    let mut databases: Vec<(String, String)> = Vec::new();
    for connection in &request.connections {
        if connection.uri.trim().is_empty() {
            return Err(permanent(format!(
                "connection `{}` has no URI",
                connection.name
            )));
        }
        let name = logic::database_name(slug, &connection.name);
        if databases.iter().any(|(_, n)| *n == name) {
            return Err(permanent(format!(
                "two connections map to the Superset database `{name}`"
            )));
        }
        let settings = connection.database.clone().unwrap_or_default();
        steps.push(Step {
            id: logic::database_step_id(&connection.name),
            description: format!(
                "Superset database connection `{name}` to {}",
                uri::redact(&connection.uri)
            ),
            input: to_json(&DatabaseInput {
                connection: connection.name.clone(),
                database_name: name.clone(),
                uri: connection.uri.clone(),
                settings,
                source: source(
                    &connection.template,
                    connection.version,
                    &connection.fingerprint,
                ),
            }),
        });
        databases.push((connection.name.clone(), name));
    }
    let role = logic::role_name(slug);
    steps.push(Step {
        id: "role".into(),
        description: format!(
            "Superset role `{role}` with access to {}",
            if databases.is_empty() {
                "no database".to_string()
            } else {
                databases
                    .iter()
                    .map(|(_, n)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        input: to_json(&RoleInput {
            role: role.clone(),
            databases: databases.iter().map(|(_, n)| n.clone()).collect(),
        }),
    });
    if let Some(rls) = &request.settings.rls {
        if rls.table.trim().is_empty() {
            return Err(permanent("settings.rls.table must not be empty"));
        }
        if !logic::is_identifier(&rls.column) {
            return Err(permanent(format!(
                "settings.rls.column `{}` must be a plain column name",
                rls.column
            )));
        }
        let database_name = match &rls.connection {
            Some(c) => databases
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, d)| d.clone())
                .ok_or_else(|| {
                    permanent(format!(
                        "settings.rls.connection `{c}` is not a connection of the request"
                    ))
                })?,
            None => databases.first().map(|(_, d)| d.clone()).ok_or_else(|| {
                permanent("settings.rls needs a connection (the request has none)")
            })?,
        };
        let name = logic::rls_name(slug);
        let clause = logic::rls_clause(&rls.column, slug);
        steps.push(Step {
            id: "rls".into(),
            description: format!(
                "Superset row-level security `{name}` on `{}` for `{role}`: {clause}",
                rls.table
            ),
            input: to_json(&RlsInput {
                name,
                role: role.clone(),
                database_name,
                schema: rls.schema.clone().filter(|s| !s.is_empty()),
                table: rls.table.clone(),
                clause,
            }),
        });
    }
    if !request.assets.is_empty() || request.asset_bundle.is_some() {
        let mut files = BTreeMap::new();
        for asset in &request.assets {
            for (path, text) in
                logic::parse_asset_body(&asset.name, &asset.body).map_err(permanent)?
            {
                if files.insert(path.clone(), text).is_some() {
                    return Err(permanent(format!(
                        "asset file `{path}` comes from two asset templates"
                    )));
                }
            }
        }
        for referenced in logic::referenced_connections(&files) {
            let known = match &referenced {
                Some(name) => databases.iter().any(|(c, _)| c == name),
                None => !databases.is_empty(),
            };
            if !known {
                return Err(permanent(format!(
                    "the asset templates refer to {} but the request has no such connection",
                    referenced.map_or("a database".to_string(), |c| format!("connection `{c}`"))
                )));
            }
        }
        let (files, uuids) = logic::tenant_bundle(slug, &files);
        let count = |k: &str| uuids.get(k).map_or(0, Vec::len);
        steps.push(Step {
            id: "assets".into(),
            description: format!(
                "Superset assets: {} dashboard(s), {} chart(s), {} dataset(s){}",
                count("dashboards"),
                count("charts"),
                count("datasets"),
                if request.asset_bundle.is_some() {
                    " and the request's bundle"
                } else {
                    ""
                }
            ),
            input: to_json(&AssetsInput {
                databases: databases.clone(),
                files,
                uuids,
                bundle_base64: request.asset_bundle.as_ref().map(|b| b.base64.clone()),
                overwrite: request.asset_bundle.as_ref().is_none_or(|b| b.overwrite),
                sources: request
                    .assets
                    .iter()
                    .filter_map(|a| source(&a.template, a.version, &a.fingerprint))
                    .collect(),
            }),
        });
    }
    Ok(steps)
}

// ---------------------------------------------------------------------------------------------
// Lookups shared by the steps.

fn id_of(row: &Value) -> Res<i64> {
    row["id"]
        .as_i64()
        .ok_or_else(|| permanent(format!("Superset's answer has no id: {row}")))
}

fn find_database(s: &Session, name: &str) -> Res<Option<i64>> {
    s.find("database", "database_name", name, "find database")?
        .map(|r| id_of(&r))
        .transpose()
}

fn find_role(s: &Session, name: &str) -> Res<Option<i64>> {
    s.find("security/roles", "name", name, "find role")?
        .map(|r| id_of(&r))
        .transpose()
}

fn role_permissions(s: &Session, role_id: i64) -> Res<Vec<i64>> {
    let answer = s.get(
        &format!("/api/v1/security/roles/{role_id}/permissions/"),
        "role permissions",
    )?;
    Ok(answer.body["result"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default())
}

fn set_role_permissions(s: &Session, role_id: i64, ids: &BTreeSet<i64>) -> Res<()> {
    s.post(
        &format!("/api/v1/security/roles/{role_id}/permissions"),
        &json!({ "permission_view_menu_ids": ids }),
        "set role permissions",
    )?;
    Ok(())
}

/// The permission-view id of `database_access` on the database `name` (id `id`).
fn database_access(s: &Session, name: &str, id: i64) -> Res<Option<i64>> {
    let Some(permission) = s.find(
        "security/permissions",
        "name",
        "database_access",
        "find permission",
    )?
    else {
        return Ok(None);
    };
    let view_menu = format!("[{name}].(id:{id})");
    let Some(resource) = s.find("security/resources", "name", &view_menu, "find resource")? else {
        return Ok(None);
    };
    let rows = s.list(
        "security/permissions-resources",
        &[
            (
                "permission",
                "rel_o_m",
                RisonValue::Int(id_of(&permission)?),
            ),
            ("view_menu", "rel_o_m", RisonValue::Int(id_of(&resource)?)),
        ],
        "find permission on resource",
    )?;
    rows.first().map(id_of).transpose()
}

fn find_dataset(
    s: &Session,
    database_id: i64,
    schema: Option<&str>,
    table: &str,
) -> Res<Option<i64>> {
    let mut filters = vec![
        ("table_name", "eq", RisonValue::Str(table.into())),
        ("database", "rel_o_m", RisonValue::Int(database_id)),
    ];
    if let Some(schema) = schema {
        filters.push(("schema", "eq", RisonValue::Str(schema.into())));
    }
    let rows = s.list("dataset", &filters, "find dataset")?;
    rows.iter()
        .find(|r| r["table_name"].as_str() == Some(table))
        .map(id_of)
        .transpose()
}

/// The ids of the `kind` (`dashboard`, `chart`, `dataset`) with UUID `uuid`.
fn find_by_uuid(s: &Session, kind: &str, uuid: &str) -> Res<Vec<Value>> {
    s.list(
        kind,
        &[("uuid", "eq", RisonValue::Str(uuid.into()))],
        &format!("find {kind}"),
    )
}

fn singular(kind: &str) -> &str {
    match kind {
        "dashboards" => "dashboard",
        "charts" => "chart",
        "datasets" => "dataset",
        other => other,
    }
}

fn outcome(output: Value) -> Outcome {
    Outcome {
        output: output.to_string(),
        manual_follow_up: None,
    }
}

// ---------------------------------------------------------------------------------------------
// apply

fn apply_database(tenant: &Tenant, step: &Step) -> Res<Outcome> {
    let input: DatabaseInput = input(step)?;
    owned(tenant, &input.database_name)?;
    // What the outcome records of the connection (never its password); Superset itself
    // judges the URI.
    let parts = DatabaseUrl::parse(&input.uri).unwrap_or_default();
    let mut s = Session::open()?;
    s.hide_uri_password(&input.uri);
    let (id, created) = match find_database(&s, &input.database_name)? {
        Some(id) => (id, false),
        None => {
            let body = json!({
                "database_name": input.database_name,
                // The same for the same tenant and name: a connection made again (a tenant
                // restored from its bundle) is the one its exported dashboards name.
                "uuid": logic::tenant_uuid(&tenant.slug, &format!("database:{}", input.database_name)),
                "sqlalchemy_uri": input.uri,
                "expose_in_sqllab": input.settings.expose_in_sqllab,
                "allow_ctas": input.settings.allow_ctas,
                "allow_cvas": input.settings.allow_cvas,
                "allow_dml": input.settings.allow_dml,
                "allow_run_async": input.settings.allow_run_async,
            });
            let created = s.post("/api/v1/database/", &body, "create database connection")?;
            (id_of(&created)?, true)
        }
    };
    let shown = s.get(&format!("/api/v1/database/{id}"), "read database")?;
    log::info(&format!(
        "database `{}` (id {id}) {}",
        input.database_name,
        if created { "created" } else { "already there" }
    ));
    Ok(outcome(json!({
        "id": id,
        "database_name": input.database_name,
        "uuid": shown.body["result"]["uuid"],
        "backend": parts.scheme,
        "host": parts.host,
        "port": parts.port,
        "database": parts.database,
        "username": parts.username,
        "created": created,
    })))
}

fn wanted_permissions(s: &Session, databases: &[String]) -> Res<BTreeSet<i64>> {
    let mut wanted = BTreeSet::new();
    for name in databases {
        let id = find_database(s, name)?.ok_or_else(|| {
            permanent(format!(
                "database `{name}` is not in Superset (its step must be applied first)"
            ))
        })?;
        let pv = database_access(s, name, id)?.ok_or_else(|| {
            permanent(format!(
                "Superset has no `database_access` permission on `{name}` (id {id})"
            ))
        })?;
        wanted.insert(pv);
    }
    Ok(wanted)
}

fn suspended_permissions() -> Option<BTreeSet<i64>> {
    state::get(SUSPENDED_KEY).and_then(|v| serde_json::from_slice(&v).ok())
}

fn remember_suspended(ids: &BTreeSet<i64>) -> Res<()> {
    state::set(SUSPENDED_KEY, to_json(ids).as_bytes())
        .map_err(|e| permanent(format!("plugin state: {e}")))
}

fn apply_role(tenant: &Tenant, step: &Step) -> Res<Outcome> {
    let input: RoleInput = input(step)?;
    owned(tenant, &input.role)?;
    for d in &input.databases {
        owned(tenant, d)?;
    }
    let s = Session::open()?;
    let (role_id, created) = match find_role(&s, &input.role)? {
        Some(id) => (id, false),
        None => {
            let created = s.post(
                "/api/v1/security/roles/",
                &json!({ "name": input.role }),
                "create role",
            )?;
            (id_of(&created)?, true)
        }
    };
    let wanted = wanted_permissions(&s, &input.databases)?;
    if let Some(mut kept) = suspended_permissions() {
        // Suspended: the access is given with the rest on reactivation.
        kept.extend(wanted.iter().copied());
        remember_suspended(&kept)?;
        log::info("tenant suspended: the role's database access is kept for reactivation");
    } else {
        let current: BTreeSet<i64> = role_permissions(&s, role_id)?.into_iter().collect();
        if !wanted.is_subset(&current) {
            let all: BTreeSet<i64> = current.union(&wanted).copied().collect();
            set_role_permissions(&s, role_id, &all)?;
        }
    }
    Ok(outcome(json!({
        "role_id": role_id,
        "role": input.role,
        "databases": input.databases,
        "permission_view_ids": wanted,
        "created": created,
    })))
}

fn apply_rls(tenant: &Tenant, step: &Step) -> Res<Outcome> {
    let input: RlsInput = input(step)?;
    owned(tenant, &input.name)?;
    owned(tenant, &input.role)?;
    owned(tenant, &input.database_name)?;
    let s = Session::open()?;
    let role_id = find_role(&s, &input.role)?.ok_or_else(|| {
        permanent(format!(
            "role `{}` is not in Superset (step `role` first)",
            input.role
        ))
    })?;
    let database_id = find_database(&s, &input.database_name)?.ok_or_else(|| {
        permanent(format!(
            "database `{}` is not in Superset (its step must be applied first)",
            input.database_name
        ))
    })?;
    let dataset_id = match find_dataset(&s, database_id, input.schema.as_deref(), &input.table)? {
        Some(id) => id,
        None => {
            let mut body = json!({ "database": database_id, "table_name": input.table });
            if let Some(schema) = &input.schema {
                body["schema"] = json!(schema);
            }
            id_of(&s.post("/api/v1/dataset/", &body, "create dataset")?)?
        }
    };
    let rls_id = match s.find("rowlevelsecurity", "name", &input.name, "find RLS filter")? {
        Some(row) => id_of(&row)?,
        None => id_of(&s.post(
            "/api/v1/rowlevelsecurity/",
            &json!({
                "name": input.name,
                "description": format!("tenantry: rows of tenant {}", tenant.slug),
                "filter_type": "Regular",
                "tables": [dataset_id],
                "roles": [role_id],
                "clause": input.clause,
                "group_key": "",
            }),
            "create RLS filter",
        )?)?,
    };
    Ok(outcome(json!({
        "rls_id": rls_id,
        "name": input.name,
        "clause": input.clause,
        "dataset_id": dataset_id,
        "table": input.table,
        "schema": input.schema,
        "role_id": role_id,
    })))
}

fn database_yaml(s: &Session, name: &str) -> Res<(String, String)> {
    let id = find_database(s, name)?.ok_or_else(|| {
        permanent(format!(
            "database `{name}` is not in Superset (its step must be applied first)"
        ))
    })?;
    let connection = s.get(
        &format!("/api/v1/database/{id}/connection"),
        "read database connection",
    )?;
    let shown = s.get(&format!("/api/v1/database/{id}"), "read database")?;
    let c = &connection.body["result"];
    let uuid = shown.body["result"]["uuid"]
        .as_str()
        .ok_or_else(|| {
            permanent(format!(
                "Superset does not show the UUID of database `{name}`"
            ))
        })?
        .to_string();
    let extra = c["extra"]
        .as_str()
        .and_then(|e| serde_json::from_str::<Value>(e).ok())
        .unwrap_or_else(|| json!({}));
    let flag = |k: &str| c[k].as_bool().unwrap_or(false);
    // The URI is masked (XXXXXXXXXX): Superset keeps the password of a database it knows.
    let yaml = format!(
        "database_name: {}\nsqlalchemy_uri: {}\ncache_timeout: null\nexpose_in_sqllab: {}\nallow_run_async: {}\nallow_ctas: {}\nallow_cvas: {}\nallow_dml: {}\nallow_file_upload: {}\nextra: {}\nimpersonate_user: {}\nuuid: {uuid}\nversion: 1.0.0\n",
        logic::yaml_string(name),
        logic::yaml_string(c["sqlalchemy_uri"].as_str().unwrap_or_default()),
        flag("expose_in_sqllab"),
        flag("allow_run_async"),
        flag("allow_ctas"),
        flag("allow_cvas"),
        flag("allow_dml"),
        flag("allow_file_upload"),
        extra,
        flag("impersonate_user"),
    );
    Ok((uuid, yaml))
}

fn import(s: &Session, zip: Vec<u8>, overwrite: bool, seed: &str) -> Res<()> {
    upload_zip(
        s,
        "/api/v1/assets/import/",
        "bundle",
        zip,
        overwrite,
        seed,
        "import assets",
    )
}

/// Uploads a ZIP of assets to an import endpoint (`field` is the form field it expects).
fn upload_zip(
    s: &Session,
    path: &str,
    field: &str,
    zip: Vec<u8>,
    overwrite: bool,
    seed: &str,
    what: &str,
) -> Res<()> {
    let (content_type, body) = logic::multipart(
        &[
            ("passwords", "{}"),
            ("overwrite", if overwrite { "true" } else { "false" }),
        ],
        (field, "bundle.zip", &zip),
        seed,
    );
    match s.upload(path, &content_type, body, what) {
        // Superset answers 500 "Import failed for an unknown reason" to a malformed bundle:
        // retrying cannot help.
        Err(PluginError::Transient(m)) if m.contains(": Superset answered 500") => {
            Err(PluginError::Permanent(format!(
                "{m} (a file of the bundle is probably incomplete; Superset's log has the cause)"
            )))
        }
        other => other.map(|_| ()),
    }
}

fn apply_assets(tenant: &Tenant, step: &Step) -> Res<Outcome> {
    let input: AssetsInput = input(step)?;
    for (_, d) in &input.databases {
        owned(tenant, d)?;
    }
    let s = Session::open()?;
    if !input.files.is_empty() {
        let referenced = logic::referenced_connections(&input.files);
        let mut uuids = Vec::new();
        let mut entries = Vec::new();
        for (i, (connection, name)) in input.databases.iter().enumerate() {
            let needed = referenced.contains(&Some(connection.clone()))
                || (i == 0 && referenced.contains(&None));
            if !needed {
                continue;
            }
            let (uuid, yaml) = database_yaml(&s, name)?;
            uuids.push((connection.clone(), uuid));
            entries.push((
                format!("tenantry_bundle/databases/{name}.yaml"),
                yaml.into_bytes(),
            ));
        }
        // `TENANTRY_DATABASE_UUID` alone is the first connection, even when not referenced by name.
        if let Some((c, _)) = input.databases.first() {
            if !uuids.iter().any(|(u, _)| u == c) && referenced.contains(&None) {
                return Err(permanent("internal: first connection not resolved"));
            }
            if let Some(pos) = uuids.iter().position(|(u, _)| u == c) {
                let first = uuids.remove(pos);
                uuids.insert(0, first);
            }
        }
        for (path, text) in &input.files {
            let text = logic::substitute_database_uuids(text, &uuids)
                .map_err(|e| permanent(format!("asset file `{path}`: {e}")))?;
            entries.push((format!("tenantry_bundle/{path}"), text.into_bytes()));
        }
        entries.insert(
            0,
            (
                "tenantry_bundle/metadata.yaml".into(),
                b"version: 1.0.0\ntype: assets\ntimestamp: '2000-01-01T00:00:00+00:00'\n".to_vec(),
            ),
        );
        import(&s, logic::zip_stored(&entries), true, &tenant.slug)?;
    }
    if let Some(b64) = &input.bundle_base64 {
        let zip = logic::base64_decode(b64)
            .map_err(|e| permanent(format!("asset_bundle.base64: {e}")))?;
        import(&s, zip, input.overwrite, &tenant.slug)?;
    }
    let mut output = serde_json::Map::new();
    for (kind, uuids) in &input.uuids {
        let mut rows = Vec::new();
        for uuid in uuids {
            let found = find_by_uuid(&s, singular(kind), uuid)?;
            let row = found.first();
            rows.push(json!({
                "uuid": uuid,
                "id": row.and_then(|r| r["id"].as_i64()),
                "title": row.and_then(|r| r.get("dashboard_title").or(r.get("slice_name")).or(r.get("table_name")).cloned()),
            }));
        }
        output.insert(kind.clone(), Value::Array(rows));
    }
    output.insert(
        "bundle_imported".into(),
        json!(input.bundle_base64.is_some()),
    );
    Ok(outcome(Value::Object(output)))
}

// ---------------------------------------------------------------------------------------------
// measure, export, import

/// The Superset databases of the tenant's applied `database-*` steps that exist.
fn tenant_databases(s: &Session, tenant: &Tenant, applied: &[(Step, Outcome)]) -> Res<Vec<i64>> {
    let mut ids = Vec::new();
    for (step, _) in applied
        .iter()
        .filter(|(s, _)| s.id.starts_with("database-"))
    {
        let input: DatabaseInput = input(step)?;
        owned(tenant, &input.database_name)?;
        if let Some(id) = find_database(s, &input.database_name)? {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The ids of the charts and dashboards that use the tenant's databases.
fn tenant_assets(
    s: &Session,
    tenant: &Tenant,
    applied: &[(Step, Outcome)],
) -> Res<(BTreeSet<i64>, BTreeSet<i64>)> {
    let mut charts = BTreeSet::new();
    let mut dashboards = BTreeSet::new();
    for id in tenant_databases(s, tenant, applied)? {
        let related = s.get(
            &format!("/api/v1/database/{id}/related_objects/"),
            "database related objects",
        )?;
        let ids = |kind: &str| -> Vec<i64> {
            related.body[kind]["result"]
                .as_array()
                .map(|rows| rows.iter().filter_map(|r| r["id"].as_i64()).collect())
                .unwrap_or_default()
        };
        charts.extend(ids("charts"));
        dashboards.extend(ids("dashboards"));
    }
    Ok((charts, dashboards))
}

fn measure(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Res<Vec<Measurement>> {
    if !applied.iter().any(|(s, _)| s.id.starts_with("database-")) {
        return Ok(Vec::new());
    }
    let s = Session::open()?;
    let (charts, dashboards) = tenant_assets(&s, tenant, applied)?;
    Ok(vec![
        Measurement {
            metric: "dashboards".into(),
            value: dashboards.len() as f64,
        },
        Measurement {
            metric: "charts".into(),
            value: charts.len() as f64,
        },
    ])
}

/// The tenant's dashboards, with their charts, datasets and database connections (passwords
/// masked, as Superset exports them), as Superset's own export ZIP.
fn export(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Res<Option<BundlePart>> {
    if !applied.iter().any(|(s, _)| s.id.starts_with("database-")) {
        return Ok(None);
    }
    let s = Session::open()?;
    let (charts, dashboards) = tenant_assets(&s, tenant, applied)?;
    let (kind, ids) = if !dashboards.is_empty() {
        ("dashboard", dashboards)
    } else if !charts.is_empty() {
        ("chart", charts)
    } else {
        return Ok(None);
    };
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let zip = s.download(
        &format!("/api/v1/{kind}/export/?q=!({})", list.join(",")),
        &format!("export {kind}s"),
    )?;
    Ok(Some(BundlePart {
        media_type: "application/zip".into(),
        data: zip,
        // The export's file names and `metadata.yaml` carry the time of the export.
        instance_specific: vec!["metadata.yaml#timestamp".into(), "file names".into()],
    }))
}

/// Imports an export of [`export`] over what is there; the tenant's database connections are
/// matched by UUID (their passwords are the ones Superset holds).
fn import_part(tenant: &Tenant, part: &BundlePart) -> Res<Outcome> {
    if part.media_type != "application/zip" {
        return Err(permanent(format!(
            "the superset plugin imports its own export (application/zip), not {}",
            part.media_type
        )));
    }
    let s = Session::open()?;
    // Superset's export names its kind in metadata.yaml; the dashboard import takes charts too.
    let kind = if part.data.windows(15).any(|w| w == b"type: Dashboard") {
        "dashboard"
    } else {
        "chart"
    };
    upload_zip(
        &s,
        &format!("/api/v1/{kind}/import/"),
        "formData",
        part.data.clone(),
        true,
        &tenant.slug,
        &format!("import {kind}s"),
    )?;
    Ok(Outcome::done(
        &json!({ "imported": kind, "bytes": part.data.len() }),
    ))
}

// ---------------------------------------------------------------------------------------------
// compensate

fn compensate(tenant: &Tenant, step: &Step) -> Res<()> {
    let s = Session::open()?;
    match step.id.as_str() {
        "role" => {
            let input: RoleInput = input(step)?;
            owned(tenant, &input.role)?;
            if let Some(id) = find_role(&s, &input.role)? {
                s.delete(&format!("/api/v1/security/roles/{id}"), "delete role")?;
            }
            state::delete(SUSPENDED_KEY);
        }
        "rls" => {
            let input: RlsInput = input(step)?;
            owned(tenant, &input.name)?;
            if let Some(row) = s.find("rowlevelsecurity", "name", &input.name, "find RLS filter")? {
                s.delete(
                    &format!("/api/v1/rowlevelsecurity/{}", id_of(&row)?),
                    "delete RLS filter",
                )?;
            }
            if let Some(db) = find_database(&s, &input.database_name)? {
                if let Some(ds) = find_dataset(&s, db, input.schema.as_deref(), &input.table)? {
                    s.delete(&format!("/api/v1/dataset/{ds}"), "delete dataset")?;
                }
            }
        }
        "assets" => {
            let input: AssetsInput = input(step)?;
            for kind in ["dashboards", "charts", "datasets"] {
                for uuid in input.uuids.get(kind).into_iter().flatten() {
                    for row in find_by_uuid(&s, singular(kind), uuid)? {
                        s.delete(
                            &format!("/api/v1/{}/{}", singular(kind), id_of(&row)?),
                            &format!("delete {}", singular(kind)),
                        )?;
                    }
                }
            }
            if input.bundle_base64.is_some() {
                log::warn(
                    "the assets of the request's ready bundle (asset_bundle) are not removed: remove them in Superset",
                );
            }
        }
        id if id.starts_with("database-") => {
            let input: DatabaseInput = input(step)?;
            owned(tenant, &input.database_name)?;
            // By name, not by the recorded id: Superset reuses ids after deletes.
            if let Some(id) = find_database(&s, &input.database_name)? {
                s.delete(
                    &format!("/api/v1/database/{id}"),
                    "delete database connection",
                )?;
            }
        }
        other => return Err(permanent(format!("unknown step `{other}`"))),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// observe

fn observe(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Res<Vec<Drift>> {
    let s = Session::open()?;
    let mut drifts = Vec::new();
    let mut drift = |resource: String, problem: String| drifts.push(Drift { resource, problem });
    for (step, done) in applied {
        let output: Value = serde_json::from_str(&done.output).unwrap_or(Value::Null);
        match step.id.as_str() {
            "role" => {
                let input: RoleInput = input(step)?;
                let resource = format!("role {}", input.role);
                let Some(role_id) = find_role(&s, &input.role)? else {
                    drift(resource, "missing".into());
                    continue;
                };
                if suspended_permissions().is_some() || tenant.status == "suspended" {
                    continue;
                }
                let current: BTreeSet<i64> = role_permissions(&s, role_id)?.into_iter().collect();
                for name in &input.databases {
                    let access = match find_database(&s, name)? {
                        Some(id) => database_access(&s, name, id)?,
                        None => None,
                    };
                    if !access.is_some_and(|pv| current.contains(&pv)) {
                        drift(
                            resource.clone(),
                            format!("changed: no access to database {name}"),
                        );
                    }
                }
            }
            "rls" => {
                let input: RlsInput = input(step)?;
                let resource = format!("row-level security {}", input.name);
                match s.find("rowlevelsecurity", "name", &input.name, "find RLS filter")? {
                    None => drift(resource, "missing".into()),
                    Some(row) => {
                        let id = id_of(&row)?;
                        let shown =
                            s.get(&format!("/api/v1/rowlevelsecurity/{id}"), "read RLS filter")?;
                        let r = &shown.body["result"];
                        if r["clause"].as_str() != Some(input.clause.as_str()) {
                            drift(
                                resource.clone(),
                                format!(
                                    "changed: clause is `{}`",
                                    r["clause"].as_str().unwrap_or("")
                                ),
                            );
                        }
                        let has_table = r["tables"].as_array().is_some_and(|t| !t.is_empty());
                        if !has_table {
                            drift(
                                resource,
                                format!("changed: no longer applies to table {}", input.table),
                            );
                        }
                    }
                }
            }
            "assets" => {
                let input: AssetsInput = input(step)?;
                for kind in ["dashboards", "charts", "datasets"] {
                    let titles: BTreeMap<String, String> = output[kind]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| {
                            Some((
                                r["uuid"].as_str()?.to_string(),
                                r["title"].as_str()?.to_string(),
                            ))
                        })
                        .collect();
                    for uuid in input.uuids.get(kind).into_iter().flatten() {
                        if find_by_uuid(&s, singular(kind), uuid)?.is_empty() {
                            let title = titles.get(uuid).cloned().unwrap_or_else(|| uuid.clone());
                            drift(format!("{} {title}", singular(kind)), "missing".into());
                        }
                    }
                }
            }
            id if id.starts_with("database-") => {
                let input: DatabaseInput = input(step)?;
                let resource = format!("database connection {}", input.database_name);
                let Some(id) = find_database(&s, &input.database_name)? else {
                    drift(resource, "missing".into());
                    continue;
                };
                let connection = s.get(
                    &format!("/api/v1/database/{id}/connection"),
                    "read database connection",
                )?;
                // Superset shows the password masked: it is never compared.
                let now = DatabaseUrl::parse(
                    connection.body["result"]["sqlalchemy_uri"]
                        .as_str()
                        .unwrap_or(""),
                )
                .unwrap_or_default();
                let then = DatabaseUrl::parse(&input.uri).unwrap_or_default();
                let port = |p: Option<u16>| Some(p.map_or("default".into(), |p| p.to_string()));
                let mut changes = Vec::new();
                for (what, then, now) in [
                    ("host", then.host, now.host),
                    ("port", port(then.port), port(now.port)),
                    ("database", then.database, now.database),
                    ("user", then.username, now.username),
                ] {
                    if then != now {
                        changes.push(format!(
                            "{what} {} → {}",
                            then.unwrap_or_default(),
                            now.unwrap_or_default()
                        ));
                    }
                }
                if !changes.is_empty() {
                    drift(resource, format!("changed: {}", changes.join(", ")));
                }
            }
            other => log::warn(&format!("observe: unknown step `{other}`")),
        }
    }
    Ok(drifts)
}

// ---------------------------------------------------------------------------------------------
// transition

fn transition(tenant: &Tenant, change: LifecycleChange) -> Res<Outcome> {
    let s = Session::open()?;
    let role = logic::role_name(&tenant.slug);
    let role_id = find_role(&s, &role)?;
    match change {
        LifecycleChange::Suspend | LifecycleChange::Cancel => {
            let Some(role_id) = role_id else {
                return Ok(outcome(json!({ "role": role, "present": false })));
            };
            let current: BTreeSet<i64> = role_permissions(&s, role_id)?.into_iter().collect();
            let mut kept = suspended_permissions().unwrap_or_default();
            kept.extend(current.iter().copied());
            // Remembered first: a crash between the two leaves the access restorable.
            remember_suspended(&kept)?;
            if !current.is_empty() {
                set_role_permissions(&s, role_id, &BTreeSet::new())?;
            }
            Ok(outcome(json!({
                "role": role,
                "role_id": role_id,
                "permissions_removed": current,
                "permissions_kept_for_reactivation": kept,
            })))
        }
        LifecycleChange::Reactivate => {
            let Some(role_id) = role_id else {
                return Ok(Outcome {
                    output: json!({ "role": role, "present": false }).to_string(),
                    manual_follow_up: Some(format!(
                        "the Superset role `{role}` is gone: provision the tenant again to restore its access"
                    )),
                });
            };
            let kept = suspended_permissions().unwrap_or_default();
            let current: BTreeSet<i64> = role_permissions(&s, role_id)?.into_iter().collect();
            let all: BTreeSet<i64> = current.union(&kept).copied().collect();
            if all != current {
                set_role_permissions(&s, role_id, &all)?;
            }
            state::delete(SUSPENDED_KEY);
            Ok(outcome(json!({
                "role": role,
                "role_id": role_id,
                "permissions_restored": kept,
            })))
        }
        LifecycleChange::Purge => {
            let deleted = match role_id {
                Some(id) => s.delete(&format!("/api/v1/security/roles/{id}"), "delete role")?,
                None => false,
            };
            state::delete(SUSPENDED_KEY);
            Ok(outcome(json!({ "role": role, "deleted": deleted })))
        }
    }
}

// ---------------------------------------------------------------------------------------------

impl Provisioner for Superset {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "superset".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> std::result::Result<Vec<Step>, PluginError> {
        Ok(plan(&tenant, &request)?)
    }

    fn apply(
        tenant: Tenant,
        step: Step,
        _key: String,
    ) -> std::result::Result<Outcome, PluginError> {
        let result = match step.id.as_str() {
            "role" => apply_role(&tenant, &step),
            "rls" => apply_rls(&tenant, &step),
            "assets" => apply_assets(&tenant, &step),
            id if id.starts_with("database-") => apply_database(&tenant, &step),
            other => Err(permanent(format!("unknown step `{other}`"))),
        };
        Ok(result?)
    }

    fn compensate(
        tenant: Tenant,
        step: Step,
        _outcome: Outcome,
        _key: String,
    ) -> std::result::Result<Outcome, PluginError> {
        compensate(&tenant, &step)?;
        Ok(Outcome::done(&json!({ "undone": step.id })))
    }

    fn observe(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> std::result::Result<Vec<Drift>, PluginError> {
        Ok(observe(&tenant, &applied)?)
    }

    fn transition(
        tenant: Tenant,
        change: LifecycleChange,
        _reason: String,
    ) -> std::result::Result<Outcome, PluginError> {
        Ok(transition(&tenant, change)?)
    }

    fn measure(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> std::result::Result<Vec<Measurement>, PluginError> {
        measure(&tenant, &applied)
    }

    fn export_tenant(
        tenant: Tenant,
        applied: Vec<(Step, Outcome)>,
    ) -> std::result::Result<Option<BundlePart>, PluginError> {
        export(&tenant, &applied)
    }

    fn import_tenant(
        tenant: Tenant,
        part: BundlePart,
    ) -> std::result::Result<Outcome, PluginError> {
        import_part(&tenant, &part)
    }
}

tenantry_plugin_sdk::register_provisioner!(Superset);
