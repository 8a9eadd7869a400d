//! The plugin host: the only module that touches wasmtime.
//!
//! One [`wasmtime::Engine`] with the pooling allocator (sized from `[plugins]`) and epoch
//! interruption (a ticker thread advances the epoch every millisecond). Each plugin is compiled
//! once — the compiled code is cached on disk, keyed by the component's hash and the engine's
//! settings — and pre-instantiated (`…Pre`). Every call gets a fresh `Store` carrying that
//! call's tenant, memory limits and deadline, runs on the blocking pool behind a semaphore that
//! bounds concurrent calls, and is dropped when the call ends.

pub mod manifest;
pub mod registry;
mod sandbox;
pub mod scaffold;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use manifest::{Inspection, Manifest, SUPPORTED_WIT_VERSIONS, World};
use sandbox::CallState;

use crate::config::PluginsConfig;
use crate::context::Context;

/// Generated bindings, one module per world and WIT version.
pub mod bindings {
    pub mod provisioner {
        wasmtime::component::bindgen!({ world: "provisioner", path: "wit/v0.1.0" });
    }
    pub mod renderer {
        wasmtime::component::bindgen!({
            world: "renderer",
            path: "wit/v0.1.0",
            with: {
                "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
                "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            },
        });
    }
    pub mod quota {
        wasmtime::component::bindgen!({
            world: "quota-policy",
            path: "wit/v0.1.0",
            with: {
                "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
                "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            },
        });
    }
}

pub use bindings::provisioner::tenantry::plugin::types::{
    Decision, Drift, LifecycleChange, MetricDecision, Outcome, PluginError, PluginInfo,
    RenderError, Severity, Step, Template, Usage,
};

/// The tenant a plugin call is made for.
#[derive(Debug, Clone)]
pub struct PluginTenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: String,
    pub status: String,
}

impl PluginTenant {
    fn to_wit(&self) -> bindings::provisioner::tenantry::plugin::types::Tenant {
        bindings::provisioner::tenantry::plugin::types::Tenant {
            id: self.id.clone(),
            slug: self.slug.clone(),
            name: self.name.clone(),
            tier: self.tier.clone(),
            status: self.status.clone(),
        }
    }
}

impl From<&crate::tenants::Tenant> for PluginTenant {
    fn from(t: &crate::tenants::Tenant) -> Self {
        PluginTenant {
            id: t.id.clone(),
            slug: t.slug.clone(),
            name: t.name.clone(),
            tier: t.tier.to_string(),
            status: t.status.to_string(),
        }
    }
}

/// Capabilities the operator granted a plugin (only those the manifest requests take effect).
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub hosts: Vec<String>,
    /// Secret name → sealed value.
    pub secrets: HashMap<String, String>,
}

/// Where secrets granted to plugins are bound (associated data of the seal).
pub fn secret_context(plugin: &str, secret: &str) -> String {
    format!("plugin/{plugin}/secret/{secret}")
}

enum Pre {
    Provisioner(bindings::provisioner::ProvisionerPre<CallState>),
    Renderer(bindings::renderer::RendererPre<CallState>),
    Quota(bindings::quota::QuotaPolicyPre<CallState>),
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    pub name: String,
    pub manifest: Manifest,
    pub inspection: Inspection,
    pub builtin: bool,
    pub enabled: bool,
    pub deadline_ms: Option<u64>,
    pub grants: Grants,
    bytes: Arc<Vec<u8>>,
    /// Compiled and pre-instantiated on first use; shared by reloads of the same component.
    pre: Arc<OnceLock<Result<Pre, String>>>,
}

impl LoadedPlugin {
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
    #[error("plugin `{plugin}` was stopped at its deadline of {deadline_ms} ms")]
    Deadline { plugin: String, deadline_ms: u128 },
    #[error("plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB")]
    OutOfMemory { plugin: String, limit_mib: u64 },
    #[error("plugin `{plugin}` crashed: {reason}")]
    Trapped { plugin: String, reason: String },
    #[error("plugin `{plugin}` cannot be loaded: {reason}")]
    Load { plugin: String, reason: String },
}

