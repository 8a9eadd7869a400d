//! Export and import of one tenant as a self-contained bundle: its registry record (secrets stay
//! sealed, as stored) and its status history. A bundle restores the tenant on the same platform, or
//! on another one that has loaded the master key named in the bundle — including after a purge.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{Tenant, TenantSlug, secret_context};
use crate::audit::{self, Actor, AuditEvent};
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store::models::{StatusChangeRow, TenantRow};
use crate::{store, transaction};

pub const BUNDLE_FORMAT: &str = "tenantry.tenant-bundle/v1";

/// What an import of such a bundle leaves undone, said wherever one is imported.
pub const RECORD_ONLY: &str = "a JSON bundle carries the tenant's registry record and status history only: nothing was restored in its backends (a tar bundle carries them); provision them again with `tenantry apply -f SPEC`, or import the tenant's tar bundle instead";

/// One tenant, as exported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantBundle {
    /// Always `tenantry.tenant-bundle/v1`.
    pub format: String,
    pub exported_at: DateTime<Utc>,
    /// The registry record; secret columns hold sealed values (`tsk1:<key id>:…`).
    #[schema(value_type = Object)]
    pub tenant: TenantRow,
    #[schema(value_type = Vec<Object>)]
    pub status_history: Vec<StatusChangeRow>,
}

/// Builds the bundle of a tenant; the export itself is audited (it carries sealed secrets).
pub async fn export(ctx: &Context, actor: &Actor, slug: &str) -> AppResult<TenantBundle> {
    transaction!(ctx.db, |tx| {
        let tenant = store::tenants::find_by_slug(tx, slug)
            .await?
            .ok_or_else(|| AppError::not_found("tenant", slug))?;
        let mut status_history = store::tenants::status_history(tx, &tenant.id).await?;
        status_history.reverse();
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.export",
                &tenant.id,
                &tenant.slug,
                json!({ "history": status_history.len() }),
            ),
        )
        .await?;
        Ok(TenantBundle {
            format: BUNDLE_FORMAT.into(),
            exported_at: Utc::now(),
            tenant,
            status_history,
        })
    })
}

/// Writes a restored tenant's record and status history in `tx`; a slug or id in use is a 409.
pub(crate) async fn insert_restored(
    tx: &mut crate::store::Conn,
    row: &TenantRow,
    history: &[StatusChangeRow],
) -> AppResult<()> {
    store::tenants::insert(tx, row).await.map_err(|err| {
        store::unique_violation(err, || {
            AppError::conflict(
                "slug_taken",
                format!(
                    "a tenant with slug `{}` or id `{}` already exists",
                    row.slug, row.id
                ),
                json!({ "field": "slug", "slug": row.slug }),
            )
        })
    })?;
    for change in history {
        store::tenants::insert_status_change(tx, change).await?;
    }
    Ok(())
}

/// The sealed secrets of `row` this server cannot open, each named `<prefix><column>`, the
/// message ending with `hint`.
pub(crate) fn unopenable_secrets(
    ctx: &Context,
    row: &TenantRow,
    prefix: &str,
    hint: &str,
) -> Vec<FieldError> {
    [
        ("client_secret", &row.client_secret, "client_secret"),
        (
            "client_secret_previous",
            &row.client_secret_previous,
            "client_secret",
        ),
        ("db_uri", &row.db_uri, "db_uri"),
    ]
    .into_iter()
    .filter_map(|(column, sealed, place)| {
        let sealed = sealed.as_ref()?;
        ctx.keyring
            .open(sealed, &secret_context(&row.id, place))
            .is_err()
            .then(|| {
                let kid = sealed.split(':').nth(1).unwrap_or("?");
                FieldError::new(
                    format!("{prefix}{column}"),
                    "sealed_key",
                    format!(
                        "is sealed with master key {kid}, which this server has not loaded ({hint})"
                    ),
                )
            })
    })
    .collect()
}

/// Recreates a tenant from its bundle, with its id, status and history.
pub async fn import(ctx: &Context, actor: &Actor, bundle: &TenantBundle) -> AppResult<Tenant> {
    let mut errors = Vec::new();
    if bundle.format != BUNDLE_FORMAT {
        errors.push(FieldError::new(
            "format",
            "one_of",
            format!("must be `{BUNDLE_FORMAT}`"),
        ));
    }
    let row = &bundle.tenant;
    if let Err(mut e) = TenantSlug::parse(&row.slug, true) {
        e.field = "tenant.slug".into();
        errors.push(e);
    }
    if uuid::Uuid::parse_str(&row.id).is_err() {
        errors.push(FieldError::new("tenant.id", "uuid", "must be a UUID"));
    }
    errors.extend(unopenable_secrets(
        ctx,
        row,
        "tenant.",
        "or the value was altered",
    ));
    if bundle.status_history.iter().any(|h| h.tenant_id != row.id) {
        errors.push(FieldError::new(
            "status_history",
            "tenant_id",
            "belongs to another tenant",
        ));
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    transaction!(ctx.db, |tx| {
        insert_restored(tx, row, &bundle.status_history).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.import",
                &row.id,
                &row.slug,
                json!({ "status": row.status, "exported_at": bundle.exported_at, "history": bundle.status_history.len() }),
            ),
        )
        .await?;
        Ok(())
    })?;
    Tenant::from_row(row, ctx.config.retention_days)
}

/// Takes back an import that was not whole: the tenant's row, and with it everything the import
/// wrote in the registry, is removed (its backends are the caller's to undo), audited as
/// `tenant.import.rollback` with `reason`. Runs in `tx`.
pub(crate) async fn withdraw_import_in(
    tx: &mut store::Conn,
    actor: &Actor,
    slug: &str,
    reason: &str,
) -> AppResult<TenantRow> {
    let row = store::tenants::find_by_slug(tx, slug)
        .await?
        .ok_or_else(|| AppError::not_found("tenant", slug))?;
    store::tenants::delete(tx, &row.id).await?;
    audit::record(
        tx,
        actor,
        AuditEvent::tenant(
            "tenant.import.rollback",
            &row.id,
            &row.slug,
            json!({ "reason": reason }),
        ),
    )
    .await?;
    Ok(row)
}
