//! Provisioning: a tenant brought into every backend it needs through the backend plugins, as a
//! journaled saga that survives retries, failures and crashes.
//!
//! `provision` validates the request, renders its templates, asks each backend plugin for its
//! plan and stores the tenant (status `provisioning`), the run and its steps (all `pending`) and
//! the idempotency key in one transaction; nothing else happens in the request. The [`saga`]
//! worker of any server then takes the run (a lease), runs each step through its plugin with the
//! step journaled before and after, retries transient failures, and compensates the done steps in
//! reverse order after a permanent one. Lifecycle changes (suspend, reactivate, cancel, purge)
//! reach the backends as runs of their own.

pub mod request;
pub mod saga;
pub mod spec;
pub mod templates;

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugins::{LogLine, PluginTenant, World};
use crate::store::models::{IdempotencyRow, ResourceRow, RunRow, StepRow};
pub use crate::store::vocabulary::{
    LifecycleChange, RunKind, RunStatus, StepAction, StepState, UnknownValue,
};
use crate::store::{self, Conn, provisioning as sql};
use crate::tenants::{self, Tenant, TenantStatus};
use crate::transaction;
pub use request::ProvisionRequest;

/// One step of a run, as the API and the portal show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub seq: i64,
    pub plugin: String,
    /// The plugin's id of the step.
    pub step: String,
    pub action: StepAction,
    pub description: String,
    pub state: StepState,
    pub attempts: i64,
    /// What the backend holds after the step (the plugin's JSON).
    #[schema(value_type = Object)]
    pub output: Option<Value>,
    /// Something a person must do; never counted as done.
    pub manual_follow_up: Option<String>,
    /// The last error (kept while a retry is pending).
    pub error: Option<String>,
    /// When the next attempt is due, while a retry is pending.
    pub next_attempt_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Lines the plugin logged, every attempt.
    pub log: Vec<LogLine>,
}

/// A provisioning or lifecycle run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub kind: RunKind,
    pub tenant: String,
    pub status: RunStatus,
    pub backends: Vec<String>,
    pub error: Option<String>,
    /// How many times a server took the run up (more than 1 after a server died during it).
    pub executions: i64,
    /// The server (host, process, random part) executing the run, or the one that finished it.
    pub executed_by: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// `/api/v1/provisioning/{id}`.
    pub url: String,
    pub manual_follow_ups: Vec<String>,
    pub steps: Vec<StepView>,
}

impl RunView {
    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }
}

fn ms_between(a: Option<chrono::NaiveDateTime>, b: Option<chrono::NaiveDateTime>) -> Option<i64> {
    Some((b? - a?).num_milliseconds())
}

pub fn run_url(id: &str) -> String {
    format!("/api/v1/provisioning/{id}")
}

fn step_view(step: &StepRow) -> StepView {
    StepView {
        seq: step.seq,
        plugin: step.plugin.clone(),
        step: step.step_id.clone(),
        action: step.action,
        description: step.description.clone(),
        state: step.state,
        attempts: step.attempts,
        output: step
            .output
            .as_deref()
            .map(|o| serde_json::from_str(o).unwrap_or(Value::String(o.to_owned()))),
        manual_follow_up: step.manual_follow_up.clone(),
        error: step.error.clone(),
        next_attempt_at: step.next_attempt_at.map(clock::rfc3339),
        started_at: step.started_at.map(clock::rfc3339),
        finished_at: step.finished_at.map(clock::rfc3339),
        duration_ms: ms_between(step.started_at, step.finished_at),
        log: serde_json::from_str(&step.log).unwrap_or_default(),
    }
}

pub fn run_view(run: &RunRow, steps: &[StepRow]) -> RunView {
    let steps: Vec<StepView> = steps.iter().map(step_view).collect();
    RunView {
        id: run.id.clone(),
        kind: run.kind,
        tenant: run.tenant_slug.clone(),
        status: run.status,
        backends: serde_json::from_str(&run.backends).unwrap_or_default(),
        error: run.error.clone(),
        executions: run.executions,
        executed_by: run.lease_owner.clone(),
        created_by: run.created_by.clone(),
        created_at: clock::rfc3339(run.created_at),
        started_at: run.started_at.map(clock::rfc3339),
        finished_at: run.finished_at.map(clock::rfc3339),
        duration_ms: ms_between(Some(run.created_at), run.finished_at),
        url: run_url(&run.id),
        manual_follow_ups: steps
            .iter()
            .filter_map(|s| {
                s.manual_follow_up
                    .as_ref()
                    .map(|f| format!("{} / {}: {f}", s.plugin, s.step))
            })
            .collect(),
        steps,
    }
}