/// A line a plugin wrote during a call (through `log`, or to stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn`, `error`, or `stdout`/`stderr`.
    pub level: String,
    pub message: String,
}

/// What a provisioner call returned, with the lines the plugin logged meanwhile.
pub struct Logged<T> {
    pub result: Result<Result<T, PluginError>, CallError>,
    pub log: Vec<LogLine>,
}

/// Call statistics of one plugin (this process).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CallStats {
    pub calls: u64,
    pub failures: u64,
    /// Mean duration of a call, in milliseconds.
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// The host. Cheap to share (`Arc`); one per process.
pub struct PluginHost {
    engine: Engine,
    linkers: Linkers,
    plugins: RwLock<HashMap<String, Arc<LoadedPlugin>>>,
    permits: Arc<tokio::sync::Semaphore>,
    cache_dir: Option<PathBuf>,
    /// Built on first use (loading the system's CA certificates takes a while).
    http: sandbox::HttpClient,
    stats: RwLock<HashMap<String, CallStats>>,
    stop_ticker: Arc<AtomicBool>,
}

struct Linkers {
    provisioner: Linker<CallState>,
    renderer: Linker<CallState>,
    quota: Linker<CallState>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks per second: deadlines are counted in milliseconds.
const TICK: Duration = Duration::from_millis(1);

impl PluginHost {
    pub fn new(config: &PluginsConfig, cache_dir: Option<PathBuf>) -> anyhow::Result<PluginHost> {
        let slots = config.max_concurrent_calls.max(1) as u32;
        let max_memory = (config.max_memory_mib * 1024 * 1024) as usize;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_core_instances_per_component(8)
            .max_memory_size(max_memory)
            .total_stacks(slots);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_reservation(max_memory as u64)
            .memory_guard_size(64 * 1024)
            .max_wasm_stack(1024 * 1024);
        let engine =
            Engine::new(&wasm).map_err(|e| anyhow::anyhow!("starting the plugin engine: {e:#}"))?;

        let linkers = Linkers {
            provisioner: {
                let mut linker = Linker::new(&engine);
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
                bindings::provisioner::Provisioner::add_to_linker::<_, HasSelf<_>>(
                    &mut linker,
                    |s| s,
                )?;
                linker
            },
            renderer: {
                let mut linker = Linker::new(&engine);
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
                bindings::renderer::Renderer::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
                linker
            },
            quota: {
                let mut linker = Linker::new(&engine);
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
                bindings::quota::QuotaPolicy::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
                linker
            },
        };

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        if let Some(dir) = &cache_dir {
            // Compiled code is loaded from here without re-validation: owner-only.
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(PluginHost {
            engine,
            linkers,
            plugins: RwLock::new(HashMap::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_calls.max(1),
            )),
            cache_dir,
            http: Arc::default(),
            stats: RwLock::new(HashMap::new()),
            stop_ticker,
        })
    }

    /// Makes `plugin` callable (replacing one of the same name). The component is compiled on
    /// first use, or now with [`PluginHost::prepare`].
    pub fn load(
        &self,
        bytes: Arc<Vec<u8>>,
        builtin: bool,
        enabled: bool,
        deadline_ms: Option<u64>,
        grants: Grants,
    ) -> Result<Arc<LoadedPlugin>, manifest::InspectError> {
        let inspection = manifest::inspect(&bytes)?;
        let name = inspection.manifest.name.clone();
        let mut plugins = self.plugins.write().expect("plugin table lock");
        // The same component keeps its compiled code across grant and enable changes.
        let pre = plugins
            .get(&name)
            .filter(|p| p.inspection.sha256 == inspection.sha256)
            .map(|p| p.pre.clone())
            .unwrap_or_default();
        let plugin = Arc::new(LoadedPlugin {
            name: name.clone(),
            manifest: inspection.manifest.clone(),
            inspection,
            builtin,
            enabled,
            deadline_ms,
            grants,
            bytes,
            pre,
        });
        plugins.insert(name, plugin.clone());
        Ok(plugin)
    }

