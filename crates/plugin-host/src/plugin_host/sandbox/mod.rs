//! What one call of one plugin may see: the `Store` data of its instance, made of one unit per
//! capability, each with its own state and its own access check (as Spin's host does it):
//!
//! - [`log`]: lines to the server's log and to the call's journal, capped (every world);
//! - [`config`]: the plugin's configuration (WIT 0.2.0, every world);
//! - [`state`]: key-value state in the database, keyed by (plugin, the call's tenant);
//! - [`secrets`]: the secrets the manifest requests and the operator granted, opened on read;
//! - [`http`]: outbound requests to the hosts the manifest requests and the operator granted,
//!   checked again at every redirect;
//! - [`sql`]: statements on the databases granted by alias (WIT 0.2.0, provisioners).
//!
//! Renderers and quota policies get `log` and `config` only. WASI is linked with nothing behind it: no
//! preopened directories, no environment, no arguments, no sockets; stdout and stderr go to
//! capped in-memory pipes that end up in the log. The WASI context is built only when the guest
//! first uses it. The units are built from the plugin as the
//! database held it when the call began, and dropped with the store when the call ends.

pub mod config;
pub mod http;
pub mod log;
pub mod output;
pub mod secrets;
pub mod sql;
pub mod state;
mod v0_1;

/// When a call must end: every wait of the host on the guest's behalf (an HTTP request, a SQL
/// statement, a state read, a sleep) ends by then, so that the deadline covers the time spent
/// in host calls as well as the guest's own code.
#[derive(Debug, Clone, Copy)]
pub struct CallEnd(pub std::time::Instant);

impl CallEnd {
    /// What is left of the call.
    pub fn remaining(&self) -> std::time::Duration {
        self.0.saturating_duration_since(std::time::Instant::now())
    }

    /// `wait`, cut to what is left of the call.
    pub fn cap(&self, wait: std::time::Duration) -> std::time::Duration {
        wait.min(self.remaining())
    }
}

/// A call's cancellation: set when its plugin is disabled, or a grant of it revoked, while the
/// call runs. The guest is stopped at its next epoch check (within a millisecond of running),
/// and a host wait (HTTP, SQL, a state read) ends at once.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
    reason: std::sync::Mutex<String>,
}

/// The error a cancelled call traps with.
#[derive(Debug)]
pub struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call was cancelled")
    }
}

impl std::error::Error for Cancelled {}

impl Cancel {
    pub fn cancel(&self, reason: &str) {
        *self.reason.lock().expect("cancel lock") = reason.to_owned();
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why it was cancelled.
    pub fn reason(&self) -> String {
        self.reason.lock().expect("cancel lock").clone()
    }

    /// Resolves once the call is cancelled.
    pub async fn cancelled(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }

    /// `work`, or `on_cancel` as soon as the call is cancelled.
    pub async fn or<T>(&self, work: impl std::future::Future<Output = T>, on_cancel: T) -> T {
        tokio::select! {
            value = work => value,
            () = self.cancelled() => on_cancel,
        }
    }
}

/// The longest single thing a call waited on, for the deadline's error: what, and how long.
#[derive(Debug, Clone, Default)]
pub struct Waits {
    pub total: std::time::Duration,
    pub longest: Option<(String, std::time::Duration)>,
    /// A wait ran to the call's end: the call is over, whatever the guest does next.
    pub cut: bool,
}

impl Waits {
    /// Counts a wait on `what` that took `waited`.
    pub fn add(&mut self, what: impl FnOnce() -> String, waited: std::time::Duration) {
        self.total += waited;
        if self.longest.as_ref().is_none_or(|(_, d)| waited > *d) {
            self.longest = Some((what(), waited));
        }
    }

    /// Counts a wait that has just ended, and whether it ran to the call's end.
    pub fn ended(
        &mut self,
        what: impl FnOnce() -> String,
        waited: std::time::Duration,
        end: &CallEnd,
    ) {
        self.add(what, waited);
        self.cut |= end.remaining().is_zero();
    }

