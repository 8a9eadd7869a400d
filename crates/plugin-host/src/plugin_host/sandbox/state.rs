//! The `state` capability: a small key-value store per (plugin, tenant) in the database. A call
//! made for no tenant has no state. At most [`MAX_STATE_KEYS`] keys of [`MAX_STATE_KEY`] bytes,
//! values of at most [`MAX_STATE_VALUE`] bytes.

use crate::clock;
use crate::plugin_host::bindings::provisioner::tenantry::plugin::state;
use crate::plugin_host::{HostServices, PluginTenant};
use crate::store::{self, Db};

const MAX_STATE_KEY: usize = 128;
const MAX_STATE_VALUE: usize = 64 * 1024;
const MAX_STATE_KEYS: usize = 256;
/// What a write that the call's end (or its cancellation) cut short tells the guest.
const UNFINISHED: &str =
    "state is unavailable: the call ended before the write did (nothing was written)";

/// How long a write may wait for the database's write lock: until just past the call's end, so
/// that the call's own timeout is what ends the wait (SQLite's busy timeout, which cannot be
/// interrupted, then gives up a moment later and the connection is discarded).
fn lock_wait(end: &super::CallEnd) -> std::time::Duration {
    end.remaining() + std::time::Duration::from_millis(50)
}

pub struct StateUnit {
    db: Db,
    plugin: String,
    /// The call's tenant: the only one whose state the plugin can reach.
    tenant_id: Option<String>,
    runtime: tokio::runtime::Handle,
    end: super::CallEnd,
    cancel: std::sync::Arc<super::Cancel>,
    /// What this call waited on (its state, in the database), and how long.
    pub waits: super::Waits,
}

impl StateUnit {
    pub fn new(
        services: &HostServices,
        plugin: &str,
        tenant: Option<&PluginTenant>,
        runtime: tokio::runtime::Handle,
        end: super::CallEnd,
        cancel: std::sync::Arc<super::Cancel>,
    ) -> Self {
        StateUnit {
            db: services.db.clone(),
            plugin: plugin.to_owned(),
            tenant_id: tenant.map(|t| t.id.clone()),
            runtime,
            end,
            cancel,
            waits: super::Waits::default(),
        }
    }

    /// Runs `work` to its end, counting the time waited.
    fn wait<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let result = self.runtime.block_on(work);
        self.waits.ended(
            || "its state (the database)".into(),
            started.elapsed(),
            &self.end,
        );
        result
    }

    /// A read or a write of the state, given up when the call's time is up or the call is
    /// cancelled (None then). A write given up is rolled back whole: its transaction never
    /// commits, and its connection, dropped midway, is not reused.
    fn bounded<T>(&mut self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let left = self.end.remaining();
        let cancel = self.cancel.clone();
        self.wait(async move {
            cancel
                .or(async { tokio::time::timeout(left, work).await.ok() }, None)
                .await
        })
    }

    /// The access check: state needs the call's tenant.
    fn tenant(&self) -> Result<String, String> {
        self.tenant_id
            .clone()
            .ok_or_else(|| "this call is not made for a tenant; state needs one".to_owned())
    }
}

impl state::Host for StateUnit {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let tenant = self.tenant().ok()?;
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        self.bounded(async move {
            let mut conn = db.conn().await?;
            store::plugins::state_get(&mut conn, &plugin, &tenant, &key).await
        })?
        .unwrap_or_else(|err| {
            tracing::warn!(plugin = %self.plugin, "plugin state read failed: {err}");
            None
        })
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let tenant = self.tenant()?;
        if key.is_empty() || key.len() > MAX_STATE_KEY {
            return Err(format!("a state key must be 1 to {MAX_STATE_KEY} bytes"));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(format!(
                "a state value must be at most {MAX_STATE_VALUE} bytes"
            ));
        }
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        let left = lock_wait(&self.end);
        self.bounded(async move {
            crate::transaction!(db, within left, |tx| {
                let keys = store::plugins::state_keys(tx, &plugin, &tenant).await?;
                if keys.len() >= MAX_STATE_KEYS && !keys.contains(&key) {
                    return Ok(Err(format!(
                        "a plugin keeps at most {MAX_STATE_KEYS} keys per tenant"
                    )));
                }
                store::plugins::state_put(tx, &plugin, &tenant, &key, &value, clock::now()).await?;
                Ok(Ok(()))
            })
            .unwrap_or_else(|err| Err(format!("state is unavailable: {err}")))
        })
        .unwrap_or_else(|| Err(UNFINISHED.to_owned()))
    }

    fn delete(&mut self, key: String) {
        let Ok(tenant) = self.tenant() else { return };
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        let left = lock_wait(&self.end);
        let result = self.bounded(async move {
            crate::transaction!(db, within left, |tx| {
                store::plugins::state_delete(tx, &plugin, &tenant, &key).await
            })
        });
        match result {
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(plugin = %self.plugin, "plugin state delete failed: {err}");
            }
            None => tracing::warn!(plugin = %self.plugin, "plugin state delete: {UNFINISHED}"),
        }
    }

    fn keys(&mut self) -> Vec<String> {
        let Ok(tenant) = self.tenant() else {
            return Vec::new();
        };
        let (db, plugin) = (self.db.clone(), self.plugin.clone());
        self.bounded(async move {
            let mut conn = db.conn().await?;
            store::plugins::state_keys(&mut conn, &plugin, &tenant).await
        })
        .and_then(Result::ok)
        .unwrap_or_default()
    }
}
