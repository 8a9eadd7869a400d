//! A tenant as one bundle, across every system: a versioned tar archive of its registry record
//! and status history, SSO settings, API keys (hashes only), quota overrides and usage
//! counters, audit records (with the hashes that tie them to the chain), the resources it was
//! provisioned with, and each backend plugin's own `export` part. `manifest.json`, first in the
//! archive, lists every part with its SHA-256 and every exclusion by name and reason.
//!
//! - [`export`]: builds a bundle; secrets stay sealed, re-sealed to another installation's
//!   master key when asked (`--recipient-key`).
//! - [`import`]: all or nothing for the registry (checked first, one transaction; `dry_run`
//!   only says what would be created), then the backends: the recorded steps re-applied and
//!   each plugin's part imported; the counts verified against the bundle at the end.
//! - [`backup`]: every tenant's bundle into a directory, skipping unchanged tenants.
//!
//! Format `tenantry.tenant-bundle/v2`; the JSON bundle of `v1` (record and history) is still
//! read.

pub mod backup;
mod export;
mod import;
pub mod sealed_fields;

pub use export::{ExportOptions, export, export_with_digest};
pub use import::{ImportOutcome, ImportPlan, import};

use std::collections::BTreeMap;
use std::io::Read as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error::{AppError, AppResult, FieldError};

pub const FORMAT: &str = "tenantry.tenant-bundle/v2";
pub const MEDIA_TYPE: &str = "application/x-tar";
const MANIFEST: &str = "manifest.json";
/// The largest archive read (and part in it).
pub const MAX_BYTES: usize = 256 * 1024 * 1024;

/// One part of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartEntry {
    /// Its path in the archive.
    pub path: String,
    pub media_type: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    pub bytes: u64,
    /// How many records it holds (JSON arrays), when it is a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
    /// The backend plugin it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// What differs between installations: JSON pointers (`*` stands for every index of an
    /// array; `""` the whole part), or the plugin's names for a part that is not JSON.
    #[serde(default)]
    pub instance_specific: Vec<String>,
}

/// Something a bundle leaves out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    pub name: String,
    pub why: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `tenantry.tenant-bundle/v2`.
    pub format: String,
    pub tenant_id: String,
    pub tenant_slug: String,
    pub exported_at: String,
    /// The master key the bundle's secrets are sealed with (the id `tsk1:<id>:…` names).
    pub sealed_for: String,
    /// How the audit records' hashes are made, to check them against a chain.
    pub audit_hash: String,
    pub parts: Vec<PartEntry>,
    pub excluded: Vec<Exclusion>,
}

