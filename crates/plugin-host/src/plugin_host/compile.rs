//! Compiling components: once per component hash, with the compiled code cached on disk for
//! the next start (keyed by the hash and the engine's settings), and pre-instantiated against
//! the linker of the plugin's world.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::provisioner::exports::tenantry::plugin::provision as provision_now;
use super::bindings::provisioner::tenantry::plugin::types::{
    BundlePart, Decision, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo,
    RenderError, Step, Template, Tenant, Usage,
};
use super::bindings::v0_1::provisioner::exports::tenantry::plugin::provision as provision_v0_1;
use super::bindings::{provisioner, quota, renderer, v0_1};
use super::manifest::WitVersion;
use super::sandbox::{self, CallState};
use super::{World, follow_up};

type Store = wasmtime::Store<CallState>;
type Answer<T, E = PluginError> = wasmtime::Result<Result<T, E>>;

/// A component linked and ready to instantiate, by world and WIT version.
pub enum Pre {
    Provisioner(provisioner::ProvisionerPre<CallState>),
    Renderer(renderer::RendererPre<CallState>),
    Quota(quota::QuotaPolicyPre<CallState>),
    ProvisionerV0_1(v0_1::provisioner::ProvisionerPre<CallState>),
    RendererV0_1(v0_1::renderer::RendererPre<CallState>),
    QuotaV0_1(v0_1::quota::QuotaPolicyPre<CallState>),
}

/// An instance of a plugin, by world and WIT version.
pub enum Instance {
    Provisioner(provisioner::Provisioner),
    Renderer(renderer::Renderer),
    Quota(quota::QuotaPolicy),
    ProvisionerV0_1(v0_1::provisioner::Provisioner),
    RendererV0_1(v0_1::renderer::Renderer),
    QuotaV0_1(v0_1::quota::QuotaPolicy),
}

impl Pre {
    pub fn instantiate(&self, store: &mut Store) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Provisioner(pre) => Instance::Provisioner(pre.instantiate(store)?),
            Pre::Renderer(pre) => Instance::Renderer(pre.instantiate(store)?),
            Pre::Quota(pre) => Instance::Quota(pre.instantiate(store)?),
            Pre::ProvisionerV0_1(pre) => Instance::ProvisionerV0_1(pre.instantiate(store)?),
            Pre::RendererV0_1(pre) => Instance::RendererV0_1(pre.instantiate(store)?),
            Pre::QuotaV0_1(pre) => Instance::QuotaV0_1(pre.instantiate(store)?),
        })
    }
}

/// The world of an instance is the plugin's, which the host checked before the call: asking
/// an instance for another world's exports is a bug of the host.
const CHECKED: &str = "the plugin's world is checked before the call";

impl Instance {
    /// `render` of a renderer.
    pub fn render(
        &self,
        store: &mut Store,
        template: &Template,
        values: &[(String, String)],
    ) -> Answer<String, RenderError> {
        match self {
            Instance::Renderer(i) => i
                .tenantry_plugin_render()
                .call_render(store, template, values),
            Instance::RendererV0_1(i) => i
                .tenantry_plugin_render()
                .call_render(store, template, values),
            _ => unreachable!("{CHECKED}"),
        }
    }

    /// `evaluate` of a quota policy.
    pub fn evaluate(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        usage: &[Usage],
    ) -> Answer<Decision> {
        match self {
            Instance::Quota(i) => i
                .tenantry_plugin_policy()
                .call_evaluate(store, tenant, usage),
            Instance::QuotaV0_1(i) => i
                .tenantry_plugin_policy()
                .call_evaluate(store, tenant, usage),
            _ => unreachable!("{CHECKED}"),
        }
    }

    /// The `provision` exports of a provisioner.
    pub fn provisioner(&self) -> Provision<'_> {
        match self {
            Instance::Provisioner(i) => Provision::Now(i.tenantry_plugin_provision()),
            Instance::ProvisionerV0_1(i) => Provision::V0_1(i.tenantry_plugin_provision()),
            _ => unreachable!("{CHECKED}"),
        }
    }
}

