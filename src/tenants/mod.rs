//! The tenant registry and its lifecycle. Business rules live here; SQL lives in
//! [`crate::store::tenants`]; HTTP lives in `api/` and `web/`.

pub mod bundle;
pub mod input;
pub mod model;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

pub use input::{NewTenant, TenantPatch};
pub use model::{
    ADMIN_SLUG, StatusChange, Tenant, TenantScope, TenantSlug, TenantStatus, Tier, Transition,
};

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::secrets::{Keyring, fingerprint};
use crate::store::models::{StatusChangeRow, TenantRow};
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

async fn insert_valid(
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
        tier: valid.tier.to_string(),
        status: status.to_string(),
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
    let status: TenantStatus = status_of(row)?;
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
    let from = status_of(&row)?;
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
    row.status = to.to_string();
    row.status_reason = Some(reason.to_owned());
    row.status_changed_at = now;
    row.updated_at = now;
    row.version += 1;
    save(tx, &row).await?;
    record_status(tx, &row, Some(from), to, reason, actor).await?;
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
    let row = find(ctx, slug).await?;
    Tenant::from_row(&row, ctx.config.retention_days)
}

async fn find(ctx: &Context, slug: &str) -> AppResult<TenantRow> {
    let mut conn = ctx.db.conn().await?;
    find_in(&mut conn, slug).await
}

async fn find_in(conn: &mut Conn, slug: &str) -> AppResult<TenantRow> {
    store::tenants::find_by_slug(conn, slug)
        .await?
        .ok_or_else(|| AppError::not_found("tenant", slug))
}

/// The tenant's status history, newest first.
pub async fn history(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<StatusChange>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::tenants::status_history(&mut conn, &tenant.id).await?;
    let status = |text: &str| {
        text.parse::<TenantStatus>().map_err(|e| {
            AppError::internal(anyhow::anyhow!(
                "status history of tenant {} holds status `{text}`: {e}",
                tenant.slug
            ))
        })
    };
    rows.into_iter()
        .map(|row| {
            Ok(StatusChange {
                from: row.from_status.as_deref().map(status).transpose()?,
                to: status(&row.to_status)?,
                reason: row.reason,
                actor: row.actor,
                at: clock::to_utc(row.at),
            })
        })
        .collect()
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
                .map_err(|m| checks.push(FieldError::new("status", "one_of", m)))
                .ok()
        });
    let tier = query
        .tier
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|t| checks.tier(t));
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

/// Applies a PATCH of a tenant's fields and OAuth settings (a new secret keeps the old one for
/// rollback), in one transaction with its audit record. A PATCH that sets `is_active` changes
/// the tenant's lifecycle, which must reach its backends too: the lifecycle service applies
/// such a PATCH (with [`apply_patch`] in its own transaction), and here it is refused.
pub async fn update(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    patch: &TenantPatch,
) -> AppResult<Tenant> {
    if patch.is_active.is_some() {
        return Err(AppError::internal(anyhow::anyhow!(
            "a PATCH with is_active is a lifecycle change; the lifecycle service applies it"
        )));
    }
    let checked = check_patch(patch, slug == ADMIN_SLUG)?;
    let (row, _) = transaction!(ctx.db, |tx| {
        apply_patch(tx, &ctx.keyring, actor, slug, checked).await
    })?;
    Tenant::from_row(&row, ctx.config.retention_days)
}

/// A PATCH whose fields passed their rules (see [`check_patch`]), ready for [`apply_patch`].
pub struct CheckedPatch<'a> {
    patch: &'a TenantPatch,
    name: Option<Option<String>>,
    tier: Option<Option<Tier>>,
    contact: Option<Option<model::Contact>>,
    issuer: Option<Option<Option<String>>>,
    client_id: Option<Option<Option<String>>>,
    secret: Option<Option<Option<String>>>,
    scopes: Option<Option<String>>,
    db_uri: Option<Option<Option<String>>>,
    schema: Option<Option<Option<String>>>,
    reason: Option<String>,
    role_mapping: Option<Option<Option<String>>>,
}

