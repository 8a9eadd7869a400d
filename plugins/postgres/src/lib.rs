//! The `postgres` backend plugin: a dedicated PostgreSQL database — or, with
//! `isolation: "schema"`, a schema in a shared database — per tenant, made from the tenant's
//! rendered connection (`postgresql://{user}:{password}@{host}:{port}/{database}`) through the
//! `sql` host interface, on the server the operator granted as `server`.
//!
//! Steps (stable ids): `role` (the connection's user, with its password, a connection limit by
//! tier, no superuser, no BYPASSRLS), `database` (owned by the role, CONNECT revoked from
//! PUBLIC), `schemas` (when `settings.schemas` or `settings.schema_prefix` names any) and `rls`
//! (when `settings.rls` lists tables: row-level security, forced so that the owner is filtered
//! too); with a schema per tenant, `tenant-schema` instead of `database` (owned by the role,
//! nothing for PUBLIC, the role's search_path pinned to it); with tables every tenant shares,
//! `tenant-rows` (forced row-level security with a policy for the tenant's role alone). Each role, database and schema
//! carries a comment naming the tenant's id: a name that exists and is not this tenant's is a
//! permanent failure, never adopted.
//!
//! Bundles: `export-tenant` carries the tenant's data (its tables' typed columns and rows, or
//! its rows of shared tables) and `import-tenant` restores it (`dump`).
//!
//! Lifecycle: suspend and cancel take LOGIN away and close the role's sessions; reactivate
//! gives it back; purge drops the database and the role. See docs/provisioning.md, "PostgreSQL".

mod dump;
mod names;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry_plugin_sdk::backend::{permanent, transient};
use tenantry_plugin_sdk::provisioner::{
    BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Provisioner,
    Step, Tenant,
};
use tenantry_plugin_sdk::sql::{self, SqlError, Value as SqlValue};
use tenantry_plugin_sdk::{config, log, state};

use names::{ident, literal, valid_name};

/// The granted server.
const SERVER: &str = "server";

/// Where the names of what the tenant holds are kept (lifecycle changes get no steps).
const KEY_ROLE: &str = "role";
const KEY_DATABASE: &str = "database";
/// `<database>/<schema>` of a tenant's own schema in a shared database.
const KEY_SCHEMA: &str = "schema";
/// The tenant's rows in shared tables (the `tenant-rows` step's input, as JSON).
const KEY_SHARED: &str = "shared";

/// The policy each listed table gets.
const POLICY: &str = "tenantry_tenant_rows";

struct Postgres;

type Res<T> = Result<T, PluginError>;

// ---------------------------------------------------------------------------------------------
// the request

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    connections: Vec<Connection>,
    #[serde(default)]
    settings: Settings,
}

#[derive(Deserialize)]
struct Connection {
    name: String,
    uri: String,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    version: Option<i64>,
    #[serde(default)]
    fingerprint: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    /// The connection to make real (default: the first PostgreSQL one).
    connection: Option<String>,
    /// Schemas to create, as named.
    schemas: Vec<String>,
    /// `<prefix>_<layer>` for each of `layers` (default bronze, silver, gold).
    schema_prefix: Option<String>,
    layers: Option<Vec<String>>,
    /// Overrides the tier's connection limit.
    connection_limit: Option<i64>,
    rls: Option<RlsSettings>,
    /// `database` (the default): a database per tenant, made and owned by its role. `schema`:
    /// a schema per tenant in the connection's database, which exists and is shared.
    isolation: Option<String>,
    /// The tenant's schema (`isolation = "schema"`; default: the connection's user).
    schema: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RlsSettings {
    tables: Vec<RlsTable>,
    /// What a row's tenant column holds for this tenant (default: the tenant's slug).
    #[serde(default)]
    value: Option<String>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RlsTable {
    schema: String,
    table: String,
    #[serde(default = "tenant_id")]
    column: String,
    /// The columns to create the table with when it does not exist yet: typed definitions,
    /// never SQL text.
    #[serde(
        default,
        deserialize_with = "typed_columns",
        skip_serializing_if = "Option::is_none"
    )]
    columns: Option<Vec<Column>>,
}

/// A column of a table `rls` creates.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Column {
    name: String,
    /// One of the types [`names::column_type`] accepts.
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    not_null: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    primary_key: bool,
}

impl Column {
    /// The column's definition in `CREATE TABLE` (checked by [`check_columns`] first).
    fn definition(&self) -> Res<String> {
        let kind = names::column_type(&self.kind).map_err(permanent)?;
        let mut sql = format!("{} {kind}", ident(&self.name));
        if self.not_null {
            sql.push_str(" NOT NULL");
        }
        if self.primary_key {
            sql.push_str(" PRIMARY KEY");
        }
        Ok(sql)
    }
}

/// Reads `columns`: a list of typed definitions. SQL text (the form of earlier versions) is
/// refused with what to give instead.
fn typed_columns<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Column>>, D::Error> {
    use serde::de::Error as _;
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(_)) => Err(D::Error::custom(
            "`columns` takes typed column definitions ([{\"name\": \"id\", \"type\": \"bigint\", \
             \"primary_key\": true}, {\"name\": \"tenant_id\", \"type\": \"text\", \"not_null\": \
             true}]), not SQL text",
        )),
        Some(list) => serde_json::from_value(list)
            .map(Some)
            .map_err(D::Error::custom),
    }
}

