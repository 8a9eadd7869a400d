//! Backups of every tenant: each tenant's bundle written to a directory, incrementally.
//!
//! `DIR/<slug>.tar` holds a tenant's bundle (mode 0600; secrets stay sealed) and
//! `DIR/index.json` what each file was made from: the tenant's id, its record's version and
//! the time of its last change. A tenant whose record has not changed since the last backup is
//! skipped (its file is kept) unless `full` asks for every tenant (what changed only in a
//! backend is seen by a full backup); one that changed is exported again (and the export
//! audited); the file of a tenant that no longer exists is kept and listed as `gone`, since a
//! backup is what restores it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;

use super::ExportOptions;

/// What a backup file was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Indexed {
    pub tenant_id: String,
    pub version: i64,
    pub updated_at: String,
    pub file: String,
    pub exported_at: String,
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

/// Backs every tenant up into `dir` (created when missing), skipping the unchanged ones.
pub async fn backup(
    ctx: &Context,
    actor: &Actor,
    dir: &Path,
    full: bool,
) -> AppResult<BackupReport> {
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
            let current = !full
                && index.tenants.get(&row.slug).is_some_and(|i| {
                    i.tenant_id == row.id
                        && i.version == row.version
                        && i.updated_at == updated_at
                        && dir.join(&i.file).is_file()
                });
            if current {
                report.unchanged.push(row.slug);
                continue;
            }
            let bundle = match super::export(ctx, actor, &row.slug, ExportOptions::default()).await
            {
                Ok(bundle) => bundle,
                // Purged meanwhile.
                Err(AppError::NotFound { .. }) => continue,
                Err(err) => return Err(err),
            };
            write_private(&dir.join(&file), &bundle.to_tar()?).map_err(|e| io(dir, e))?;
            index.tenants.insert(
                row.slug.clone(),
                Indexed {
                    tenant_id: row.id.clone(),
                    version: row.version,
                    updated_at,
                    file,
                    exported_at: bundle.manifest.exported_at.clone(),
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
