//! Installed plugins as the operator manages them: install, list, inspect, enable, disable,
//! grant and revoke — stored in the database and audited. The database is what every server's
//! plugin host checks before each call, so a change made here (or by the CLI, or on another
//! replica) binds the next call of the plugin anywhere.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::plugin_host::manifest::{self, Capabilities, Manifest, World};
use crate::plugin_host::{BUILTINS, CallStats, Grants, grants_of};
use crate::store::models::{PluginConfigRow, PluginGrantRow, PluginMetaRow, PluginRow};
use crate::{store, transaction};

/// Built-in plugins the platform itself works with: every template is rendered by the first, and
/// the second is the default quota policy. They cannot be disabled.
pub const REQUIRED: &[&str] = &["template-renderer", "tier-quota"];

/// The shortest deadline an operator can give a plugin's calls, in milliseconds: the host's
/// clock ticks every millisecond, so a shorter one stops calls before they run.
pub const MIN_DEADLINE_MS: u64 = 10;
/// The longest, in milliseconds (ten minutes).
pub const MAX_DEADLINE_MS: u64 = 600_000;

/// A plugin as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub world: World,
    pub wit_version: String,
    pub description: String,
    pub builtin: bool,
    pub enabled: bool,
    pub sha256: String,
    /// The deadline of each call, in milliseconds.
    pub deadline_ms: u64,
    /// What the manifest asks for.
    pub requested: Capabilities,
    /// What the operator granted (secrets by name only).
    pub granted: Capabilities,
    /// Requested ∩ granted: what the plugin can actually use.
    pub effective: Capabilities,
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<serde_json::Value>,
    /// The fields of its configuration (from `config_schema`).
    pub config_fields: Vec<crate::plugin_host::config::Field>,
    /// The configuration in force: what the operator set, else each field's default.
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, Value>,
    /// The keys the operator set (the others are defaults).
    pub config_set: Vec<String>,
    /// Calls since the plugin was installed, on every server (each adds its own about once a
    /// second).
    pub stats: CallStats,
    pub installed_by: String,
    pub installed_at: DateTime<Utc>,
}

async fn view(ctx: &Context, row: &PluginMetaRow) -> AppResult<PluginView> {
    let grants = grants_for(ctx, &row.name).await?;
    let manifest: Manifest = serde_json::from_str(&row.manifest).map_err(AppError::internal)?;
    let sorted = |names: Vec<&String>| {
        let mut names: Vec<String> = names.into_iter().cloned().collect();
        names.sort();
        names
    };
    let granted = Capabilities {
        hosts: grants.hosts.clone(),
        secrets: sorted(grants.secrets.keys().collect()),
        databases: sorted(grants.databases.keys().collect()),
    };
    let effective = Capabilities {
        hosts: manifest
            .capabilities
            .hosts
            .iter()
            .filter(|h| granted.hosts.contains(h))
            .cloned()
            .collect(),
        secrets: manifest
            .capabilities
            .secrets
            .iter()
            .filter(|s| granted.secrets.contains(s))
            .cloned()
            .collect(),
        databases: manifest
            .capabilities
            .databases
            .iter()
            .filter(|d| granted.databases.contains(d))
            .cloned()
            .collect(),
    };
    let config = &ctx.config.plugins;
    let default_deadline_ms = match manifest.world {
        World::Provisioner => config.provisioner_deadline_ms,
        World::Renderer => config.renderer_deadline_ms,
        World::QuotaPolicy => config.quota_deadline_ms,
    };
    let set: std::collections::BTreeMap<String, String> = {
        let mut conn = ctx.db.conn().await?;
        store::plugins::config(&mut conn, &row.name)
            .await?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect()
    };
    let config_fields = crate::plugin_host::config::fields(manifest.config_schema.as_ref())
        .map_err(|e| AppError::internal(anyhow::anyhow!("plugin {}: {e}", row.name)))?;
    let config = crate::plugin_host::config::effective(&config_fields, &set)
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
        .collect();
    Ok(PluginView {
        name: row.name.clone(),
        version: row.version.clone(),
        world: manifest.world,
        wit_version: row.wit_version.clone(),
        description: manifest.description.clone(),
        builtin: row.builtin,
        enabled: row.enabled,
        sha256: row.sha256.clone(),
        deadline_ms: row.deadline_ms.map_or(default_deadline_ms, |d| d as u64),
        requested: manifest.capabilities.clone(),
        granted,
        effective,
        config_schema: manifest.config_schema.clone(),
        config_fields,
        config,
        config_set: set.into_keys().collect(),
        stats: ctx.plugins.stats(&row.name).await?,
        installed_by: row.installed_by.clone(),
        installed_at: clock::to_utc(row.installed_at),
    })
}

