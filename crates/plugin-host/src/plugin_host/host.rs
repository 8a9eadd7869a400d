//! [`PluginHost`]: the engine, the loaded plugins, and one way of calling any of them —
//! [`PluginHost::call`] — that every export of every world goes through.
//!
//! A call ([`PluginHost::call`]): the plugin as the database holds it (`table`), enabled and of
//! the world asked; a permit of the semaphore (`max_concurrent_calls`); a fresh `Store`, or for
//! a renderer or quota policy whose manifest says `reuse_instances` an instance kept from its
//! last call that answered; its deadline; statistics counted in atomics and metrics. A
//! provisioner, and any component that imports `wasi:io`, runs on the blocking pool. A lean
//! renderer or quota policy runs on the calling thread within `inline_budget_ms`; one that runs
//! past it is stopped and run again on the blocking pool (those worlds have no side effects),
//! and that plugin's later calls go straight to the pool until it is loaded again.
//!
//! A pooled slot is reset in place: the pages the last call dirtied are found with the
//! `PAGEMAP_SCAN` ioctl (Linux 6.7 and later) and written back, and up to 4 MiB stays resident,
//! so a call costs no `madvise`, no page faults and no TLB shootdowns.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use super::compile::{Compiler, Instance};
use super::ended::{classify, deadline_error, flush_output};
use super::in_flight::InFlight;
use super::kept::KeptInstances;
use super::sandbox::{CallState, Cancel, Cancelled};
use super::stats::{self, CallStats, Counter};
use super::table::{CallMeters, LoadedPlugin, Table};
use super::{
    CallError, Decision, HostServices, LogLine, PluginError, PluginTenant, Usage, World, manifest,
};
use crate::error::AppResult;

/// Epoch ticks per second: deadlines are counted in milliseconds.
const TICK: Duration = Duration::from_millis(1);

/// Address space reserved for each pooled linear memory.
const MEMORY_RESERVATION: u64 = 4 << 30;

/// Bytes of a pooled memory or table kept resident (and reset in place) between calls.
const KEEP_RESIDENT: usize = 4 * 1024 * 1024;

/// What the instance pool keeps between calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolState {
    pub warm_memories: u32,
    pub resident_memory_bytes: usize,
    pub warm_tables: u32,
    pub resident_table_bytes: usize,
}

/// The host. Cheap to share (`Arc`); one per process.
pub struct PluginHost {
    services: HostServices,
    compiler: Compiler,
    engine: Engine,
    table: Arc<Table>,
    permits: Arc<tokio::sync::Semaphore>,
    stats: Counter,
    stop_ticker: Arc<AtomicBool>,
    /// The calls running now, by plugin: what a disable or a revoke cancels.
    in_flight: Arc<InFlight>,
    /// Instances kept between calls, over every plugin: the pool has room for them beside one
    /// instance per concurrent call.
    kept: KeptInstances,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginHost {
    /// An engine sized from `services.config`, compiled code cached in `cache_dir`.
    pub fn new(services: HostServices, cache_dir: Option<PathBuf>) -> anyhow::Result<PluginHost> {
        let config = &services.config;
        let slots = config.max_concurrent_calls.max(1) as u32;
        // One instance per concurrent call, and as many kept between calls.
        let instances = slots * 2;
        let max_memory = (config.max_memory_mib * 1024 * 1024) as usize;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 8)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_core_instances_per_component(8)
            .max_memory_size(max_memory)
            .total_stacks(slots)
            // A slot is reset by writing back only the pages the last call dirtied (found with
            // the PAGEMAP_SCAN ioctl where the kernel has it, Linux 6.7 and later), and stays
            // resident: no madvise, so no interrupt of every core running the process and no
            // page faults at the next call. A call that dirtied more than this is reset the
            // usual way.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Each slot reserves (never commits) 4 GiB of address space, all a 32-bit guest can
            // address, so compiled code needs no bounds check on its loads and stores; what a
            // guest may really use is `max_memory_size` above and the store's limiter.
            .memory_reservation(MEMORY_RESERVATION)
            .memory_guard_size(64 * 1024)
            .max_wasm_stack(1024 * 1024);
        let engine =
            Engine::new(&wasm).map_err(|e| anyhow::anyhow!("starting the plugin engine: {e:#}"))?;
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
        let table = Arc::new(Table::default());
        let in_flight = Arc::new(InFlight::default());
        let (heard, calls, db) = (
            Arc::downgrade(&table),
            Arc::downgrade(&in_flight),
            services.db.clone(),
        );
        services.db.changes().subscribe(move |change| {
            if let Some(table) = heard.upgrade() {
                table.heard(change);
            }
            if let Some(calls) = calls.upgrade() {
                calls.heard(&db, change);
            }
        });
        Ok(PluginHost {
            compiler: Compiler::new(engine.clone(), cache_dir)?,
            engine,
            table,
            permits: Arc::new(tokio::sync::Semaphore::new(
                config.max_concurrent_calls.max(1),
            )),
            stats: Counter::default(),
            services,
            stop_ticker,
            in_flight,
            kept: KeptInstances::new(slots as usize),
        })
    }