/// A bundle in memory: its manifest and each part's bytes, by path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    pub parts: BTreeMap<String, Vec<u8>>,
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Bundle {
    /// The archive: `manifest.json` first, then every part in manifest order. Deterministic:
    /// every entry has the export's time, mode 0644 and no owner.
    pub fn to_tar(&self) -> AppResult<Vec<u8>> {
        let mtime = chrono::DateTime::parse_from_rfc3339(&self.manifest.exported_at)
            .map(|t| t.timestamp().max(0) as u64)
            .unwrap_or(0);
        let mut builder = tar::Builder::new(Vec::new());
        let manifest = serde_json::to_vec_pretty(&self.manifest).map_err(AppError::internal)?;
        let mut append = |path: &str, bytes: &[u8]| -> std::io::Result<()> {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(mtime);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, bytes)
        };
        append(MANIFEST, &manifest).map_err(AppError::internal)?;
        for part in &self.manifest.parts {
            let bytes = self.parts.get(&part.path).ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("part {} has no bytes", part.path))
            })?;
            append(&part.path, bytes).map_err(AppError::internal)?;
        }
        builder.into_inner().map_err(AppError::internal)
    }

    /// Reads an archive and checks it: a known format, every part the manifest lists present
    /// with its SHA-256 and size, nothing it does not list. A 422 names what is wrong.
    pub fn from_tar(bytes: &[u8]) -> AppResult<Bundle> {
        let refuse = |rule: &str, message: String| {
            AppError::Validation(vec![FieldError::new("bundle", rule, message)])
        };
        if bytes.len() > MAX_BYTES {
            return Err(refuse(
                "size",
                format!("is larger than {} MiB", MAX_BYTES / (1024 * 1024)),
            ));
        }
        let mut archive = tar::Archive::new(bytes);
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let entries = archive
            .entries()
            .map_err(|e| refuse("tar", format!("is not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| refuse("tar", format!("is damaged: {e}")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(refuse("entries", "holds something other than files".into()));
            }
            let path = entry
                .path()
                .map_err(|e| refuse("tar", format!("has a bad path: {e}")))?
                .to_string_lossy()
                .into_owned();
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| refuse("tar", format!("is damaged: {e}")))?;
            if files.insert(path.clone(), data).is_some() {
                return Err(refuse("entries", format!("holds `{path}` twice")));
            }
        }
        let manifest_bytes = files
            .remove(MANIFEST)
            .ok_or_else(|| refuse("manifest", format!("has no {MANIFEST}")))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| refuse("manifest", format!("{MANIFEST} is not a manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(refuse(
                "format",
                format!("is `{}`; this server reads `{FORMAT}`", manifest.format),
            ));
        }
        for part in &manifest.parts {
            let Some(data) = files.get(&part.path) else {
                return Err(refuse(
                    "parts",
                    format!("lists `{}`, which the archive does not hold", part.path),
                ));
            };
            if data.len() as u64 != part.bytes || sha256_hex(data) != part.sha256 {
                return Err(refuse(
                    "sha256",
                    format!(
                        "`{}` does not match its SHA-256 in the manifest (changed after the export)",
                        part.path
                    ),
                ));
            }
        }
        if let Some(extra) = files
            .keys()
            .find(|p| !manifest.parts.iter().any(|e| &e.path == *p))
        {
            return Err(refuse(
                "parts",
                format!("holds `{extra}`, which the manifest does not list"),
            ));
        }
        Ok(Bundle {
            manifest,
            parts: files,
        })
    }

    /// A part parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, path: &str) -> AppResult<T> {
        let bytes = self.parts.get(path).ok_or_else(|| {
            AppError::Validation(vec![FieldError::new(
                "parts",
                "missing",
                format!("the bundle has no `{path}`"),
            )])
        })?;
        serde_json::from_slice(bytes).map_err(|e| {
            AppError::Validation(vec![FieldError::new(
                path.to_owned(),
                "json",
                format!("is not what this part holds: {e}"),
            )])
        })
    }
}

/// Whether `bytes` is a tar archive (`ustar` at offset 257).
pub fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

/// Removes what `pointers` name from `value` (`*` matches every index or key).
fn strip(value: &mut Value, pointers: &[String]) {
    fn remove(value: &mut Value, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let last = rest.is_empty();
        match value {
            Value::Object(map) => {
                let keys: Vec<String> = if *first == "*" {
                    map.keys().cloned().collect()
                } else {
                    vec![first.replace("~1", "/").replace("~0", "~")]
                };
                for key in keys {
                    if last {
                        map.remove(&key);
                    } else if let Some(inner) = map.get_mut(&key) {
                        remove(inner, rest);
                    }
                }
            }
            Value::Array(items) => {
                if *first == "*" {
                    for item in items.iter_mut() {
                        if last {
                            *item = Value::Null;
                        } else {
                            remove(item, rest);
                        }
                    }
                } else if let Ok(i) = first.parse::<usize>()
                    && let Some(item) = items.get_mut(i)
                {
                    if last {
                        *item = Value::Null;
                    } else {
                        remove(item, rest);
                    }
                }
            }
            _ => {}
        }
    }
    for pointer in pointers {
        if pointer.is_empty() {
            *value = Value::Null;
            continue;
        }
        let path: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        remove(value, &path);
    }
}

