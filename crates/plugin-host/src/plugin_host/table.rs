//! The plugins this server has loaded: a cache of the database. Every change of a plugin, its
//! configuration or its grants (an install, an enable or disable, a new deadline, a grant or a
//! revoke, made by this server, another replica or the CLI) bumps the plugin's `revision` in the
//! same transaction, and the change feed forgets the plugin when it hears the change.
//!
//! Before every call, [`Table::current`] makes sure the plugin is the one the database holds:
//! - **SQLite**: [`ChangeFeed::heard_everything_committed`] asks the database whether another
//!   connection committed since the last look (`PRAGMA data_version`, one in-process pragma) and,
//!   if so, reads the change log, which forgets what changed; the cached plugin is then used
//!   without a query. (A look that fails forgets everything, and the call reloads.)
//! - **PostgreSQL**: a notification arrives only after its commit, if at all, so the plugin's
//!   revision is read (one indexed read) before every call, whether or not the change feed is
//!   live; the plugin is reloaded when the revision differs.
//!
//! A load is kept only when no change was heard while it ran (a generation stamp), so a load
//! that raced a revoke cannot put the old grants back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use super::compile::{Compiled, Compiler};
use super::manifest::{self, Inspection, Manifest, World};
use super::stats::Tally;
use super::{CallError, Grants, HostServices, builtins};
use crate::config::PluginsConfig;
use crate::store::changes::Change;
use crate::store::models::{PluginGrantRow, PluginMetaRow};
use crate::store::{self, Conn};

/// A plugin as the database held it at `revision`, ready to be called.
pub struct LoadedPlugin {
    pub name: String,
    pub manifest: Manifest,
    pub inspection: Inspection,
    pub builtin: bool,
    pub enabled: bool,
    pub deadline_ms: Option<u64>,
    pub grants: Grants,
    /// The configuration in force, as JSON text by key.
    pub config: Arc<std::collections::BTreeMap<String, String>>,
    pub revision: i64,
    pub(super) bytes: Arc<Vec<u8>>,
    /// Compiled and pre-instantiated on first use; shared by every load of the same component.
    pub(super) compiled: Compiled,
    /// Set when a call ran past the inline budget: later calls go straight to the blocking
    /// pool (until the plugin is loaded again).
    pub(super) outran_inline: AtomicBool,
    /// Where this plugin's calls are counted, looked up at its first call rather than at each.
    pub(super) meters: OnceLock<CallMeters>,
    /// Instances kept between calls, for a plugin whose manifest says its calls share nothing
    /// (`reuse_instances`): a call takes one instead of instantiating.
    pub(super) idle: std::sync::Mutex<Vec<super::kept::Kept>>,
}

/// The metrics and statistics one plugin's calls are counted in.
pub(super) struct CallMeters {
    pub ok: prometheus::IntCounter,
    pub failed: prometheus::IntCounter,
    /// Calls stopped at their deadline (counted as failed too).
    pub deadline: prometheus::IntCounter,
    pub duration: prometheus::Histogram,
    pub tally: Arc<Tally>,
}

impl LoadedPlugin {
    /// Whether a call may take an instance kept from an earlier call: a renderer or quota
    /// policy (no side effects, nothing granted) whose manifest says its calls share nothing,
    /// and that imports no WASI (whose streams and clocks would carry over).
    pub fn reuses_instances(&self) -> bool {
        self.manifest.reuse_instances
            && !self.manifest.world.has_capabilities()
            && !self
                .inspection
                .imports
                .iter()
                .any(|import| import.starts_with("wasi:"))
    }

    /// The deadline of a call, from the operator's override or the world's default.
    pub fn deadline(&self, config: &PluginsConfig) -> Duration {
        let default = match self.manifest.world {
            World::Provisioner => config.provisioner_deadline_ms,
            World::Renderer => config.renderer_deadline_ms,
            World::QuotaPolicy => config.quota_deadline_ms,
        };
        Duration::from_millis(self.deadline_ms.unwrap_or(default))
    }
}

/// The grants of a plugin, from its grant rows. A grant of a kind other than `host`, `secret`
/// or `database` is an error naming it (never read as something else).
pub fn grants_of(rows: &[PluginGrantRow]) -> Result<Grants, String> {
    let mut grants = Grants::default();
    for row in rows {
        match (row.kind.as_str(), &row.sealed_value) {
            ("host", _) => grants.hosts.push(row.name.clone()),
            ("secret", Some(value)) => {
                grants.secrets.insert(row.name.clone(), value.clone());
            }
            ("secret", None) => {
                return Err(format!("secret grant `{}` has no value", row.name));
            }
            ("database", Some(url)) => {
                grants.databases.insert(row.name.clone(), url.clone());
            }
            ("database", None) => {
                return Err(format!("database grant `{}` has no URL", row.name));
            }
            (other, _) => return Err(format!("unknown grant kind `{other}` ({})", row.name)),
        }
    }
    Ok(grants)
}

#[derive(Default)]
pub struct Table {
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    /// Counts the changes heard; a load is kept only when none was heard meanwhile.
    generation: AtomicU64,
}

