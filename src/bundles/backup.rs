//! Backups of every tenant: each tenant's bundle written to a directory, incrementally.
//!
//! `DIR/<slug>.tar` holds a tenant's newest bundle (mode 0600; secrets stay sealed), and the
//! ones before it are kept beside it as `DIR/<slug>.<time>.tar`, up to `keep` bundles in all;
//! `DIR/index.json` says what each was made from. Every tenant is exported, and its bundle is
//! written only when what it holds changed since the last backup there — the tenant's record,
//! keys, overrides, usage, resources and what its backends hand over, compared by a digest
//! ([`super::export_with_digest`]) — unless `full` asks for every tenant. A written backup is
//! audited (`tenant.backup`); the file of a tenant that no longer exists is kept and listed as
//! `gone`, since a backup is what restores it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::{store, transaction};
use serde_json::json;

use super::ExportOptions;

/// What a backup file was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Indexed {
    pub tenant_id: String,
    pub version: i64,
    pub updated_at: String,
    pub file: String,
    pub exported_at: String,
    /// The digest of what the bundle holds (none in an index of an earlier version: the
    /// tenant is then written again).
    #[serde(default)]
    pub digest: Option<String>,
    /// The tenant's earlier bundles kept beside it, oldest first.
    #[serde(default)]
    pub older: Vec<String>,
}

/// `DIR/index.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    format: String,
    tenants: BTreeMap<String, Indexed>,
}

const INDEX_FORMAT: &str = "tenantry.backup-index/v1";

/// What one backup did.
#[derive(Debug, Default, Serialize)]
pub struct BackupReport {
    pub dir: String,
    /// Tenants exported now (new or changed).
    pub exported: Vec<String>,
    /// Tenants whose file is current.
    pub unchanged: Vec<String>,
    /// Tenants that no longer exist; their last file is kept.
    pub gone: Vec<String>,
}

/// Writes `bytes` to `path` readable by this user only (mode 0600), whole or not at all: a
/// file beside it first, then renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn io(dir: &Path, err: std::io::Error) -> AppError {
    AppError::Unavailable(format!("backup directory {}: {err}", dir.display()))
}

/// Backs every tenant up into `dir` (created when missing), skipping the unchanged ones and
/// keeping `keep` bundles of each (at least 1).
pub async fn backup(
    ctx: &Context,
    actor: &Actor,
    dir: &Path,
    full: bool,
    keep: usize,
) -> AppResult<BackupReport> {
    let keep = keep.max(1);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let index_path = dir.join("index.json");
    let mut index: Index = match std::fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
            AppError::Unavailable(format!(
                "{} is not a backup index ({err}); back up into an empty directory",
                index_path.display()
            ))
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Index::default(),
        Err(err) => return Err(io(dir, err)),
    };
    index.format = INDEX_FORMAT.into();
    let mut report = BackupReport {
        dir: dir.display().to_string(),
        ..BackupReport::default()
    };
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let rows = {
            let mut conn = ctx.db.conn().await?;
            store::tenants::page_after(&mut conn, &after, 200).await?
        };
        let Some(last) = rows.last() else { break };
        after = last.slug.clone();
        for row in rows {
            seen.push(row.slug.clone());
            let updated_at = clock::rfc3339(row.updated_at);
            let file = format!("{}.tar", row.slug);
            let unaudited = ExportOptions {
                unaudited: true,
                ..ExportOptions::default()
            };
            let (bundle, digest) =
                match super::export_with_digest(ctx, actor, &row.slug, unaudited).await {
                    Ok(exported) => exported,
                    // Purged meanwhile.
                    Err(AppError::NotFound { .. }) => continue,
                    Err(err) => return Err(err),
                };
            let earlier = index
                .tenants
                .get(&row.slug)
                .filter(|i| i.tenant_id == row.id && dir.join(&i.file).is_file());
            if !full && earlier.is_some_and(|i| i.digest.as_deref() == Some(digest.as_str())) {
                report.unchanged.push(row.slug);
                continue;
            }
            // The bundle before this one is kept beside it; the oldest beyond `keep` go.
            let mut older = earlier.map(|i| i.older.clone()).unwrap_or_default();
            if let Some(earlier) = earlier {
                let stamp: String = earlier
                    .exported_at
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect();
                let kept = format!("{}.{stamp}.tar", row.slug);
                std::fs::rename(dir.join(&earlier.file), dir.join(&kept))
                    .map_err(|e| io(dir, e))?;
                older.push(kept);
            }
            while older.len() + 1 > keep {
                let oldest = older.remove(0);
                match std::fs::remove_file(dir.join(&oldest)) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io(dir, err)),
                }
            }
            write_private(&dir.join(&file), &bundle.to_tar()?).map_err(|e| io(dir, e))?;
            transaction!(ctx.db, |tx| {
                audit::record(
                    tx,
                    actor,
                    AuditEvent::tenant(
                        "tenant.backup",
                        &row.id,
                        &row.slug,
                        json!({ "file": file, "digest": digest, "kept": older.len() + 1 }),
                    ),
                )
                .await
            })?;
            index.tenants.insert(
                row.slug.clone(),
                Indexed {
                    tenant_id: row.id.clone(),
                    version: row.version,
                    updated_at,
                    file,
                    exported_at: bundle.manifest.exported_at.clone(),
                    digest: Some(digest),
                    older,
                },
            );
            // The index after every file: an interrupted backup resumes where it stopped.
            let bytes = serde_json::to_vec_pretty(&index).map_err(AppError::internal)?;
            write_private(&index_path, &bytes).map_err(|e| io(dir, e))?;
            report.exported.push(row.slug);
        }
    }
    report.gone = index
        .tenants
        .keys()
        .filter(|slug| !seen.contains(slug))
        .cloned()
        .collect();
    let bytes = serde_json::to_vec_pretty(&index).map_err(AppError::internal)?;
    write_private(&index_path, &bytes).map_err(|e| io(dir, e))?;
    Ok(report)
}