pub async fn get_run(ctx: &Context, id: &str) -> AppResult<RunView> {
    let mut conn = ctx.db.conn().await?;
    let run = sql::find_run(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::not_found("provisioning run", id))?;
    let steps = sql::steps(&mut conn, id).await?;
    Ok(run_view(&run, &steps))
}

/// Recent runs (newest first), of one tenant when `tenant_slug` is given, of one status when
/// `status` is (a word of [`RunStatus`]; another is a 422 naming it).
pub async fn list_runs(
    ctx: &Context,
    tenant_slug: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> AppResult<Vec<RunView>> {
    let status = status
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<RunStatus>()
                .map_err(|e| AppError::invalid("status", "one_of", e.to_string()))
        })
        .transpose()?;
    let tenant_id = match tenant_slug {
        Some(slug) => Some(tenants::get(ctx, slug).await?.id),
        None => None,
    };
    let mut conn = ctx.db.conn().await?;
    let runs = sql::list_runs(&mut conn, tenant_id.as_deref(), status, limit.clamp(1, 500)).await?;
    let mut views = Vec::with_capacity(runs.len());
    for run in runs {
        let steps = sql::steps(&mut conn, &run.id).await?;
        views.push(run_view(&run, &steps));
    }
    Ok(views)
}

/// The answer to `POST /api/v1/tenant/provision`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Accepted {
    /// The run's id.
    pub run: String,
    /// Where to follow the run.
    pub url: String,
    pub tenant: String,
    pub status: RunStatus,
    /// The planned steps, in order, as `plugin/step`.
    pub steps: Vec<String>,
}

/// What `provision` did.
pub enum Provisioned {
    /// A new run was queued.
    Queued(Accepted),
    /// The idempotency key was used before with the same request and its run has finished: the
    /// first answer, replayed.
    Replayed(Accepted),
}

/// The run snapshot of the tenant handed to plugins.
pub(crate) fn plugin_tenant(
    row_id: &str,
    slug: &str,
    name: &str,
    tier: &str,
    status: &str,
) -> PluginTenant {
    PluginTenant {
        id: row_id.to_owned(),
        slug: slug.to_owned(),
        name: name.to_owned(),
        tier: tier.to_owned(),
        status: status.to_owned(),
    }
}

fn body_fingerprint(body: &Value) -> String {
    let digest = Sha256::new()
        .chain_update(b"tenantry-provision-request\0")
        .chain_update(canonical(body).to_string().as_bytes())
        .finalize();
    hex::encode(digest)
}