/// Checks every field of a PATCH (`platform`: of the platform's own tenant), reporting every
/// broken rule at once. Nothing is read or written.
pub fn check_patch(patch: &TenantPatch, platform: bool) -> AppResult<CheckedPatch<'_>> {
    let mut checks = Checks::default();
    let name = patch.name.as_deref().map(|n| checks.name(n));
    let tier = patch.tier.as_deref().map(|t| checks.tier(t));
    let contact = patch
        .contact
        .as_ref()
        .map(|c| checks.contact(c.as_ref().unwrap_or(&model::Contact::default())));
    if let Some(metadata) = &patch.metadata {
        checks.metadata(metadata);
    }
    let issuer = patch
        .oauth_issuer
        .as_ref()
        .map(|i| i.as_deref().map(|i| checks.issuer(i)));
    let client_id = patch
        .client_id
        .as_ref()
        .map(|c| c.as_deref().map(|c| checks.text("client_id", c, 255)));
    let secret = patch.client_secret.as_ref().map(|s| {
        s.as_deref().map(|s| {
            input::check_secret("client_secret", s)
                .map_err(|e| checks.push(e))
                .ok()
        })
    });
    let scopes = patch.scopes.as_ref().map(|s| checks.scopes(s));
    let db_uri = patch
        .db_uri
        .as_ref()
        .map(|u| u.as_deref().map(|u| checks.db_uri(u)));
    let schema = patch
        .default_schema
        .as_ref()
        .map(|s| s.as_deref().map(|s| checks.schema(s)));
    let reason = match &patch.reason {
        Some(r) => checks.text("reason", r, 500),
        None => None,
    };
    let role_mapping = patch
        .role_mapping
        .as_ref()
        .map(|m| m.as_ref().map(|m| checks.role_mapping(m, platform)));
    checks.finish()?;
    Ok(CheckedPatch {
        patch,
        name,
        tier,
        contact,
        issuer,
        client_id,
        secret,
        scopes,
        db_uri,
        schema,
        reason,
        role_mapping,
    })
}

