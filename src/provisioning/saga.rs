//! The worker that carries runs out: takes a run's lease, runs its steps through their plugins with
//! each step journaled before and after the call, retries transient failures with capped
//! exponential backoff, and compensates the done steps in reverse order after a permanent
//! failure. No database transaction is open while a plugin runs.
//!
//! Every server runs one worker. A run is executed by the server holding its lease, which it
//! renews while it works; when a server dies its lease expires and any server (the same one
//! after a restart, or another replica on the same PostgreSQL) takes the run over, repeating the
//! step that was `running` — plugins' `apply` is idempotent for the step's key.

mod lease;
mod outcome;
mod slot;
mod validate;

pub(crate) use lease::owner_id;
use lease::{LeaseKeeper, claim};
use outcome::{Failure, append_log, split};
use slot::Slot;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{
    CarriedResource, LifecycleChange, RunKind, RunStatus, StepAction, StepState, TransitionInput,
    resource_context, step_context, template_origin, tenant_from_snapshot,
};
use crate::audit::Actor;
use crate::clock;
use crate::config::Fault;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{self, Outcome, PluginTenant, Step};
use crate::store::models::{ResourceRow, RunRow, StepRow};
use crate::store::provisioning as sql;
use crate::{tenants, transaction};

/// Starts this server's worker. It stops when `stop` is notified.
pub fn spawn(ctx: Context, stop: Arc<tokio::sync::Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let owner = owner_id();
        tracing::info!(owner = %owner, "provisioning worker started");
        let config = &ctx.config.provisioning;
        let slots = Arc::new(tokio::sync::Semaphore::new(config.workers));
        // Every run this server holds: moving (a slot) or waiting (stepped aside).
        let held = Arc::new(tokio::sync::Semaphore::new(
            config.workers + config.waiting_runs,
        ));
        let step_aside = Duration::from_millis(config.step_aside_ms);
        let poll = Duration::from_millis(ctx.config.provisioning.poll_interval_ms);
        let mut last_sweep = Instant::now() - Duration::from_secs(3600);
        loop {
            if last_sweep.elapsed() > Duration::from_secs(600) {
                last_sweep = Instant::now();
                if let Ok(n) = sweep_keys(&ctx).await
                    && n > 0
                {
                    tracing::debug!("forgot {n} expired idempotency keys");
                }
            }
            // Take runs while there are free slots and runs to take.
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                let Ok(hold) = held.clone().try_acquire_owned() else {
                    break;
                };
                match claim(&ctx, &owner).await {
                    Ok(Some(run)) => {
                        let (ctx, owner) = (ctx.clone(), owner.clone());
                        let slot =
                            Slot::new(permit, slots.clone(), ctx.runs_queued.clone(), step_aside);
                        tokio::spawn(async move {
                            let id = run.id.clone();
                            if let Err(err) = execute(&ctx, &owner, run, slot).await {
                                tracing::error!(run = %id, "provisioning run stopped: {err}");
                            }
                            drop(hold);
                            // A slot is free: look for the next run now, not at the next poll
                            // (runs queued meanwhile would otherwise wait for it).
                            ctx.runs_queued.notify_one();
                        });
                    }
                    Ok(None) => break,
                    Err(err) => {
                        tracing::warn!("cannot look for provisioning runs: {err}");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = stop.notified() => break,
                _ = ctx.runs_queued.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("provisioning worker stopped");
    })
}

async fn sweep_keys(ctx: &Context) -> AppResult<usize> {
    transaction!(ctx.db, |tx| { sql::expire_keys(tx, clock::now()).await })
}

/// How a step ended.
enum Ended {
    Done,
    Failed(String),
    /// Another server holds the run now: stop touching it.
    LeaseLost,
}

struct Executor<'a> {
    ctx: &'a Context,
    owner: &'a str,
    run: RunRow,
    tenant: PluginTenant,
    keeper: LeaseKeeper,
    fault: Option<Fault>,
    /// The run's worker, given up while it waits long on a plugin or to retry.
    slot: Slot,
}