/// The document with every object's keys sorted: equal JSON documents, whatever the order of
/// their keys, have one canonical form (maps keep their order otherwise: `backends` runs in the
/// order given).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Checks an idempotency key: 1–255 visible ASCII characters.
fn check_key(key: &str, field: &str) -> AppResult<()> {
    if key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(AppError::invalid(
            field,
            "format",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

/// What an earlier use of `key` means for this request.
async fn earlier_use(
    conn: &mut Conn,
    key: &str,
    fingerprint: &str,
) -> AppResult<Option<Provisioned>> {
    let Some(row) = sql::find_key(conn, key).await? else {
        return Ok(None);
    };
    if row.expires_at < clock::now() {
        return Ok(None);
    }
    if row.fingerprint != fingerprint {
        return Err(AppError::invalid(
            "idempotency_key",
            "reused",
            "was used before with a different request; use a new key for a new request",
        ));
    }
    let run = sql::find_run(conn, &row.run_id).await?;
    if let Some(run) = run
        && run.status.is_open()
    {
        return Err(AppError::conflict(
            "run_in_progress",
            format!(
                "the request with this idempotency key is still being carried out; follow {}",
                run_url(&run.id)
            ),
            json!({ "run": run.id, "url": run_url(&run.id), "status": run.status }),
        ));
    }
    let accepted: Accepted = serde_json::from_str(&row.response).map_err(AppError::internal)?;
    Ok(Some(Provisioned::Replayed(accepted)))
}

/// `POST /api/v1/tenant/provision`. `header_key` is the `Idempotency-Key` header; `body` the
/// request as JSON (for the idempotency fingerprint).
pub async fn provision(
    ctx: &Context,
    actor: &Actor,
    req: ProvisionRequest,
    body: &Value,
    header_key: Option<&str>,
) -> AppResult<Provisioned> {
    let key = match (header_key, req.idempotency_key.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(AppError::invalid(
                "idempotency_key",
                "mismatch",
                "differs from the Idempotency-Key header; send one or make them equal",
            ));
        }
        (Some(h), _) => {
            check_key(h, "Idempotency-Key")?;
            Some(h.to_owned())
        }
        (None, Some(b)) => {
            check_key(b, "idempotency_key")?;
            Some(b.to_owned())
        }
        (None, None) => None,
    };
    let fingerprint = body_fingerprint(body);
    if let Some(key) = &key {
        let mut conn = ctx.db.conn().await?;
        if let Some(earlier) = earlier_use(&mut conn, key, &fingerprint).await? {
            return Ok(earlier);
        }
    }

    let prepared = request::prepare(ctx, &req).await?;
    let run_id = uuid::Uuid::now_v7().to_string();
    let tenant_row = tenants::new_row(
        ctx,
        prepared.tenant.clone(),
        TenantStatus::Provisioning,
        "provisioning",
    )?;
    let ptenant = plugin_tenant(
        &tenant_row.id,
        &tenant_row.slug,
        &tenant_row.name,
        &tenant_row.tier,
        "provisioning",
    );
    // Plan with every backend (pure calls: nothing changes yet).
    let mut steps = Vec::new();
    for plugin in &prepared.backends {
        let plan_request = prepared.plan_request(&run_id, plugin);
        let logged = ctx
            .plugins
            .plan_logged(plugin, &ptenant, plan_request.to_string())
            .await;
        let planned = match logged.result {
            Ok(Ok(planned)) => planned,
            Ok(Err(crate::plugins::PluginError::Permanent(reason)))
            | Ok(Err(crate::plugins::PluginError::Transient(reason))) => {
                return Err(AppError::invalid(
                    format!("backends.{plugin}"),
                    "plan",
                    format!("plugin `{plugin}` cannot plan this tenant: {reason}"),
                ));
            }
            Err(err) => {
                return Err(AppError::Unavailable(format!(
                    "planning with plugin `{plugin}` failed: {err}"
                )));
            }
        };
        let mut seen = BTreeSet::new();
        for step in planned {
            if !seen.insert(step.id.clone()) {
                return Err(AppError::Unavailable(format!(
                    "plugin `{plugin}` planned step `{}` twice",
                    step.id
                )));
            }
            let seq = steps.len() as i64;
            let sealed = ctx
                .keyring
                .seal(&step.input, &step_context(&run_id, plugin, &step.id));
            steps.push(pending_step(
                &run_id,
                seq,
                plugin,
                &step.id,
                StepAction::Apply,
                step.description,
                sealed,
                serde_json::to_string(&logged.log).expect("lines"),
            ));
        }
    }
    let now = clock::now();
    let run = queued_run(
        &run_id,
        RunKind::Provision,
        &ptenant,
        &prepared.backends,
        actor,
        now,
    );
    let accepted = Accepted {
        run: run_id.clone(),
        url: run_url(&run_id),
        tenant: tenant_row.slug.clone(),
        status: RunStatus::Queued,
        steps: steps
            .iter()
            .map(|s| format!("{}/{}", s.plugin, s.step_id))
            .collect(),
    };
    let ttl = chrono::Duration::hours(ctx.config.provisioning.idempotency_ttl_hours.into());
    let outcome = transaction!(ctx.db, |tx| {
        if let Some(key) = &key {
            // The key first: of concurrent identical requests exactly one inserts it.
            if let Some(row) = sql::find_key(tx, key).await?
                && row.expires_at < now
            {
                sql::expire_keys(tx, now).await?;
            }
            let inserted = sql::insert_key(
                tx,
                &IdempotencyRow {
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    run_id: run_id.clone(),
                    response: serde_json::to_string(&accepted).expect("json"),
                    created_at: now,
                    expires_at: now + ttl,
                },
            )
            .await;
            if let Err(err) = inserted {
                return Err(store::unique_violation(err, || {
                    AppError::conflict("idempotency_race", "retry", json!({}))
                }));
            }
        }
        tenants::insert_in(tx, actor, &tenant_row).await?;
        sql::insert_run(tx, &run, &steps).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.provision",
                &tenant_row.id,
                &tenant_row.slug,
                json!({ "run": run_id, "backends": prepared.backends, "steps": steps.len() }),
            ),
        )
        .await?;
        Ok(())
    });
    match outcome {
        Ok(()) => {}
        Err(AppError::Conflict {
            code: "idempotency_race",
            ..
        }) => {
            // Another request with the same key won; answer as a retry of it would be answered.
            let key = key.expect("only with a key");
            let mut conn = ctx.db.conn().await?;
            return match earlier_use(&mut conn, &key, &fingerprint).await? {
                Some(earlier) => Ok(earlier),
                None => Err(AppError::Unavailable("retry the request".into())),
            };
        }
        Err(err) => return Err(err),
    }
    ctx.runs_queued.notify_one();
    Ok(Provisioned::Queued(accepted))
}

