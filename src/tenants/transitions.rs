//! A tenant's status: the lifecycle's transitions (with their history entry and audit record,
//! in the caller's transaction), the end of provisioning, purge, and the status history.

use super::input::{self};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::models::{StatusChangeRow, TenantRow};
use crate::store::{self, Conn};
use serde_json::json;

use super::{ADMIN_SLUG, StatusChange, Tenant, TenantStatus, Transition, find_in, save};

/// Ends a tenant's provisioning: `trial` (while its trial runs) or `active` when `ok`, else
/// `failed` with `reason`. Does nothing when the tenant is no longer `provisioning` (an operator
/// changed it meanwhile) or is gone.
pub(crate) async fn finish_provisioning(
    tx: &mut Conn,
    actor: &Actor,
    slug: &str,
    ok: bool,
    reason: &str,
) -> AppResult<()> {
    let Some(mut row) = store::tenants::find_by_slug(tx, slug).await? else {
        return Ok(());
    };
    let from = row.status;
    if from != TenantStatus::Provisioning {
        return Ok(());
    }
    let now = clock::now();
    let to = match (ok, row.trial_ends_at) {
        (false, _) => TenantStatus::Failed,
        (true, Some(_)) => TenantStatus::Trial,
        (true, None) => TenantStatus::Active,
    };
    if let Some(end) = row.trial_ends_at
        && ok
    {
        // The trial starts when the tenant is ready, not when it was asked for.
        let started = row.status_changed_at;
        row.trial_ends_at = Some(now + (end - started));
    }
    change_status(tx, &mut row, from, to, reason, actor, now).await?;
    audit::record(
        tx,
        actor,
        AuditEvent::tenant(
            if ok {
                "tenant.provisioned"
            } else {
                "tenant.provisioning_failed"
            },
            &row.id,
            &row.slug,
            json!({ "from": from, "to": to, "reason": reason }),
        ),
    )
    .await?;
    Ok(())
}

/// Takes a `failed` tenant back to `provisioning` for another provision run, in `tx`: the run
/// that ends it decides again (`finish_provisioning`). Refused for any other status.
pub(crate) async fn retry_provisioning(tx: &mut Conn, actor: &Actor, slug: &str) -> AppResult<()> {
    let mut row = store::tenants::find_by_slug(tx, slug)
        .await?
        .ok_or_else(|| AppError::not_found("tenant", slug))?;
    let from = row.status;
    if from != TenantStatus::Failed {
        return Err(AppError::conflict(
            "illegal_transition",
            format!("cannot retry the provisioning of tenant `{slug}`: it is {from}, not failed"),
            json!({ "current_status": from }),
        ));
    }
    let now = clock::now();
    change_status(
        tx,
        &mut row,
        from,
        TenantStatus::Provisioning,
        "provisioning retried",
        actor,
        now,
    )
    .await
}

/// The tenant's status history, newest first.
pub async fn history(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<StatusChange>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::tenants::status_history(&mut conn, &tenant.id).await?;
    Ok(rows
        .into_iter()
        .map(|row| StatusChange {
            from: row.from_status,
            to: row.to_status,
            reason: row.reason,
            actor: row.actor,
            at: clock::to_utc(row.at),
        })
        .collect())
}

/// Runs a lifecycle action (suspend, reactivate, cancel, delete, restore) on tenant `slug` in
/// `tx`: the new status, its history entry and its audit record. `reason` is checked with
/// [`check_reason`]. The row as saved.
pub async fn transition_in(
    tx: &mut Conn,
    actor: &Actor,
    slug: &str,
    transition: Transition,
    reason: &str,
) -> AppResult<TenantRow> {
    let row = find_in(tx, slug).await?;
    apply_transition(tx, actor, row, transition, reason).await
}

/// The reason of a lifecycle action: at most 500 characters.
pub fn check_reason(reason: &str) -> AppResult<String> {
    input::check_text("reason", reason, 500).map_err(|e| AppError::Validation(vec![e]))
}

pub(super) fn illegal(row: &TenantRow, transition: Transition) -> AppError {
    let allowed: Vec<&str> = transition
        .allowed_from()
        .iter()
        .map(|s| s.as_str())
        .collect();
    AppError::conflict(
        "illegal_transition",
        format!(
            "cannot {transition} tenant `{}`: it is {} (allowed from: {})",
            row.slug,
            row.status,
            allowed.join(", ")
        ),
        json!({ "current_status": row.status, "action": transition.as_str(), "allowed_from": allowed }),
    )
}