async fn execute(ctx: &Context, owner: &str, run: RunRow, slot: Slot) -> AppResult<()> {
    tracing::info!(run = %run.id, kind = %run.kind, tenant = %run.tenant_slug, execution = run.executions, "executing provisioning run");
    let keeper = LeaseKeeper::start(ctx, &run.id, owner);
    let tenant = tenant_from_snapshot(&run.tenant)?;
    let fault = ctx.config.provisioning.fault_injection.clone();
    let mut exec = Executor {
        ctx,
        owner,
        run,
        tenant,
        keeper,
        fault,
        slot,
    };
    exec.go().await
}

impl Executor<'_> {
    async fn steps(&self) -> AppResult<Vec<StepRow>> {
        let mut conn = self.ctx.db.conn().await?;
        sql::steps(&mut conn, &self.run.id).await
    }

    async fn go(&mut self) -> AppResult<()> {
        if self.run.status == RunStatus::Running {
            let mut failure = None;
            for mut step in self.steps().await? {
                if matches!(step.state, StepState::Done | StepState::Compensated) {
                    continue;
                }
                match self.forward(&mut step).await? {
                    Ended::Done => {}
                    Ended::LeaseLost => return Ok(()),
                    Ended::Failed(reason) => {
                        failure = Some(format!(
                            "{} / {} failed: {reason}",
                            step.plugin, step.step_id
                        ));
                        break;
                    }
                }
            }
            match failure {
                None => return self.finish(RunStatus::Succeeded, None).await,
                Some(reason) if self.run.kind == RunKind::Provision => {
                    self.run.status = RunStatus::Compensating;
                    self.run.error = Some(reason);
                    if !self.save_run().await? {
                        return Ok(());
                    }
                }
                Some(reason) => return self.finish(RunStatus::Failed, Some(reason)).await,
            }
        }
        if self.run.status == RunStatus::Compensating {
            let mut steps = self.steps().await?;
            steps.reverse();
            let mut problems = Vec::new();
            for mut step in steps {
                if step.action != StepAction::Apply
                    || !matches!(step.state, StepState::Done | StepState::Compensating)
                {
                    continue;
                }
                match self.backward(&mut step).await? {
                    Ended::Done => {}
                    Ended::LeaseLost => return Ok(()),
                    Ended::Failed(reason) => problems.push(format!(
                        "undoing {} / {} failed: {reason}; clean it up by hand",
                        step.plugin, step.step_id
                    )),
                }
            }
            let mut error = self.run.error.clone().unwrap_or_default();
            for p in problems {
                error.push_str("; ");
                error.push_str(&p);
            }
            return self.finish(RunStatus::Failed, Some(error)).await;
        }
        Ok(())
    }

    async fn save_run(&mut self) -> AppResult<bool> {
        self.run.updated_at = clock::now();
        let (run, owner) = (self.run.clone(), self.owner.to_owned());
        transaction!(self.ctx.db, |tx| { sql::save_run(tx, &run, &owner).await })
    }

    async fn finish(&mut self, status: RunStatus, error: Option<String>) -> AppResult<()> {
        let now = clock::now();
        self.run.status = status;
        self.run.error = error.clone();
        self.run.finished_at = Some(now);
        // The owner stays, as the server that finished the run; the lease ends.
        self.run.lease_expires_at = None;
        self.run.updated_at = now;
        let (run, owner) = (self.run.clone(), self.owner.to_owned());
        let ok = status == RunStatus::Succeeded;
        let seconds = (now - run.created_at).num_milliseconds() as f64 / 1000.0;
        let saved = transaction!(self.ctx.db, |tx| {
            if !sql::save_run(tx, &run, &owner).await? {
                return Ok(false);
            }
            // Counted where every process's /metrics reads it, whoever ran the run.
            sql::count_ended_run(tx, run.kind.as_str(), status.as_str(), seconds).await?;
            if run.kind == RunKind::Provision {
                let reason = match &error {
                    None => "provisioned".to_owned(),
                    Some(e) => format!("provisioning failed: {e}"),
                };
                let reason: String = reason.chars().take(500).collect();
                tenants::finish_provisioning(tx, &provisioner(), &run.tenant_slug, ok, &reason)
                    .await?;
            }
            Ok(true)
        })?;
        if saved {
            self.ctx
                .metrics
                .provisioning_duration
                .with_label_values(&[run.kind.as_str(), status.as_str()])
                .observe((now - run.created_at).num_milliseconds() as f64 / 1000.0);
            tracing::info!(run = %run.id, kind = %run.kind, tenant = %run.tenant_slug, status = %status, "provisioning run finished");
        }
        Ok(())
    }

    /// Saves a step; when another server holds the run now, nothing is written and the lease is
    /// marked lost (callers stop at their next check).
    async fn save_step(&self, step: &StepRow) -> AppResult<()> {
        let (step, owner) = (step.clone(), self.owner.to_owned());
        let saved = transaction!(self.ctx.db, |tx| {
            sql::save_step(tx, &step, &owner).await
        })?;
        if !saved {
            self.keeper.lost.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn input(&self, step: &StepRow) -> AppResult<String> {
        self.ctx
            .keyring
            .open(
                &step.input,
                &step_context(&step.run_id, &step.plugin, &step.step_id),
            )
            .map_err(AppError::internal)
    }

    fn key(&self, step: &StepRow) -> String {
        format!("{}:{}:{}", step.run_id, step.plugin, step.step_id)
    }

    async fn pause_if(&self, step: &StepRow, after_apply: bool) {
        let Some(fault) = &self.fault else { return };
        let (plugin, id) = match fault {
            Fault::BeforeApply { plugin, step } if !after_apply => (plugin, step),
            Fault::AfterApply { plugin, step } if after_apply => (plugin, step),
            _ => return,
        };
        if *plugin == step.plugin && *id == step.step_id && self.run.executions == 1 {
            fault.pause(&self.ctx.config.data_dir, &self.run.id).await;
        }
    }

    /// Runs a step forward (`apply`, `compensate` carried by a purge, or `transition`) until it is
    /// done, fails for good, or the lease is lost.
    async fn forward(&mut self, step: &mut StepRow) -> AppResult<Ended> {
        let input = self.input(step)?;
        loop {
            if self.keeper.lost() {
                return Ok(Ended::LeaseLost);
            }
            let now = clock::now();
            step.state = StepState::Running;
            step.attempts += 1;
            step.started_at = step.started_at.or(Some(now));
            step.next_attempt_at = None;
            self.save_step(step).await?;
            if self.keeper.lost() {
                return Ok(Ended::LeaseLost);
            }
            self.pause_if(step, false).await;
            let ctx = self.ctx;
            let (result, log): (Result<Outcome, Failure>, _) = match step.action {
                StepAction::Apply => {
                    let key = self.key(step);
                    let logged = self
                        .slot
                        .waiting(ctx.plugins.apply(
                            &step.plugin,
                            &self.tenant,
                            Step {
                                id: step.step_id.clone(),
                                description: step.description.clone(),
                                input: input.clone(),
                            },
                            key,
                        ))
                        .await;
                    split(logged)
                }
                StepAction::Compensate => {
                    let carried: CarriedResource = carried(step, &input, "resource to undo")?;
                    let key = self.key(step);
                    let logged = self
                        .slot
                        .waiting(ctx.plugins.compensate(
                            &step.plugin,
                            &self.tenant,
                            Step {
                                id: step.step_id.clone(),
                                description: step.description.clone(),
                                input: carried.input,
                            },
                            Outcome {
                                output: carried.output,
                                manual_follow_up: None,
                            },
                            key,
                        ))
                        .await;
                    let (result, log) = split(logged);
                    (
                        result.map(|undone| Outcome {
                            output: json!({ "undone": true }).to_string(),
                            manual_follow_up: undone.manual_follow_up,
                        }),
                        log,
                    )
                }
                StepAction::Transition => {
                    // Strict: a change that is not one of the four stops the step, it is
                    // never guessed.
                    let carried: TransitionInput = carried(step, &input, "transition")?;
                    let change = match carried.change {
                        LifecycleChange::Suspend => plugin_host::LifecycleChange::Suspend,
                        LifecycleChange::Reactivate => plugin_host::LifecycleChange::Reactivate,
                        LifecycleChange::Cancel => plugin_host::LifecycleChange::Cancel,
                        LifecycleChange::Purge => plugin_host::LifecycleChange::Purge,
                    };
                    split(
                        self.slot
                            .waiting(ctx.plugins.transition(
                                &step.plugin,
                                &self.tenant,
                                change,
                                carried.reason,
                            ))
                            .await,
                    )
                }
                StepAction::Validate => self.validate(step).await?,
            };
            if step.action == StepAction::Apply {
                self.pause_if(step, true).await;
            }
            append_log(step, &log);
            let now = clock::now();
            match result {
                Ok(outcome) => {
                    step.state = StepState::Done;
                    step.output = Some(outcome.output.clone());
                    step.manual_follow_up = outcome.manual_follow_up.clone();
                    step.error = None;
                    step.finished_at = Some(now);
                    if !self.record_done(step, &input, &outcome).await? {
                        self.keeper.lost.store(true, Ordering::SeqCst);
                        return Ok(Ended::LeaseLost);
                    }
                    return Ok(Ended::Done);
                }
                Err(failure) => {
                    let (transient, message) = self.count_failure(&step.plugin, failure);
                    step.error = Some(message.clone());
                    let attempts_left =
                        step.attempts < i64::from(self.ctx.config.provisioning.max_attempts);
                    if transient && attempts_left {
                        let delay = self.backoff(step.attempts);
                        step.state = StepState::Pending;
                        step.next_attempt_at =
                            Some(now + chrono::Duration::milliseconds(delay.as_millis() as i64));
                        self.save_step(step).await?;
                        self.slot.idle(tokio::time::sleep(delay)).await;
                        continue;
                    }
                    step.state = StepState::Failed;
                    step.finished_at = Some(now);
                    self.save_step(step).await?;
                    let message = if transient {
                        format!("{message} (gave up after {} attempts)", step.attempts)
                    } else {
                        message
                    };
                    return Ok(Ended::Failed(message));
                }
            }
        }
    }

    /// Journals a finished step, and what the tenant now holds (or no longer holds).
    async fn record_done(&self, step: &StepRow, input: &str, outcome: &Outcome) -> AppResult<bool> {
        let (step, run, owner) = (step.clone(), self.run.clone(), self.owner.to_owned());
        let now = clock::now();
        let resource = (step.action == StepAction::Apply).then(|| {
            let origin = serde_json::from_str::<Value>(input)
                .ok()
                .and_then(|v| template_origin(&v));
            ResourceRow {
                tenant_id: run.tenant_id.clone(),
                plugin: step.plugin.clone(),
                step_id: step.step_id.clone(),
                seq: step.seq,
                run_id: run.id.clone(),
                description: step.description.clone(),
                input: self.ctx.keyring.seal(
                    input,
                    &resource_context(&run.tenant_id, &step.plugin, &step.step_id),
                ),
                output: outcome.output.clone(),
                template: origin.as_ref().map(|o| o.0.clone()),
                template_version: origin.as_ref().and_then(|o| o.1),
                fingerprint: origin.map(|o| o.2),
                applied_at: now,
            }
        });
        transaction!(self.ctx.db, |tx| {
            if !sql::save_step(tx, &step, &owner).await? {
                return Ok(false);
            }
            match (&resource, step.action) {
                (Some(r), _) => sql::put_resource(tx, r).await?,
                (None, StepAction::Compensate) => {
                    sql::delete_resource(tx, &run.tenant_id, &step.plugin, &step.step_id).await?
                }
                _ => {}
            }
            Ok(true)
        })
    }

    /// Undoes a done `apply` step (compensation after a failure), with retries.
    async fn backward(&mut self, step: &mut StepRow) -> AppResult<Ended> {
        let input = self.input(step)?;
        let mut attempts = 0u32;
        // A compensated step's times are its compensation's: from the apply's start they would
        // count every other step of the run and its retries.
        step.started_at = Some(clock::now());
        step.finished_at = None;
        loop {
            if self.keeper.lost() {
                return Ok(Ended::LeaseLost);
            }
            attempts += 1;
            step.state = StepState::Compensating;
            self.save_step(step).await?;
            if self.keeper.lost() {
                return Ok(Ended::LeaseLost);
            }
            let key = self.key(step);
            let logged = self
                .slot
                .waiting(self.ctx.plugins.compensate(
                    &step.plugin,
                    &self.tenant,
                    Step {
                        id: step.step_id.clone(),
                        description: step.description.clone(),
                        input: input.clone(),
                    },
                    Outcome {
                        output: step.output.clone().unwrap_or_else(|| "{}".into()),
                        manual_follow_up: step.manual_follow_up.clone(),
                    },
                    key,
                ))
                .await;
            let (result, log) = split(logged);
            append_log(step, &log);
            match result {
                Ok(undone) => {
                    step.state = StepState::Compensated;
                    if let Some(follow_up) = undone.manual_follow_up {
                        step.manual_follow_up = Some(follow_up);
                    }
                    step.finished_at = Some(clock::now());
                    let (s, tenant, owner) = (
                        step.clone(),
                        self.run.tenant_id.clone(),
                        self.owner.to_owned(),
                    );
                    let saved = transaction!(self.ctx.db, |tx| {
                        if !sql::save_step(tx, &s, &owner).await? {
                            return Ok(false);
                        }
                        sql::delete_resource(tx, &tenant, &s.plugin, &s.step_id).await?;
                        Ok(true)
                    })?;
                    if !saved {
                        self.keeper.lost.store(true, Ordering::SeqCst);
                        return Ok(Ended::LeaseLost);
                    }
                    return Ok(Ended::Done);
                }
                Err(failure) => {
                    let (transient, message) = self.count_failure(&step.plugin, failure);
                    step.error = Some(format!("compensation: {message}"));
                    if transient && attempts < self.ctx.config.provisioning.max_attempts {
                        self.save_step(step).await?;
                        let delay = self.backoff(i64::from(attempts));
                        self.slot.idle(tokio::time::sleep(delay)).await;
                        continue;
                    }
                    step.state = StepState::Failed;
                    self.save_step(step).await?;
                    return Ok(Ended::Failed(message));
                }
            }
        }
    }

    /// Counts a failed step attempt of `plugin` in the metrics; whether it was transient, and
    /// its message.
    fn count_failure(&self, plugin: &str, failure: Failure) -> (bool, String) {
        let (transient, message) = match failure {
            Failure::Transient(m) => (true, m),
            Failure::Permanent(m) => (false, m),
        };
        self.ctx
            .metrics
            .step_failures
            .with_label_values(&[plugin, if transient { "transient" } else { "permanent" }])
            .inc();
        (transient, message)
    }

    /// Delay before attempt `attempts + 1`: base × 2^(attempts−1), capped, with ±20 % jitter.
    fn backoff(&self, attempts: i64) -> Duration {
        let cfg = &self.ctx.config.provisioning;
        let exp = (attempts - 1).clamp(0, 20) as u32;
        let base = cfg
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(cfg.backoff_max_ms);
        let jitter = rand::random::<f64>() * 0.4 + 0.8;
        Duration::from_millis((base as f64 * jitter) as u64)
    }
}

fn provisioner() -> Actor {
    Actor {
        name: "system:provisioning".into(),
        source_ip: None,
        request_id: None,
    }
}

/// What a compensation or transition step carries, read from its stored input (`what` names it
/// in the error).
fn carried<T: serde::de::DeserializeOwned>(
    step: &StepRow,
    input: &str,
    what: &str,
) -> AppResult<T> {
    serde_json::from_str(input).map_err(|e| {
        AppError::internal(anyhow::anyhow!(
            "step {} of run {}: unreadable {what}: {e}",
            step.step_id,
            step.run_id
        ))
    })
}