/// A step of a new run, `pending`, its input already sealed.
pub(crate) fn pending_step(
    run_id: &str,
    seq: i64,
    plugin: &str,
    step_id: &str,
    action: StepAction,
    description: String,
    sealed_input: String,
    log: String,
) -> StepRow {
    StepRow {
        run_id: run_id.to_owned(),
        seq,
        plugin: plugin.to_owned(),
        step_id: step_id.to_owned(),
        action,
        description,
        input: sealed_input,
        state: StepState::Pending,
        attempts: 0,
        output: None,
        manual_follow_up: None,
        error: None,
        log,
        next_attempt_at: None,
        started_at: None,
        finished_at: None,
    }
}

/// A new run of `kind` for `tenant`, queued.
pub(crate) fn queued_run(
    run_id: &str,
    kind: RunKind,
    tenant: &PluginTenant,
    backends: &[String],
    actor: &Actor,
    now: chrono::NaiveDateTime,
) -> RunRow {
    RunRow {
        id: run_id.to_owned(),
        kind,
        tenant_id: tenant.id.clone(),
        tenant_slug: tenant.slug.clone(),
        tenant: tenant_snapshot(tenant),
        status: RunStatus::Queued,
        backends: serde_json::to_string(backends).expect("names"),
        error: None,
        lease_owner: None,
        lease_expires_at: None,
        executions: 0,
        created_by: actor.name.clone(),
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
    }
}

pub(crate) fn tenant_snapshot(t: &PluginTenant) -> String {
    json!({ "id": t.id, "slug": t.slug, "name": t.name, "tier": t.tier, "status": t.status })
        .to_string()
}

/// The tenant a run was queued for, as its plugins see it; a snapshot without one of its
/// fields is an error (a run never goes on with a made-up tenant).
pub(crate) fn tenant_from_snapshot(json: &str) -> AppResult<PluginTenant> {
    #[derive(serde::Deserialize)]
    struct Snapshot {
        id: String,
        slug: String,
        name: String,
        tier: String,
        status: String,
    }
    let s: Snapshot = serde_json::from_str(json).map_err(|e| {
        AppError::internal(anyhow::anyhow!(
            "a run's tenant snapshot is unreadable: {e}"
        ))
    })?;
    Ok(PluginTenant {
        id: s.id,
        slug: s.slug,
        name: s.name,
        tier: s.tier,
        status: s.status,
    })
}

/// Where a step's sealed input is bound.
pub(crate) fn step_context(run: &str, plugin: &str, step: &str) -> String {
    format!("run/{run}/{plugin}/{step}")
}