/// Applies a checked PATCH to tenant `slug` in `tx`, with its audit records; the row as saved
/// and the lifecycle transition it made (`is_active`), to be carried into the backends.
pub async fn apply_patch(
    tx: &mut Conn,
    keyring: &Keyring,
    actor: &Actor,
    slug: &str,
    checked: CheckedPatch<'_>,
) -> AppResult<(TenantRow, Option<(Transition, String)>)> {
    let CheckedPatch {
        patch,
        name,
        tier,
        contact,
        issuer,
        client_id,
        secret,
        scopes,
        db_uri,
        schema,
        reason,
        role_mapping,
    } = checked;
    {
        let mut row = find_in(tx, slug).await?;
        let mut changed: Vec<&str> = Vec::new();
        let mut set = |field: &'static str, changed_now: bool| {
            if changed_now {
                changed.push(field);
            }
        };
        if let Some(Some(name)) = name {
            set("name", row.name != name);
            row.name = name;
        }
        if let Some(Some(tier)) = tier {
            set("tier", row.tier != tier.as_str());
            row.tier = tier.to_string();
        }
        if let Some(Some(contact)) = contact {
            let contact = serde_json::to_string(&contact).map_err(AppError::internal)?;
            set("contact", row.contact != contact);
            row.contact = contact;
        }
        if let Some(metadata) = &patch.metadata {
            let metadata = serde_json::Value::Object(metadata.clone()).to_string();
            set("metadata", row.metadata != metadata);
            row.metadata = metadata;
        }
        if let Some(issuer) = issuer {
            let issuer = issuer.flatten();
            set("oauth_issuer", row.oauth_issuer != issuer);
            row.oauth_issuer = issuer;
        }
        if let Some(client_id) = client_id {
            let client_id = client_id.flatten();
            set("client_id", row.client_id != client_id);
            row.client_id = client_id;
        }
        if let Some(scopes) = scopes.flatten() {
            set("scopes", row.scopes != scopes);
            row.scopes = scopes;
        }
        if let Some(schema) = schema {
            let schema = schema.flatten();
            set("default_schema", row.default_schema != schema);
            row.default_schema = schema;
        }
        if let Some(mapping) = role_mapping {
            let mapping = mapping.flatten();
            set("role_mapping", row.role_mapping != mapping);
            row.role_mapping = mapping;
        }
        if let Some(uri) = db_uri {
            match uri.flatten() {
                Some(uri) => {
                    let fp = fingerprint(&uri);
                    set("db_uri", row.db_uri_fp.as_deref() != Some(&fp));
                    row.db_uri = Some(keyring.seal(&uri, &secret_context(&row.id, "db_uri")));
                    row.db_uri_fp = Some(fp);
                }
                None => {
                    set("db_uri", row.db_uri.is_some());
                    row.db_uri = None;
                    row.db_uri_fp = None;
                }
            }
        }
        let mut secret_rotated = None;
        if let Some(secret) = secret {
            match secret.flatten() {
                Some(secret) => {
                    let fp = fingerprint(&secret);
                    if row.client_secret_fp.as_deref() != Some(&fp) {
                        secret_rotated = Some((row.client_secret_fp.clone(), fp.clone()));
                        rotate_secret(keyring, &mut row, &secret)?;
                    }
                }
                None => {
                    set("client_secret", row.client_secret.is_some());
                    row.client_secret_previous = row.client_secret.take();
                    row.client_secret_previous_fp = row.client_secret_fp.take();
                }
            }
        }
        if row.client_secret.is_some() && row.client_id.is_none() {
            return Err(AppError::invalid(
                "client_id",
                "required",
                "is required when client_secret is set",
            ));
        }
        if row.client_id.is_some() && row.oauth_issuer.is_none() {
            return Err(AppError::invalid(
                "oauth_issuer",
                "required",
                "is required when client_id is set",
            ));
        }

        let transition = match patch.is_active {
            Some(false) if status_of(&row)?.is_active() => Some(Transition::Suspend),
            Some(true) if status_of(&row)? == TenantStatus::Suspended => {
                Some(Transition::Reactivate)
            }
            Some(active) if active != status_of(&row)?.is_active() => {
                return Err(illegal(
                    &row,
                    if active {
                        Transition::Reactivate
                    } else {
                        Transition::Suspend
                    },
                ));
            }
            _ => None,
        };

        if !changed.is_empty() || secret_rotated.is_some() {
            row.updated_at = clock::now();
            row.version += 1;
            save(tx, &row).await?;
            let mut details = json!({ "changed": changed });
            if let Some((from, to)) = &secret_rotated {
                details["client_secret"] = json!({ "rotated": true, "from": from, "to": to });
            }
            audit::record(
                tx,
                actor,
                AuditEvent::tenant("tenant.update", &row.id, &row.slug, details),
            )
            .await?;
        }
        if let Some(transition) = transition {
            let reason = reason.clone().unwrap_or_else(|| {
                format!(
                    "is_active set to {} by PATCH",
                    transition == Transition::Reactivate
                )
            });
            row = apply_transition(tx, actor, row, transition, &reason).await?;
            return Ok((row, Some((transition, reason))));
        }
        Ok((row, None))
    }
}

/// Moves the current client secret to `previous` and seals `secret` as the current one.
fn rotate_secret(keyring: &Keyring, row: &mut TenantRow, secret: &str) -> AppResult<()> {
    let context = secret_context(&row.id, "client_secret");
    row.client_secret_previous = row.client_secret.take();
    row.client_secret_previous_fp = row.client_secret_fp.take();
    row.client_secret = Some(keyring.seal(secret, &context));
    row.client_secret_fp = Some(fingerprint(secret));
    Ok(())
}

/// Swaps the client secret with the one kept from before the last rotation.
pub async fn rollback_client_secret(ctx: &Context, actor: &Actor, slug: &str) -> AppResult<Tenant> {
    let row = transaction!(ctx.db, |tx| {
        let mut row = find_in(tx, slug).await?;
        if row.client_secret_previous.is_none() {
            return Err(AppError::conflict(
                "no_previous_secret",
                format!("tenant `{slug}` has no previous client secret to roll back to"),
                json!({}),
            ));
        }
        std::mem::swap(&mut row.client_secret, &mut row.client_secret_previous);
        std::mem::swap(
            &mut row.client_secret_fp,
            &mut row.client_secret_previous_fp,
        );
        row.updated_at = clock::now();
        row.version += 1;
        save(tx, &row).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.client_secret_rollback",
                &row.id,
                &row.slug,
                json!({ "from": row.client_secret_previous_fp, "to": row.client_secret_fp }),
            ),
        )
        .await?;
        Ok(row)
    })?;
    Tenant::from_row(&row, ctx.config.retention_days)
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