/// Where two bundles of the same tenant differ, apart from what their manifests name as
/// instance-specific: the parts one has and the other has not, and the parts whose content
/// differs (JSON compared without the instance-specific pointers; other media by SHA-256
/// unless the plugin names the part instance-specific).
pub fn differences(a: &Bundle, b: &Bundle) -> Vec<String> {
    let mut out = Vec::new();
    for part in &a.manifest.parts {
        let Some(other) = b.manifest.parts.iter().find(|p| p.path == part.path) else {
            out.push(format!("{}: only in the first bundle", part.path));
            continue;
        };
        // A part that is instance-specific as a whole is not compared.
        if part.instance_specific.iter().any(String::is_empty) {
            continue;
        }
        if part.items != other.items {
            out.push(format!(
                "{}: {} records, then {}",
                part.path,
                part.items.unwrap_or(0),
                other.items.unwrap_or(0)
            ));
            continue;
        }
        let mut pointers = part.instance_specific.clone();
        pointers.extend(other.instance_specific.iter().cloned());
        if part.media_type == "application/json" {
            let parse = |bundle: &Bundle| {
                serde_json::from_slice::<Value>(&bundle.parts[&part.path]).unwrap_or(Value::Null)
            };
            let (mut x, mut y) = (parse(a), parse(b));
            strip(&mut x, &pointers);
            strip(&mut y, &pointers);
            if x != y {
                out.push(format!("{}: the content differs", part.path));
            }
        } else if pointers.is_empty() && part.sha256 != other.sha256 {
            out.push(format!("{}: the content differs", part.path));
        }
    }
    for part in &b.manifest.parts {
        if !a.manifest.parts.iter().any(|p| p.path == part.path) {
            out.push(format!("{}: only in the second bundle", part.path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instance_specific_pointers_are_left_out_of_a_comparison() {
        let mut value = json!([{ "id": 1, "name": "a", "at": "x" }, { "id": 2, "name": "b" }]);
        strip(&mut value, &["/*/id".into(), "/*/at".into()]);
        assert_eq!(value, json!([{ "name": "a" }, { "name": "b" }]));
        let mut whole = json!({ "a": 1 });
        strip(&mut whole, &[String::new()]);
        assert_eq!(whole, Value::Null);
    }

    fn bundle(parts: &[(&str, Value, &[&str])]) -> Bundle {
        let mut entries = Vec::new();
        let mut bytes = BTreeMap::new();
        for (path, value, pointers) in parts {
            let data = serde_json::to_vec(value).unwrap();
            entries.push(PartEntry {
                path: (*path).into(),
                media_type: "application/json".into(),
                sha256: sha256_hex(&data),
                bytes: data.len() as u64,
                items: value.as_array().map(|a| a.len() as u64),
                plugin: None,
                instance_specific: pointers.iter().map(|p| (*p).to_owned()).collect(),
            });
            bytes.insert((*path).to_owned(), data);
        }
        Bundle {
            manifest: Manifest {
                format: FORMAT.into(),
                tenant_id: "t".into(),
                tenant_slug: "acme".into(),
                exported_at: "2026-12-06T00:00:00Z".into(),
                sealed_for: "k".into(),
                audit_hash: String::new(),
                parts: entries,
                excluded: Vec::new(),
            },
            parts: bytes,
        }
    }

    #[test]
    fn differences_name_changed_missing_and_recounted_parts_but_not_instance_specific_ones() {
        let a = bundle(&[
            ("r.json", json!([{ "id": 1, "at": "x" }]), &["/*/at"]),
            ("audit.json", json!([1, 2]), &[""]),
            ("gone.json", json!({}), &[]),
        ]);
        let b = bundle(&[
            ("r.json", json!([{ "id": 1, "at": "y" }]), &["/*/at"]),
            ("audit.json", json!([1, 2, 3]), &[""]),
            ("gone.json", json!({}), &[]),
        ]);
        assert!(differences(&a, &b).is_empty());
        let c = bundle(&[
            ("r.json", json!([{ "id": 2, "at": "y" }]), &["/*/at"]),
            ("audit.json", json!([]), &[""]),
            ("new.json", json!({}), &[]),
        ]);
        assert_eq!(
            differences(&a, &c),
            [
                "r.json: the content differs",
                "gone.json: only in the first bundle",
                "new.json: only in the second bundle"
            ]
        );
        let tar = a.to_tar().unwrap();
        assert!(is_tar(&tar));
        let read = Bundle::from_tar(&tar).unwrap();
        assert_eq!(read.parts, a.parts);
    }
}
