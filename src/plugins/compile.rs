//! Compiling components: once per component hash, with the compiled code cached on disk for
//! the next start (keyed by the hash and the engine's settings), and pre-instantiated against
//! the linker of the plugin's world.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::World;
use super::bindings::{provisioner, quota, renderer};
use super::sandbox::{self, CallState};

/// A component linked and ready to instantiate, by world.
pub enum Pre {
    Provisioner(provisioner::ProvisionerPre<CallState>),
    Renderer(renderer::RendererPre<CallState>),
    Quota(quota::QuotaPolicyPre<CallState>),
}

/// An instance of a plugin, by world.
pub enum Instance {
    Provisioner(provisioner::Provisioner),
    Renderer(renderer::Renderer),
    Quota(quota::QuotaPolicy),
}

impl Pre {
    pub fn instantiate(
        &self,
        store: &mut wasmtime::Store<CallState>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Provisioner(pre) => Instance::Provisioner(pre.instantiate(store)?),
            Pre::Renderer(pre) => Instance::Renderer(pre.instantiate(store)?),
            Pre::Quota(pre) => Instance::Quota(pre.instantiate(store)?),
        })
    }
}

/// The world of an instance is the plugin's, which the host checked before the call: asking
/// an instance for another world's exports is a bug of the host.
impl Instance {
    pub fn provisioner(&self) -> &provisioner::Provisioner {
        match self {
            Instance::Provisioner(i) => i,
            _ => unreachable!("the plugin's world is checked before the call"),
        }
    }

    pub fn renderer(&self) -> &renderer::Renderer {
        match self {
            Instance::Renderer(i) => i,
            _ => unreachable!("the plugin's world is checked before the call"),
        }
    }

    pub fn quota(&self) -> &quota::QuotaPolicy {
        match self {
            Instance::Quota(i) => i,
            _ => unreachable!("the plugin's world is checked before the call"),
        }
    }
}

/// The compiled form of a component, made on first use and shared by every load of it.
pub type Compiled = Arc<OnceLock<Result<Pre, String>>>;

/// Compiles components and keeps what it compiled, by component hash.
pub struct Compiler {
    engine: Engine,
    provisioner: Linker<CallState>,
    renderer: Linker<CallState>,
    quota: Linker<CallState>,
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
        Ok(Compiler {
            provisioner: sandbox::linker(&engine, World::Provisioner)?,
            renderer: sandbox::linker(&engine, World::Renderer)?,
            quota: sandbox::linker(&engine, World::QuotaPolicy)?,
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
        bytes: &[u8],
    ) -> Result<&'s Pre, String> {
        slot.get_or_init(|| {
            self.compile(name, sha256, world, bytes)
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn compile(&self, name: &str, sha256: &str, world: World, bytes: &[u8]) -> anyhow::Result<Pre> {
        let component = self.component(name, sha256, bytes)?;
        Ok(match world {
            World::Provisioner => Pre::Provisioner(provisioner::ProvisionerPre::new(
                self.provisioner.instantiate_pre(&component)?,
            )?),
            World::Renderer => Pre::Renderer(renderer::RendererPre::new(
                self.renderer.instantiate_pre(&component)?,
            )?),
            World::QuotaPolicy => Pre::Quota(quota::QuotaPolicyPre::new(
                self.quota.instantiate_pre(&component)?,
            )?),
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