/// Checks table `i`'s column definitions: names, types, no name twice, and the tenant column
/// among them.
fn check_columns(i: usize, t: &RlsTable) -> Res<()> {
    let Some(columns) = &t.columns else {
        return Ok(());
    };
    let at = |j: usize, part: &str| format!("settings.rls.tables[{i}].columns[{j}].{part}");
    if columns.is_empty() {
        return Err(permanent(format!(
            "settings.rls.tables[{i}].columns: give at least the tenant column `{}`",
            t.column
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (j, c) in columns.iter().enumerate() {
        valid_name(&c.name).map_err(|e| permanent(format!("{}: {e}", at(j, "name"))))?;
        names::column_type(&c.kind).map_err(|e| permanent(format!("{}: {e}", at(j, "type"))))?;
        if !seen.insert(c.name.as_str()) {
            return Err(permanent(format!(
                "{}: `{}` is named twice",
                at(j, "name"),
                c.name
            )));
        }
    }
    if !seen.contains(t.column.as_str()) {
        return Err(permanent(format!(
            "settings.rls.tables[{i}].columns: has no column `{}` (the table's tenant column)",
            t.column
        )));
    }
    Ok(())
}

fn tenant_id() -> String {
    "tenant_id".into()
}

// ---------------------------------------------------------------------------------------------
// step inputs

#[derive(Serialize, Deserialize)]
struct RoleInput {
    role: String,
    password: String,
    connection_limit: i64,
    /// The limit is the tier's (no `settings.connection_limit`): applied and observed as the
    /// tenant's tier has it then, so that a tier change reaches the role.
    #[serde(default)]
    by_tier: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct DatabaseInput {
    database: String,
    owner: String,
}

/// The tenant's rows in tables every tenant shares (`isolation = "shared"`).
#[derive(Serialize, Deserialize)]
struct TenantRowsInput {
    database: String,
    owner: String,
    value: String,
    tables: Vec<RlsTable>,
}

/// A schema of the tenant's own in a shared database (`isolation = "schema"`).
#[derive(Serialize, Deserialize)]
struct TenantSchemaInput {
    database: String,
    schema: String,
    owner: String,
}

#[derive(Serialize, Deserialize)]
struct SchemasInput {
    database: String,
    owner: String,
    schemas: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct RlsInput {
    database: String,
    owner: String,
    value: String,
    tables: Vec<RlsTable>,
}

fn input<T: for<'a> Deserialize<'a>>(step: &Step) -> Res<T> {
    serde_json::from_str(&step.input)
        .map_err(|e| permanent(format!("step `{}`: invalid input: {e}", step.id)))
}

fn step(id: &str, description: String, input: &impl Serialize) -> Step {
    Step {
        id: id.into(),
        description,
        input: serde_json::to_string(input).expect("a step's input is JSON"),
    }
}

fn done(output: Value) -> Outcome {
    Outcome {
        output: output.to_string(),
        manual_follow_up: None,
    }
}

// ---------------------------------------------------------------------------------------------
// SQL

/// A statement's error: a lost connection or a timeout may pass, a refusal does not.
fn sql_error(what: &str, err: SqlError) -> PluginError {
    match err {
        SqlError::Connection(m) => transient(format!("{what}: cannot reach PostgreSQL: {m}")),
        SqlError::Timeout => transient(format!("{what}: the statement ran past its time")),
        SqlError::NotGranted(m) => permanent(format!(
            "{what}: {m} (tenantry plugin grant postgres --database server --url-file FILE)"
        )),
        SqlError::Database(m) => permanent(format!("{what}: {m}")),
        SqlError::TooLarge => permanent(format!("{what}: the answer is too large")),
    }
}

fn execute(on: &str, statement: &str, what: &str) -> Res<u64> {
    sql::execute(on, statement, &[]).map_err(|e| sql_error(what, e))
}

fn rows(on: &str, statement: &str, params: &[SqlValue], what: &str) -> Res<Vec<Vec<SqlValue>>> {
    sql::query(on, statement, params)
        .map(|r| r.rows)
        .map_err(|e| sql_error(what, e))
}

fn text(value: &SqlValue) -> Option<String> {
    match value {
        SqlValue::Text(t) => Some(t.clone()),
        _ => None,
    }
}

fn tenant_db(database: &str) -> String {
    format!("{SERVER}/{database}")
}

/// The comment that marks a role or database as the tenant's.
fn mark(tenant: &Tenant) -> String {
    format!("tenantry tenant {}", tenant.id)
}

/// Who holds a role: none when it does not exist, else its comment, whether it may log in,
/// its connection limit and its dangerous attributes.
struct RoleRow {
    comment: Option<String>,
    can_login: bool,
    connection_limit: i64,
    /// A superuser, or BYPASSRLS, or REPLICATION: what only a superuser can give or take away.
    privileged: bool,
}

fn find_role(role: &str) -> Res<Option<RoleRow>> {
    let found = rows(
        SERVER,
        "SELECT pg_catalog.shobj_description(oid, 'pg_authid'), rolcanlogin, \
         rolconnlimit::pg_catalog.int8, (rolsuper OR rolbypassrls OR rolreplication) \
         FROM pg_catalog.pg_roles WHERE rolname = $1",
        &[SqlValue::Text(role.into())],
        "looking up the role",
    )?;
    Ok(found.first().map(|r| RoleRow {
        comment: text(&r[0]),
        can_login: matches!(r[1], SqlValue::Boolean(true)),
        connection_limit: match r[2] {
            SqlValue::Int(n) => n,
            _ => -1,
        },
        privileged: matches!(r[3], SqlValue::Boolean(true)),
    }))
}

/// A database's comment and owner, when it exists.
fn find_database(database: &str) -> Res<Option<(Option<String>, String)>> {
    let found = rows(
        SERVER,
        "SELECT pg_catalog.shobj_description(oid, 'pg_database'), \
         pg_catalog.pg_get_userbyid(datdba)::pg_catalog.text \
         FROM pg_catalog.pg_database WHERE datname = $1",
        &[SqlValue::Text(database.into())],
        "looking up the database",
    )?;
    Ok(found
        .first()
        .map(|r| (text(&r[0]), text(&r[1]).unwrap_or_default())))
}

/// Refuses a name that exists and is not the tenant's.
fn ours(tenant: &Tenant, kind: &str, name: &str, comment: Option<&str>) -> Res<()> {
    if comment == Some(mark(tenant).as_str()) {
        Ok(())
    } else {
        Err(permanent(format!(
            "the {kind} `{name}` exists and is not tenant {}'s: it is not taken over (choose \
             another name in the connection, or remove it)",
            tenant.slug
        )))
    }
}

/// Closes every session of `role`; how many there were.
fn terminate_sessions(role: &str) -> Res<usize> {
    let closed = rows(
        SERVER,
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
         WHERE usename = $1",
        &[SqlValue::Text(role.into())],
        "closing the role's sessions",
    )?;
    Ok(closed.len())
}

fn remember(key: &str, value: &str) -> Res<()> {
    state::set(key, value.as_bytes()).map_err(|e| transient(format!("plugin state: {e}")))
}

fn remembered(key: &str) -> Option<String> {
    state::get(key).and_then(|v| String::from_utf8(v).ok())
}

// ---------------------------------------------------------------------------------------------
// plan

fn connection_limit(tenant: &Tenant, settings: &Settings) -> i64 {
    settings
        .connection_limit
        .unwrap_or_else(|| tier_connection_limit(tenant))
}

/// The connection limit of the tenant's tier, as configured.
fn tier_connection_limit(tenant: &Tenant) -> i64 {
    config::integer(&format!("connection_limit_{}", tenant.tier))
        .or_else(|| config::integer("connection_limit_custom"))
        .unwrap_or(25)
}

/// Whether the tenant's role logs in: as the registry has the tenant now (the status the host
/// hands over), not as this plugin last heard — a tenant restored from a bundle, or changed while
/// a run was lost, is judged by what it is.
fn may_log_in(tenant: &Tenant) -> bool {
    matches!(tenant.status.as_str(), "provisioning" | "trial" | "active")
}

/// The limit a role step stands for now: the tenant's tier's, or the one the settings gave.
fn role_limit(tenant: &Tenant, input: &RoleInput) -> i64 {
    if input.by_tier {
        tier_connection_limit(tenant)
    } else {
        input.connection_limit
    }
}

fn is_postgres(uri: &str) -> bool {
    let scheme = uri.split("://").next().unwrap_or_default();
    let base = scheme.split('+').next().unwrap_or_default();
    matches!(base, "postgres" | "postgresql")
}

fn plan(tenant: &Tenant, request: &str) -> Res<Vec<Step>> {
    let request: Request = serde_json::from_str(request)
        .map_err(|e| permanent(format!("the request is not what this plugin expects: {e}")))?;
    let settings = request.settings;
    let connection = match &settings.connection {
        Some(name) => Some(
            request
                .connections
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| {
                    permanent(format!(
                        "settings.connection: the request has no connection `{name}`"
                    ))
                })?,
        ),
        None => request.connections.iter().find(|c| is_postgres(&c.uri)),
    };
    let Some(connection) = connection else {
        log::info("the request has no PostgreSQL connection: nothing to make");
        return Ok(Vec::new());
    };
    if !is_postgres(&connection.uri) {
        return Err(permanent(format!(
            "connection `{}` is not a PostgreSQL URI",
            connection.name
        )));
    }
    let url = tenantry_plugin_sdk::backend::uri::DatabaseUrl::parse(&connection.uri)
        .map_err(|e| permanent(format!("connection `{}`: {e}", connection.name)))?;
    let what = |part: &str| format!("connection `{}`: its {part}", connection.name);
    let role = url
        .username
        .clone()
        .ok_or_else(|| permanent(format!("{} is missing", what("user"))))?;
    let password = url
        .password
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| permanent(format!("{} is missing", what("password"))))?;
    let database = url
        .database
        .clone()
        .ok_or_else(|| permanent(format!("{} is missing", what("database name"))))?;
    valid_name(&role).map_err(|e| permanent(format!("{}: {e}", what("user"))))?;
    valid_name(&database).map_err(|e| permanent(format!("{}: {e}", what("database name"))))?;
    let limit = connection_limit(tenant, &settings);
    if limit < -1 {
        return Err(permanent(
            "settings.connection_limit: -1 (no limit) or more",
        ));
    }

    let mut schemas = settings.schemas.clone();
    if let Some(prefix) = &settings.schema_prefix {
        let layers = settings
            .layers
            .clone()
            .unwrap_or_else(|| vec!["bronze".into(), "silver".into(), "gold".into()]);
        schemas.extend(layers.iter().map(|l| format!("{prefix}_{l}")));
    }
    for (i, schema) in schemas.iter().enumerate() {
        valid_name(schema).map_err(|e| permanent(format!("settings.schemas[{i}]: {e}")))?;
    }
    schemas.dedup();

    let source = connection.template.as_ref().map(|t| {
        json!({ "template": t, "version": connection.version, "fingerprint": connection.fingerprint })
    });
    let mut steps = vec![step(
        "role",
        format!("create role {role} (connection limit {limit})"),
        &RoleInput {
            role: role.clone(),
            password,
            connection_limit: limit,
            by_tier: settings.connection_limit.is_none(),
            source,
        },
    )];
    match settings.isolation.as_deref().unwrap_or("database") {
        "database" => {}
        "schema" => {
            if !schemas.is_empty() || settings.rls.is_some() {
                return Err(permanent(
                    "settings.schemas, settings.schema_prefix and settings.rls are for a database per tenant; with isolation `schema` the tenant has one schema",
                ));
            }
            let schema = settings.schema.clone().unwrap_or_else(|| role.clone());
            valid_name(&schema).map_err(|e| permanent(format!("settings.schema: {e}")))?;
            steps.push(step(
                "tenant-schema",
                format!("create schema {schema} in {database}, owned by {role}, for it alone"),
                &TenantSchemaInput {
                    database,
                    schema,
                    owner: role,
                },
            ));
            return Ok(steps);
        }
        "shared" => {
            let Some(rls) = settings.rls else {
                return Err(permanent(
                    "settings.rls.tables: with isolation `shared`, list the shared tables that carry a tenant column",
                ));
            };
            if !schemas.is_empty() || rls.tables.is_empty() {
                return Err(permanent(
                    "with isolation `shared`, settings.rls.tables lists the shared tables (at least one), and settings.schemas and settings.schema_prefix are not used",
                ));
            }
            if role.len() > 55 {
                return Err(permanent(format!(
                    "{}: with isolation `shared` it names a policy, so at most 55 characters",
                    what("user")
                )));
            }
            for (i, t) in rls.tables.iter().enumerate() {
                for (part, name) in [
                    ("schema", &t.schema),
                    ("table", &t.table),
                    ("column", &t.column),
                ] {
                    valid_name(name)
                        .map_err(|e| permanent(format!("settings.rls.tables[{i}].{part}: {e}")))?;
                }
                if t.columns.is_some() {
                    return Err(permanent(format!(
                        "settings.rls.tables[{i}].columns: shared tables are the operator's; they are not made here"
                    )));
                }
            }
            let listed: Vec<String> = rls
                .tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.table))
                .collect();
            steps.push(step(
                "tenant-rows",
                format!(
                    "its rows of {} in {database}, for it alone",
                    listed.join(", ")
                ),
                &TenantRowsInput {
                    database,
                    owner: role,
                    value: rls.value.unwrap_or_else(|| tenant.slug.clone()),
                    tables: rls.tables,
                },
            ));
            return Ok(steps);
        }
        other => {
            return Err(permanent(format!(
                "settings.isolation: `{other}` is not `database`, `schema` or `shared`"
            )));
        }
    }
    steps.push(step(
        "database",
        format!("create database {database} owned by {role}"),
        &DatabaseInput {
            database: database.clone(),
            owner: role.clone(),
        },
    ));
    if !schemas.is_empty() {
        steps.push(step(
            "schemas",
            format!("create schemas {} in {database}", schemas.join(", ")),
            &SchemasInput {
                database: database.clone(),
                owner: role.clone(),
                schemas,
            },
        ));
    }
    if let Some(rls) = settings.rls {
        for (i, t) in rls.tables.iter().enumerate() {
            for (part, name) in [
                ("schema", &t.schema),
                ("table", &t.table),
                ("column", &t.column),
            ] {
                valid_name(name)
                    .map_err(|e| permanent(format!("settings.rls.tables[{i}].{part}: {e}")))?;
            }
            check_columns(i, t)?;
        }
        if !rls.tables.is_empty() {
            let listed: Vec<String> = rls
                .tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.table))
                .collect();
            steps.push(step(
                "rls",
                format!("force row-level security on {}", listed.join(", ")),
                &RlsInput {
                    database,
                    owner: role,
                    value: rls.value.unwrap_or_else(|| tenant.slug.clone()),
                    tables: rls.tables,
                },
            ));
        }
    }
    Ok(steps)
}