    fn merge(&mut self, other: &Waits) {
        self.total += other.total;
        self.cut |= other.cut;
        if let Some((what, d)) = &other.longest
            && self.longest.as_ref().is_none_or(|(_, mine)| d > mine)
        {
            self.longest = Some((what.clone(), *d));
        }
    }
}

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::provisioner::tenantry::plugin as wit;
use super::bindings::v0_1::provisioner::tenantry::plugin as wit_v0_1;
use super::manifest::WitVersion;
use super::{HostServices, LoadedPlugin, PluginTenant, World};

/// Memory limits that remember whether they refused a growth (for a clear error).
pub struct Limiter {
    inner: StoreLimits,
    pub refused_memory: bool,
    pub max_memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.refused_memory = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Everything one call of one plugin may see. Dropped with the `Store` when the call ends.
///
/// Built for every call, so it is built lazily: WASI (its context and the pipes behind stdout
/// and stderr) only when the guest first reaches for it, which a renderer or a quota policy
/// that neither prints nor panics never does; the capability units only for the worlds that
/// import them.
pub struct CallState {
    wasi: Option<Wasi>,
    max_output_bytes: usize,
    table: ResourceTable,
    pub limiter: Limiter,
    pub log: log::LogUnit,
    config: config::ConfigUnit,
    capabilities: Option<Box<Capabilities>>,
    /// When the call must end.
    end: CallEnd,
    /// What the guest's sleeps waited on the clock.
    clock_waits: Waits,
    /// The call's cancellation, which also wakes a sleeping guest.
    cancel: std::sync::Arc<Cancel>,
}

/// WASI with nothing behind it, and the capped pipes it writes stdout and stderr to.
struct Wasi {
    ctx: WasiCtx,
    stdout: output::CappedOutput,
    stderr: output::CappedOutput,
}

/// The units of the capabilities a provisioner may import.
struct Capabilities {
    state: state::StateUnit,
    secrets: secrets::SecretsUnit,
    http: http::HttpUnit,
    sql: sql::SqlUnit,
}

impl CallState {
    pub fn new(
        services: &HostServices,
        plugin: &LoadedPlugin,
        tenant: Option<&PluginTenant>,
        runtime: Option<tokio::runtime::Handle>,
        end: CallEnd,
        cancel: std::sync::Arc<Cancel>,
    ) -> Self {
        let config = &services.config;
        let max_memory = (config.max_memory_mib * 1024 * 1024) as usize;
        let capabilities = match runtime {
            Some(runtime) if plugin.manifest.world.has_capabilities() => {
                Some(Box::new(Capabilities {
                    state: state::StateUnit::new(
                        services,
                        &plugin.name,
                        tenant,
                        runtime.clone(),
                        end,
                        cancel.clone(),
                    ),
                    secrets: secrets::SecretsUnit::new(services, plugin),
                    http: http::HttpUnit::new(
                        services,
                        plugin,
                        runtime.clone(),
                        end,
                        cancel.clone(),
                    ),
                    sql: sql::SqlUnit::new(services, plugin, runtime.clone(), end, cancel.clone()),
                }))
            }
            _ => None,
        };
        CallState {
            wasi: None,
            max_output_bytes: config.max_output_bytes,
            table: ResourceTable::new(),
            limiter: Limiter {
                inner: wasmtime::StoreLimitsBuilder::new()
                    .memory_size(max_memory)
                    .instances(32)
                    .tables(32)
                    .memories(8)
                    .build(),
                refused_memory: false,
                max_memory,
            },
            log: log::LogUnit::new(&plugin.name, tenant),
            config: config::ConfigUnit::new(plugin.config.clone()),
            capabilities,
            end,
            clock_waits: Waits::default(),
            cancel,
        }
    }

    /// Readies a kept instance's state for its next call: that call's tenant, end and
    /// cancellation, and nothing of the last call's log, waits or memory refusal. Only for the
    /// worlds without capabilities, whose instances reach nothing else between calls.
    pub fn next_call(
        &mut self,
        plugin: &LoadedPlugin,
        tenant: Option<&PluginTenant>,
        end: CallEnd,
        cancel: std::sync::Arc<Cancel>,
    ) {
        debug_assert!(self.capabilities.is_none() && self.wasi.is_none());
        self.log = log::LogUnit::new(&plugin.name, tenant);
        self.limiter.refused_memory = false;
        self.end = end;
        self.clock_waits = Waits::default();
        self.cancel = cancel;
    }

    /// Whether the guest reached for WASI (stdout, stderr, clocks) during its calls.
    pub fn used_wasi(&self) -> bool {
        self.wasi.is_some()
    }

