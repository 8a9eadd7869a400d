//! The way forward from `failed`: a provision run again, from the tenant's recorded request
//! (planned today, with each template's newest version), whose success makes the tenant what it
//! was asked to be (`active`, or `trial` while its trial runs) and whose failure compensates and
//! leaves it `failed`, as the first run did.

use serde_json::json;

use super::{
    Accepted, RunKind, RunStatus, StepAction, desired, pending_step, plugin_tenant, queued_run,
    refuse_open_run, run_url, step_context, validate_steps,
};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::provisioning as sql;
use crate::tenants::{self, Tenant, TenantStatus};
use crate::transaction;

/// Queues the provision of `failed` tenant `tenant` again; the run, as a provision answers it.
pub async fn retry(ctx: &Context, actor: &Actor, tenant: &Tenant) -> AppResult<Accepted> {
    if tenant.status != TenantStatus::Failed {
        return Err(AppError::conflict(
            "illegal_transition",
            format!(
                "cannot retry the provisioning of tenant `{}`: it is {}, not failed",
                tenant.slug, tenant.status
            ),
            json!({ "current_status": tenant.status }),
        ));
    }
    let planned = desired::current_steps(ctx, tenant).await?;
    let run_id = uuid::Uuid::now_v7().to_string();
    let mut backends: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for (plugin, step) in &planned {
        if !backends.contains(plugin) {
            backends.push(plugin.clone());
        }
        let sealed = ctx
            .keyring
            .seal(&step.input, &step_context(&run_id, plugin, &step.id));
        steps.push(pending_step(
            &run_id,
            steps.len() as i64,
            plugin,
            &step.id,
            StepAction::Apply,
            step.description.clone(),
            sealed,
            "[]".into(),
        ));
    }
    // As a first provision does: each backend is asked at the end whether it holds it all.
    let first = steps.len() as i64;
    steps.extend(validate_steps(&ctx.keyring, &run_id, &backends, first));
    let mut ptenant = plugin_tenant(tenant);
    ptenant.status = TenantStatus::Provisioning.to_string();
    let run = queued_run(
        &run_id,
        RunKind::Provision,
        &ptenant,
        &backends,
        actor,
        clock::now(),
    );
    let accepted = Accepted {
        run: run_id.clone(),
        url: run_url(&run_id),
        tenant: tenant.slug.clone(),
        status: RunStatus::Queued,
        steps: steps
            .iter()
            .map(|s| format!("{}/{}", s.plugin, s.step_id))
            .collect(),
    };
    transaction!(ctx.db, |tx| {
        refuse_open_run(tx, tenant).await?;
        tenants::retry_provisioning(tx, actor, &tenant.slug).await?;
        sql::insert_run(tx, &run, &steps).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.provision_retry",
                &tenant.id,
                &tenant.slug,
                json!({ "run": run_id, "backends": backends, "steps": steps.len() }),
            ),
        )
        .await?;
        Ok(())
    })?;
    ctx.runs_queued.notify_one();
    Ok(accepted)
}
