//! API keys: platform tokens (`platform-admin`, `platform-viewer`) and tenant keys
//! (`tenant-admin`, `member`), `tny_<prefix>_<secret>`, shown once and stored as a SHA-256 of
//! the secret; created, listed, rotated with a grace period, revoked, expiring (their
//! authentication is `bearer`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Role, TenantScope, random_string, sha256_hex};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store;
use crate::store::models::ApiKeyRow;
use crate::transaction;

// ---------------------------------------------------------------------------------------------
// API tokens and keys

/// An API token (platform) or key (tenant) as listed — never its secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: String,
    pub name: String,
    /// The public part of the token (`tny_<prefix>_…`), to recognise it.
    pub prefix: String,
    pub role: Role,
    /// The tenant of a tenant key (its id); none for a platform token.
    pub tenant_id: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Requests per minute this key may make (per server); none: no limit of its own.
    pub rate_limit_per_minute: Option<i64>,
    /// The key that replaced this one by a rotation; this one works until `expires_at`.
    pub replaced_by: Option<String>,
    /// Whether the key authenticates requests now.
    pub live: bool,
}

impl ApiTokenInfo {
    pub fn from_row(row: &ApiKeyRow) -> AppResult<Self> {
        let now = clock::now();
        Ok(ApiTokenInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            role: row.role,
            tenant_id: row.tenant_id.clone(),
            created_by: row.created_by.clone(),
            created_at: clock::to_utc(row.created_at),
            expires_at: row.expires_at.map(clock::to_utc),
            last_used_at: row.last_used_at.map(clock::to_utc),
            revoked_at: row.revoked_at.map(clock::to_utc),
            rate_limit_per_minute: row.rate_limit_per_minute,
            replaced_by: row.replaced_by.clone(),
            live: row.revoked_at.is_none() && row.expires_at.is_none_or(|at| at > now),
        })
    }
}

/// A newly created token: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewApiToken {
    pub token: String,
    #[serde(flatten)]
    pub info: ApiTokenInfo,
}

/// What a new key is.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub name: String,
    pub role: Role,
    pub expires_in_days: Option<u32>,
    pub rate_limit_per_minute: Option<u32>,
}

/// The longest lifetime a key may be given, in days.
pub const MAX_EXPIRES_IN_DAYS: u32 = 3650;
/// The highest per-minute limit a key may be given.
pub const MAX_RATE_LIMIT_PER_MINUTE: u32 = 1_000_000;
/// The longest grace period of a rotated key, in minutes (a week).
pub const MAX_GRACE_MINUTES: u32 = 7 * 24 * 60;

