//! The tenant registry and its lifecycle. Business rules live here; SQL lives in
//! [`crate::store::tenants`]; HTTP lives in `api/` and `web/`.

pub mod input;
pub mod model;
mod patch;
mod platform;
pub mod record;
mod transitions;

pub use patch::{
    CheckedPatch, apply_patch, check_patch, patch_fields, refuse_configured_fields,
    rollback_client_secret,
};
pub use platform::ensure_admin_tenant;
use transitions::record_status;
pub use transitions::{check_reason, history, purge_in, transition_in};
pub(crate) use transitions::{finish_provisioning, retry_provisioning};

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

pub use input::{NewTenant, TenantPatch};
pub use model::{
    ADMIN_SLUG, StatusChange, Tenant, TenantScope, TenantSlug, TenantStatus, Tier, Transition,
    is_tenant_id,
};

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::secrets::fingerprint;
use crate::store::models::TenantRow;
use crate::store::tenants::TenantFilter;
use crate::store::{self, Conn};
use crate::transaction;
use input::Checks;

/// Where a tenant's sealed fields are bound (associated data of the seal).
pub fn secret_context(tenant_id: &str, field: &str) -> String {
    format!("tenant/{tenant_id}/{field}")
}

/// Listing parameters.
#[derive(Debug, Default, Clone)]
pub struct TenantQuery {
    pub status: Option<String>,
    pub tier: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// One page of tenants; pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub items: Vec<Tenant>,
    pub next_cursor: Option<String>,
}

/// Creates a tenant: `trial` when it has trial days, else `active`.
pub async fn create(ctx: &Context, actor: &Actor, input: &NewTenant) -> AppResult<Tenant> {
    let valid = input.validate(true)?;
    let row = insert_valid(ctx, actor, valid, "created").await?;
    Tenant::from_row(&row, ctx.config.retention_days)
}

pub(super) async fn insert_valid(
    ctx: &Context,
    actor: &Actor,
    valid: input::ValidTenant,
    reason: &str,
) -> AppResult<TenantRow> {
    let status = if valid.trial_days > 0 {
        TenantStatus::Trial
    } else {
        TenantStatus::Active
    };
    let row = new_row(ctx, valid, status, reason)?;
    transaction!(ctx.db, |tx| { insert_in(tx, actor, &row).await })?;
    Ok(row)
}

/// The row of a new tenant in `status`, its secrets sealed.
pub(crate) fn new_row(
    ctx: &Context,
    valid: input::ValidTenant,
    status: TenantStatus,
    reason: &str,
) -> AppResult<TenantRow> {
    let now = clock::now();
    let id = uuid::Uuid::now_v7().to_string();
    let seal = |value: &Option<String>, field: &str| {
        value.as_ref().map(|v| {
            (
                ctx.keyring.seal(v, &secret_context(&id, field)),
                fingerprint(v),
            )
        })
    };
    let client_secret = seal(&valid.oauth.client_secret, "client_secret");
    let db_uri = seal(&valid.db_uri, "db_uri");
    let row = TenantRow {
        id: id.clone(),
        slug: valid.slug.to_string(),
        name: valid.name,
        tier: valid.tier,
        status,
        status_reason: Some(reason.to_owned()),
        status_changed_at: now,
        trial_ends_at: (valid.trial_days > 0)
            .then(|| now + chrono::Duration::days(valid.trial_days)),
        contact: serde_json::to_string(&valid.contact).map_err(AppError::internal)?,
        metadata: serde_json::Value::Object(valid.metadata).to_string(),
        oauth_issuer: valid.oauth.issuer,
        client_id: valid.oauth.client_id,
        client_secret_fp: client_secret.as_ref().map(|s| s.1.clone()),
        client_secret: client_secret.map(|s| s.0),
        client_secret_previous: None,
        client_secret_previous_fp: None,
        scopes: valid.oauth.scopes,
        db_uri_fp: db_uri.as_ref().map(|s| s.1.clone()),
        db_uri: db_uri.map(|s| s.0),
        default_schema: valid.default_schema,
        created_at: now,
        updated_at: now,
        version: 1,
        role_mapping: valid.role_mapping,
    };
    Ok(row)
}

/// Inserts a new tenant's row with its first status and its audit record, in `tx`.
pub(crate) async fn insert_in(tx: &mut Conn, actor: &Actor, row: &TenantRow) -> AppResult<()> {
    let status: TenantStatus = row.status;
    let reason = row.status_reason.clone().unwrap_or_default();
    {
        store::tenants::insert(tx, row).await.map_err(|err| {
            store::unique_violation(err, || {
                AppError::conflict(
                    "slug_taken",
                    format!("a tenant with slug `{}` already exists", row.slug),
                    json!({ "field": "slug", "slug": row.slug }),
                )
            })
        })?;
        record_status(tx, row, None, status, &reason, actor).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.create",
                &row.id,
                &row.slug,
                json!({
                    "name": row.name,
                    "tier": row.tier,
                    "status": row.status,
                    "client_secret_set": row.client_secret.is_some(),
                    "db_uri_set": row.db_uri.is_some(),
                }),
            ),
        )
        .await?;
        Ok(())
    }
}