/// Where a resource's sealed input is bound.
pub(crate) fn resource_context(tenant_id: &str, plugin: &str, step: &str) -> String {
    format!("resource/{tenant_id}/{plugin}/{step}")
}

/// Backend plugins that are installed, enabled provisioners, in name order.
pub async fn enabled_backends(ctx: &Context) -> AppResult<Vec<String>> {
    Ok(ctx
        .plugins
        .enabled(World::Provisioner)
        .await?
        .into_iter()
        .collect())
}

/// The backends a tenant holds resources in, in the order they were provisioned.
async fn tenant_backends(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for r in sql::resources(conn, tenant_id).await? {
        if !names.contains(&r.plugin) {
            names.push(r.plugin);
        }
    }
    Ok(names)
}

/// The input of a `transition` step: the change and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransitionInput {
    pub change: LifecycleChange,
    pub reason: String,
}

/// The input of a `compensate` step a purge carries: what the undone `apply` was given and
/// what it returned.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CarriedResource {
    pub input: String,
    pub output: String,
}

/// Stores, in the caller's transaction `tx`, the run that carries a lifecycle change of
/// `tenant` into its backends (nothing when it holds nothing in any backend): the change and
/// its run commit together or not at all. `purge` first compensates every resource, newest
/// first. Returns the run's id; the caller wakes the worker (`ctx.runs_queued`) once `tx` has
/// committed.
pub async fn queue_lifecycle_in(
    tx: &mut Conn,
    keyring: &crate::secrets::Keyring,
    actor: &Actor,
    tenant: &Tenant,
    change: LifecycleChange,
    reason: &str,
) -> AppResult<Option<String>> {
    let backends = tenant_backends(tx, &tenant.id).await?;
    if backends.is_empty() {
        return Ok(None);
    }
    let now = clock::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    let ptenant = plugin_tenant(
        &tenant.id,
        &tenant.slug,
        &tenant.name,
        tenant.tier.as_str(),
        if change == LifecycleChange::Purge {
            "purged"
        } else {
            tenant.status.as_str()
        },
    );
    let mut steps = Vec::new();
    let mut push =
        |plugin: &str, step_id: &str, action: StepAction, description: String, input: String| {
            let seq = steps.len() as i64;
            steps.push(pending_step(
                &run_id,
                seq,
                plugin,
                step_id,
                action,
                description,
                input,
                "[]".into(),
            ));
        };
    if change == LifecycleChange::Purge {
        let mut resources = sql::resources(tx, &tenant.id).await?;
        resources.reverse();
        for r in resources {
            let input = keyring
                .open(
                    &r.input,
                    &resource_context(&tenant.id, &r.plugin, &r.step_id),
                )
                .map_err(AppError::internal)?;
            let carried = serde_json::to_string(&CarriedResource {
                input,
                output: r.output,
            })
            .map_err(AppError::internal)?;
            push(
                &r.plugin,
                &r.step_id,
                StepAction::Compensate,
                format!("undo: {}", r.description),
                keyring.seal(&carried, &step_context(&run_id, &r.plugin, &r.step_id)),
            );
        }
    }
    for plugin in &backends {
        let step_id = format!("lifecycle-{change}");
        let input = TransitionInput {
            change,
            reason: reason.to_owned(),
        };
        push(
            plugin,
            &step_id,
            StepAction::Transition,
            format!("{change} the tenant in {plugin}: {reason}"),
            keyring.seal(
                &serde_json::to_string(&input).map_err(AppError::internal)?,
                &step_context(&run_id, plugin, &step_id),
            ),
        );
    }
    let run = queued_run(&run_id, change.into(), &ptenant, &backends, actor, now);
    sql::insert_run(tx, &run, &steps).await?;
    Ok(Some(run_id))
}

/// A difference between what a tenant was provisioned with and what a backend holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DriftItem {
    pub plugin: String,
    pub resource: String,
    pub problem: String,
}

/// What the backends say about a tenant's resources.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DriftReport {
    pub tenant: String,
    pub checked_at: String,
    /// Resources the tenant holds, per plugin and step, with the template that produced them.
    pub resources: Vec<ResourceView>,
    pub drift: Vec<DriftItem>,
    /// Backends that could not be asked, and why.
    pub errors: Vec<DriftItem>,
}

