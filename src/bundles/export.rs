//! Building a tenant's bundle: the registry's parts read in one transaction (with the export's
//! audit record), then each backend plugin's `export` part.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{Bundle, Exclusion, FORMAT, Manifest, PartEntry, sha256_hex};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{BundlePart, PluginError};
use crate::secrets::{Keyring, MasterKey};
use crate::store::models::{
    ApiKeyRow, AuditRow, QuotaOverrideRow, ResourceRow, StatusChangeRow, TenantRow, UsageCounterRow,
};
use crate::store::tenant_requests::RequestRow;
use crate::tenants::{Tenant, secret_context};
use crate::{store, transaction};

/// How to export.
#[derive(Default)]
pub struct ExportOptions {
    /// Re-seal every secret to this master key (a bundle for another installation).
    pub recipient: Option<MasterKey>,
    /// Record the export in the audit log (off only for the check an import makes of itself).
    pub unaudited: bool,
}

/// What a bundle leaves out, always.
fn exclusions() -> Vec<Exclusion> {
    [
        ("sessions", "short-lived: the tenant's users log in again"),
        ("login attempts", "a login's state for a few minutes only"),
        (
            "SSO setup links",
            "single-use and short-lived: make a new one",
        ),
        (
            "API key secrets",
            "only their hashes are kept anywhere; the keys work again as they were",
        ),
        (
            "usage event ids",
            "kept to count a reported event once, for a few days",
        ),
        (
            "alerts",
            "evaluated again from the usage and limits the bundle carries",
        ),
        (
            "provisioning runs and steps",
            "this installation's history; the resources part holds what they made",
        ),
        (
            "plugin state",
            "a plugin's own scratch state, remade by its calls",
        ),
        (
            "webhook endpoints and deliveries",
            "the installation's, not the tenant's",
        ),
        (
            "users seen at login",
            "recorded again at each user's next login",
        ),
    ]
    .into_iter()
    .map(|(name, why)| Exclusion {
        name: name.into(),
        why: why.into(),
    })
    .collect()
}

struct Parts {
    entries: Vec<PartEntry>,
    bytes: BTreeMap<String, Vec<u8>>,
}

impl Parts {
    fn json(&mut self, path: &str, value: &Value, instance_specific: &[&str]) -> AppResult<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(AppError::internal)?;
        self.entries.push(PartEntry {
            path: path.into(),
            media_type: "application/json".into(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
            items: value.as_array().map(|a| a.len() as u64),
            plugin: None,
            instance_specific: instance_specific.iter().map(|s| (*s).to_owned()).collect(),
        });
        self.bytes.insert(path.into(), bytes);
        Ok(())
    }
}

/// Opens `sealed` (sealed for `context`) and seals it again for `to`.
fn reseal(ctx: &Context, to: &Keyring, sealed: &str, context: &str) -> AppResult<String> {
    let plain = ctx.keyring.open(sealed, context)?;
    Ok(to.seal(&plain, context))
}

fn reseal_row(ctx: &Context, to: &Keyring, row: &mut TenantRow) -> AppResult<()> {
    let id = row.id.clone();
    for (value, place) in [
        (&mut row.client_secret, "client_secret"),
        (&mut row.client_secret_previous, "client_secret"),
        (&mut row.db_uri, "db_uri"),
    ] {
        if let Some(sealed) = value.as_mut() {
            *sealed = reseal(ctx, to, sealed, &secret_context(&id, place))?;
        }
    }
    Ok(())
}

fn reseal_resources(ctx: &Context, to: &Keyring, rows: &mut [ResourceRow]) -> AppResult<()> {
    for r in rows {
        let context = crate::provisioning::resource_context(&r.tenant_id, &r.plugin, &r.step_id);
        r.input = reseal(ctx, to, &r.input, &context)?;
    }
    Ok(())
}

/// Builds the bundle of tenant `slug`.
pub async fn export(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    options: ExportOptions,
) -> AppResult<Bundle> {
    Ok(export_with_digest(ctx, actor, slug, options).await?.0)
}

/// The tenant's rows, as one transaction read them.
struct Registry {
    row: TenantRow,
    history: Vec<StatusChangeRow>,
    keys: Vec<ApiKeyRow>,
    overrides: Vec<QuotaOverrideRow>,
    counters: Vec<UsageCounterRow>,
    records: Vec<AuditRow>,
    resources: Vec<ResourceRow>,
    request: Option<RequestRow>,
}