    /// What the guest wrote to stdout and to stderr, up to the cap, and how many bytes of each
    /// were dropped past it (nothing when it never reached for WASI).
    pub fn output(&self) -> [(&'static str, Vec<u8>, u64); 2] {
        let ((stdout, out_dropped), (stderr, err_dropped)) = match &self.wasi {
            Some(wasi) => (wasi.stdout.contents(), wasi.stderr.contents()),
            None => ((Vec::new(), 0), (Vec::new(), 0)),
        };
        [
            ("stdout", stdout, out_dropped),
            ("stderr", stderr, err_dropped),
        ]
    }

    /// What the call waited on — granted hosts, databases, its state — and how long (nothing
    /// for the worlds without capabilities).
    pub fn waits(&self) -> Waits {
        let mut waits = self.clock_waits.clone();
        if let Some(c) = &self.capabilities {
            waits.merge(&c.http.waits);
            waits.merge(&c.sql.waits);
            waits.merge(&c.state.waits);
        }
        waits
    }

    /// The bytes of stdout, and of stderr, a call keeps.
    pub fn max_output_bytes(&self) -> usize {
        self.max_output_bytes
    }

    fn capabilities(&mut self) -> &mut Capabilities {
        self.capabilities
            .as_mut()
            .expect("the capabilities are linked only for the worlds that have them")
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let max = self.max_output_bytes;
        let wasi = self.wasi.get_or_insert_with(|| {
            let stdout = output::CappedOutput::new(max);
            let stderr = output::CappedOutput::new(max);
            let mut builder = WasiCtx::builder();
            builder
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .socket_addr_check(|_, _| Box::pin(async { false }));
            Wasi {
                ctx: builder.build(),
                stdout,
                stderr,
            }
        });
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut self.table,
        }
    }
}

impl wit::types::Host for CallState {}

/// A guest's sleep: ready at its time, which is never past the call's end, or as soon as the
/// call is cancelled (a disable or a revoke then stops a sleeping guest at once, as it stops a
/// running one).
struct Sleep {
    until: tokio::time::Instant,
    cancel: std::sync::Arc<Cancel>,
    /// A sleep already over yields to the runtime once, as wasmtime-wasi's own clock does, so
    /// that a guest polling in a loop does not starve the runtime's I/O.
    yielded: bool,
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Sleep {
    async fn ready(&mut self) {
        if self.until <= tokio::time::Instant::now() {
            if !self.yielded {
                self.yielded = true;
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(self.until) => {}
            () = self.cancel.cancelled() => {}
        }
    }
}

/// The WASI monotonic clock's `subscribe-duration` and `subscribe-instant` (what a guest's
/// sleep waits on), cut to what is left of the call: a sleep past the deadline wakes at it, and
/// the deadline stops the guest at once; a cancelled call wakes at once. The name is the exact
/// one wasmtime-wasi registers (a guest importing any 0.2.x resolves to it).
fn sleeps_end_with_the_call(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    use wasmtime::StoreContextMut;
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::DynPollable;
    const CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
    /// A sleep of `asked`, cut to the call's end: its pollable, counted as a wait on the clock.
    fn sleep(
        state: &mut CallState,
        asked: std::time::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let left = state.end.remaining();
        state.clock_waits.cut |= asked >= left;
        let duration = asked.min(left);
        state
            .clock_waits
            .add(|| crate::plugin_host::SLEEP.into(), duration);
        let sleep = state.table.push(Sleep {
            until: tokio::time::Instant::now() + duration,
            cancel: state.cancel.clone(),
            yielded: false,
        })?;
        Ok(wasmtime_wasi::p2::subscribe(&mut state.table, sleep)?)
    }
    linker.allow_shadowing(true);
    let mut clock = linker.instance(CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |mut store: StoreContextMut<'_, CallState>,
         (nanos,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Ok((sleep(
                store.data_mut(),
                std::time::Duration::from_nanos(nanos),
            )?,))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |mut store: StoreContextMut<'_, CallState>,
         (when,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            use wasmtime_wasi::clocks::WasiClocksView;
            use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::Host as Monotonic;
            let now = Monotonic::now(&mut WasiClocksView::clocks(store.data_mut()))?;
            let asked = std::time::Duration::from_nanos(when.saturating_sub(now));
            Ok((sleep(store.data_mut(), asked)?,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The linker of `world` at WIT `version`: WASI with nothing behind it, and the capability units
/// the world may import.
pub fn linker(
    engine: &wasmtime::Engine,
    world: World,
    version: WitVersion,
) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    sleeps_end_with_the_call(&mut linker)?;
    wit::types::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s)?;
    match version {
        WitVersion::V0_2 => {
            wit::log::add_to_linker::<_, HasSelf<log::LogUnit>>(&mut linker, |s| &mut s.log)?;
            wit::config::add_to_linker::<_, HasSelf<config::ConfigUnit>>(&mut linker, |s| {
                &mut s.config
            })?;
            if world.has_capabilities() {
                wit::state::add_to_linker::<_, HasSelf<state::StateUnit>>(&mut linker, |s| {
                    &mut s.capabilities().state
                })?;
                wit::secrets::add_to_linker::<_, HasSelf<secrets::SecretsUnit>>(
                    &mut linker,
                    |s| &mut s.capabilities().secrets,
                )?;
                wit::http::add_to_linker::<_, HasSelf<http::HttpUnit>>(&mut linker, |s| {
                    &mut s.capabilities().http
                })?;
                wit::sql::add_to_linker::<_, HasSelf<sql::SqlUnit>>(&mut linker, |s| {
                    &mut s.capabilities().sql
                })?;
            }
        }
        WitVersion::V0_1 => {
            // The shared types of 0.1.0 are the current ones; the interface that declares them
            // (no functions) is linked under its own name.
            linker.instance("tenantry:plugin/types@0.1.0")?;
            wit_v0_1::log::add_to_linker::<_, HasSelf<log::LogUnit>>(&mut linker, |s| &mut s.log)?;
            if world.has_capabilities() {
                wit_v0_1::state::add_to_linker::<_, HasSelf<state::StateUnit>>(&mut linker, |s| {
                    &mut s.capabilities().state
                })?;
                wit_v0_1::secrets::add_to_linker::<_, HasSelf<secrets::SecretsUnit>>(
                    &mut linker,
                    |s| &mut s.capabilities().secrets,
                )?;
                wit_v0_1::http::add_to_linker::<_, HasSelf<http::HttpUnit>>(&mut linker, |s| {
                    &mut s.capabilities().http
                })?;
            }
        }
    }
    Ok(linker)
}