/// The tenant's OAuth client secret, opened, for the token request of a login (never shown).
pub async fn open_client_secret(ctx: &Context, tenant_id: &str) -> AppResult<Option<String>> {
    let mut conn = ctx.db.conn().await?;
    let Some(row) = store::tenants::find_by_id(&mut conn, tenant_id).await? else {
        return Ok(None);
    };
    row.client_secret
        .map(|sealed| {
            ctx.keyring
                .open(&sealed, &secret_context(&row.id, "client_secret"))
                .map_err(AppError::internal)
        })
        .transpose()
}

/// The tenant with this slug.
pub async fn get(ctx: &Context, slug: &str) -> AppResult<Tenant> {
    let by_id = if is_tenant_id(slug) {
        ctx.caches.tenant_by_id(slug).await?
    } else {
        None
    };
    let row = match by_id {
        Some(row) => row,
        None => ctx
            .caches
            .tenant_by_slug(slug)
            .await?
            .ok_or_else(|| AppError::not_found("tenant", slug))?,
    };
    Tenant::from_row(&row, ctx.config.retention_days)
}

/// The tenant with this id; none when it was purged.
pub async fn get_by_id(ctx: &Context, id: &str) -> AppResult<Option<Tenant>> {
    ctx.caches
        .tenant_by_id(id)
        .await?
        .map(|row| Tenant::from_row(&row, ctx.config.retention_days))
        .transpose()
}

/// The tenant with this slug, or with this id (a tenant is addressed by either).
pub(super) async fn find_in(conn: &mut Conn, slug: &str) -> AppResult<TenantRow> {
    if is_tenant_id(slug)
        && let Some(row) = store::tenants::find_by_id(conn, slug).await?
    {
        return Ok(row);
    }
    store::tenants::find_by_slug(conn, slug)
        .await?
        .ok_or_else(|| AppError::not_found("tenant", slug))
}

/// A page of tenants in slug order, filtered.
pub async fn list(ctx: &Context, query: &TenantQuery) -> AppResult<TenantPage> {
    let mut checks = Checks::default();
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            s.parse::<TenantStatus>()
                .map_err(|m| checks.push(FieldError::new("status", "one_of", m.rule())))
                .ok()
        });
    let tier = query
        .tier
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|t| checks.tier(t));
    // A search and a cursor are text of at most 200 characters without control characters
    // (PostgreSQL cannot hold a NUL, and nothing a slug or a name holds needs one).
    for (field, value) in [("q", &query.q), ("cursor", &query.cursor)] {
        if let Some(value) = value
            && (input::has_control(value) || value.chars().count() > 200)
        {
            checks.push(FieldError::new(
                field,
                "text",
                "must be at most 200 characters, without control characters",
            ));
        }
    }
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        checks.push(FieldError::new(
            "limit",
            "range",
            "must be between 1 and 200",
        ));
    }
    checks.finish()?;
    let mut conn = ctx.db.conn().await?;
    let rows = store::tenants::list(
        &mut conn,
        &TenantFilter {
            status: status.map(|s| s.to_string()),
            tier: tier.map(|t| t.to_string()),
            search: query
                .q
                .as_deref()
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned),
            after_slug: query.cursor.clone().filter(|c| !c.is_empty()),
            limit: limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(|row| Tenant::from_row(row, ctx.config.retention_days))
        .collect::<AppResult<Vec<_>>>()?;
    let next_cursor = if more {
        items.last().map(|t| t.slug.clone())
    } else {
        None
    };
    Ok(TenantPage { items, next_cursor })
}

/// Number of tenants per status and tier: every known (status, tier), zero when none.
pub async fn counts(ctx: &Context) -> AppResult<Vec<(String, String, i64)>> {
    let stored = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::count_by_status_and_tier(&mut conn).await?
    };
    let mut counts = Vec::with_capacity(TenantStatus::ALL.len() * Tier::ALL.len());
    for status in TenantStatus::ALL {
        for tier in Tier::ALL {
            let n = stored
                .iter()
                .find(|(s, t, _)| s == status.as_str() && t == tier.as_str())
                .map_or(0, |c| c.2);
            counts.push((status.to_string(), tier.to_string(), n));
        }
    }
    Ok(counts)
}

pub(super) async fn save(tx: &mut Conn, row: &TenantRow) -> AppResult<()> {
    if !store::tenants::update(tx, row).await? {
        return Err(AppError::conflict(
            "concurrent_update",
            format!(
                "tenant `{}` was changed by someone else meanwhile; retry",
                row.slug
            ),
            json!({}),
        ));
    }
    Ok(())
}