/// Records the built-in plugins this server carries (keeping the operator's enabled flags,
/// deadlines and grants); done at every start.
pub async fn record_builtins(ctx: &Context) -> AppResult<()> {
    let now = clock::now();
    for (name, bytes) in BUILTINS {
        let inspection = manifest::inspect(bytes)
            .map_err(|e| AppError::internal(anyhow::anyhow!("built-in plugin {name}: {e}")))?;
        let existing = {
            let mut conn = ctx.db.conn().await?;
            store::plugins::find_meta(&mut conn, name).await?
        };
        if existing
            .as_ref()
            .is_some_and(|row| row.sha256 == inspection.sha256)
        {
            continue;
        }
        // Backend plugins start disabled: each needs its backend's address and credentials
        // granted first, and an enabled provisioner is used for every new tenant.
        let enabled = existing
            .as_ref()
            .map_or(inspection.world != World::Provisioner, |r| r.enabled);
        let row = PluginRow {
            name: (*name).to_owned(),
            builtin: true,
            ..plugin_row(&inspection, existing.as_ref(), None, enabled, "system", now)?
        };
        let details = json!({ "name": row.name, "version": row.version, "world": row.world, "builtin": true });
        save_install(ctx, &Actor::system(), &row, details).await?;
    }
    Ok(())
}

/// The row of an inspected component, installed now by `by` (over `existing`, whose install
/// time and deadline it keeps).
fn plugin_row(
    inspection: &manifest::Inspection,
    existing: Option<&PluginMetaRow>,
    component: Option<Vec<u8>>,
    enabled: bool,
    by: &str,
    now: NaiveDateTime,
) -> AppResult<PluginRow> {
    Ok(PluginRow {
        name: inspection.manifest.name.clone(),
        version: inspection.manifest.version.clone(),
        world: inspection.world,
        wit_version: inspection.wit_version.clone(),
        sha256: inspection.sha256.clone(),
        manifest: serde_json::to_string(&inspection.manifest).map_err(AppError::internal)?,
        component,
        builtin: false,
        enabled,
        deadline_ms: existing.and_then(|r| r.deadline_ms),
        installed_by: by.to_owned(),
        installed_at: existing.map_or(now, |r| r.installed_at),
        updated_at: now,
    })
}

/// Stores an installed plugin with its `plugin.install` audit record.
async fn save_install(
    ctx: &Context,
    actor: &Actor,
    row: &PluginRow,
    details: Value,
) -> AppResult<()> {
    transaction!(ctx.db, |tx| {
        store::plugins::upsert(tx, row).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform("plugin.install", details.clone()),
        )
        .await?;
        Ok(())
    })
}

/// The capabilities the operator granted `name`.
async fn grants_for(ctx: &Context, name: &str) -> AppResult<Grants> {
    let mut conn = ctx.db.conn().await?;
    grants_of(&store::plugins::grants(&mut conn, name).await?)
        .map_err(|e| AppError::internal(anyhow::anyhow!("plugin {name}: {e}")))
}

async fn find_row(ctx: &Context, name: &str) -> AppResult<PluginMetaRow> {
    let mut conn = ctx.db.conn().await?;
    store::plugins::find_meta(&mut conn, name)
        .await?
        .ok_or_else(|| AppError::not_found("plugin", name))
}

/// Checks a component without installing it.
pub fn check(bytes: &[u8]) -> AppResult<manifest::Inspection> {
    manifest::inspect(bytes).map_err(|e| AppError::invalid("component", "plugin", e.to_string()))
}

/// Installs (or upgrades) a plugin from its component bytes. A built-in cannot be replaced.
pub async fn install(ctx: &Context, actor: &Actor, bytes: Vec<u8>) -> AppResult<PluginView> {
    let inspection = check(&bytes)?;
    let name = inspection.manifest.name.clone();
    let now = clock::now();
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::plugins::find_meta(&mut conn, &name).await?
    };
    if existing.as_ref().is_some_and(|r| r.builtin) {
        return Err(AppError::conflict(
            "builtin_plugin",
            format!("`{name}` is a built-in plugin; give your plugin another name"),
            json!({ "name": name }),
        ));
    }
    // Compile before storing: a component that does not link is refused with the reason.
    let bytes = Arc::new(bytes);
    if let Err(err) = ctx.plugins.check_component(bytes.clone()).await {
        return Err(AppError::invalid(
            "component",
            "link",
            format!("plugin `{name}` cannot be loaded: {err}"),
        ));
    }
    let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
    let enabled = existing.as_ref().is_none_or(|r| r.enabled);
    let row = plugin_row(
        &inspection,
        existing.as_ref(),
        Some(bytes),
        enabled,
        &actor.name,
        now,
    )?;
    let details = json!({ "name": row.name, "version": row.version, "world": row.world, "sha256": row.sha256,
                          "upgraded_from": existing.as_ref().map(|r| r.version.clone()) });
    save_install(ctx, actor, &row, details).await?;
    if enabled {
        ctx.metrics
            .initialise_plugin_series(&name, inspection.manifest.world == World::Provisioner);
    }
    get(ctx, &name).await
}

