//! The calls running now on this server, by plugin: what a disable or a revoke cancels. A change
//! made on this server cancels its calls at once ([`InFlight::cancel`]); a change made by another
//! server or the CLI is heard on the database's change feed, and the calls it no longer allows
//! are cancelled then ([`InFlight::heard`]): within the feed's delay, well before their deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::sandbox::Cancel;
use super::table::{LoadedPlugin, grants_of};
use crate::store::changes::Change;
use crate::store::{self, Db};

/// One call: its cancellation, and the plugin as it was loaded for it (its grants).
struct Call {
    cancel: Weak<Cancel>,
    plugin: Weak<LoadedPlugin>,
}

#[derive(Default)]
pub struct InFlight {
    calls: Mutex<HashMap<String, Vec<Call>>>,
}

impl InFlight {
    /// A new call of `plugin`, registered so that a cancellation reaches it.
    pub fn register(&self, plugin: &Arc<LoadedPlugin>) -> Arc<Cancel> {
        let cancel = Arc::new(Cancel::default());
        let mut calls = self.calls.lock().expect("in-flight lock");
        let of_plugin = calls.entry(plugin.name.clone()).or_default();
        of_plugin.retain(|c| c.cancel.strong_count() > 0);
        of_plugin.push(Call {
            cancel: Arc::downgrade(&cancel),
            plugin: Arc::downgrade(plugin),
        });
        cancel
    }

    /// Cancels every running call of plugin `name`, saying `reason`; how many there were.
    pub fn cancel(&self, name: &str, reason: &str) -> usize {
        let calls = self
            .calls
            .lock()
            .expect("in-flight lock")
            .remove(name)
            .unwrap_or_default();
        let mut cancelled = 0;
        for cancel in calls.iter().filter_map(|c| c.cancel.upgrade()) {
            cancel.cancel(reason);
            cancelled += 1;
        }
        if cancelled > 0 {
            tracing::info!(plugin = %name, cancelled, "plugin calls cancelled: {reason}");
        }
        cancelled
    }

    /// The running calls of `name`, with the plugin each was loaded as.
    fn running(&self, name: &str) -> Vec<(Arc<Cancel>, Arc<LoadedPlugin>)> {
        let calls = self.calls.lock().expect("in-flight lock");
        calls
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.cancel.upgrade()?, c.plugin.upgrade()?)))
            .collect()
    }

    /// A change heard on the feed: the plugins it names that have calls running here are read
    /// again, and a call is cancelled when its plugin is now disabled or uninstalled, or when a
    /// grant it was loaded with is gone. Runs in the background; needs a Tokio runtime.
    pub fn heard(self: &Arc<Self>, db: &Db, change: &Change) {
        let names: Vec<String> = match change {
            Change::Plugin(name) => vec![name.clone()],
            Change::Everything => {
                let calls = self.calls.lock().expect("in-flight lock");
                calls.keys().cloned().collect()
            }
            _ => return,
        };
        let names: Vec<String> = names
            .into_iter()
            .filter(|name| !self.running(name).is_empty())
            .collect();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if names.is_empty() {
            return;
        }
        let (this, db) = (self.clone(), db.clone());
        runtime.spawn(async move {
            for name in names {
                if let Err(err) = this.check(&db, &name).await {
                    tracing::warn!(plugin = %name, "could not check the running calls against a change: {err}");
                }
            }
        });
    }

    /// Cancels the running calls of `name` that the plugin as stored no longer allows.
    async fn check(&self, db: &Db, name: &str) -> anyhow::Result<()> {
        let mut conn = db.conn().await?;
        let Some(row) = store::plugins::find_meta(&mut conn, name).await? else {
            self.cancel(name, "it was uninstalled while the call ran");
            return Ok(());
        };
        if !row.enabled {
            self.cancel(name, "it was disabled while the call ran");
            return Ok(());
        }
        let now = grants_of(&store::plugins::grants(&mut conn, name).await?)
            .map_err(|e| anyhow::anyhow!(e))?;
        for (cancel, plugin) in self.running(name) {
            let was = &plugin.grants;
            let lost = was
                .hosts
                .iter()
                .find(|h| !now.hosts.contains(h))
                .map(|h| ("host", h))
                .or_else(|| {
                    was.secrets
                        .keys()
                        .find(|s| !now.secrets.contains_key(*s))
                        .map(|s| ("secret", s))
                })
                .or_else(|| {
                    was.databases
                        .keys()
                        .find(|d| !now.databases.contains_key(*d))
                        .map(|d| ("database", d))
                });
            if let Some((kind, grant)) = lost {
                let reason = format!("its {kind} grant `{grant}` was revoked while the call ran");
                tracing::info!(plugin = %name, "plugin call cancelled: {reason}");
                cancel.cancel(&reason);
            }
        }
        Ok(())
    }
}
