//! A tenant's lifecycle across the registry and its backends: suspend, reactivate, cancel,
//! delete, restore and purge, from the API, the portal, the CLI and declarative specs.
//!
//! Each change is stored with everything that follows from it in **one transaction**: the new
//! status, its history entry, its audit record and the provisioning run that carries the change
//! into every backend the tenant holds resources in (an outbox). The worker of any server then
//! carries the run out. A crash at any point leaves either nothing or the change together with
//! its run, so a tenant suspended in the registry is always on its way to being suspended in its
//! Superset, Airflow and CRM too — suspension is a security control.

use crate::audit::Actor;
use crate::context::Context;
use crate::error::AppResult;
use crate::provisioning::{self, LifecycleChange};
use crate::store::Conn;
use crate::tenants::{self, ADMIN_SLUG, Tenant, TenantPatch, TenantStatus, Transition};
use crate::transaction;

/// The change a registry transition makes in the backends.
pub fn backend_change(transition: Transition) -> LifecycleChange {
    match transition {
        Transition::Suspend => LifecycleChange::Suspend,
        // A converted trial keeps what it had; its backends are told it is live.
        Transition::Reactivate | Transition::Restore | Transition::Convert => {
            LifecycleChange::Reactivate
        }
        Transition::Cancel | Transition::Delete => LifecycleChange::Cancel,
    }
}

/// Runs a lifecycle action on tenant `slug` with its reason.
pub async fn transition(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    transition: Transition,
    reason: &str,
) -> AppResult<Tenant> {
    let reason = tenants::check_reason(reason)?;
    let tenant = transaction!(ctx.db, |tx| {
        let row = tenants::transition_in(tx, actor, slug, transition, &reason).await?;
        let tenant = Tenant::from_row(&row, ctx.config.retention_days)?;
        queue(ctx, tx, actor, &tenant, backend_change(transition), &reason).await?;
        Ok(tenant)
    })?;
    committed(ctx).await;
    Ok(tenant)
}

/// Applies a PATCH of a tenant (fields, OAuth settings and `is_active`): a suspension or
/// reactivation it makes is carried into the backends, in the same transaction.
pub async fn patch_tenant(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    patch: &TenantPatch,
) -> AppResult<Tenant> {
    tenants::refuse_configured_fields(slug, patch)?;
    let checked = tenants::check_patch(patch, slug == ADMIN_SLUG)?;
    let (tenant, changed) = transaction!(ctx.db, |tx| {
        let before = crate::store::tenants::find_by_slug(tx, slug)
            .await?
            .map(|row| row.tier);
        let (row, applied) = tenants::apply_patch(tx, &ctx.keyring, actor, slug, checked).await?;
        let tenant = Tenant::from_row(&row, ctx.config.retention_days)?;
        if let Some((transition, reason)) = &applied {
            queue(ctx, tx, actor, &tenant, backend_change(*transition), reason).await?;
        }
        // A new tier reaches the backends too: what depends on it (a connection limit, pool
        // slots) is applied again, in the same transaction as the change.
        let tier_run = if before != Some(row.tier)
            && matches!(
                tenant.status,
                TenantStatus::Trial | TenantStatus::Active | TenantStatus::Suspended
            ) {
            provisioning::queue_tier_change_in(tx, &ctx.keyring, actor, &tenant).await?
        } else {
            None
        };
        Ok((tenant, applied.is_some() || tier_run.is_some()))
    })?;
    if changed {
        committed(ctx).await;
    }
    Ok(tenant)
}

/// Removes a canceled, deleted or failed tenant for good, once its retention period has passed
/// (or at once with `force`), and undoes everything it was provisioned with in every backend.
/// The audit log keeps the record of it.
/// Purges a tenant: its registry row goes at once, and a `purge` run (its id, when the tenant
/// held resources in backends) undoes what it holds in each.
pub async fn purge(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    force: bool,
    reason: &str,
) -> AppResult<Option<String>> {
    let reason = tenants::check_reason(reason)?;
    let retention_days = ctx.config.retention_days;
    let run = transaction!(ctx.db, |tx| {
        let row = tenants::purge_in(tx, actor, slug, force, &reason, retention_days).await?;
        // The tenant's resources outlive its row: the run reads them to undo each.
        let tenant = Tenant::from_row(&row, retention_days)?;
        queue(ctx, tx, actor, &tenant, LifecycleChange::Purge, &reason).await
    })?;
    committed(ctx).await;
    Ok(run)
}

async fn queue(
    ctx: &Context,
    tx: &mut Conn,
    actor: &Actor,
    tenant: &Tenant,
    change: LifecycleChange,
    reason: &str,
) -> AppResult<Option<String>> {
    provisioning::queue_lifecycle_in(tx, &ctx.keyring, actor, tenant, change, reason).await
}

/// After a change committed: wakes this server's worker for its run (any server's worker would
/// find it at its next poll anyway). Tests can stop the server here.
async fn committed(ctx: &Context) {
    if let Some(fault @ crate::config::Fault::AfterLifecycleCommit) =
        &ctx.config.provisioning.fault_injection
    {
        fault.pause(&ctx.config.data_dir, "lifecycle").await;
    }
    ctx.runs_queued.notify_one();
}