// ---------------------------------------------------------------------------------------------
// apply

fn apply_role(tenant: &Tenant, input: &RoleInput) -> Res<Outcome> {
    let role = ident(&input.role);
    let limit = role_limit(tenant, input);
    let attributes = format!(
        "{} NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION \
         CONNECTION LIMIT {limit} PASSWORD {}",
        if may_log_in(tenant) {
            "LOGIN"
        } else {
            "NOLOGIN"
        },
        literal(&input.password)
    );
    let mut follow_up = None;
    let action = match find_role(&input.role)? {
        None => {
            execute(
                SERVER,
                &format!("CREATE ROLE {role} {attributes}"),
                "creating the role",
            )?;
            execute(
                SERVER,
                &format!("COMMENT ON ROLE {role} IS {}", literal(&mark(tenant))),
                "marking the role",
            )?;
            "created"
        }
        Some(found) => {
            ours(tenant, "role", &input.role, found.comment.as_deref())?;
            // While the tenant is suspended or canceled its role stays without LOGIN.
            let login = if may_log_in(tenant) {
                "LOGIN"
            } else {
                "NOLOGIN"
            };
            // Only what the grant's CREATEROLE may change: naming SUPERUSER, BYPASSRLS or
            // REPLICATION at all (even to take them away) needs a superuser. A role that gained
            // one of them is left to a superuser, as a follow-up; the rest is repaired.
            execute(
                SERVER,
                &format!(
                    "ALTER ROLE {role} {login} NOCREATEDB NOCREATEROLE CONNECTION LIMIT {limit} PASSWORD {}",
                    literal(&input.password)
                ),
                "updating the role",
            )?;
            if found.privileged {
                follow_up = Some(format!(
                    "role {} is a superuser, bypasses row-level security or may replicate, which \
                     only a superuser can take away: run `ALTER ROLE {role} NOSUPERUSER \
                     NOBYPASSRLS NOREPLICATION` as one",
                    input.role
                ));
            }
            "updated"
        }
    };
    // The granted role works in the tenant's database as a member of its role.
    execute(
        SERVER,
        &format!("GRANT {role} TO CURRENT_USER"),
        "making the server's role a member of the tenant's",
    )?;
    remember(KEY_ROLE, &input.role)?;
    log::info(&format!("role {} {action}", input.role));
    let mut outcome = done(json!({
        "role": input.role,
        "connection_limit": limit,
        "action": action,
    }));
    outcome.manual_follow_up = follow_up;
    Ok(outcome)
}