fn status_of(row: &TenantRow) -> AppResult<TenantStatus> {
    row.status.parse().map_err(|e| {
        AppError::internal(anyhow::anyhow!(
            "tenant {} has status {}: {e}",
            row.slug,
            row.status
        ))
    })
}

fn illegal(row: &TenantRow, transition: Transition) -> AppError {
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

async fn apply_transition(
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
    let from = status_of(&row)?;
    let now = clock::now();
    let in_trial = row.trial_ends_at.is_some_and(|end| end > now);
    let to = transition
        .target(from, in_trial)
        .ok_or_else(|| illegal(&row, transition))?;
    row.status = to.to_string();
    row.status_reason = Some(reason.to_owned());
    row.status_changed_at = now;
    row.updated_at = now;
    row.version += 1;
    save(tx, &row).await?;
    record_status(tx, &row, Some(from), to, reason, actor).await?;
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
        let status = status_of(&row)?;
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

async fn save(tx: &mut Conn, row: &TenantRow) -> AppResult<()> {
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

async fn record_status(
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
            from_status: from.map(|s| s.to_string()),
            to_status: to.to_string(),
            reason: reason.to_owned(),
            actor: actor.name.clone(),
            at: row.status_changed_at,
        },
    )
    .await
}

/// Creates the platform's own `admin` tenant from configuration, or brings its OAuth settings in
/// line with the configuration when they differ. Returns whether it was created.
pub async fn ensure_admin_tenant(ctx: &Context) -> AppResult<bool> {
    let config = &ctx.config.admin_tenant;
    let actor = Actor::system();
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::find_by_slug(&mut conn, ADMIN_SLUG).await?
    };
    match existing {
        None => {
            let request = NewTenant {
                slug: ADMIN_SLUG.into(),
                name: config.name.clone(),
                tier: Some("enterprise".into()),
                trial_days: None,
                contact: None,
                metadata: None,
                oauth_issuer: config.oauth_issuer.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scopes: Some(input::Scopes::Text(config.scopes.clone())),
                db_uri: config.db_uri.clone(),
                default_schema: config.default_schema.clone(),
                role_mapping: config.role_mapping.clone(),
            };
            let valid = request.validate(false).map_err(|err| {
                AppError::internal(anyhow::anyhow!(
                    "admin_tenant configuration is invalid: {err}"
                ))
            })?;
            match insert_valid(
                ctx,
                &actor,
                valid,
                "platform tenant created from configuration",
            )
            .await
            {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(AppError::Conflict {
                    code: "slug_taken", ..
                }) => Ok(false),
                Err(err) => Err(err),
            }
        }
        Some(row) => {
            let mut patch = TenantPatch::default();
            if row.name != config.name {
                patch.name = Some(config.name.clone());
            }
            if row.oauth_issuer != config.oauth_issuer {
                patch.oauth_issuer = Some(config.oauth_issuer.clone());
            }
            if row.client_id != config.client_id {
                patch.client_id = Some(config.client_id.clone());
            }
            if let Some(secret) = &config.client_secret
                && row.client_secret_fp.as_deref() != Some(&fingerprint(secret))
            {
                patch.client_secret = Some(Some(secret.clone()));
            }
            if row.scopes != config.scopes.replace(' ', "") {
                patch.scopes = Some(input::Scopes::Text(config.scopes.clone()));
            }
            if let Some(uri) = &config.db_uri
                && row.db_uri_fp.as_deref() != Some(&fingerprint(uri))
            {
                patch.db_uri = Some(Some(uri.clone()));
            }
            if row.default_schema != config.default_schema && config.default_schema.is_some() {
                patch.default_schema = Some(config.default_schema.clone());
            }
            let mapping = config
                .role_mapping
                .as_ref()
                .and_then(|m| m.validate(true).ok())
                .and_then(|m| serde_json::to_string(&m).ok());
            if config.role_mapping.is_some() && row.role_mapping != mapping {
                patch.role_mapping = Some(config.role_mapping.clone());
            }
            update(ctx, &actor, ADMIN_SLUG, &patch)
                .await
                .map_err(|err| {
                    AppError::internal(anyhow::anyhow!(
                        "admin_tenant configuration is invalid: {err}"
                    ))
                })?;
            Ok(false)
        }
    }
}
