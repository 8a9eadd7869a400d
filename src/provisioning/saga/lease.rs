//! A run's lease: who this server is in leases, the claim of a run whose lease is free or expired,
//! and the keeper that renews a lease while its run executes and notices when another server
//! holds it.

use crate::clock;
use crate::context::Context;
use crate::error::AppResult;
use crate::store::models::RunRow;
use crate::store::provisioning as sql;
use crate::transaction;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// This process's name in leases (of runs and of scheduled jobs): host, process id and a random
/// part.
pub(crate) fn owner_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub(super) fn lease(ctx: &Context) -> chrono::Duration {
    chrono::Duration::seconds(ctx.config.provisioning.lease_seconds as i64)
}

pub(super) async fn claim(ctx: &Context, owner: &str) -> AppResult<Option<RunRow>> {
    transaction!(ctx.db, |tx| {
        // Read once the transaction holds the database (on SQLite, after waiting for the write
        // lock): a run whose predecessor ended while this claim waited starts after that end,
        // never before it.
        let now = clock::now();
        sql::claim_run(tx, owner, now, now + lease(ctx)).await
    })
}

/// Keeps the lease of a run alive while it executes; `lost` is set when another server holds it.
pub(super) struct LeaseKeeper {
    pub(super) lost: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    pub(super) fn start(ctx: &Context, run: &str, owner: &str) -> LeaseKeeper {
        let lost = Arc::new(AtomicBool::new(false));
        let (ctx, run, owner, flag) = (ctx.clone(), run.to_owned(), owner.to_owned(), lost.clone());
        let every = Duration::from_millis(ctx.config.provisioning.lease_seconds * 1000 / 3);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let until = clock::now() + lease(&ctx);
                let renewed = transaction!(ctx.db, |tx| {
                    sql::renew_lease(tx, &run, &owner, until).await
                });
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(run = %run, "lost the lease of the run to another server");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(err) => tracing::warn!(run = %run, "cannot renew the run's lease: {err}"),
                }
            }
        });
        LeaseKeeper { lost, task }
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