fn apply_database(tenant: &Tenant, input: &DatabaseInput) -> Res<Outcome> {
    let database = ident(&input.database);
    let owner = ident(&input.owner);
    let action = match find_database(&input.database)? {
        None => {
            execute(
                SERVER,
                &format!("CREATE DATABASE {database} OWNER {owner}"),
                "creating the database",
            )?;
            execute(
                SERVER,
                &format!(
                    "COMMENT ON DATABASE {database} IS {}",
                    literal(&mark(tenant))
                ),
                "marking the database",
            )?;
            "created"
        }
        Some((comment, current_owner)) => {
            ours(tenant, "database", &input.database, comment.as_deref())?;
            if current_owner != input.owner {
                execute(
                    SERVER,
                    &format!("ALTER DATABASE {database} OWNER TO {owner}"),
                    "giving the database to its role",
                )?;
            }
            "found"
        }
    };
    execute(
        SERVER,
        &format!("REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"),
        "revoking CONNECT from PUBLIC",
    )?;
    remember(KEY_DATABASE, &input.database)?;
    log::info(&format!("database {} {action}", input.database));
    Ok(done(json!({
        "database": input.database,
        "owner": input.owner,
        "action": action,
    })))
}

fn apply_schemas(input: &SchemasInput) -> Res<Outcome> {
    let on = tenant_db(&input.database);
    for schema in &input.schemas {
        execute(
            &on,
            &format!(
                "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                ident(schema),
                ident(&input.owner)
            ),
            &format!("creating schema {schema}"),
        )?;
    }
    log::info(&format!("schemas {} in place", input.schemas.join(", ")));
    Ok(done(json!({ "schemas": input.schemas })))
}

fn table_exists(on: &str, t: &RlsTable) -> Res<bool> {
    Ok(!rows(
        on,
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
        &[
            SqlValue::Text(t.schema.clone()),
            SqlValue::Text(t.table.clone()),
        ],
        "looking up a table",
    )?
    .is_empty())
}

/// The clause of a table's policy.
fn clause(t: &RlsTable, value: &str) -> String {
    format!("({} = {})", ident(&t.column), literal(value))
}

fn apply_rls(input: &RlsInput) -> Res<Outcome> {
    let on = tenant_db(&input.database);
    let mut done_tables = Vec::new();
    for t in &input.tables {
        let name = format!("{}.{}", ident(&t.schema), ident(&t.table));
        if !table_exists(&on, t)? {
            let Some(columns) = &t.columns else {
                return Err(permanent(format!(
                    "table {}.{} does not exist in {} (give `columns` to create it)",
                    t.schema, t.table, input.database
                )));
            };
            execute(
                &on,
                &format!(
                    "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                    ident(&t.schema),
                    ident(&input.owner)
                ),
                &format!("creating schema {}", t.schema),
            )?;
            let columns = columns
                .iter()
                .map(Column::definition)
                .collect::<Res<Vec<_>>>()?
                .join(", ");
            execute(
                &on,
                &format!("CREATE TABLE IF NOT EXISTS {name} ({columns})"),
                &format!("creating table {}.{}", t.schema, t.table),
            )?;
            execute(
                &on,
                &format!("ALTER TABLE {name} OWNER TO {}", ident(&input.owner)),
                &format!("giving table {}.{} to its role", t.schema, t.table),
            )?;
        }
        let what = format!("row-level security on {}.{}", t.schema, t.table);
        execute(
            &on,
            &format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"),
            &what,
        )?;
        // Owners bypass row-level security unless it is forced.
        execute(
            &on,
            &format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY"),
            &what,
        )?;
        execute(
            &on,
            &format!("DROP POLICY IF EXISTS {POLICY} ON {name}"),
            &what,
        )?;
        let clause = clause(t, &input.value);
        execute(
            &on,
            &format!("CREATE POLICY {POLICY} ON {name} USING {clause} WITH CHECK {clause}"),
            &what,
        )?;
        done_tables.push(format!("{}.{}", t.schema, t.table));
    }
    log::info(&format!(
        "row-level security forced on {}",
        done_tables.join(", ")
    ));
    Ok(done(
        json!({ "tables": done_tables, "policy": POLICY, "value": input.value }),
    ))
}

/// A schema's comment and owner in `database`, when it exists.
fn find_schema(database: &str, schema: &str) -> Res<Option<(Option<String>, String)>> {
    let found = rows(
        &tenant_db(database),
        "SELECT pg_catalog.obj_description(oid, 'pg_namespace'), \
         pg_catalog.pg_get_userbyid(nspowner)::pg_catalog.text \
         FROM pg_catalog.pg_namespace WHERE nspname = $1",
        &[SqlValue::Text(schema.into())],
        "looking up the schema",
    )?;
    Ok(found
        .first()
        .map(|r| (text(&r[0]), text(&r[1]).unwrap_or_default())))
}

