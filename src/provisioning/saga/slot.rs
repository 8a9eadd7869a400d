//! A run's worker slot. A server moves `provisioning.workers` runs forward at once; a run that
//! waits — on a plugin call past `provisioning.step_aside_ms`, or to retry a step — gives its
//! slot to the next run meanwhile and takes one again, in turn, when the wait ends. Slow or
//! sleeping plugins therefore never hold the workers other tenants' runs need; what bounds
//! them is their own deadline, the host's call permits and `provisioning.waiting_runs`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Semaphore>,
    /// Wakes the worker loop to claim the next run when a slot is given up.
    freed: Arc<Notify>,
    step_aside: Duration,
}

impl Slot {
    pub fn new(
        permit: OwnedSemaphorePermit,
        slots: Arc<Semaphore>,
        freed: Arc<Notify>,
        step_aside: Duration,
    ) -> Slot {
        Slot {
            permit: Some(permit),
            slots,
            freed,
            step_aside,
        }
    }

    /// `work` (a plugin call): if it outlasts `step_aside`, the slot is given up until it ends.
    pub async fn waiting<T>(&mut self, work: impl Future<Output = T>) -> T {
        let step_aside = self.step_aside;
        self.wait(work, step_aside).await
    }

    /// `work` (a pause before a retry), with the slot given up at once.
    pub async fn idle<T>(&mut self, work: impl Future<Output = T>) -> T {
        self.wait(work, Duration::ZERO).await
    }

    async fn wait<T>(&mut self, work: impl Future<Output = T>, after: Duration) -> T {
        let mut work = std::pin::pin!(work);
        if !after.is_zero() {
            tokio::select! {
                biased;
                value = &mut work => return value,
                () = tokio::time::sleep(after) => {}
            }
        }
        if self.permit.take().is_some() {
            self.freed.notify_one();
        }
        let value = work.await;
        self.permit = Some(
            self.slots
                .clone()
                .acquire_owned()
                .await
                .expect("the worker's semaphore is never closed"),
        );
        value
    }
}