/// A provisioner's exports, at its WIT version; a 0.1.0 plugin's answers are made what the
/// current version answers.
pub enum Provision<'a> {
    Now(&'a provision_now::Guest),
    V0_1(&'a provision_v0_1::Guest),
}

impl Provision<'_> {
    pub fn describe(&self, store: &mut Store) -> wasmtime::Result<PluginInfo> {
        match self {
            Provision::Now(g) => g.call_describe(store),
            Provision::V0_1(g) => g.call_describe(store),
        }
    }

    pub fn plan(&self, store: &mut Store, tenant: &Tenant, request: &str) -> Answer<Vec<Step>> {
        match self {
            Provision::Now(g) => g.call_plan(store, tenant, request),
            Provision::V0_1(g) => g.call_plan(store, tenant, request),
        }
    }

    pub fn apply(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        step: &Step,
        key: &str,
    ) -> Answer<Outcome> {
        match self {
            Provision::Now(g) => g.call_apply(store, tenant, step, key),
            Provision::V0_1(g) => g.call_apply(store, tenant, step, key),
        }
    }

    /// `compensate`. A 0.1.0 plugin returns no outcome: what it reported as `warn` lines that
    /// begin with `manual follow-up:` is its manual follow-up.
    pub fn compensate(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        step: &Step,
        outcome: &Outcome,
        key: &str,
    ) -> Answer<Outcome> {
        match self {
            Provision::Now(g) => g.call_compensate(store, tenant, step, outcome, key),
            Provision::V0_1(g) => Ok(g
                .call_compensate(&mut *store, tenant, step, outcome, key)?
                .map(|()| Outcome {
                    output: "{}".into(),
                    manual_follow_up: follow_up::in_log_lines(&store.data().log.captured),
                })),
        }
    }

    pub fn observe(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        applied: &[(Step, Outcome)],
    ) -> Answer<Vec<Drift>> {
        match self {
            Provision::Now(g) => g.call_observe(store, tenant, applied),
            Provision::V0_1(g) => g.call_observe(store, tenant, applied),
        }
    }

    pub fn transition(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        change: LifecycleChange,
        reason: &str,
    ) -> Answer<Outcome> {
        match self {
            Provision::Now(g) => g.call_transition(store, tenant, change, reason),
            Provision::V0_1(g) => g.call_transition(store, tenant, change, reason),
        }
    }

    /// `measure`; a 0.1.0 plugin measures nothing.
    pub fn measure(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        applied: &[(Step, Outcome)],
    ) -> Answer<Vec<Measurement>> {
        match self {
            Provision::Now(g) => g.call_measure(store, tenant, applied),
            Provision::V0_1(_) => Ok(Ok(Vec::new())),
        }
    }

    /// `export-tenant`; a 0.1.0 plugin cannot export, which is said, never taken for "nothing
    /// to export".
    pub fn export_tenant(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        applied: &[(Step, Outcome)],
    ) -> Answer<Option<BundlePart>> {
        match self {
            Provision::Now(g) => g.call_export_tenant(store, tenant, applied),
            Provision::V0_1(_) => Ok(Err(PluginError::Permanent(
                "the plugin is built against WIT 0.1.0, which has no `export-tenant`".into(),
            ))),
        }
    }

    /// `import-tenant`; likewise.
    pub fn import_tenant(
        &self,
        store: &mut Store,
        tenant: &Tenant,
        part: &BundlePart,
    ) -> Answer<Outcome> {
        match self {
            Provision::Now(g) => g.call_import_tenant(store, tenant, part),
            Provision::V0_1(_) => Ok(Err(PluginError::Permanent(
                "the plugin is built against WIT 0.1.0, which has no `import-tenant`".into(),
            ))),
        }
    }
}