/// The tenant's own schema in a shared database: owned by its role, with nothing for PUBLIC,
/// the role's `search_path` pinned to it there, and CONNECT to the database for the role.
fn apply_tenant_schema(tenant: &Tenant, input: &TenantSchemaInput) -> Res<Outcome> {
    if find_database(&input.database)?.is_none() {
        return Err(permanent(format!(
            "the shared database {} does not exist: with isolation `schema` it is the operator's (create it, and grant the plugin's role CREATE and CONNECT on it)",
            input.database
        )));
    }
    let on = tenant_db(&input.database);
    let (schema, owner) = (ident(&input.schema), ident(&input.owner));
    let existing = find_schema(&input.database, &input.schema)?;
    if let Some((comment, _)) = &existing {
        ours(tenant, "schema", &input.schema, comment.as_deref())?;
    }
    execute(
        SERVER,
        &format!(
            "GRANT CONNECT ON DATABASE {} TO {owner}",
            ident(&input.database)
        ),
        "letting the role connect to the shared database",
    )?;
    // First (a step that fails is not undone): a GRANT the grantor may not pass on only
    // warns, so check that it took.
    if !may_connect(&input.owner, &input.database)? {
        return Err(permanent(format!(
            "the role {} cannot connect to {}: the plugin's role must be able to pass CONNECT on (own the database, or hold CONNECT WITH GRANT OPTION)",
            input.owner, input.database
        )));
    }
    let action = match existing {
        None => {
            execute(
                &on,
                &format!("CREATE SCHEMA {schema} AUTHORIZATION {owner}"),
                "creating the schema",
            )?;
            execute(
                &on,
                &format!("COMMENT ON SCHEMA {schema} IS {}", literal(&mark(tenant))),
                "marking the schema",
            )?;
            "created"
        }
        Some((_, current_owner)) => {
            if current_owner != input.owner {
                execute(
                    &on,
                    &format!("ALTER SCHEMA {schema} OWNER TO {owner}"),
                    "giving the schema back to the tenant's role",
                )?;
            }
            "updated"
        }
    };
    execute(
        &on,
        &format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"),
        "keeping other roles out of the schema",
    )?;
    execute(
        SERVER,
        &format!(
            "ALTER ROLE {owner} IN DATABASE {} SET search_path = {schema}",
            ident(&input.database)
        ),
        "pinning the role's search_path",
    )?;
    remember(KEY_SCHEMA, &format!("{}/{}", input.database, input.schema))?;
    log::info(&format!(
        "schema {} in {} {action}",
        input.schema, input.database
    ));
    Ok(done(json!({
        "database": input.database,
        "schema": input.schema,
        "action": action,
    })))
}

/// Whether `role` may connect to `database`.
fn may_connect(role: &str, database: &str) -> Res<bool> {
    let found = rows(
        SERVER,
        "SELECT pg_catalog.has_database_privilege($1, $2, 'CONNECT')",
        &[SqlValue::Text(role.into()), SqlValue::Text(database.into())],
        "checking CONNECT of the role",
    )?;
    Ok(matches!(
        found.first().map(|r| &r[0]),
        Some(SqlValue::Boolean(true))
    ))
}

/// Drops the tenant's schema in the shared database (when it is the tenant's) and the role's
/// CONNECT there; whether there was a schema.
fn drop_tenant_schema(tenant: &Tenant, database: &str, schema: &str, owner: &str) -> Res<bool> {
    if find_database(database)?.is_none() {
        return Ok(false);
    }
    let dropped = match find_schema(database, schema)? {
        None => false,
        Some((comment, _)) => {
            ours(tenant, "schema", schema, comment.as_deref())?;
            execute(
                &tenant_db(database),
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema)),
                "dropping the schema",
            )?;
            true
        }
    };
    if find_role(owner)?.is_some() {
        execute(
            SERVER,
            &format!(
                "REVOKE CONNECT ON DATABASE {} FROM {}",
                ident(database),
                ident(owner)
            ),
            "taking CONNECT to the shared database away",
        )?;
    }
    Ok(dropped)
}

/// What differs in table `t` from forced row-level security with policy `policy` keyed on
/// `value` (and, with `role`, from that role reading the table): each a drift problem.
fn policy_drift(
    on: &str,
    t: &RlsTable,
    policy: &str,
    value: &str,
    role: Option<&str>,
) -> Res<Vec<String>> {
    let found = rows(
        on,
        "SELECT c.relrowsecurity, c.relforcerowsecurity, \
         (SELECT pg_catalog.pg_get_expr(p.polqual, p.polrelid) \
          FROM pg_catalog.pg_policy p \
          WHERE p.polrelid = c.oid AND p.polname = $3) \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
        &[
            SqlValue::Text(t.schema.clone()),
            SqlValue::Text(t.table.clone()),
            SqlValue::Text(policy.into()),
        ],
        "looking up a policy",
    )?;
    let Some(row) = found.first() else {
        return Ok(vec!["missing: the table is gone".into()]);
    };
    let mut problems = Vec::new();
    if !matches!(row[0], SqlValue::Boolean(true)) || !matches!(row[1], SqlValue::Boolean(true)) {
        problems.push("changed: row-level security is not enabled and forced".into());
    }
    match text(&row[2]) {
        None => problems.push("missing".into()),
        Some(qual) if !qual.contains(&literal(value)) => {
            problems.push(format!("changed: its clause is {qual}"))
        }
        Some(_) => {}
    }
    if let Some(role) = role {
        let readable = rows(
            on,
            "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT')",
            &[
                SqlValue::Text(role.into()),
                SqlValue::Text(format!("{}.{}", ident(&t.schema), ident(&t.table))),
            ],
            "checking the role's rights on the table",
        )?;
        if !matches!(
            readable.first().map(|r| &r[0]),
            Some(SqlValue::Boolean(true))
        ) {
            problems.push("changed: the tenant's role may not read the table".into());
        }
    }
    Ok(problems)
}

/// The policy that lets the tenant's role see and write its rows of a shared table.
fn shared_policy(owner: &str) -> String {
    format!("tenant_{owner}")
}

/// The tenant's rows in shared tables: CONNECT to the database, USAGE on each table's schema,
/// the rights to read and write the table, and row-level security forced on it with a policy
/// for the tenant's role alone, keyed on its tenant column.
fn apply_tenant_rows(input: &TenantRowsInput) -> Res<Outcome> {
    if find_database(&input.database)?.is_none() {
        return Err(permanent(format!(
            "the shared database {} does not exist: with isolation `shared` it and its tables are the operator's",
            input.database
        )));
    }
    let on = tenant_db(&input.database);
    let owner = ident(&input.owner);
    // Everything checked before anything is granted: a step that fails is not undone.
    for t in &input.tables {
        if !table_exists(&on, t)? {
            return Err(permanent(format!(
                "the shared table {}.{} does not exist in {}: the operator makes the shared tables (owned by the plugin's role)",
                t.schema, t.table, input.database
            )));
        }
    }
    execute(
        SERVER,
        &format!(
            "GRANT CONNECT ON DATABASE {} TO {owner}",
            ident(&input.database)
        ),
        "letting the role connect to the shared database",
    )?;
    if !may_connect(&input.owner, &input.database)? {
        return Err(permanent(format!(
            "the role {} cannot connect to {}: the plugin's role must be able to pass CONNECT on (own the database, or hold CONNECT WITH GRANT OPTION)",
            input.owner, input.database
        )));
    }
    let policy = ident(&shared_policy(&input.owner));
    for t in &input.tables {
        let name = format!("{}.{}", ident(&t.schema), ident(&t.table));
        let what = format!("the tenant's rows of {}.{}", t.schema, t.table);
        for statement in [
            format!("GRANT USAGE ON SCHEMA {} TO {owner}", ident(&t.schema)),
            format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {owner}"),
            format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY"),
            format!("DROP POLICY IF EXISTS {policy} ON {name}"),
        ] {
            execute(&on, &statement, &what)?;
        }
        let clause = clause(t, &input.value);
        execute(
            &on,
            &format!(
                "CREATE POLICY {policy} ON {name} TO {owner} USING {clause} WITH CHECK {clause}"
            ),
            &what,
        )?;
    }
    remember(
        KEY_SHARED,
        &serde_json::to_string(input).map_err(|e| permanent(e.to_string()))?,
    )?;
    log::info(&format!(
        "rows of tenant value {} in {}: row-level security for {} on {} table(s)",
        input.value,
        input.database,
        input.owner,
        input.tables.len()
    ));
    Ok(done(json!({
        "database": input.database,
        "tables": input.tables.iter().map(|t| format!("{}.{}", t.schema, t.table)).collect::<Vec<_>>(),
        "value": input.value,
    })))
}