/// [`export`], with a digest of what the bundle holds that changes only when the tenant does:
/// every part but the audit log (which grows with the export itself), the backends' parts as
/// their plugins handed them over (before sealing, whose nonces differ at every export), and
/// the registry's sealed values as stored. A backup compares it with the last one's.
pub async fn export_with_digest(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    options: ExportOptions,
) -> AppResult<(Bundle, String)> {
    let mut registry = read_registry(ctx, actor, slug, !options.unaudited).await?;
    let tenant = Tenant::from_row(&registry.row, ctx.config.retention_days)?;
    let (backend_parts, excluded) = backend_exports(ctx, &tenant).await?;
    let recipient = options.recipient.map(|key| Keyring::new(key, Vec::new()));
    if let Some(to) = &recipient {
        reseal_registry(ctx, to, &mut registry)?;
    }
    let sealed_for = recipient
        .as_ref()
        .map_or_else(|| ctx.keyring.primary_id(), |k| k.primary_id())
        .to_owned();
    let mut parts = Parts {
        entries: Vec::new(),
        bytes: BTreeMap::new(),
    };
    registry_parts(&mut parts, &registry)?;
    let sealer = recipient.as_ref().unwrap_or(&ctx.keyring);
    let unsealed = add_backend_parts(&mut parts, sealer, &registry.row.id, backend_parts)?;
    let digest = digest_of(&parts.entries, &unsealed);
    let row = &registry.row;
    let bundle = Bundle {
        manifest: Manifest {
            format: FORMAT.into(),
            tenant_id: row.id.clone(),
            tenant_slug: row.slug.clone(),
            exported_at: clock::rfc3339(clock::now()),
            sealed_for,
            audit_hash: "each record's `hash` is the hex SHA-256 of its fields prev_hash, seq, at (RFC 3339, microseconds), actor, tenant_id, tenant_slug, action, details, source_ip, request_id — each as an 8-byte big-endian length and its UTF-8 bytes, a missing value as the single character U+0000 — and `prev_hash` is the hash of the record before it in the installation's chain (`tenantry audit verify`)".into(),
            parts: parts.entries,
            excluded,
        },
        parts: parts.bytes,
    };
    Ok((bundle, digest))
}

/// The tenant's registry rows and audit records, in one transaction with the export's own
/// audit record (when `audited`).
async fn read_registry(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    audited: bool,
) -> AppResult<Registry> {
    transaction!(ctx.db, |tx| {
        let row = store::tenants::find_by_slug(tx, slug)
            .await?
            .ok_or_else(|| AppError::not_found("tenant", slug))?;
        let mut history = store::tenants::status_history(tx, &row.id).await?;
        history.reverse();
        let mut keys = store::admin::list_tenant_keys(tx, &row.id).await?;
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        let overrides = store::usage::overrides(tx, &row.id).await?;
        let counters = store::bundles::counters_of(tx, &row.id).await?;
        let resources = store::provisioning::resources(tx, &row.id).await?;
        let request = store::tenant_requests::get(tx, &row.id).await?;
        if audited {
            audit::record(
                tx,
                actor,
                AuditEvent::tenant(
                    "tenant.export",
                    &row.id,
                    &row.slug,
                    json!({ "format": FORMAT, "resources": resources.len() }),
                ),
            )
            .await?;
        }
        let records = store::bundles::audit_of(tx, &row.id).await?;
        Ok(Registry {
            row,
            history,
            keys,
            overrides,
            counters,
            records,
            resources,
            request,
        })
    })
}

/// Each backend plugin's `export` part of the tenant (from the steps applied for it, inputs
/// opened), and the backends that keep nothing worth carrying.
async fn backend_exports(
    ctx: &Context,
    tenant: &Tenant,
) -> AppResult<(Vec<(String, BundlePart)>, Vec<Exclusion>)> {
    let mut backend_parts = Vec::new();
    let mut excluded = exclusions();
    let applied = crate::provisioning::applied_steps(ctx, tenant).await?;
    let mut plugins: Vec<_> = applied.into_iter().collect();
    plugins.sort_by(|a, b| a.0.cmp(&b.0));
    let ptenant = crate::provisioning::plugin_tenant(tenant);
    for (plugin, steps) in plugins {
        let logged = ctx.plugins.export_tenant(&plugin, &ptenant, steps).await;
        match logged.result {
            Ok(Ok(Some(part))) => backend_parts.push((plugin, part)),
            Ok(Ok(None)) => excluded.push(Exclusion {
                name: format!("backends/{plugin}"),
                why: "the plugin keeps nothing of the tenant worth carrying".into(),
            }),
            Ok(Err(PluginError::Transient(m) | PluginError::Permanent(m))) => {
                return Err(AppError::Unavailable(format!(
                    "the export of `{plugin}` failed: {m}; nothing was written"
                )));
            }
            Err(err) => {
                return Err(AppError::Unavailable(format!(
                    "the export of `{plugin}` failed: {err}; nothing was written"
                )));
            }
        }
    }
    Ok((backend_parts, excluded))
}

/// The registry's sealed values, sealed again for the bundle's recipient.
fn reseal_registry(ctx: &Context, to: &Keyring, registry: &mut Registry) -> AppResult<()> {
    reseal_row(ctx, to, &mut registry.row)?;
    reseal_resources(ctx, to, &mut registry.resources)?;
    if let Some(r) = registry.request.as_mut() {
        let context = crate::provisioning::request_context(&registry.row.id);
        r.request = reseal(ctx, to, &r.request, &context)?;
    }
    Ok(())
}