pub async fn get(ctx: &Context, name: &str) -> AppResult<PluginView> {
    let row = find_row(ctx, name).await?;
    view(ctx, &row).await
}

pub async fn list(ctx: &Context) -> AppResult<Vec<PluginView>> {
    let rows = {
        let mut conn = ctx.db.conn().await?;
        store::plugins::list_meta(&mut conn).await?
    };
    let mut views = Vec::with_capacity(rows.len());
    for row in rows {
        views.push(view(ctx, &row).await?);
    }
    Ok(views)
}

/// Enables or disables a plugin (and sets its deadline, when given).
pub async fn set_enabled(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    enabled: bool,
    deadline_ms: Option<u64>,
) -> AppResult<PluginView> {
    if !enabled && REQUIRED.contains(&name) {
        return Err(AppError::conflict(
            "required_plugin",
            format!("`{name}` is a plugin the platform itself works with; it cannot be disabled"),
            json!({ "name": name }),
        ));
    }
    if deadline_ms.is_some_and(|d| !(MIN_DEADLINE_MS..=MAX_DEADLINE_MS).contains(&d)) {
        return Err(AppError::invalid(
            "deadline_ms",
            "range",
            format!(
                "must be between {MIN_DEADLINE_MS} and {MAX_DEADLINE_MS} (below {MIN_DEADLINE_MS} ms a call is stopped before it starts)"
            ),
        ));
    }
    let row = find_row(ctx, name).await?;
    let deadline_ms = deadline_ms.map(|d| d as i64).or(row.deadline_ms);
    transaction!(ctx.db, |tx| {
        store::plugins::set_enabled(tx, name, enabled, deadline_ms, clock::now()).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                if enabled {
                    "plugin.enable"
                } else {
                    "plugin.disable"
                },
                json!({ "name": name, "deadline_ms": deadline_ms }),
            ),
        )
        .await?;
        Ok(())
    })?;
    if enabled {
        ctx.metrics
            .initialise_plugin_series(name, row.world == World::Provisioner);
    } else {
        ctx.plugins
            .cancel_calls(name, "it was disabled while the call ran");
    }
    get(ctx, name).await
}

/// A capability the operator grants.
#[derive(Debug, Clone)]
pub enum Capability {
    Host(String),
    /// A secret and its value (sealed before it is stored).
    Secret {
        name: String,
        value: String,
    },
    /// A database alias and its connection URL (sealed before it is stored; the role in it is
    /// what the plugin may do).
    Database {
        alias: String,
        url: String,
    },
}