/// The compiled form of a component, made on first use and shared by every load of it.
pub type Compiled = Arc<OnceLock<Result<Pre, String>>>;

/// Compiles components and keeps what it compiled, by component hash.
pub struct Compiler {
    engine: Engine,
    /// One linker per world and WIT version.
    linkers: HashMap<(World, WitVersion), Linker<CallState>>,
    cache_dir: Option<PathBuf>,
    compiled: RwLock<HashMap<String, Compiled>>,
}

impl Compiler {
    pub fn new(engine: Engine, cache_dir: Option<PathBuf>) -> anyhow::Result<Compiler> {
        if let Some(dir) = &cache_dir {
            // Compiled code is loaded from here without re-validation: owner-only.
            use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut linkers = HashMap::new();
        for world in [World::Provisioner, World::Renderer, World::QuotaPolicy] {
            for version in [WitVersion::V0_1, WitVersion::V0_2] {
                linkers.insert((world, version), sandbox::linker(&engine, world, version)?);
            }
        }
        Ok(Compiler {
            linkers,
            engine,
            cache_dir,
            compiled: RwLock::new(HashMap::new()),
        })
    }

    /// The slot of the component with hash `sha256`: empty until [`Compiler::prepare`] fills it.
    pub fn slot(&self, sha256: &str) -> Compiled {
        if let Some(slot) = self.compiled.read().expect("compiled lock").get(sha256) {
            return slot.clone();
        }
        self.compiled
            .write()
            .expect("compiled lock")
            .entry(sha256.to_owned())
            .or_default()
            .clone()
    }

    /// Compiles (or loads from the disk cache) and pre-instantiates a component, once.
    pub fn prepare<'s>(
        &self,
        slot: &'s Compiled,
        name: &str,
        sha256: &str,
        world: World,
        version: WitVersion,
        bytes: &[u8],
    ) -> Result<&'s Pre, String> {
        slot.get_or_init(|| {
            self.compile(name, sha256, world, version, bytes)
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn compile(
        &self,
        name: &str,
        sha256: &str,
        world: World,
        version: WitVersion,
        bytes: &[u8],
    ) -> anyhow::Result<Pre> {
        let component = self.component(name, sha256, bytes)?;
        let pre = self.linkers[&(world, version)].instantiate_pre(&component)?;
        Ok(match (world, version) {
            (World::Provisioner, WitVersion::V0_2) => {
                Pre::Provisioner(provisioner::ProvisionerPre::new(pre)?)
            }
            (World::Renderer, WitVersion::V0_2) => Pre::Renderer(renderer::RendererPre::new(pre)?),
            (World::QuotaPolicy, WitVersion::V0_2) => Pre::Quota(quota::QuotaPolicyPre::new(pre)?),
            (World::Provisioner, WitVersion::V0_1) => {
                Pre::ProvisionerV0_1(v0_1::provisioner::ProvisionerPre::new(pre)?)
            }
            (World::Renderer, WitVersion::V0_1) => {
                Pre::RendererV0_1(v0_1::renderer::RendererPre::new(pre)?)
            }
            (World::QuotaPolicy, WitVersion::V0_1) => {
                Pre::QuotaV0_1(v0_1::quota::QuotaPolicyPre::new(pre)?)
            }
        })
    }

    /// The compiled component, from the disk cache when this engine compiled it before.
    fn component(&self, name: &str, sha256: &str, bytes: &[u8]) -> anyhow::Result<Component> {
        use std::hash::{Hash, Hasher};
        let Some(dir) = &self.cache_dir else {
            return Ok(Component::new(&self.engine, bytes)?);
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let path = dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish()));
        if path.is_file() {
            // SAFETY: the file was written by `Engine::precompile_component` of an engine with
            // the same settings (the name carries their hash) into the server's own directory.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(err) => {
                    tracing::warn!(plugin = %name, "ignoring the cached compilation: {err}")
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes)?;
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
}
