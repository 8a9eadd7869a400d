//! The plugin host: the only module that touches wasmtime.
//!
//! One [`wasmtime::Engine`] with the pooling allocator (sized from `[plugins]`) and epoch
//! interruption (a ticker thread advances the epoch every millisecond). Each plugin is compiled
//! once — the compiled code is cached on disk, keyed by the component's hash and the engine's
//! settings — and pre-instantiated (`…Pre`). Every call gets a fresh `Store` carrying that
//! call's tenant, memory limits and deadline, runs behind a semaphore that bounds concurrent
//! calls, and is dropped when the call ends — except for a renderer or quota policy whose
//! manifest says its calls share nothing (`reuse_instances`), whose instance and store are kept
//! for its next call when the call answered. A provisioner call runs on the blocking pool; a
//! renderer or quota-policy call (no side effects) runs on the calling thread within a budget of
//! a few milliseconds, and on the blocking pool, from a fresh instance, if it needs longer.
//! Pooled slots are reset in place (only the pages a call dirtied) and stay resident.
//!
//! The database is the truth about plugins. The host keeps the plugins it loaded ([`table`]) and
//! makes sure, before each call, that each is what the database holds: on SQLite by asking
//! whether anyone committed since its last look, on PostgreSQL by reading the plugin's
//! revision. The change feed also forgets a changed plugin and cancels the running calls a
//! disable or a revoke no longer allows ([`in_flight`]). A disable or a revoke therefore binds
//! the very next call, wherever it was made. The host is given a narrow set of services
//! ([`HostServices`]): the database for plugin state and the registry, the keyring for granted
//! secrets, the plugins' configuration, the metrics and the HTTP client — nothing else of the
//! server.

mod bindings;
pub mod builtins;
mod compile;
pub mod config;
mod ended;
mod exports;
mod follow_up;
mod host;
mod in_flight;
mod kept;
pub mod manifest;
mod package;
mod sandbox;
pub mod scaffold;
mod stats;
mod table;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

pub use builtins::BUILTINS;
pub use host::{PluginHost, PoolState};
pub use manifest::{Inspection, Manifest, SUPPORTED_WIT_VERSIONS, World};
pub use stats::CallStats;
pub use table::{LoadedPlugin, grants_of};

pub use bindings::provisioner::tenantry::plugin::types::{
    BundlePart, Decision, Drift, LifecycleChange, Measurement, MetricDecision, Outcome,
    PluginError, PluginInfo, RenderError, Severity, Step, Template, Usage,
};

use crate::config::PluginsConfig;
use crate::metrics::Metrics;
use crate::secrets::Keyring;
use crate::store::Db;
use crate::store::models::TenantRow;
use crate::store::vocabulary::Tier;

/// What the host may use of the server: the database (the plugin registry and plugins' state),
/// the keyring (to open granted secrets), the outbound HTTP client, its configuration and the
/// metrics it reports to.
#[derive(Clone)]
pub struct HostServices {
    pub db: Db,
    pub keyring: Arc<Keyring>,
    pub config: Arc<PluginsConfig>,
    pub metrics: Arc<Metrics>,
    http: sandbox::http::HttpClient,
}

impl HostServices {
    pub fn new(
        db: Db,
        keyring: Arc<Keyring>,
        config: PluginsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        HostServices {
            db,
            keyring,
            config: Arc::new(config),
            metrics,
            http: Arc::default(),
        }
    }
}

/// The tenant a plugin call is made for.
#[derive(Debug, Clone)]
pub struct PluginTenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: Tier,
    /// The tenant's status word, or [`PluginTenant::PURGED`] in a purge run.
    pub status: String,
}

impl PluginTenant {
    /// The status a plugin is told while a purge run undoes the tenant.
    pub const PURGED: &str = "purged";

    /// The tenant of a registry row, as it is now.
    pub fn of_row(row: &TenantRow) -> Self {
        PluginTenant {
            id: row.id.clone(),
            slug: row.slug.clone(),
            name: row.name.clone(),
            tier: row.tier,
            status: row.status.to_string(),
        }
    }

    fn to_wit(&self) -> bindings::provisioner::tenantry::plugin::types::Tenant {
        bindings::provisioner::tenantry::plugin::types::Tenant {
            id: self.id.clone(),
            slug: self.slug.clone(),
            name: self.name.clone(),
            tier: self.tier.to_string(),
            status: self.status.clone(),
        }
    }
}