/// Grants a capability the plugin's manifest requests.
pub async fn grant(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    capability: Capability,
) -> AppResult<PluginView> {
    let row = find_row(ctx, name).await?;
    let manifest: Manifest = serde_json::from_str(&row.manifest).map_err(AppError::internal)?;
    let (kind, cap_name, sealed) = match &capability {
        Capability::Host(host) => {
            if host.split(':').next() == Some("*") {
                return Err(AppError::invalid(
                    "host",
                    "host",
                    "must name one host: `*` is what a manifest requests when its backend can be \
                     anywhere, and the operator then grants the host it is at (e.g. \
                     `superset.internal:8088`, or `superset.internal:*` for any port)",
                ));
            }
            if !manifest::is_grantable_host(host) {
                return Err(AppError::invalid(
                    "host",
                    "host",
                    "must be a host name or address, with an optional `:port` or `:*` (any port)",
                ));
            }
            if !manifest
                .capabilities
                .hosts
                .iter()
                .any(|requested| manifest::host_covers(requested, host))
            {
                return Err(AppError::invalid(
                    "host",
                    "requested",
                    format!(
                        "plugin `{name}` does not request host `{host}` (it requests: {})",
                        manifest.capabilities.hosts.join(", ")
                    ),
                ));
            }
            ("host", host.clone(), None)
        }
        Capability::Secret {
            name: secret,
            value,
        } => {
            if !manifest.capabilities.secrets.contains(secret) {
                return Err(AppError::invalid(
                    "secret",
                    "requested",
                    format!(
                        "plugin `{name}` does not request secret `{secret}` (it requests: {})",
                        manifest.capabilities.secrets.join(", ")
                    ),
                ));
            }
            if value.is_empty() {
                return Err(AppError::invalid(
                    "value",
                    "required",
                    "the secret's value must not be empty",
                ));
            }
            (
                "secret",
                secret.clone(),
                Some(
                    ctx.keyring
                        .seal(value, &crate::plugin_host::secret_context(name, secret)),
                ),
            )
        }
        Capability::Database { alias, url } => {
            if !manifest.capabilities.databases.contains(alias) {
                return Err(AppError::invalid(
                    "database",
                    "requested",
                    format!(
                        "plugin `{name}` does not request database `{alias}` (it requests: {})",
                        if manifest.capabilities.databases.is_empty() {
                            "none".to_owned()
                        } else {
                            manifest.capabilities.databases.join(", ")
                        }
                    ),
                ));
            }
            let parsed = url::Url::parse(url).ok().filter(|u| {
                matches!(u.scheme(), "postgres" | "postgresql") && u.host_str().is_some()
            });
            if parsed.is_none() {
                return Err(AppError::invalid(
                    "url",
                    "format",
                    "must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                ));
            }
            (
                "database",
                alias.clone(),
                Some(
                    ctx.keyring
                        .seal(url, &crate::plugin_host::database_context(name, alias)),
                ),
            )
        }
    };
    let grant = PluginGrantRow {
        plugin: name.to_owned(),
        kind: kind.into(),
        name: cap_name.clone(),
        sealed_value: sealed,
        granted_by: actor.name.clone(),
        granted_at: clock::now(),
    };
    transaction!(ctx.db, |tx| {
        store::plugins::put_grant(tx, &grant).await?;
        audit::record(
            tx,
            actor,
            grant_event("plugin.grant", name, kind, &cap_name),
        )
        .await?;
        Ok(())
    })?;
    get(ctx, name).await
}

/// Sets the whole configuration of plugin `name`: `values` by key, each checked against the
/// field its manifest declares (a refusal names the field and the rule, and changes nothing);
/// a field left out takes its default. Audited with the values (configuration holds no secret).
pub async fn configure(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    values: serde_json::Map<String, Value>,
) -> AppResult<PluginView> {
    let row = find_row(ctx, name).await?;
    let manifest: Manifest = serde_json::from_str(&row.manifest).map_err(AppError::internal)?;
    let fields = crate::plugin_host::config::fields(manifest.config_schema.as_ref())
        .map_err(|e| AppError::internal(anyhow::anyhow!("plugin {name}: {e}")))?;
    let refused = crate::plugin_host::config::check(&fields, &values);
    if !refused.is_empty() {
        return Err(AppError::Validation(
            refused
                .into_iter()
                .map(|r| FieldError::new(r.field, r.rule, r.message))
                .collect(),
        ));
    }
    let now = clock::now();
    let rows: Vec<PluginConfigRow> = values
        .iter()
        .map(|(key, value)| PluginConfigRow {
            plugin: name.to_owned(),
            key: key.clone(),
            value: value.to_string(),
            set_by: actor.name.clone(),
            set_at: now,
        })
        .collect();
    transaction!(ctx.db, |tx| {
        store::plugins::replace_config(tx, name, &rows).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "plugin.configure",
                json!({ "plugin": name, "config": values }),
            ),
        )
        .await?;
        Ok(())
    })?;
    get(ctx, name).await
}

/// The audit record of a grant or a revocation.
fn grant_event(action: &'static str, plugin: &str, kind: &str, cap_name: &str) -> AuditEvent {
    AuditEvent::platform(
        action,
        json!({ "plugin": plugin, "kind": kind, "name": cap_name }),
    )
}

/// Revokes a granted host or secret.
pub async fn revoke(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    kind: &str,
    cap_name: &str,
) -> AppResult<PluginView> {
    if !matches!(kind, "host" | "secret" | "database") {
        return Err(AppError::invalid(
            "kind",
            "one_of",
            "must be `host`, `secret` or `database`",
        ));
    }
    find_row(ctx, name).await?;
    transaction!(ctx.db, |tx| {
        if !store::plugins::delete_grant(tx, name, kind, cap_name).await? {
            return Err(AppError::not_found("grant", format!("{kind} {cap_name}")));
        }
        audit::record(
            tx,
            actor,
            grant_event("plugin.revoke", name, kind, cap_name),
        )
        .await?;
        Ok(())
    })?;
    ctx.plugins.cancel_calls(
        name,
        &format!("its {kind} grant `{cap_name}` was revoked while the call ran"),
    );
    get(ctx, name).await
}