/// Takes the tenant's access to shared tables away: its policies, rights and CONNECT; with
/// `delete_rows`, its rows too (a purge).
fn undo_tenant_rows(input: &TenantRowsInput, delete_rows: bool) -> Res<usize> {
    if find_database(&input.database)?.is_none() {
        return Ok(0);
    }
    let on = tenant_db(&input.database);
    let owner = ident(&input.owner);
    let policy = ident(&shared_policy(&input.owner));
    let role_there = find_role(&input.owner)?.is_some();
    let mut deleted = 0;
    for t in &input.tables {
        if !table_exists(&on, t)? {
            continue;
        }
        let name = format!("{}.{}", ident(&t.schema), ident(&t.table));
        if delete_rows {
            // As a member of the tenant's role, the plugin's role sees the tenant's rows.
            deleted += execute(
                &on,
                &format!("DELETE FROM {name} WHERE {}", clause(t, &input.value)),
                "deleting the tenant's rows",
            )? as usize;
        }
        execute(
            &on,
            &format!("DROP POLICY IF EXISTS {policy} ON {name}"),
            "dropping the tenant's policy",
        )?;
        if role_there {
            execute(
                &on,
                &format!("REVOKE ALL ON {name} FROM {owner}"),
                "taking the rights on the table away",
            )?;
            execute(
                &on,
                &format!("REVOKE USAGE ON SCHEMA {} FROM {owner}", ident(&t.schema)),
                "taking USAGE on the schema away",
            )?;
        }
    }
    if role_there {
        execute(
            SERVER,
            &format!(
                "REVOKE CONNECT ON DATABASE {} FROM {owner}",
                ident(&input.database)
            ),
            "taking CONNECT to the shared database away",
        )?;
    }
    Ok(deleted)
}

// ---------------------------------------------------------------------------------------------
// compensate

fn drop_database(tenant: &Tenant, database: &str) -> Res<bool> {
    match find_database(database)? {
        None => Ok(false),
        Some((comment, _)) => {
            ours(tenant, "database", database, comment.as_deref())?;
            execute(
                SERVER,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)),
                "dropping the database",
            )?;
            Ok(true)
        }
    }
}

fn drop_role(tenant: &Tenant, role: &str) -> Res<bool> {
    match find_role(role)? {
        None => Ok(false),
        Some(found) => {
            ours(tenant, "role", role, found.comment.as_deref())?;
            terminate_sessions(role)?;
            execute(
                SERVER,
                &format!("DROP ROLE IF EXISTS {}", ident(role)),
                "dropping the role",
            )?;
            Ok(true)
        }
    }
}

fn compensate(tenant: &Tenant, step: &Step) -> Res<Outcome> {
    let output = match step.id.as_str() {
        "role" => {
            let input: RoleInput = input(step)?;
            let dropped = drop_role(tenant, &input.role)?;
            state::delete(KEY_ROLE);
            json!({ "role": input.role, "dropped": dropped })
        }
        "database" => {
            let input: DatabaseInput = input(step)?;
            let dropped = drop_database(tenant, &input.database)?;
            state::delete(KEY_DATABASE);
            json!({ "database": input.database, "dropped": dropped })
        }
        "tenant-rows" => {
            let input: TenantRowsInput = input(step)?;
            // A purge (the host hands a purged tenant over) deletes the tenant's rows; the
            // compensation of a failed provision leaves what the tables held before it.
            let purge = tenant.status == "purged";
            let deleted = undo_tenant_rows(&input, purge)?;
            state::delete(KEY_SHARED);
            json!({ "tables": input.tables.len(), "rows_deleted": deleted, "undone": true })
        }
        "tenant-schema" => {
            let input: TenantSchemaInput = input(step)?;
            let dropped = drop_tenant_schema(tenant, &input.database, &input.schema, &input.owner)?;
            state::delete(KEY_SCHEMA);
            json!({ "schema": input.schema, "dropped": dropped })
        }
        "schemas" => {
            let input: SchemasInput = input(step)?;
            if find_database(&input.database)?.is_some() {
                for schema in &input.schemas {
                    execute(
                        &tenant_db(&input.database),
                        &format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema)),
                        &format!("dropping schema {schema}"),
                    )?;
                }
            }
            json!({ "schemas": input.schemas, "dropped": true })
        }
        "rls" => {
            let input: RlsInput = input(step)?;
            if find_database(&input.database)?.is_some() {
                let on = tenant_db(&input.database);
                for t in &input.tables {
                    if table_exists(&on, t)? {
                        execute(
                            &on,
                            &format!(
                                "DROP POLICY IF EXISTS {POLICY} ON {}.{}",
                                ident(&t.schema),
                                ident(&t.table)
                            ),
                            "dropping a policy",
                        )?;
                    }
                }
            }
            json!({ "policies": "dropped" })
        }
        other => return Err(permanent(format!("unknown step `{other}`"))),
    };
    Ok(done(output))
}

// ---------------------------------------------------------------------------------------------
// observe, measure

