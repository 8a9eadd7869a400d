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

mod desired;
pub use desired::{has_provisioned_connection, provisioned_connection, request_context};
mod backend_health;
mod change_runs;
mod drift;
pub mod request;
mod retry;
pub mod saga;
pub mod spec;
pub mod templates;
mod views;

pub use backend_health::{
    BackendHealth, BackendState, ReconcilePlan, RepairStep, RepairTemplate, TemplateVersions,
    backend_health, reconcile, reconcile_plan,
};
pub(crate) use change_runs::{CarriedResource, TransitionInput};
pub use change_runs::{queue_lifecycle_in, queue_tier_change_in};
pub use drift::{DriftItem, DriftReport, applied_steps, drift};
use views::held_resources;
pub use views::{
    ResourceView, RunView, StepView, get_run, list_runs, resources, run_url, run_view,
};

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{PluginTenant, World};
use crate::store::models::{IdempotencyRow, RunRow, StepRow, TenantRow};
pub use crate::store::vocabulary::{
    LifecycleChange, RunKind, RunStatus, StepAction, StepState, UnknownValue,
};
use crate::store::{self, Conn, provisioning as sql};
use crate::tenants::{self, Tenant, TenantStatus, Tier};
use crate::transaction;
pub use request::ProvisionRequest;
pub use retry::retry;

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
    /// first answer, replayed, with the run's status now.
    Replayed(Accepted),
}

