//! `tenantry secrets rotate-key`: re-seals every secret at rest — every sealed column of every
//! table — under a new master key, in one transaction (all or nothing), then switches the key
//! file.
//!
//! Crash safety: the new key is written beside the old one (`master.key.next`) before the
//! database changes; the key files are renamed only after the commit. Whatever the moment of a
//! crash, the keys on disk open every value in the database ([`crate::secrets::Keyring::load`]
//! loads the `.next` and `.retired-*` companions too).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::json;

use crate::audit::{self, Actor, AuditEvent};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::secrets::{Keyring, MasterKey};
use crate::store;
use crate::store::sealed::SealedColumn;
use crate::tenants::secret_context;
use crate::transaction;

/// What a rotation did.
#[derive(Debug, Serialize)]
pub struct RotationReport {
    pub old_key_id: String,
    pub new_key_id: String,
    /// Sealed values re-sealed.
    pub resealed: usize,
    /// Where the new key now is, when tenantry manages the key file.
    pub key_file: Option<PathBuf>,
}

/// The sealed values beside the tenants' own secrets, with the columns that bind each.
const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "provisioning_steps",
        column: "input",
        binds: &["run_id", "plugin", "step_id"],
    },
    SealedColumn {
        table: "tenant_resources",
        column: "input",
        binds: &["tenant_id", "plugin", "step_id"],
    },
    SealedColumn {
        table: "tenant_requests",
        column: "request",
        binds: &["tenant_id"],
    },
    SealedColumn {
        table: "plugin_grants",
        column: "sealed_value",
        binds: &["plugin", "kind", "name"],
    },
    SealedColumn {
        table: "webhooks",
        column: "secret",
        binds: &["id"],
    },
    SealedColumn {
        table: "sessions",
        column: "id_token",
        binds: &["handle"],
    },
    SealedColumn {
        table: "login_attempts",
        column: "pkce_verifier",
        binds: &["state_hash"],
    },
];

/// The context a value of `column` is sealed for, from its binds.
fn context_of(column: &SealedColumn, [a, b, c]: [&str; 3]) -> AppResult<String> {
    Ok(match (column.table, column.column) {
        ("provisioning_steps", _) => crate::provisioning::step_context(a, b, c),
        ("tenant_resources", _) => crate::provisioning::resource_context(a, b, c),
        ("tenant_requests", _) => crate::provisioning::request_context(a),
        ("plugin_grants", _) if b == "secret" => crate::plugin_host::secret_context(a, c),
        ("plugin_grants", _) if b == "database" => crate::plugin_host::database_context(a, c),
        ("webhooks", _) => crate::alerts::webhooks::secret_context(a),
        ("sessions", _) => crate::auth::id_token_context(a),
        ("login_attempts", _) => crate::auth::login::pkce_context(a),
        (table, col) => {
            return Err(AppError::internal(anyhow::anyhow!(
                "{table}.{col} of kind `{b}` holds a sealed value with no known context"
            )));
        }
    })
}

/// Re-seals every sealed value under `new_key` in one transaction: the tenants' secrets, run
/// and resource inputs, recorded requests, plugins' granted secrets and databases, webhook
/// signing secrets, sessions' ID tokens and login attempts' PKCE verifiers.
pub async fn reseal_all(ctx: &Context, actor: &Actor, new_key: &MasterKey) -> AppResult<usize> {
    let old: &Keyring = &ctx.keyring;
    let ring = old.rotated_to(new_key.clone());
    let resealed = transaction!(ctx.db, |tx| {
        let mut resealed = 0;
        let mut after = String::new();
        loop {
            let page = store::tenants::page_after(tx, &after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.slug.clone();
            for row in &page {
                let context = secret_context(&row.id, "client_secret");
                let mut reseal =
                    |sealed: &Option<String>, context: &str| -> AppResult<Option<String>> {
                        match sealed {
                            None => Ok(None),
                            Some(sealed) => {
                                let plain = ring.open(sealed, context)?;
                                resealed += 1;
                                Ok(Some(ring.seal(&plain, context)))
                            }
                        }
                    };
                let client_secret = reseal(&row.client_secret, &context)?;
                let previous = reseal(&row.client_secret_previous, &context)?;
                let db_uri = reseal(&row.db_uri, &secret_context(&row.id, "db_uri"))?;
                store::tenants::update_sealed(tx, &row.id, client_secret, previous, db_uri).await?;
            }
        }
        for column in SEALED {
            for sealed in store::sealed::values(tx, column).await? {
                let context = context_of(column, sealed.binds())?;
                let plain = ring.open(&sealed.value, &context)?;
                store::sealed::replace(tx, column, &sealed.value, &ring.seal(&plain, &context))
                    .await?;
                resealed += 1;
            }
        }
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "secrets.rotate_key",
                json!({ "from_key": old.primary_id(), "to_key": new_key.id(), "resealed": resealed }),
            ),
        )
        .await?;
        Ok(resealed)
    })?;
    // The values sealed under the old key are overwritten; on SQLite their old bytes could
    // still sit in free pages and in the write-ahead log until the file is rewritten.
    ctx.db.compact().await?;
    Ok(resealed)
}

/// Rotates to a freshly generated key kept in the managed key file (default
/// `<data_dir>/master.key`), or to `new_key_file` when the operator supplies the key.
pub async fn rotate(
    ctx: &Context,
    actor: &Actor,
    new_key_file: Option<&Path>,
) -> anyhow::Result<RotationReport> {
    let old_id = ctx.keyring.primary_id().to_owned();
    let new_key = match new_key_file {
        Some(path) => MasterKey::read_file(path)?,
        None => MasterKey::generate(),
    };
    anyhow::ensure!(
        new_key.id() != old_id,
        "the new key is the key already in use"
    );
    let Some(current) = ctx.keyring.key_file.clone() else {
        // The key comes from TENANTRY_MASTER_KEY: the operator brings the new key and switches
        // the variable afterwards.
        let Some(_) = new_key_file else {
            anyhow::bail!(
                "the master key comes from TENANTRY_MASTER_KEY: generate a new key (e.g. `openssl rand -base64 32 > new.key`), \
                 run `tenantry secrets rotate-key --new-key-file new.key`, then set TENANTRY_MASTER_KEY to it"
            );
        };
        let resealed = reseal_all(ctx, actor, &new_key)
            .await
            .map_err(AppError::into_anyhow)?;
        return Ok(RotationReport {
            old_key_id: old_id,
            new_key_id: new_key.id().to_owned(),
            resealed,
            key_file: None,
        });
    };
    // The key comes from a file: the new key takes its place, the old one is kept beside it.
    let next = with_suffix(&current, ".next");
    if next.exists() {
        anyhow::bail!(
            "{} exists: an earlier rotation did not finish; move it away after checking `tenantry audit list --action secrets.rotate_key`",
            next.display()
        );
    }
    new_key.write_new_file(&next)?;
    let resealed = match reseal_all(ctx, actor, &new_key).await {
        Ok(n) => n,
        Err(err) => {
            let _ = std::fs::remove_file(&next);
            return Err(err.into_anyhow());
        }
    };
    let retired = with_suffix(&current, &format!(".retired-{old_id}"));
    std::fs::rename(&current, &retired)
        .with_context(|| format!("retiring {}", current.display()))?;
    std::fs::rename(&next, &current)
        .with_context(|| format!("installing {}", current.display()))?;
    Ok(RotationReport {
        old_key_id: old_id,
        new_key_id: new_key.id().to_owned(),
        resealed,
        key_file: Some(current),
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
