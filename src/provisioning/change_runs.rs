//! The runs that carry a tenant's lifecycle changes (suspend, reactivate, cancel, purge) and
//! its tier changes into the backends it holds resources in, stored in the caller's
//! transaction.

use crate::audit::Actor;
use crate::clock;
use crate::error::{AppError, AppResult};
use crate::plugin_host::PluginTenant;
use crate::store::{Conn, provisioning as sql};
use crate::tenants::Tenant;

use super::{
    LifecycleChange, StepAction, pending_step, plugin_tenant, queued_run, resource_context,
    step_context,
};

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
    let mut ptenant = plugin_tenant(tenant);
    if change == LifecycleChange::Purge {
        ptenant.status = PluginTenant::PURGED.to_owned();
    }
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

/// Queues, in `tx`, the run that carries `tenant`'s new tier into its backends: every resource
/// it holds applied again, in plan order, with the inputs it was applied with, for the tenant
/// as it now is — a plugin derives what depends on the tier (a connection limit, pool slots)
/// from the tenant it is given, and `apply` of an existing resource converges it. None when the
/// tenant holds nothing. Queued behind any run of the tenant still open (a tenant's runs go one
/// at a time, in order).
pub async fn queue_tier_change_in(
    tx: &mut Conn,
    keyring: &crate::secrets::Keyring,
    actor: &Actor,
    tenant: &Tenant,
) -> AppResult<Option<String>> {
    let mut resources = sql::resources(tx, &tenant.id).await?;
    if resources.is_empty() {
        return Ok(None);
    }
    resources.sort_by_key(|r| r.seq);
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut backends: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for r in resources {
        if !backends.contains(&r.plugin) {
            backends.push(r.plugin.clone());
        }
        let input = keyring
            .open(
                &r.input,
                &resource_context(&tenant.id, &r.plugin, &r.step_id),
            )
            .map_err(AppError::internal)?;
        steps.push(pending_step(
            &run_id,
            steps.len() as i64,
            &r.plugin,
            &r.step_id,
            StepAction::Apply,
            format!("{} (tier {})", r.description, tenant.tier),
            keyring.seal(&input, &step_context(&run_id, &r.plugin, &r.step_id)),
            "[]".into(),
        ));
    }
    let run = queued_run(
        &run_id,
        super::RunKind::Apply,
        &plugin_tenant(tenant),
        &backends,
        actor,
        clock::now(),
    );
    sql::insert_run(tx, &run, &steps).await?;
    Ok(Some(run_id))
}