/// Capabilities the operator granted a plugin (only those the manifest requests take effect).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub hosts: Vec<String>,
    /// Secret name → sealed value.
    pub secrets: HashMap<String, String>,
    /// Database alias → sealed connection URL.
    pub databases: HashMap<String, String>,
}

/// Where a database URL granted to a plugin is bound (associated data of the seal).
pub fn database_context(plugin: &str, alias: &str) -> String {
    format!("plugin/{plugin}/database/{alias}")
}

/// Where secrets granted to plugins are bound (associated data of the seal).
pub fn secret_context(plugin: &str, secret: &str) -> String {
    format!("plugin/{plugin}/secret/{secret}")
}

/// Why a plugin call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin `{0}` is not installed")]
    NotInstalled(String),
    #[error("plugin `{0}` is disabled")]
    Disabled(String),
    #[error("plugin `{plugin}` is a {actual} plugin, not a {expected}")]
    WrongWorld {
        plugin: String,
        expected: World,
        actual: World,
    },
    /// Stopped at its deadline. Time spent waiting in host calls (HTTP, SQL, state, sleeping)
    /// is counted apart, and the longest wait is named: a call that spent most of its deadline
    /// waiting on a backend may get an answer next time; one whose own code ran past it will
    /// not. Every host wait ends with the call, so the deadline covers both.
    #[error("plugin `{plugin}` was stopped at its deadline of {deadline_ms} ms ({})", deadline_detail(*.deadline_ms, *.waited_ms, .waited_on.as_deref()))]
    Deadline {
        plugin: String,
        deadline_ms: u128,
        waited_ms: u128,
        /// What it waited on longest (`billing.example.com (HTTP)`, `the clock (a sleep)`…).
        waited_on: Option<String>,
    },
    /// Cancelled while it ran: the plugin was disabled, or a grant of it revoked.
    #[error("plugin `{plugin}` was stopped while it ran: {reason}")]
    Cancelled { plugin: String, reason: String },
    /// A result past one of the caps on what a plugin returns (`[plugins]` settings).
    #[error("plugin `{plugin}` returned {what}, past the cap of {cap} (`plugins.{setting}`)")]
    TooLarge {
        plugin: String,
        /// What it returned, with its figure: `a plan of 200000 steps`.
        what: String,
        /// The cap, with its unit: `1000 steps`.
        cap: String,
        setting: &'static str,
    },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory { plugin: String, limit_mib: u64 },
    #[error("plugin `{plugin}` crashed: {reason}")]
    Trapped { plugin: String, reason: String },
    #[error("plugin `{plugin}` cannot be loaded: {reason}")]
    Load { plugin: String, reason: String },
    /// The registry could not be read, so whether the plugin may run is unknown: it does not.
    #[error("plugin `{plugin}` cannot be checked: {reason}")]
    Registry { plugin: String, reason: String },
}

impl CallError {
    /// A deadline reached while the call mostly waited on granted hosts: a slow backend, which
    /// may answer next time (guest code that runs past its deadline will not, nor a guest that
    /// sleeps past it).
    pub fn waited_on_hosts(&self) -> bool {
        matches!(self, CallError::Deadline { deadline_ms, waited_ms, waited_on, .. }
            if waited_ms * 2 >= *deadline_ms && waited_on.as_deref() != Some(SLEEP))
    }
}

/// What a deadline's error names when the call's longest wait was its own sleep.
pub const SLEEP: &str = "the clock (a sleep)";

fn deadline_detail(deadline_ms: u128, waited_ms: u128, waited_on: Option<&str>) -> String {
    let on = waited_on.unwrap_or("granted hosts");
    if waited_ms * 2 >= deadline_ms {
        format!("{waited_ms} ms of it waiting in host calls, longest on {on}")
    } else if waited_ms > 0 {
        format!("its own code ran past it; {waited_ms} ms waiting in host calls, longest on {on}")
    } else {
        "its own code ran past it".to_owned()
    }
}

/// A line a plugin wrote during a call (through `log`, or to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`, or `stdout`/`stderr`.
    pub level: String,
    pub message: String,
}

/// What a call returned, with the lines the plugin logged meanwhile.
pub struct Logged<T, E = PluginError> {
    pub result: Result<Result<T, E>, CallError>,
    pub log: Vec<LogLine>,
}
