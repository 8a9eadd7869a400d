//! Call statistics of each plugin, summed over every server that calls it. Each server counts
//! its calls in memory and adds them to the database about once a second and when it stops (the
//! last report waits for a periodic one still writing), so the API, the portal and the CLI of
//! any server show the same figures, within a second, and they survive restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::clock;
use crate::error::AppResult;
use crate::store::models::PluginCallStatsRow;
use crate::store::{self, Db};

/// How often a server adds what it counted to the database.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Call statistics of one plugin, since it was installed, on every server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct CallStats {
    pub calls: u64,
    pub failures: u64,
    /// Mean duration of a call, in milliseconds.
    pub mean_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Delta {
    calls: i64,
    failures: i64,
    total_us: i64,
    max_us: i64,
}

impl Delta {
    fn add(&mut self, other: Delta) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.total_us += other.total_us;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// A plugin's counts not yet added to the database, kept in atomics so that concurrent calls
/// never wait for each other to count.
#[derive(Default)]
pub struct Tally {
    calls: AtomicI64,
    failures: AtomicI64,
    total_us: AtomicI64,
    max_us: AtomicI64,
}

impl Tally {
    /// Counts one call.
    pub fn record(&self, elapsed: Duration, ok: bool) {
        let us = elapsed.as_micros().min(i64::MAX as u128) as i64;
        self.add(Delta {
            calls: 1,
            failures: i64::from(!ok),
            total_us: us,
            max_us: us,
        });
    }

    fn add(&self, delta: Delta) {
        self.calls.fetch_add(delta.calls, Ordering::Relaxed);
        self.failures.fetch_add(delta.failures, Ordering::Relaxed);
        self.total_us.fetch_add(delta.total_us, Ordering::Relaxed);
        self.max_us.fetch_max(delta.max_us, Ordering::Relaxed);
    }

    /// What was counted since the last take, leaving zero behind.
    fn take(&self) -> Delta {
        Delta {
            calls: self.calls.swap(0, Ordering::Relaxed),
            failures: self.failures.swap(0, Ordering::Relaxed),
            total_us: self.total_us.swap(0, Ordering::Relaxed),
            max_us: self.max_us.swap(0, Ordering::Relaxed),
        }
    }

    fn peek(&self) -> Delta {
        Delta {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            total_us: self.total_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// What this server counted and has not yet added to the database. A call takes a read lock
/// (a write lock only at a plugin's first call) and adds to atomics.
#[derive(Default)]
pub struct Counter {
    tallies: RwLock<HashMap<String, Arc<Tally>>>,
    /// Held by a report from taking the counts until they are written or given back, so that
    /// the last report at shutdown waits for a periodic one still writing (whose task would
    /// otherwise be dropped mid-write with the counts it took).
    reporting: tokio::sync::Mutex<()>,
}

impl Counter {
    /// Where the calls of `plugin` are counted (kept by the caller for its later calls).
    pub fn tally(&self, plugin: &str) -> Arc<Tally> {
        if let Some(tally) = self.tallies.read().expect("stats lock").get(plugin) {
            return tally.clone();
        }
        self.tallies
            .write()
            .expect("stats lock")
            .entry(plugin.to_owned())
            .or_default()
            .clone()
    }

    /// Adds what was counted to the database; what could not be written is kept for the next
    /// report.
    pub async fn report(&self, db: &Db) -> AppResult<()> {
        let _reporting = self.reporting.lock().await;
        let pending: Vec<(String, Delta)> = self
            .tallies
            .read()
            .expect("stats lock")
            .iter()
            .map(|(plugin, tally)| (plugin.clone(), tally.take()))
            .filter(|(_, delta)| delta.calls > 0)
            .collect();
        let mut failed = Vec::new();
        let mut first_error = None;
        for (plugin, delta) in pending {
            let row = PluginCallStatsRow {
                plugin: plugin.clone(),
                calls: delta.calls,
                failures: delta.failures,
                total_us: delta.total_us,
                max_us: delta.max_us,
                updated_at: clock::now(),
            };
            let written =
                crate::transaction!(db, |tx| { store::plugins::add_call_stats(tx, &row).await });
            if let Err(err) = written {
                // A plugin removed meanwhile has nowhere to keep its figures.
                let exists = match db.conn().await {
                    Ok(mut conn) => store::plugins::revision(&mut conn, &plugin)
                        .await
                        .map_or(true, |r| r.is_some()),
                    Err(_) => true,
                };
                if exists {
                    failed.push((plugin, delta));
                    first_error.get_or_insert(err);
                } else {
                    self.tallies.write().expect("stats lock").remove(&plugin);
                }
            }
        }
        for (plugin, delta) in failed {
            self.tally(&plugin).add(delta);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The statistics of `plugin`: the database's, with what this server has not reported yet.
    pub async fn get(&self, db: &Db, plugin: &str) -> AppResult<CallStats> {
        let stored = {
            let mut conn = db.conn().await?;
            store::plugins::call_stats(&mut conn, plugin).await?
        };
        let mut total = stored.map_or_else(Delta::default, |row| Delta {
            calls: row.calls,
            failures: row.failures,
            total_us: row.total_us,
            max_us: row.max_us,
        });
        if let Some(local) = self.tallies.read().expect("stats lock").get(plugin) {
            total.add(local.peek());
        }
        Ok(CallStats {
            calls: total.calls.max(0) as u64,
            failures: total.failures.max(0) as u64,
            mean_ms: if total.calls > 0 {
                total.total_us as f64 / total.calls as f64 / 1000.0
            } else {
                0.0
            },
            max_ms: total.max_us as f64 / 1000.0,
        })
    }
}