    pub fn unload(&self, name: &str) {
        self.plugins
            .write()
            .expect("plugin table lock")
            .remove(name);
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins
            .read()
            .expect("plugin table lock")
            .get(name)
            .cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .plugins
            .read()
            .expect("plugin table lock")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    pub fn stats(&self, name: &str) -> CallStats {
        self.stats
            .read()
            .expect("stats lock")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Compiles (or loads from the disk cache) and pre-instantiates a plugin.
    pub fn prepare(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        self.pre(plugin).map(|_| ())
    }

    fn pre<'p>(&self, plugin: &'p LoadedPlugin) -> Result<&'p Pre, CallError> {
        plugin
            .pre
            .get_or_init(|| self.compile(plugin).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|reason| CallError::Load {
                plugin: plugin.name.clone(),
                reason: reason.clone(),
            })
    }

    fn compile(&self, plugin: &LoadedPlugin) -> anyhow::Result<Pre> {
        let component = self.component(plugin)?;
        Ok(match plugin.manifest.world {
            World::Provisioner => Pre::Provisioner(bindings::provisioner::ProvisionerPre::new(
                self.linkers.provisioner.instantiate_pre(&component)?,
            )?),
            World::Renderer => Pre::Renderer(bindings::renderer::RendererPre::new(
                self.linkers.renderer.instantiate_pre(&component)?,
            )?),
            World::QuotaPolicy => Pre::Quota(bindings::quota::QuotaPolicyPre::new(
                self.linkers.quota.instantiate_pre(&component)?,
            )?),
        })
    }