fn registry_error(plugin: &str, err: impl std::fmt::Display) -> CallError {
    CallError::Registry {
        plugin: plugin.to_owned(),
        reason: err.to_string(),
    }
}

impl Table {
    fn cached(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table lock")
            .get(name)
            .cloned()
    }

    fn forget(&self, name: &str) {
        self.plugins
            .write()
            .expect("plugin table lock")
            .remove(name);
    }

    /// Forgets what a change heard on the feed names.
    pub fn heard(&self, change: &Change) {
        let mut plugins = self.plugins.write().expect("plugin table lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Plugin(name) => {
                plugins.remove(name);
            }
            Change::Everything => plugins.clear(),
            _ => {}
        }
    }

    /// Plugin `name` as the database holds it now, never as it was: a revoke or a disable
    /// committed anywhere before this call binds it. On SQLite as loaded, after a look at what
    /// other connections committed (one in-process pragma); on PostgreSQL after a read of its
    /// revision, since a notification arrives after its commit, if at all.
    pub async fn current(
        &self,
        services: &HostServices,
        compiler: &Compiler,
        name: &str,
    ) -> Result<Arc<LoadedPlugin>, CallError> {
        if services.db.changes().heard_everything_committed()
            && let Some(plugin) = self.cached(name)
        {
            return Ok(plugin);
        }
        let stamp = self.generation.load(Ordering::Acquire);
        let mut conn = services
            .db
            .conn()
            .await
            .map_err(|e| registry_error(name, e))?;
        let revision = store::plugins::revision(&mut conn, name)
            .await
            .map_err(|e| registry_error(name, e))?;
        let Some(revision) = revision else {
            self.forget(name);
            return Err(CallError::NotInstalled(name.to_owned()));
        };
        if let Some(plugin) = self.cached(name)
            && plugin.revision == revision
        {
            return Ok(plugin);
        }
        self.reload(&mut conn, compiler, name, stamp).await
    }

    /// Loads plugin `name` from the database, replacing what was loaded, unless a change was
    /// heard since `stamp` (then the load serves this call only).
    async fn reload(
        &self,
        conn: &mut Conn,
        compiler: &Compiler,
        name: &str,
        stamp: u64,
    ) -> Result<Arc<LoadedPlugin>, CallError> {
        let Some(row) = store::plugins::find_meta(conn, name)
            .await
            .map_err(|e| registry_error(name, e))?
        else {
            self.forget(name);
            return Err(CallError::NotInstalled(name.to_owned()));
        };
        let grants = grants_of(
            &store::plugins::grants(conn, name)
                .await
                .map_err(|e| registry_error(name, e))?,
        )
        .map_err(|e| registry_error(name, e))?;
        let previous = self.cached(name);
        let (bytes, inspection) = match previous {
            Some(p) if p.inspection.sha256 == row.sha256 => (p.bytes.clone(), p.inspection.clone()),
            _ => {
                let bytes = component_bytes(conn, &row).await?;
                let inspection = manifest::inspect(&bytes).map_err(|e| CallError::Load {
                    plugin: name.to_owned(),
                    reason: e.to_string(),
                })?;
                (Arc::new(bytes), inspection)
            }
        };
        let set: std::collections::BTreeMap<String, String> = store::plugins::config(conn, name)
            .await
            .map_err(|e| registry_error(name, e))?
            .into_iter()
            .map(|r| (r.key, r.value))
            .collect();
        let fields = super::config::fields(inspection.manifest.config_schema.as_ref()).map_err(
            |reason| CallError::Load {
                plugin: name.to_owned(),
                reason,
            },
        )?;
        let config = Arc::new(super::config::effective(&fields, &set));
        let plugin = Arc::new(LoadedPlugin {
            name: row.name.clone(),
            manifest: inspection.manifest.clone(),
            compiled: compiler.slot(&inspection.sha256),
            inspection,
            builtin: row.builtin,
            enabled: row.enabled,
            deadline_ms: row.deadline_ms.map(|d| d.max(1) as u64),
            grants,
            config,
            revision: row.revision,
            bytes,
            outran_inline: AtomicBool::new(false),
            meters: OnceLock::new(),
            idle: Default::default(),
        });
        let mut plugins = self.plugins.write().expect("plugin table lock");
        if self.generation.load(Ordering::Acquire) == stamp {
            plugins.insert(row.name.clone(), plugin.clone());
        }
        Ok(plugin)
    }
}

/// The component of a stored plugin: a built-in's from the binary, an installed one's from the
/// database.
async fn component_bytes(conn: &mut Conn, row: &PluginMetaRow) -> Result<Vec<u8>, CallError> {
    if row.builtin {
        return builtins::builtin(&row.name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| CallError::Load {
                plugin: row.name.clone(),
                reason: "a built-in plugin this server does not carry (an older or newer server \
                         recorded it)"
                    .into(),
            });
    }
    store::plugins::component(conn, &row.name)
        .await
        .map_err(|e| registry_error(&row.name, e))?
        .ok_or_else(|| CallError::Load {
            plugin: row.name.clone(),
            reason: "its component is missing from the database".into(),
        })
}