pub(super) async fn apply_transition(
    tx: &mut Conn,
    actor: &Actor,
    mut row: TenantRow,
    transition: Transition,
    reason: &str,
) -> AppResult<TenantRow> {
    if row.slug == ADMIN_SLUG
        && transition != Transition::Reactivate
        && transition != Transition::Restore
    {
        return Err(AppError::conflict(
            "platform_tenant",
            format!(
                "the platform's own tenant `{ADMIN_SLUG}` cannot be {}ed",
                transition.as_str().trim_end_matches('e')
            ),
            json!({ "current_status": row.status }),
        ));
    }
    let from = row.status;
    let now = clock::now();
    let in_trial = row.trial_ends_at.is_some_and(|end| end > now);
    let to = transition
        .target(from, in_trial)
        .ok_or_else(|| illegal(&row, transition))?;
    if transition == Transition::Convert {
        // The trial ends now: a later suspension and reactivation finds the tenant active.
        row.trial_ends_at = row.trial_ends_at.map(|end| end.min(now));
    }
    change_status(tx, &mut row, from, to, reason, actor, now).await?;
    audit::record(
        tx,
        actor,
        AuditEvent::tenant(
            transition.audit_action(),
            &row.id,
            &row.slug,
            json!({ "from": from, "to": to, "reason": reason }),
        ),
    )
    .await?;
    Ok(row)
}

/// Removes a canceled, deleted or failed tenant for good, once its retention period has passed
/// (or at once with `force`). The audit log keeps the record of it.
/// Runs in `tx` and returns the row as it was; `reason` is checked with [`check_reason`].
pub async fn purge_in(
    tx: &mut Conn,
    actor: &Actor,
    slug: &str,
    force: bool,
    reason: &str,
    retention_days: u32,
) -> AppResult<TenantRow> {
    {
        let row = find_in(tx, slug).await?;
        if row.slug == ADMIN_SLUG {
            return Err(AppError::conflict(
                "platform_tenant",
                format!("the platform's own tenant `{ADMIN_SLUG}` cannot be purged"),
                json!({ "current_status": row.status }),
            ));
        }
        let status = row.status;
        if !status.is_purgeable() {
            return Err(AppError::conflict(
                "illegal_transition",
                format!(
                    "cannot purge tenant `{slug}`: it is {status}; cancel or delete it first (purge is allowed from canceled, deleted, failed)"
                ),
                json!({ "current_status": status, "action": "purge", "allowed_from": ["canceled", "deleted", "failed"] }),
            ));
        }
        let retention_ends = row.status_changed_at + chrono::Duration::days(retention_days.into());
        let now = clock::now();
        if !force && status != TenantStatus::Failed && now < retention_ends {
            return Err(AppError::conflict(
                "retention_period",
                format!(
                    "tenant `{slug}` is in its retention period until {}; purge it then, or force it (API: force=true, CLI: --force)",
                    clock::rfc3339(retention_ends)
                ),
                json!({ "current_status": status, "retention_ends_at": clock::rfc3339(retention_ends) }),
            ));
        }
        store::tenants::delete(tx, &row.id).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.purge",
                &row.id,
                &row.slug,
                json!({ "from": status, "reason": reason, "forced": force && now < retention_ends }),
            ),
        )
        .await?;
        Ok(row)
    }
}

/// Moves `row` from `from` to `to` at `now`: saves it (a new version) and its history entry.
async fn change_status(
    tx: &mut Conn,
    row: &mut TenantRow,
    from: TenantStatus,
    to: TenantStatus,
    reason: &str,
    actor: &Actor,
    now: chrono::NaiveDateTime,
) -> AppResult<()> {
    row.status = to;
    row.status_reason = Some(reason.to_owned());
    row.status_changed_at = now;
    row.updated_at = now;
    row.version += 1;
    save(tx, row).await?;
    record_status(tx, row, Some(from), to, reason, actor).await
}

pub(super) async fn record_status(
    tx: &mut Conn,
    row: &TenantRow,
    from: Option<TenantStatus>,
    to: TenantStatus,
    reason: &str,
    actor: &Actor,
) -> AppResult<()> {
    store::tenants::insert_status_change(
        tx,
        &StatusChangeRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: row.id.clone(),
            from_status: from,
            to_status: to,
            reason: reason.to_owned(),
            actor: actor.name.clone(),
            at: row.status_changed_at,
        },
    )
    .await
}