fn observe(tenant: &Tenant, applied: &[(Step, Outcome)]) -> Res<Vec<Drift>> {
    let mut drift = Vec::new();
    let mut push = |resource: String, problem: String| drift.push(Drift { resource, problem });
    let mut database_there = None;
    for (step, _) in applied {
        match step.id.as_str() {
            "role" => {
                let input: RoleInput = input(step)?;
                let resource = format!("role {}", input.role);
                match find_role(&input.role)? {
                    None => push(resource, "missing".into()),
                    Some(found) if found.comment.as_deref() != Some(mark(tenant).as_str()) => {
                        push(resource, "changed: no longer marked as the tenant's".into())
                    }
                    Some(found) => {
                        if found.privileged {
                            push(
                                resource.clone(),
                                "changed: it is a superuser, bypasses row-level security or may replicate".into(),
                            );
                        }
                        let limit = role_limit(tenant, &input);
                        if found.connection_limit != limit {
                            push(
                                resource.clone(),
                                format!(
                                    "changed: connection limit is {}, not {limit}{}",
                                    found.connection_limit,
                                    if input.by_tier {
                                        format!(" (tier {})", tenant.tier)
                                    } else {
                                        String::new()
                                    }
                                ),
                            );
                        }
                        if found.can_login != may_log_in(tenant) {
                            push(
                                resource,
                                format!(
                                    "changed: it {} log in",
                                    if found.can_login { "can" } else { "cannot" }
                                ),
                            );
                        }
                    }
                }
            }
            "database" => {
                let input: DatabaseInput = input(step)?;
                let resource = format!("database {}", input.database);
                match find_database(&input.database)? {
                    None => {
                        database_there = Some(false);
                        push(resource, "missing".into());
                    }
                    Some((_, owner)) => {
                        database_there = Some(true);
                        if owner != input.owner {
                            push(
                                resource.clone(),
                                format!("changed: owned by {owner}, not {}", input.owner),
                            );
                        }
                        let public = rows(
                            SERVER,
                            "SELECT pg_catalog.has_database_privilege('public', $1, 'CONNECT')",
                            &[SqlValue::Text(input.database.clone())],
                            "checking CONNECT of PUBLIC",
                        )?;
                        if matches!(public.first().map(|r| &r[0]), Some(SqlValue::Boolean(true))) {
                            push(resource, "changed: PUBLIC may connect".into());
                        }
                    }
                }
            }
            "tenant-schema" => {
                let input: TenantSchemaInput = input(step)?;
                let resource = format!("schema {}.{}", input.database, input.schema);
                if find_database(&input.database)?.is_none() {
                    push(resource, "missing: its shared database is gone".into());
                    continue;
                }
                match find_schema(&input.database, &input.schema)? {
                    None => push(resource, "missing".into()),
                    Some((comment, _)) if comment.as_deref() != Some(mark(tenant).as_str()) => {
                        push(resource, "changed: no longer marked as the tenant's".into())
                    }
                    Some((_, owner)) => {
                        if owner != input.owner {
                            push(
                                resource.clone(),
                                format!("changed: owned by {owner}, not {}", input.owner),
                            );
                        }
                        let on = tenant_db(&input.database);
                        let public = rows(
                            &on,
                            "SELECT pg_catalog.has_schema_privilege('public', $1, 'USAGE') \
                             OR pg_catalog.has_schema_privilege('public', $1, 'CREATE')",
                            &[SqlValue::Text(input.schema.clone())],
                            "checking what PUBLIC may do in the schema",
                        )?;
                        if matches!(public.first().map(|r| &r[0]), Some(SqlValue::Boolean(true))) {
                            push(resource.clone(), "changed: PUBLIC may use it".into());
                        }
                        if !may_connect(&input.owner, &input.database)? {
                            push(
                                resource.clone(),
                                "changed: the tenant's role cannot connect to the database".into(),
                            );
                        }
                        let pinned = rows(
                            SERVER,
                            "SELECT pg_catalog.array_to_string(s.setconfig, ',') \
                             FROM pg_catalog.pg_db_role_setting s \
                             JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase \
                             JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
                             WHERE d.datname = $1 AND r.rolname = $2",
                            &[
                                SqlValue::Text(input.database.clone()),
                                SqlValue::Text(input.owner.clone()),
                            ],
                            "reading the role's settings in the database",
                        )?;
                        let expected = format!("search_path={}", input.schema);
                        let settings = pinned.first().and_then(|r| text(&r[0])).unwrap_or_default();
                        if !settings.split(',').any(|s| {
                            s.trim_matches('"') == expected
                                || s == format!("search_path=\"{}\"", input.schema)
                        }) {
                            push(
                                resource,
                                "changed: the role's search_path is not pinned to it".into(),
                            );
                        }
                    }
                }
            }
            "schemas" if database_there != Some(false) => {
                let input: SchemasInput = input(step)?;
                let on = tenant_db(&input.database);
                for schema in &input.schemas {
                    let found = rows(
                        &on,
                        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                        &[SqlValue::Text(schema.clone())],
                        "looking up a schema",
                    )?;
                    if found.is_empty() {
                        push(
                            format!("schema {}.{schema}", input.database),
                            "missing".into(),
                        );
                    }
                }
            }
            "rls" if database_there != Some(false) => {
                let input: RlsInput = input(step)?;
                let on = tenant_db(&input.database);
                for t in &input.tables {
                    let resource = format!("policy on {}.{}.{}", input.database, t.schema, t.table);
                    for problem in policy_drift(&on, t, POLICY, &input.value, None)? {
                        push(resource.clone(), problem);
                    }
                }
            }
            "tenant-rows" => {
                let input: TenantRowsInput = input(step)?;
                if find_database(&input.database)?.is_none() {
                    push(
                        format!("rows in {}", input.database),
                        "missing: the shared database is gone".into(),
                    );
                    continue;
                }
                let on = tenant_db(&input.database);
                if !may_connect(&input.owner, &input.database)? {
                    push(
                        format!("rows in {}", input.database),
                        "changed: the tenant's role cannot connect to the database".into(),
                    );
                }
                for t in &input.tables {
                    let resource = format!(
                        "policy on {}.{}.{} for {}",
                        input.database, t.schema, t.table, input.owner
                    );
                    let policy = shared_policy(&input.owner);
                    let role = Some(input.owner.as_str());
                    for problem in policy_drift(&on, t, &policy, &input.value, role)? {
                        push(resource.clone(), problem);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(drift)
}

fn measure(applied: &[(Step, Outcome)]) -> Res<Vec<Measurement>> {
    if let Some((step, _)) = applied.iter().find(|(s, _)| s.id == "tenant-rows") {
        let input: TenantRowsInput = input(step)?;
        let on = tenant_db(&input.database);
        let mut bytes = 0.0;
        for t in &input.tables {
            // As a member of the tenant's role, the plugin's role sees the tenant's rows.
            let size = rows(
                &on,
                &format!(
                    "SELECT COALESCE(SUM(pg_catalog.pg_column_size(t.*)), 0)::pg_catalog.int8 \
                     FROM {}.{} t WHERE {}",
                    ident(&t.schema),
                    ident(&t.table),
                    clause(t, &input.value)
                ),
                &[],
                "measuring the tenant's rows",
            )?;
            if let Some(SqlValue::Int(n)) = size.first().map(|r| &r[0]) {
                bytes += *n as f64;
            }
        }
        return Ok(vec![Measurement {
            metric: "storage_gb".into(),
            value: bytes / (1024.0 * 1024.0 * 1024.0),
        }]);
    }
    if let Some((step, _)) = applied.iter().find(|(s, _)| s.id == "tenant-schema") {
        let input: TenantSchemaInput = input(step)?;
        let size = rows(
            &tenant_db(&input.database),
            "SELECT COALESCE(SUM(pg_catalog.pg_total_relation_size(c.oid)), 0)::pg_catalog.int8 \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm', 'p')",
            &[SqlValue::Text(input.schema.clone())],
            "measuring the schema",
        )?;
        let bytes = match size.first().map(|r| &r[0]) {
            Some(SqlValue::Int(n)) => *n as f64,
            _ => 0.0,
        };
        return Ok(vec![Measurement {
            metric: "storage_gb".into(),
            value: bytes / (1024.0 * 1024.0 * 1024.0),
        }]);
    }
    let Some((step, _)) = applied.iter().find(|(s, _)| s.id == "database") else {
        return Ok(Vec::new());
    };
    let input: DatabaseInput = input(step)?;
    let size = rows(
        SERVER,
        "SELECT pg_catalog.pg_database_size(datname) FROM pg_catalog.pg_database \
         WHERE datname = $1",
        &[SqlValue::Text(input.database.clone())],
        "measuring the database",
    )?;
    let bytes = match size.first().map(|r| &r[0]) {
        Some(SqlValue::Int(n)) => *n as f64,
        _ => return Err(permanent(format!("database {} is missing", input.database))),
    };
    Ok(vec![Measurement {
        metric: "storage_gb".into(),
        value: bytes / (1024.0 * 1024.0 * 1024.0),
    }])
}

// ---------------------------------------------------------------------------------------------
// bundles

/// The tenant's data as a bundle carries it (see `dump`): its database's tables, its schema's,
/// or its rows of the shared tables.
fn export_data(applied: &[(Step, Outcome)]) -> Res<Option<BundlePart>> {
    let found = |id: &str| applied.iter().find(|(s, _)| s.id == id).map(|(s, _)| s);
    let dump = if let Some(step) = found("tenant-rows") {
        let input: TenantRowsInput = input(step)?;
        dump::export_shared(&input.database, &input.tables, &input.value)?
    } else if let Some(step) = found("tenant-schema") {
        let input: TenantSchemaInput = input(step)?;
        dump::export_owned(&input.database, &input.owner, Some(&input.schema))?
    } else if let Some(step) = found("database") {
        let input: DatabaseInput = input(step)?;
        dump::export_owned(&input.database, &input.owner, None)?
    } else {
        return Ok(None);
    };
    Ok(Some(dump::part(&dump)?))
}

/// Restores what `export_data` handed over, into what the re-applied steps made (the plugin's
/// state names it).
fn import_data(part: &BundlePart) -> Res<Outcome> {
    if let Some(shared) =
        remembered(KEY_SHARED).and_then(|s| serde_json::from_str::<TenantRowsInput>(&s).ok())
    {
        return dump::restore(
            &shared.database,
            &shared.owner,
            None,
            Some((&shared.tables, &shared.value)),
            part,
        );
    }
    let Some(role) = remembered(KEY_ROLE) else {
        return Err(permanent(
            "the tenant holds nothing of this plugin to restore into: its steps were not applied",
        ));
    };
    if let Some((database, schema)) = remembered(KEY_SCHEMA)
        .as_deref()
        .and_then(|s| s.split_once('/'))
    {
        return dump::restore(database, &role, Some(schema), None, part);
    }
    let Some(database) = remembered(KEY_DATABASE) else {
        return Err(permanent(
            "the tenant's database is not known to this plugin: its steps were not applied",
        ));
    };
    dump::restore(&database, &role, None, None, part)
}

// ---------------------------------------------------------------------------------------------
// lifecycle

fn transition(tenant: &Tenant, change: LifecycleChange) -> Res<Outcome> {
    let (Some(role), database) = (remembered(KEY_ROLE), remembered(KEY_DATABASE)) else {
        return Ok(done(
            json!({ "change": format!("{change:?}"), "role": null }),
        ));
    };
    let output = match change {
        LifecycleChange::Suspend | LifecycleChange::Cancel => {
            if let Some(found) = find_role(&role)? {
                ours(tenant, "role", &role, found.comment.as_deref())?;
                execute(
                    SERVER,
                    &format!("ALTER ROLE {} NOLOGIN", ident(&role)),
                    "taking LOGIN away",
                )?;
            }
            let closed = terminate_sessions(&role)?;
            log::info(&format!("role {role}: NOLOGIN, {closed} session(s) closed"));
            json!({ "role": role, "login": false, "sessions_closed": closed })
        }
        LifecycleChange::Reactivate => {
            if let Some(found) = find_role(&role)? {
                ours(tenant, "role", &role, found.comment.as_deref())?;
                execute(
                    SERVER,
                    &format!("ALTER ROLE {} LOGIN", ident(&role)),
                    "giving LOGIN back",
                )?;
            }
            json!({ "role": role, "login": true })
        }
        LifecycleChange::Purge => {
            let database_dropped = match &database {
                Some(d) => drop_database(tenant, d)?,
                None => false,
            };
            let schema_dropped = match remembered(KEY_SCHEMA)
                .as_deref()
                .and_then(|s| s.split_once('/'))
            {
                Some((d, schema)) => drop_tenant_schema(tenant, d, schema, &role)?,
                None => false,
            };
            let rows_deleted = match remembered(KEY_SHARED)
                .and_then(|s| serde_json::from_str::<TenantRowsInput>(&s).ok())
            {
                Some(shared) => undo_tenant_rows(&shared, true)?,
                None => 0,
            };
            let role_dropped = drop_role(tenant, &role)?;
            // (`suspended` is what earlier versions kept; the tenant's status says it now.)
            for key in [KEY_ROLE, KEY_DATABASE, KEY_SCHEMA, KEY_SHARED, "suspended"] {
                state::delete(key);
            }
            json!({
                "database": database,
                "database_dropped": database_dropped,
                "schema_dropped": schema_dropped,
                "shared_rows_deleted": rows_deleted,
                "role": role,
                "role_dropped": role_dropped,
            })
        }
    };
    Ok(done(output))
}

impl Provisioner for Postgres {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "postgres".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }

    fn plan(tenant: Tenant, request: String) -> Res<Vec<Step>> {
        plan(&tenant, &request)
    }

    fn apply(tenant: Tenant, step: Step, _key: String) -> Res<Outcome> {
        match step.id.as_str() {
            "role" => apply_role(&tenant, &input(&step)?),
            "database" => apply_database(&tenant, &input(&step)?),
            "tenant-schema" => apply_tenant_schema(&tenant, &input(&step)?),
            "tenant-rows" => apply_tenant_rows(&input(&step)?),
            "schemas" => apply_schemas(&input(&step)?),
            "rls" => apply_rls(&input(&step)?),
            other => Err(permanent(format!("unknown step `{other}`"))),
        }
    }

    fn compensate(tenant: Tenant, step: Step, _outcome: Outcome, _key: String) -> Res<Outcome> {
        compensate(&tenant, &step)
    }

    fn observe(tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Res<Vec<Drift>> {
        observe(&tenant, &applied)
    }

    fn transition(tenant: Tenant, change: LifecycleChange, _reason: String) -> Res<Outcome> {
        transition(&tenant, change)
    }

    fn measure(_tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Res<Vec<Measurement>> {
        measure(&applied)
    }

    fn export_tenant(_tenant: Tenant, applied: Vec<(Step, Outcome)>) -> Res<Option<BundlePart>> {
        export_data(&applied)
    }

    fn import_tenant(_tenant: Tenant, part: BundlePart) -> Res<Outcome> {
        import_data(&part)
    }
}

tenantry_plugin_sdk::register_provisioner!(Postgres);