fn check_spec(spec: &KeySpec, tenant: bool) -> AppResult<String> {
    let mut errors = Vec::new();
    let name = match crate::tenants::input::check_text("name", &spec.name, 100) {
        Ok(name) => name,
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    if spec
        .expires_in_days
        .is_some_and(|d| !(1..=MAX_EXPIRES_IN_DAYS).contains(&d))
    {
        errors.push(FieldError::new(
            "expires_in_days",
            "range",
            format!("must be between 1 and {MAX_EXPIRES_IN_DAYS} (ten years)"),
        ));
    }
    if spec
        .rate_limit_per_minute
        .is_some_and(|n| !(1..=MAX_RATE_LIMIT_PER_MINUTE).contains(&n))
    {
        errors.push(FieldError::new(
            "rate_limit_per_minute",
            "range",
            format!(
                "must be between 1 and {MAX_RATE_LIMIT_PER_MINUTE} (leave it out for no limit of the key's own)"
            ),
        ));
    }
    if tenant != spec.role.is_tenant_role() {
        errors.push(FieldError::new(
            "role",
            "one_of",
            if tenant {
                "a tenant key is `tenant-admin` or `member`"
            } else {
                "a platform token is `platform-admin` or `platform-viewer`"
            },
        ));
    }
    if errors.is_empty() {
        Ok(name)
    } else {
        Err(AppError::Validation(errors))
    }
}

fn new_key_row(
    actor: &Actor,
    tenant_id: Option<String>,
    name: String,
    spec: &KeySpec,
    expires_at: Option<chrono::NaiveDateTime>,
) -> (ApiKeyRow, String) {
    let prefix = random_string(8).to_lowercase();
    let secret = random_string(32);
    let token = format!("tny_{prefix}_{secret}");
    let now = clock::now();
    (
        ApiKeyRow {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id,
            name,
            prefix,
            secret_hash: sha256_hex(&secret),
            role: spec.role,
            created_by: actor.name.clone(),
            created_at: now,
            expires_at: expires_at.or_else(|| {
                spec.expires_in_days
                    .map(|d| now + chrono::Duration::days(d.into()))
            }),
            last_used_at: None,
            revoked_at: None,
            rate_limit_per_minute: spec.rate_limit_per_minute.map(i64::from),
            replaced_by: None,
        },
        token,
    )
}

/// Creates a platform API token.
pub async fn create_platform_token(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    role: Role,
    expires_in_days: Option<u32>,
) -> AppResult<NewApiToken> {
    create_key(
        ctx,
        actor,
        None,
        &KeySpec {
            name: name.to_owned(),
            role,
            expires_in_days,
            rate_limit_per_minute: None,
        },
    )
    .await
}

/// Creates a key: of the platform (`tenant` none) or of a tenant.
pub async fn create_key(
    ctx: &Context,
    actor: &Actor,
    tenant: Option<&TenantScope>,
    spec: &KeySpec,
) -> AppResult<NewApiToken> {
    if let Some(scope) = tenant
        && scope.slug == crate::tenants::ADMIN_SLUG
    {
        // A key of the platform's own tenant would read its record (its identity provider's
        // settings): platform tokens are the keys of the platform.
        return Err(AppError::conflict(
            "platform_tenant",
            format!(
                "the platform's own tenant `{}` has no API keys: create a platform token instead (POST /api/v1/admin/tokens, `tenantry admin token create`)",
                crate::tenants::ADMIN_SLUG
            ),
            json!({}),
        ));
    }
    let name = check_spec(spec, tenant.is_some())?;
    let (row, token) = new_key_row(
        actor,
        tenant.map(|t| t.id.clone()),
        name.clone(),
        spec,
        None,
    );
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        if store::admin::live_key_name_taken(tx, row.tenant_id.as_deref(), &name, now).await? {
            return Err(AppError::conflict(
                "name_taken",
                format!("a live key named `{name}` already exists; revoke it or pick another name"),
                json!({ "field": "name" }),
            ));
        }
        store::admin::insert_key(tx, &row).await?;
        audit::record(tx, actor, key_event("create", tenant, &row, json!({}))).await?;
        Ok(())
    })?;
    Ok(NewApiToken {
        token,
        info: ApiTokenInfo::from_row(&row)?,
    })
}

fn key_event(
    what: &str,
    tenant: Option<&TenantScope>,
    row: &ApiKeyRow,
    extra: serde_json::Value,
) -> AuditEvent {
    let mut details = json!({
        "id": row.id, "name": row.name, "prefix": row.prefix, "role": row.role,
        "rate_limit_per_minute": row.rate_limit_per_minute,
    });
    if let (Some(map), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
        map.extend(more);
    }
    match tenant {
        None => AuditEvent::platform(
            match what {
                "create" => "admin.token_create",
                "revoke" => "admin.token_revoke",
                _ => "admin.token_rotate",
            },
            details,
        ),
        Some(t) => AuditEvent::tenant(
            match what {
                "create" => "tenant.api_key_create",
                "revoke" => "tenant.api_key_revoke",
                _ => "tenant.api_key_rotate",
            },
            &t.id,
            &t.slug,
            details,
        ),
    }
}

pub async fn list_platform_tokens(ctx: &Context) -> AppResult<Vec<ApiTokenInfo>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::admin::list_platform_keys(&mut conn).await?;
    rows.iter().map(ApiTokenInfo::from_row).collect()
}

pub async fn list_tenant_keys(ctx: &Context, tenant: &TenantScope) -> AppResult<Vec<ApiTokenInfo>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::admin::list_tenant_keys(&mut conn, &tenant.id).await?;
    rows.iter().map(ApiTokenInfo::from_row).collect()
}