    /// The instance pool as it stands: slots kept warm between calls and the bytes they keep
    /// resident.
    pub fn pool(&self) -> PoolState {
        self.engine
            .pooling_allocator_metrics()
            .map(|m| PoolState {
                warm_memories: m.unused_warm_memories(),
                resident_memory_bytes: m.unused_memory_bytes_resident(),
                warm_tables: m.unused_warm_tables(),
                resident_table_bytes: m.unused_table_bytes_resident(),
            })
            .unwrap_or_default()
    }

    /// Plugin `name` as the database holds it now (reloaded when it changed).
    pub async fn loaded(&self, name: &str) -> Result<Arc<LoadedPlugin>, CallError> {
        self.table
            .current(&self.services, &self.compiler, name)
            .await
    }

    /// Plugin `name`, when it is enabled and of `world`.
    async fn callable(&self, name: &str, world: World) -> Result<Arc<LoadedPlugin>, CallError> {
        let plugin = self.loaded(name).await?;
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

    /// The manifest of plugin `name`, as the database holds it now.
    pub async fn manifest(&self, name: &str) -> Result<manifest::Manifest, CallError> {
        Ok(self.loaded(name).await?.manifest.clone())
    }

    /// Names of the enabled plugins of `world`, as the database holds them now.
    pub async fn enabled(&self, world: World) -> AppResult<BTreeSet<String>> {
        let mut conn = self.services.db.conn().await?;
        Ok(store_enabled(&mut conn, world).await?.into_iter().collect())
    }

    /// Checks that a component can run here: its manifest, and that it compiles and links
    /// against its world. Compiled once (on the blocking pool); a later load of the same
    /// component reuses it.
    pub async fn check_component(
        self: &Arc<Self>,
        bytes: Arc<Vec<u8>>,
    ) -> Result<manifest::Inspection, String> {
        let inspection = manifest::inspect(&bytes).map_err(|e| e.to_string())?;
        let host = self.clone();
        let checked = inspection.clone();
        tokio::task::spawn_blocking(move || {
            let slot = host.compiler.slot(&checked.sha256);
            host.compiler
                .prepare(
                    &slot,
                    &checked.manifest.name,
                    &checked.sha256,
                    checked.world,
                    checked.version(),
                    &bytes,
                )
                .map(|_| ())
        })
        .await
        .map_err(|e| format!("compiling the component did not finish: {e}"))??;
        Ok(inspection)
    }

    /// Compiles (or loads from the disk cache) and pre-instantiates a loaded plugin.
    pub fn prepare(&self, plugin: &LoadedPlugin) -> Result<(), CallError> {
        self.compiler
            .prepare(
                &plugin.compiled,
                &plugin.name,
                &plugin.inspection.sha256,
                plugin.manifest.world,
                plugin.inspection.version(),
                &plugin.bytes,
            )
            .map(|_| ())
            .map_err(|reason| CallError::Load {
                plugin: plugin.name.clone(),
                reason,
            })
    }

    /// Compiles every enabled plugin (at start, so that first calls do not wait for it).
    pub async fn warm_up(self: &Arc<Self>) {
        let names = match self.services.db.conn().await {
            Ok(mut conn) => match crate::store::plugins::list_meta(&mut conn).await {
                Ok(rows) => rows.into_iter().filter(|r| r.enabled).map(|r| r.name),
                Err(err) => return tracing::warn!("cannot list plugins to warm up: {err}"),
            },
            Err(err) => return tracing::warn!("cannot list plugins to warm up: {err}"),
        };
        for name in names.collect::<Vec<_>>() {
            let started = Instant::now();
            let prepared = match self.loaded(&name).await {
                Ok(plugin) => {
                    let host = self.clone();
                    tokio::task::spawn_blocking(move || host.prepare(&plugin))
                        .await
                        .unwrap_or_else(|e| {
                            Err(CallError::Load {
                                plugin: name.clone(),
                                reason: e.to_string(),
                            })
                        })
                }
                Err(err) => Err(err),
            };
            match prepared {
                Ok(()) => {
                    tracing::debug!(plugin = %name, "plugin ready in {:?}", started.elapsed())
                }
                Err(err) => tracing::warn!(plugin = %name, "{err}"),
            }
        }
    }

    /// The call statistics of `plugin`, over every server.
    pub async fn stats(&self, plugin: &str) -> AppResult<CallStats> {
        self.stats.get(&self.services.db, plugin).await
    }

    /// Adds this server's call counts to the database now.
    pub async fn report_stats(&self) -> AppResult<()> {
        self.stats.report(&self.services.db).await
    }

    /// Cancels the calls of plugin `name` running on this server now, saying `reason` (the
    /// plugin was disabled, a grant of it revoked): each stops within a millisecond of guest
    /// code, and a host wait it is in ends at once. How many there were.
    pub fn cancel_calls(&self, name: &str, reason: &str) -> usize {
        self.in_flight.cancel(name, reason)
    }

    /// What the host serves calls with.
    pub(super) fn services(&self) -> &HostServices {
        &self.services
    }

    /// Reports call counts about once a second for as long as the host lives.
    pub fn spawn_stats_reporter(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let host: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(stats::REPORT_EVERY).await;
                let Some(host) = host.upgrade() else { break };
                if let Err(err) = host.report_stats().await {
                    tracing::warn!("cannot record plugin call statistics: {err}");
                }
            }
        })
    }

    /// Calls plugin `name` of `world`: checked against the plugin table, then `f` on a fresh
    /// instance in a fresh store, within the plugin's deadline and behind the semaphore that
    /// bounds concurrent calls. Counted, timed and logged once.
    ///
    /// A renderer or a quota policy (worlds without side effects) built without WASI streams
    /// (a lean build) runs on the calling thread, with `inline_budget_ms` as its deadline: a
    /// call that runs out of it is run again, from a fresh instance, on the blocking pool with
    /// its full deadline, and that plugin's later calls go there directly. A provisioner, and a
    /// plugin that imports `wasi:io` (stdout, stderr, sleeping: what a default `wasm32-wasip2`
    /// build imports), always runs on the blocking pool: those calls block on the runtime,
    /// which a thread of the runtime cannot do.
    pub(super) async fn call<R: Send + 'static>(
        self: &Arc<Self>,
        name: &str,
        world: World,
        tenant: Option<&PluginTenant>,
        f: impl Fn(&Instance, &mut Store<CallState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> (Result<R, CallError>, Vec<LogLine>) {
        let plugin = match self.callable(name, world).await {
            Ok(plugin) => plugin,
            Err(err) => return (Err(err), Vec::new()),
        };
        let _permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => self
                .permits
                .acquire()
                .await
                .expect("semaphore never closed"),
        };
        let started = Instant::now();
        let deadline = plugin.deadline(&self.services.config);
        let cancel = self.in_flight.register(&plugin);
        let (result, lines) = match self.inline_budget(&plugin) {
            Some(budget) => match self.run_here(&plugin, tenant, None, budget, &cancel, &f) {
                (Err(CallError::Deadline { .. }), _) if budget < deadline => {
                    plugin.outran_inline.store(true, Ordering::Relaxed);
                    tracing::debug!(plugin = %name, "the call ran past the inline budget; running it on the blocking pool");
                    self.run_on_pool(plugin.clone(), tenant, cancel.clone(), f)
                        .await
                }
                done => done,
            },
            None => {
                self.run_on_pool(plugin.clone(), tenant, cancel.clone(), f)
                    .await
            }
        };
        let elapsed = started.elapsed();
        let meters = plugin.meters.get_or_init(|| self.meters(name));
        meters.tally.record(elapsed, result.is_ok());
        if result.is_ok() {
            &meters.ok
        } else {
            &meters.failed
        }
        .inc();
        meters.duration.observe(elapsed.as_secs_f64());
        if let Err(err) = &result {
            if matches!(err, CallError::Deadline { .. }) {
                meters.deadline.inc();
            }
            tracing::warn!(plugin = %name, "plugin call failed: {err}");
        }
        (result, lines)
    }

    /// Where the calls of plugin `name` are counted.
    fn meters(&self, name: &str) -> CallMeters {
        let metrics = &self.services.metrics;
        CallMeters {
            ok: metrics.plugin_calls.with_label_values(&[name, "ok"]),
            failed: metrics.plugin_calls.with_label_values(&[name, "failed"]),
            deadline: metrics.plugin_deadlines.with_label_values(&[name]),
            duration: metrics.plugin_duration.with_label_values(&[name]),
            tally: self.stats.tally(name),
        }
    }

    /// The deadline of a call of `plugin` on the calling thread, when it may run there.
    fn inline_budget(&self, plugin: &LoadedPlugin) -> Option<Duration> {
        let budget = Duration::from_millis(self.services.config.inline_budget_ms);
        let deadline = plugin.deadline(&self.services.config);
        let blocks_on_runtime = plugin
            .inspection
            .imports
            .iter()
            .any(|import| import.starts_with("wasi:io/"));
        (!budget.is_zero()
            && !plugin.manifest.world.has_capabilities()
            && !blocks_on_runtime
            && !plugin.outran_inline.load(Ordering::Relaxed))
        .then_some(budget.min(deadline))
    }

    /// Runs `f` on the blocking pool, within the plugin's full deadline.
    async fn run_on_pool<R: Send + 'static>(
        self: &Arc<Self>,
        plugin: Arc<LoadedPlugin>,
        tenant: Option<&PluginTenant>,
        cancel: Arc<Cancel>,
        f: impl Fn(&Instance, &mut Store<CallState>) -> wasmtime::Result<R> + Send + 'static,
    ) -> (Result<R, CallError>, Vec<LogLine>) {
        let host = self.clone();
        let tenant = tenant.cloned();
        let runtime = tokio::runtime::Handle::current();
        let name = plugin.name.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = plugin.deadline(&host.services.config);
            host.run_here(
                &plugin,
                tenant.as_ref(),
                Some(runtime),
                deadline,
                &cancel,
                &f,
            )
        })
        .await
        .unwrap_or_else(|e| {
            (
                Err(CallError::Trapped {
                    plugin: name,
                    reason: format!("the call did not finish: {e}"),
                }),
                Vec::new(),
            )
        })
    }

    /// Runs `f` in a fresh store of `plugin` on this thread (or, for a plugin that reuses
    /// instances, in one kept from an earlier call, kept again if the call answers): new store, instantiate from the
    /// pre-instantiated component, call, drop. Blocks for up to `deadline`. `runtime` is
    /// what the capabilities of a provisioner block on.
    fn run_here<R>(
        &self,
        plugin: &LoadedPlugin,
        tenant: Option<&PluginTenant>,
        runtime: Option<tokio::runtime::Handle>,
        deadline: Duration,
        cancel: &Arc<Cancel>,
        f: &impl Fn(&Instance, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> (Result<R, CallError>, Vec<LogLine>) {
        let pre = match self.compiler.prepare(
            &plugin.compiled,
            &plugin.name,
            &plugin.inspection.sha256,
            plugin.manifest.world,
            plugin.inspection.version(),
            &plugin.bytes,
        ) {
            Ok(pre) => pre,
            Err(reason) => {
                let err = CallError::Load {
                    plugin: plugin.name.clone(),
                    reason,
                };
                return (Err(err), Vec::new());
            }
        };
        let ends = std::time::Instant::now() + deadline;
        let end = crate::plugin_host::sandbox::CallEnd(ends);
        let reuse = plugin.reuses_instances();
        let kept = if reuse { self.kept.take(plugin) } else { None };
        let (mut store, kept_instance) = match kept {
            Some((mut store, instance)) => {
                store
                    .data_mut()
                    .next_call(plugin, tenant, end, cancel.clone());
                (store, Some(instance))
            }
            None => {
                let state =
                    CallState::new(&self.services, plugin, tenant, runtime, end, cancel.clone());
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limiter);
                (store, None)
            }
        };
        // Every tick (a millisecond) of guest code: stopped when cancelled, or at the deadline.
        store.set_epoch_deadline(1);
        let watched = cancel.clone();
        store.epoch_deadline_callback(move |_| {
            if watched.is_cancelled() {
                return Err(Cancelled.into());
            }
            if std::time::Instant::now() >= ends {
                return Err(wasmtime::Trap::Interrupt.into());
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        // A failure of the host's own during the call (a panic in a host function) ends this
        // call with an error, like the guest's own trap, never the request or the worker.
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let instance = match kept_instance {
                Some(instance) => instance,
                None => pre.instantiate(&mut store)?,
            };
            f(&instance, &mut store).map(|value| (value, instance))
        })) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(plugin = %plugin.name, "the host failed during a call of the plugin: {what}");
                let err = CallError::Trapped {
                    plugin: plugin.name.clone(),
                    reason: "the server failed while serving the call (its log says why)".into(),
                };
                return (Err(err), Vec::new());
            }
        };
        let (outcome, instance) = match outcome {
            Ok((value, instance)) => (Ok(value), Some(instance)),
            Err(err) => (Err(err), None),
        };
        flush_output(&plugin.name, store.data_mut());
        // A host wait that ran to the call's end ends the call, whatever the guest made of
        // its cut-short answer.
        let outcome = match outcome {
            _ if cancel.is_cancelled() => Err(CallError::Cancelled {
                plugin: plugin.name.clone(),
                reason: cancel.reason(),
            }),
            Ok(_) if store.data().waits().cut => {
                Err(deadline_error(plugin, store.data(), deadline))
            }
            outcome => outcome.map_err(|err| classify(plugin, store.data(), deadline, err)),
        };
        let lines = std::mem::take(&mut store.data_mut().log.captured);
        // An instance that answered (its plugin's error included) is kept for the next call;
        // one that trapped, ran out of time or reached for WASI is not.
        if reuse
            && outcome.is_ok()
            && let Some(instance) = instance
            && !store.data().used_wasi()
        {
            self.kept.keep(plugin, store, instance);
        }
        (outcome, lines)
    }

    /// `evaluate` of a loaded quota-policy plugin on the calling thread, for callers already
    /// off the async runtime (and the benchmark): the bare cost of a sandboxed call, without
    /// the registry check, the semaphore or the statistics.
    pub fn evaluate_blocking(
        &self,
        plugin: &LoadedPlugin,
        tenant: &PluginTenant,
        usage: &[Usage],
    ) -> Result<Result<Decision, PluginError>, CallError> {
        let wit_tenant = tenant.to_wit();
        let deadline = plugin.deadline(&self.services.config);
        let cancel = Arc::new(Cancel::default());
        self.run_here(
            plugin,
            Some(tenant),
            None,
            deadline,
            &cancel,
            &|instance, store| instance.evaluate(store, &wit_tenant, usage),
        )
        .0
    }
}

async fn store_enabled(conn: &mut crate::store::Conn, world: World) -> AppResult<Vec<String>> {
    crate::store::plugins::enabled_of(conn, world.as_str()).await
}