    /// The compiled component, from the disk cache when this engine compiled it before.
    fn component(&self, plugin: &LoadedPlugin) -> anyhow::Result<Component> {
        use std::hash::{Hash, Hasher};
        let Some(dir) = &self.cache_dir else {
            return Ok(Component::new(&self.engine, plugin.bytes.as_slice())?);
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let path = dir.join(format!(
            "{}-{:016x}.cwasm",
            plugin.inspection.sha256,
            hasher.finish()
        ));
        if path.is_file() {
            // SAFETY: the file was written by `Engine::precompile_component` of an engine with
            // the same settings (the name carries their hash) into the server's own directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(plugin = %plugin.name, "ignoring the cached compilation: {err}")
                }
            }
        }
        let compiled = self.engine.precompile_component(&plugin.bytes)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &compiled)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .is_err()
        {
            let _ = std::fs::remove_file(&tmp);
        }
        // SAFETY: `compiled` was produced by this engine just now.
        Ok(unsafe { Component::deserialize(&self.engine, &compiled) }?)
    }

    fn plugin_for(&self, name: &str, world: World) -> Result<Arc<LoadedPlugin>, CallError> {
        let plugin = self
            .get(name)
            .ok_or_else(|| CallError::NotInstalled(name.to_owned()))?;
        if !plugin.enabled {
            return Err(CallError::Disabled(name.to_owned()));
        }
        if plugin.manifest.world != world {
            return Err(CallError::WrongWorld {
                plugin: name.to_owned(),
                expected: world,
                actual: plugin.manifest.world,
            });
        }
        Ok(plugin)
    }

    /// Runs `call` in a fresh store of `plugin` on this thread: new store, instantiate from the
    /// pre-instantiated component, call, drop. Blocks for up to the plugin's deadline.
    fn run_here<R>(
        &self,
        ctx: Context,
        plugin: Arc<LoadedPlugin>,
        tenant: Option<PluginTenant>,
        runtime: tokio::runtime::Handle,
        call: impl FnOnce(&Pre, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> (Result<R, CallError>, Vec<LogLine>) {
        let deadline = plugin.deadline(&ctx.config.plugins);
        let pre = match self.pre(&plugin) {
            Ok(pre) => pre,
            Err(err) => return (Err(err), Vec::new()),
        };
        let state = CallState::new(plugin.clone(), tenant, ctx, runtime, self.http.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline((deadline.as_millis() as u64).max(1));
        store.epoch_deadline_trap();
        let outcome = call(pre, &mut store);
        let mut state = store.into_data();
        flush_output(&plugin.name, &mut state);
        let outcome = outcome.map_err(|err| classify(&plugin, &state, deadline, err));
        (outcome, std::mem::take(&mut state.captured))
    }

    /// `evaluate` on the calling thread, for callers already off the async runtime (and the
    /// benchmark): the bare cost of a sandboxed call.
    pub fn evaluate_blocking(
        &self,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        usage: &[Usage],
    ) -> Result<Result<Decision, PluginError>, CallError> {
        let plugin = self.plugin_for(plugin, World::QuotaPolicy)?;
        let wit_tenant = tenant.to_wit();
        let runtime = tokio::runtime::Handle::current();
        self.run_here(
            ctx.clone(),
            plugin,
            Some(tenant.clone()),
            runtime,
            move |pre, store| {
                let Pre::Quota(pre) = pre else {
                    unreachable!("world checked")
                };
                let instance = pre.instantiate(&mut *store)?;
                instance
                    .tenantry_plugin_policy()
                    .call_evaluate(&mut *store, &wit_tenant, usage)
            },
        )
        .0
    }

    /// Runs `call` in a fresh store of `plugin`, on the blocking pool, within its deadline.
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: Arc<LoadedPlugin>,
        tenant: Option<PluginTenant>,
        call: impl FnOnce(&Pre, &mut Store<CallState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> Result<R, CallError> {
        self.run_logged(ctx, plugin, tenant, call).await.0
    }

    /// [`Self::run`], also returning the log lines the plugin wrote during the call.
    async fn run_logged<R: Send + 'static>(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: Arc<LoadedPlugin>,
        tenant: Option<PluginTenant>,
        call: impl FnOnce(&Pre, &mut Store<CallState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> (Result<R, CallError>, Vec<LogLine>) {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let host = self.clone();
        let call_ctx = ctx.clone();
        let runtime = tokio::runtime::Handle::current();
        let started = Instant::now();
        let name = plugin.name.clone();
        let (result, lines) = match tokio::task::spawn_blocking(move || {
            host.run_here(call_ctx, plugin, tenant, runtime, call)
        })
        .await
        {
            Ok(done) => done,
            Err(e) => (
                Err(CallError::Trapped {
                    plugin: name.clone(),
                    reason: format!("the call did not finish: {e}"),
                }),
                Vec::new(),
            ),
        };
        let elapsed = started.elapsed();
        self.record(&name, elapsed, result.is_ok());
        ctx.metrics
            .plugin_calls
            .with_label_values(&[name.as_str(), if result.is_ok() { "ok" } else { "failed" }])
            .inc();
        ctx.metrics
            .plugin_duration
            .with_label_values(&[name.as_str()])
            .observe(elapsed.as_secs_f64());
        if let Err(err) = &result {
            tracing::warn!(plugin = %name, "plugin call failed: {err}");
        }
        (result, lines)
    }

    fn record(&self, name: &str, elapsed: Duration, ok: bool) {
        let mut stats = self.stats.write().expect("stats lock");
        let entry = stats.entry(name.to_owned()).or_default();
        let ms = elapsed.as_secs_f64() * 1000.0;
        entry.mean_ms = (entry.mean_ms * entry.calls as f64 + ms) / (entry.calls + 1) as f64;
        entry.calls += 1;
        if !ok {
            entry.failures += 1;
        }
        entry.max_ms = entry.max_ms.max(ms);
    }

    /// `render` of a renderer plugin.
    pub async fn render(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        template: Template,
        values: Vec<(String, String)>,
    ) -> Result<Result<String, RenderError>, CallError> {
        let plugin = self.plugin_for(plugin, World::Renderer)?;
        self.run(ctx, plugin, None, move |pre, store| {
            let Pre::Renderer(pre) = pre else {
                unreachable!("world checked")
            };
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tenantry_plugin_render()
                .call_render(&mut *store, &template, &values)
        })
        .await
    }

    /// `evaluate` of a quota-policy plugin.
    pub async fn evaluate(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        usage: Vec<Usage>,
    ) -> Result<Result<Decision, PluginError>, CallError> {
        let plugin = self.plugin_for(plugin, World::QuotaPolicy)?;
        let wit_tenant = tenant.to_wit();
        self.run(ctx, plugin, Some(tenant.clone()), move |pre, store| {
            let Pre::Quota(pre) = pre else {
                unreachable!("world checked")
            };
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tenantry_plugin_policy()
                .call_evaluate(&mut *store, &wit_tenant, &usage)
        })
        .await
    }

    /// `describe` of a provisioner plugin.
    pub async fn describe(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
    ) -> Result<PluginInfo, CallError> {
        let plugin = self.plugin_for(plugin, World::Provisioner)?;
        self.run(ctx, plugin, None, move |pre, store| {
            let Pre::Provisioner(pre) = pre else {
                unreachable!("world checked")
            };
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tenantry_plugin_provision()
                .call_describe(&mut *store)
        })
        .await
    }

    /// `plan` of a provisioner plugin.
    pub async fn plan(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        request: String,
    ) -> Result<Result<Vec<Step>, PluginError>, CallError> {
        let plugin = self.plugin_for(plugin, World::Provisioner)?;
        let wit_tenant = tenant.to_wit();
        self.run(ctx, plugin, Some(tenant.clone()), move |pre, store| {
            let Pre::Provisioner(pre) = pre else {
                unreachable!("world checked")
            };
            let instance = pre.instantiate(&mut *store)?;
            instance
                .tenantry_plugin_provision()
                .call_plan(&mut *store, &wit_tenant, &request)
        })
        .await
    }

    /// Runs one provisioner export with the plugin's log lines captured.
    async fn provision_call<T: Send + 'static>(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        call: impl FnOnce(
            &bindings::provisioner::exports::tenantry::plugin::provision::Guest,
            &mut Store<CallState>,
            &bindings::provisioner::tenantry::plugin::types::Tenant,
        ) -> wasmtime::Result<Result<T, PluginError>>
        + Send
        + 'static,
    ) -> Logged<T> {
        let plugin = match self.plugin_for(plugin, World::Provisioner) {
            Ok(plugin) => plugin,
            Err(err) => {
                return Logged {
                    result: Err(err),
                    log: Vec::new(),
                };
            }
        };
        let wit_tenant = tenant.to_wit();
        let (result, log) = self
            .run_logged(ctx, plugin, Some(tenant.clone()), move |pre, store| {
                let Pre::Provisioner(pre) = pre else {
                    unreachable!("world checked")
                };
                let instance = pre.instantiate(&mut *store)?;
                call(instance.tenantry_plugin_provision(), store, &wit_tenant)
            })
            .await;
        Logged { result, log }
    }

    /// `plan` of a provisioner plugin, with its log lines.
    pub async fn plan_logged(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        request: String,
    ) -> Logged<Vec<Step>> {
        self.provision_call(ctx, plugin, tenant, move |guest, store, tenant| {
            guest.call_plan(store, tenant, &request)
        })
        .await
    }

    /// `apply` of one step.
    pub async fn apply(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        step: Step,
        idempotency_key: String,
    ) -> Logged<Outcome> {
        self.provision_call(ctx, plugin, tenant, move |guest, store, tenant| {
            guest.call_apply(store, tenant, &step, &idempotency_key)
        })
        .await
    }

    /// `compensate` of one applied step.
    pub async fn compensate(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        step: Step,
        outcome: Outcome,
        idempotency_key: String,
    ) -> Logged<()> {
        self.provision_call(ctx, plugin, tenant, move |guest, store, tenant| {
            guest.call_compensate(store, tenant, &step, &outcome, &idempotency_key)
        })
        .await
    }

    /// `observe`: drift between the applied steps and the backend.
    pub async fn observe(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        applied: Vec<(Step, Outcome)>,
    ) -> Logged<Vec<Drift>> {
        self.provision_call(ctx, plugin, tenant, move |guest, store, tenant| {
            guest.call_observe(store, tenant, &applied)
        })
        .await
    }

    /// `transition`: a lifecycle change carried into the backend.
    pub async fn transition(
        self: &Arc<Self>,
        ctx: &Context,
        plugin: &str,
        tenant: &PluginTenant,
        change: LifecycleChange,
        reason: String,
    ) -> Logged<Outcome> {
        self.provision_call(ctx, plugin, tenant, move |guest, store, tenant| {
            guest.call_transition(store, tenant, change, &reason)
        })
        .await
    }

    /// Compiles every enabled plugin (at start, so that first calls do not wait for it).
    pub fn warm_up(&self) {
        let plugins: Vec<Arc<LoadedPlugin>> = self
            .plugins
            .read()
            .expect("plugin table lock")
            .values()
            .filter(|p| p.enabled)
            .cloned()
            .collect();
        for plugin in plugins {
            let started = Instant::now();
            match self.prepare(&plugin) {
                Ok(()) => {
                    tracing::debug!(plugin = %plugin.name, "plugin ready in {:?}", started.elapsed())
                }
                Err(err) => tracing::warn!(plugin = %plugin.name, "{err}"),
            }
        }
    }

    /// Names of the plugins of `world` that are enabled.
    pub fn enabled_of(&self, world: World) -> BTreeSet<String> {
        self.plugins
            .read()
            .expect("plugin table lock")
            .values()
            .filter(|p| p.enabled && p.manifest.world == world)
            .map(|p| p.name.clone())
            .collect()
    }
}

/// Writes what the guest printed to the log (it was capped by the pipes).
fn flush_output(plugin: &str, state: &mut CallState) {
    for (stream, pipe) in [
        ("stdout", state.stdout.clone()),
        ("stderr", state.stderr.clone()),
    ] {
        let contents = pipe.contents();
        if contents.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(&contents);
        for line in text.lines().take(64) {
            tracing::info!(plugin = %plugin, stream, "plugin output: {line}");
            state.captured.push(LogLine {
                level: stream.to_owned(),
                message: line.to_owned(),
            });
        }
    }
}

/// Turns a wasmtime error into what happened, for people.
fn classify(
    plugin: &LoadedPlugin,
    state: &CallState,
    deadline: Duration,
    err: wasmtime::Error,
) -> CallError {
    let name = plugin.name.clone();
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return CallError::Deadline {
            plugin: name,
            deadline_ms: deadline.as_millis(),
        };
    }
    if state.limiter.refused_memory {
        return CallError::OutOfMemory {
            plugin: name,
            limit_mib: (state.limiter.max_memory / (1024 * 1024)) as u64,
        };
    }
    let stderr = String::from_utf8_lossy(&state.stderr.contents()).into_owned();
    let panicked = stderr
        .lines()
        .find(|l| l.contains("panicked at"))
        .map(str::to_owned);
    let reason = match (err.downcast_ref::<wasmtime::Trap>(), panicked) {
        (_, Some(_)) => "it panicked (its message is in the server log)".to_owned(),
        (Some(trap), None) => format!("{trap}"),
        (None, None) => format!("{err}")
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_owned(),
    };
    CallError::Trapped {
        plugin: name,
        reason,
    }
}