/// Revokes a platform token by id or name.
pub async fn revoke_platform_token(
    ctx: &Context,
    actor: &Actor,
    id_or_name: &str,
) -> AppResult<ApiTokenInfo> {
    let now = clock::now();
    let row = transaction!(ctx.db, |tx| {
        let row = store::admin::revoke_platform_key(tx, id_or_name, now)
            .await?
            .ok_or_else(|| AppError::not_found("token", id_or_name))?;
        audit::record(tx, actor, key_event("revoke", None, &row, json!({}))).await?;
        Ok(row)
    })?;
    let mut info = ApiTokenInfo::from_row(&row)?;
    info.revoked_at = Some(clock::to_utc(now));
    info.live = false;
    Ok(info)
}

/// The key `id` of `tenant` (or a platform token for `None`); 404 for a key of anyone else.
async fn key_of(
    conn: &mut store::Conn,
    tenant: Option<&TenantScope>,
    id: &str,
) -> AppResult<ApiKeyRow> {
    store::admin::find_key(conn, id)
        .await?
        .filter(|row| row.tenant_id.as_deref() == tenant.map(|t| t.id.as_str()))
        .ok_or_else(|| AppError::not_found("API key", id))
}

/// Revokes a key of a tenant (at once; a rotated key's grace period ends too).
pub async fn revoke_key(
    ctx: &Context,
    actor: &Actor,
    tenant: &TenantScope,
    id: &str,
) -> AppResult<()> {
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        let row = key_of(tx, Some(tenant), id).await?;
        if row.revoked_at.is_some() {
            return Ok(());
        }
        store::admin::revoke_key(tx, &row.id, now).await?;
        audit::record(
            tx,
            actor,
            key_event("revoke", Some(tenant), &row, json!({})),
        )
        .await?;
        Ok(())
    })
}

/// Rotates a key: a new key with the same name, role, limit and expiry is made (and shown once);
/// the old one keeps working for `grace_minutes` (0: it stops at once).
pub async fn rotate_key(
    ctx: &Context,
    actor: &Actor,
    tenant: Option<&TenantScope>,
    id: &str,
    grace_minutes: u32,
) -> AppResult<NewApiToken> {
    if grace_minutes > MAX_GRACE_MINUTES {
        return Err(AppError::invalid(
            "grace_minutes",
            "range",
            "must be at most 10080 (a week)",
        ));
    }
    let now = clock::now();
    let (new_row, token) = transaction!(ctx.db, |tx| {
        let old = key_of(tx, tenant, id).await?;
        if old.revoked_at.is_some() || old.expires_at.is_some_and(|at| at <= now) {
            return Err(AppError::conflict(
                "key_not_live",
                format!("key `{id}` is revoked or expired: create a new one instead"),
                json!({ "id": id }),
            ));
        }
        if let Some(by) = &old.replaced_by {
            return Err(AppError::conflict(
                "already_rotated",
                format!("key `{id}` was already rotated; rotate its replacement `{by}`"),
                json!({ "id": id, "replaced_by": by }),
            ));
        }
        let spec = KeySpec {
            name: old.name.clone(),
            role: old.role,
            expires_in_days: None,
            rate_limit_per_minute: old.rate_limit_per_minute.map(|n| n as u32),
        };
        let (new_row, token) = new_key_row(
            actor,
            old.tenant_id.clone(),
            old.name.clone(),
            &spec,
            old.expires_at,
        );
        store::admin::insert_key(tx, &new_row).await?;
        let until = now + chrono::Duration::minutes(grace_minutes.into());
        let until = old.expires_at.map_or(until, |at| at.min(until));
        store::admin::mark_rotated(tx, &old.id, &new_row.id, until).await?;
        audit::record(
            tx,
            actor,
            key_event(
                "rotate",
                tenant,
                &old,
                json!({ "replaced_by": new_row.id, "new_prefix": new_row.prefix, "grace_until": clock::rfc3339(until) }),
            ),
        )
        .await?;
        Ok((new_row, token))
    })?;
    Ok(NewApiToken {
        token,
        info: ApiTokenInfo::from_row(&new_row)?,
    })
}