/// The tenant as plugins see it (a snapshot taken when a call or a run begins).
pub fn plugin_tenant(tenant: &Tenant) -> PluginTenant {
    PluginTenant {
        id: tenant.id.clone(),
        slug: tenant.slug.clone(),
        name: tenant.name.clone(),
        tier: tenant.tier,
        status: tenant.status.to_string(),
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
    if let Some(run) = &run
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
    let mut accepted: Accepted = serde_json::from_str(&row.response).map_err(AppError::internal)?;
    // The first answer, with the run as it stands now (it said `queued`).
    if let Some(run) = run {
        accepted.status = run.status;
    }
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
    let key = idempotency_key(header_key, req.idempotency_key.as_deref())?;
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
    let ptenant = PluginTenant::of_row(&tenant_row);
    let mut steps = plan_with_backends(ctx, &prepared, &run_id, &ptenant).await?;
    // The run ends by asking each backend whether it holds what the run created.
    let planned: Vec<String> = prepared
        .backends
        .iter()
        .filter(|plugin| steps.iter().any(|s| &s.plugin == *plugin))
        .cloned()
        .collect();
    let first = steps.len() as i64;
    steps.extend(validate_steps(&ctx.keyring, &run_id, &planned, first));
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
    let stored = StoredRun {
        key: key.as_deref(),
        fingerprint: &fingerprint,
        accepted: &accepted,
        tenant: &tenant_row,
        run: &run,
        steps: &steps,
        database_key: prepared.database_key.as_deref(),
        backends: &prepared.backends,
    };
    let outcome = store_run(ctx, actor, &req, &stored, now).await;
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

/// The idempotency key of a request: the `Idempotency-Key` header's or the body's (equal when
/// both are given).
fn idempotency_key(header: Option<&str>, body: Option<&str>) -> AppResult<Option<String>> {
    Ok(match (header, body) {
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
    })
}

/// The `apply` steps of a new tenant's run: every backend's plan (pure calls: nothing changes
/// yet), each step's input sealed.
async fn plan_with_backends(
    ctx: &Context,
    prepared: &request::Prepared,
    run_id: &str,
    ptenant: &PluginTenant,
) -> AppResult<Vec<StepRow>> {
    let mut steps = Vec::new();
    for plugin in &prepared.backends {
        let plan_request = prepared.plan_request(run_id, plugin);
        let logged = ctx
            .plugins
            .plan_logged(plugin, ptenant, plan_request.to_string())
            .await;
        let planned = match logged.result {
            Ok(Ok(planned)) => planned,
            Ok(Err(crate::plugin_host::PluginError::Permanent(reason)))
            | Ok(Err(crate::plugin_host::PluginError::Transient(reason))) => {
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
                .seal(&step.input, &step_context(run_id, plugin, &step.id));
            steps.push(pending_step(
                run_id,
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
    Ok(steps)
}

/// What a provision request stores in one transaction.
struct StoredRun<'a> {
    key: Option<&'a str>,
    fingerprint: &'a str,
    accepted: &'a Accepted,
    tenant: &'a TenantRow,
    run: &'a RunRow,
    steps: &'a [StepRow],
    database_key: Option<&'a str>,
    backends: &'a [String],
}

/// Stores the new tenant with its run, its desired state, its idempotency key (of concurrent
/// identical requests exactly one inserts it: the others get `idempotency_race`) and the audit
/// record, in one transaction.
async fn store_run(
    ctx: &Context,
    actor: &Actor,
    req: &ProvisionRequest,
    run: &StoredRun<'_>,
    now: chrono::NaiveDateTime,
) -> AppResult<()> {
    let ttl = chrono::Duration::hours(ctx.config.provisioning.idempotency_ttl_hours.into());
    transaction!(ctx.db, |tx| {
        if let Some(key) = run.key {
            // The key first: of concurrent identical requests exactly one inserts it.
            if let Some(row) = sql::find_key(tx, key).await?
                && row.expires_at < now
            {
                sql::expire_keys(tx, now).await?;
            }
            let inserted = sql::insert_key(
                tx,
                &IdempotencyRow {
                    key: key.to_owned(),
                    fingerprint: run.fingerprint.to_owned(),
                    run_id: run.run.id.clone(),
                    response: serde_json::to_string(run.accepted).expect("json"),
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
        tenants::insert_in(tx, actor, run.tenant).await?;
        desired::record_in(tx, &ctx.keyring, &run.tenant.id, req, run.database_key).await?;
        sql::insert_run(tx, run.run, run.steps).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.provision",
                &run.tenant.id,
                &run.tenant.slug,
                json!({ "run": run.run.id, "backends": run.backends, "steps": run.steps.len() }),
            ),
        )
        .await?;
        Ok(())
    })
}

/// The id of the step that ends a provision run in each backend: its `observe`.
pub const VALIDATE_STEP: &str = "validate";

/// The `validate` steps that end a provision run, one per backend in `backends`, numbered from
/// `first_seq`.
pub(crate) fn validate_steps(
    keyring: &crate::secrets::Keyring,
    run_id: &str,
    backends: &[String],
    first_seq: i64,
) -> Vec<StepRow> {
    backends
        .iter()
        .enumerate()
        .map(|(i, plugin)| {
            pending_step(
                run_id,
                first_seq + i as i64,
                plugin,
                VALIDATE_STEP,
                StepAction::Validate,
                format!("check that {plugin} holds what this run created"),
                keyring.seal("{}", &step_context(run_id, plugin, VALIDATE_STEP)),
                "[]".into(),
            )
        })
        .collect()
}

/// Refuses a new run of `tenant` while one of its runs is open.
pub(crate) async fn refuse_open_run(tx: &mut crate::store::Conn, tenant: &Tenant) -> AppResult<()> {
    match sql::open_run_of(tx, &tenant.id).await? {
        Some(open) => Err(AppError::conflict(
            "run_in_progress",
            format!(
                "tenant `{}` has a run in progress; follow {}",
                tenant.slug,
                run_url(&open.id)
            ),
            json!({ "run": open.id, "url": run_url(&open.id) }),
        )),
        None => Ok(()),
    }
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
        tier: Tier,
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
pub fn resource_context(tenant_id: &str, plugin: &str, step: &str) -> String {
    format!("resource/{tenant_id}/{plugin}/{step}")
}

/// Backend plugins that are installed, enabled provisioners, in name order.
/// Unfinished runs by status (the queue, for `/metrics`).
pub async fn open_run_counts(ctx: &Context) -> AppResult<Vec<(String, i64)>> {
    let mut conn = ctx.db.conn().await?;
    sql::count_by_status(&mut conn).await
}

/// Every ended run counted so far, whichever process ran it: (kind, outcome, runs, seconds).
pub async fn run_totals(ctx: &Context) -> AppResult<Vec<(String, String, i64, f64)>> {
    let mut conn = ctx.db.conn().await?;
    sql::run_totals(&mut conn).await
}

pub async fn enabled_backends(ctx: &Context) -> AppResult<Vec<String>> {
    Ok(ctx
        .plugins
        .enabled(World::Provisioner)
        .await?
        .into_iter()
        .collect())
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