/// The registry's parts, each with what a comparison leaves out (instance-specific pointers).
fn registry_parts(parts: &mut Parts, registry: &Registry) -> AppResult<()> {
    let Registry {
        row,
        history,
        keys,
        overrides,
        counters,
        records,
        resources,
        request,
    } = registry;
    parts.json(
        "registry/tenant.json",
        &serde_json::to_value(&row).map_err(AppError::internal)?,
        &[],
    )?;
    parts.json(
        "registry/status_history.json",
        &serde_json::to_value(&history).map_err(AppError::internal)?,
        &[],
    )?;
    parts.json(
        "registry/sso.json",
        &json!({
            "oauth_issuer": row.oauth_issuer,
            "client_id": row.client_id,
            "client_secret": row.client_secret,
            "client_secret_previous": row.client_secret_previous,
            "scopes": row.scopes,
            "role_mapping": row.role_mapping,
        }),
        &[],
    )?;
    parts.json(
        "registry/api_keys.json",
        &serde_json::to_value(&keys).map_err(AppError::internal)?,
        &[],
    )?;
    parts.json(
        "registry/quota_overrides.json",
        &serde_json::to_value(&overrides).map_err(AppError::internal)?,
        &[],
    )?;
    parts.json(
        "registry/usage_counters.json",
        &serde_json::to_value(&counters).map_err(AppError::internal)?,
        &[],
    )?;
    // The audit log is the installation's: it grows with every action, the export itself too.
    parts.json(
        "audit/records.json",
        &serde_json::to_value(&records).map_err(AppError::internal)?,
        &[""],
    )?;
    // Re-applied on import: the run, the time, the ids a backend assigns (in the output) and
    // the sealing (a fresh nonce) are the new installation's.
    parts.json(
        "provisioning/resources.json",
        &serde_json::to_value(&resources).map_err(AppError::internal)?,
        &[
            "/*/run_id",
            "/*/applied_at",
            "/*/input",
            "/*/output",
            "/*/seq",
        ],
    )?;
    // What the tenant was provisioned with (sealed): a repair with the current template
    // versions renders them from it.
    parts.json(
        "provisioning/request.json",
        &serde_json::to_value(&request).map_err(AppError::internal)?,
        &["/request"],
    )?;
    Ok(())
}

/// The backends' parts, what their plugins name as possibly secret sealed; returns each part's
/// digest before sealing (by path).
fn add_backend_parts(
    parts: &mut Parts,
    sealer: &Keyring,
    tenant_id: &str,
    backend_parts: Vec<(String, BundlePart)>,
) -> AppResult<BTreeMap<String, String>> {
    let mut unsealed: BTreeMap<String, String> = BTreeMap::new();
    for (plugin, mut part) in backend_parts {
        // What the plugin names as possibly secret is sealed, as the bundle's other secrets.
        unsealed.insert(format!("backends/{plugin}"), sha256_hex(&part.data));
        let (data, sealed) = super::sealed_fields::map(&part.data, |pointer, value| {
            Ok(sealer.seal(
                value,
                &super::sealed_fields::context(tenant_id, &plugin, pointer),
            ))
        })
        .map_err(|err| {
            AppError::Unavailable(format!(
                "the export of `{plugin}` is not what a bundle can carry ({err}); nothing was written"
            ))
        })?;
        part.data = data;
        for pointer in sealed {
            if !part.instance_specific.contains(&pointer) {
                part.instance_specific.push(pointer);
            }
        }
        let extension = match part.media_type.as_str() {
            "application/json" => "json",
            "application/zip" => "zip",
            _ => "bin",
        };
        let path = format!("backends/{plugin}.{extension}");
        parts.entries.push(PartEntry {
            path: path.clone(),
            media_type: part.media_type.clone(),
            sha256: sha256_hex(&part.data),
            bytes: part.data.len() as u64,
            items: None,
            plugin: Some(plugin),
            instance_specific: part.instance_specific.clone(),
        });
        parts.bytes.insert(path, part.data);
    }
    Ok(unsealed)
}

/// The digest of what the bundle holds, the audit log aside, backends' parts as handed over.
fn digest_of(entries: &[PartEntry], unsealed: &BTreeMap<String, String>) -> String {
    let mut digest = Sha256::new();
    let mut entries: Vec<&PartEntry> = entries.iter().collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    for entry in entries {
        if entry.path == "audit/records.json" {
            continue;
        }
        let content = entry
            .plugin
            .as_ref()
            .and_then(|plugin| unsealed.get(&format!("backends/{plugin}")))
            .unwrap_or(&entry.sha256);
        digest.update(entry.path.as_bytes());
        digest.update([0]);
        digest.update(content.as_bytes());
        digest.update([0]);
    }
    hex::encode(digest.finalize())
}
