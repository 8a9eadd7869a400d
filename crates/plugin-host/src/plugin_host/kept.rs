//! Instances kept between calls, for a renderer or quota policy whose manifest says its calls
//! share nothing (`reuse_instances`, see [`LoadedPlugin::reuses_instances`]): a call takes one
//! instead of instantiating, and gives it back when it answered. Each plugin keeps at most
//! [`MAX_PER_PLUGIN`]; over every plugin, at most as many as the pool holds beside one
//! instance per concurrent call. A plugin loaded again (changed, reconfigured) starts with
//! none: they belong to the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::Store;

use super::compile::Instance;
use super::sandbox::CallState;
use super::table::LoadedPlugin;

/// Instances one plugin keeps between calls, at most.
const MAX_PER_PLUGIN: usize = 4;

/// An instance kept between calls, with its store.
pub struct Kept {
    store: Store<CallState>,
    instance: Instance,
    /// Held while the instance is kept; given back when it is taken or dropped.
    _slot: Slot,
}

/// One of the pool's places for kept instances.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The kept instances of every plugin, counted against the pool's room for them.
pub struct KeptInstances {
    count: Arc<AtomicUsize>,
    max: usize,
}

impl KeptInstances {
    pub fn new(max: usize) -> KeptInstances {
        KeptInstances {
            count: Default::default(),
            max,
        }
    }

    /// An instance `plugin` kept, with its store, if it has one.
    pub fn take(&self, plugin: &LoadedPlugin) -> Option<(Store<CallState>, Instance)> {
        let kept = plugin.idle.lock().expect("kept instances lock").pop()?;
        Some((kept.store, kept.instance))
    }

    /// Keeps `instance` for `plugin`'s next call, when there is room.
    pub fn keep(&self, plugin: &LoadedPlugin, store: Store<CallState>, instance: Instance) {
        let mut idle = plugin.idle.lock().expect("kept instances lock");
        if idle.len() >= MAX_PER_PLUGIN {
            return;
        }
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        idle.push(Kept {
            store,
            instance,
            _slot: Slot(self.count.clone()),
        });
    }
}