/// A resource a tenant holds in a backend.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResourceView {
    pub plugin: String,
    pub step: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub output: Value,
    pub template: Option<String>,
    pub template_version: Option<i64>,
    pub fingerprint: Option<String>,
    pub run: String,
    pub applied_at: String,
}

fn resource_view(r: &ResourceRow) -> ResourceView {
    ResourceView {
        plugin: r.plugin.clone(),
        step: r.step_id.clone(),
        description: r.description.clone(),
        output: serde_json::from_str(&r.output).unwrap_or(Value::Null),
        template: r.template.clone(),
        template_version: r.template_version,
        fingerprint: r.fingerprint.clone(),
        run: r.run_id.clone(),
        applied_at: clock::rfc3339(r.applied_at),
    }
}

pub async fn resources(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<ResourceView>> {
    let mut conn = ctx.db.conn().await?;
    Ok(sql::resources(&mut conn, &tenant.id)
        .await?
        .iter()
        .map(resource_view)
        .collect())
}

/// Asks every backend the tenant holds resources in for drift (`observe`).
pub async fn drift(ctx: &Context, tenant: &Tenant) -> AppResult<DriftReport> {
    let rows = {
        let mut conn = ctx.db.conn().await?;
        sql::resources(&mut conn, &tenant.id).await?
    };
    let ptenant = plugin_tenant(
        &tenant.id,
        &tenant.slug,
        &tenant.name,
        tenant.tier.as_str(),
        tenant.status.as_str(),
    );
    let mut plugins: Vec<String> = Vec::new();
    for r in &rows {
        if !plugins.contains(&r.plugin) {
            plugins.push(r.plugin.clone());
        }
    }
    let mut drift = Vec::new();
    let mut errors = Vec::new();
    for plugin in plugins {
        let mut applied = Vec::new();
        for r in rows.iter().filter(|r| r.plugin == plugin) {
            let input = ctx
                .keyring
                .open(
                    &r.input,
                    &resource_context(&tenant.id, &r.plugin, &r.step_id),
                )
                .map_err(AppError::internal)?;
            applied.push((
                crate::plugins::Step {
                    id: r.step_id.clone(),
                    description: r.description.clone(),
                    input,
                },
                crate::plugins::Outcome {
                    output: r.output.clone(),
                    manual_follow_up: None,
                },
            ));
        }
        let logged = ctx.plugins.observe(&plugin, &ptenant, applied).await;
        match logged.result {
            Ok(Ok(found)) => drift.extend(found.into_iter().map(|d| DriftItem {
                plugin: plugin.clone(),
                resource: d.resource,
                problem: d.problem,
            })),
            Ok(Err(crate::plugins::PluginError::Transient(m)))
            | Ok(Err(crate::plugins::PluginError::Permanent(m))) => errors.push(DriftItem {
                plugin: plugin.clone(),
                resource: "*".into(),
                problem: m,
            }),
            Err(err) => errors.push(DriftItem {
                plugin: plugin.clone(),
                resource: "*".into(),
                problem: err.to_string(),
            }),
        }
    }
    Ok(DriftReport {
        tenant: tenant.slug.clone(),
        checked_at: clock::rfc3339(clock::now()),
        resources: rows.iter().map(resource_view).collect(),
        drift,
        errors,
    })
}

/// Where in a step's input JSON the rendered template that produced it is named: the first object
/// (depth first) with `template`, `version` and `fingerprint`.
pub(crate) fn template_origin(input: &Value) -> Option<(String, Option<i64>, String)> {
    match input {
        Value::Object(map) => {
            if let (Some(Value::String(fp)), Some(t)) =
                (map.get("fingerprint"), map.get("template"))
                && let Some(t) = t.as_str()
            {
                return Some((
                    t.to_owned(),
                    map.get("version").and_then(Value::as_i64),
                    fp.clone(),
                ));
            }
            map.values().find_map(template_origin)
        }
        Value::Array(items) => items.iter().find_map(template_origin),
        _ => None,
    }
}
