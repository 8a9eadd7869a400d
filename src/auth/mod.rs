//! Who is asking: the bootstrap administrator (argon2 password, portal sessions) and hashed API
//! tokens (`Authorization: Bearer tny_<prefix>_<secret>`).
//!
//! A token is looked up by its prefix and its secret compared as a SHA-256 digest in constant time
//! (tokens are 190 bits of randomness: a slow hash adds nothing). Passwords are argon2id.

pub mod extract;
pub mod limits;
pub mod oidc;
pub mod roles;
pub mod sso;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{DateTime, Utc};
use rand::Rng as _;
use rand::distributions::Alphanumeric;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store;
use crate::store::models::{AdminUserRow, ApiKeyRow, SessionRow, TenantRef};
use crate::transaction;

/// The bootstrap administrator's user name.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything on the platform.
    PlatformAdmin,
    /// Read-only access to everything on the platform (dashboards, monitoring, audits).
    PlatformViewer,
    /// Everything a tenant may do for itself (its API keys, its settings), in its own tenant only.
    TenantAdmin,
    /// Reads its own tenant.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform-admin",
            Role::PlatformViewer => "platform-viewer",
            Role::TenantAdmin => "tenant-admin",
            Role::Member => "member",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "platform-admin" => Some(Role::PlatformAdmin),
            "platform-viewer" => Some(Role::PlatformViewer),
            "tenant-admin" => Some(Role::TenantAdmin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    /// Whether the role belongs to one tenant (rather than to the platform).
    pub fn is_tenant_role(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Member)
    }
}

/// The tenant a tenant principal belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub id: String,
    pub slug: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `admin` for the bootstrap administrator, `token:<name>` for a platform API token,
    /// `key:<slug>/<name>` for a tenant API key.
    pub name: String,
    pub role: Role,
    /// The tenant of a tenant principal (`None` for the platform's).
    pub tenant: Option<TenantScope>,
    /// The API key that authenticated the request, with its own rate limit.
    pub key: Option<(String, Option<u32>)>,
}

impl Principal {
    fn tenant_only(&self) -> AppError {
        let slug = self.tenant.as_ref().map_or("?", |t| t.slug.as_str());
        AppError::forbidden(format!(
            "`{}` belongs to tenant `{slug}`: it reaches only that tenant's own routes",
            self.name
        ))
    }

    /// Refuses (403) anyone who may not change platform-wide things.
    pub fn require_admin(&self) -> AppResult<()> {
        match self.role {
            Role::PlatformAdmin => Ok(()),
            Role::PlatformViewer => Err(AppError::forbidden(format!(
                "`{}` has the {} role, which may only read",
                self.name,
                self.role.as_str()
            ))),
            Role::TenantAdmin | Role::Member => Err(self.tenant_only()),
        }
    }

    /// Refuses (403) anyone who may not read platform-wide data.
    pub fn require_platform(&self) -> AppResult<()> {
        match self.role {
            Role::PlatformAdmin | Role::PlatformViewer => Ok(()),
            Role::TenantAdmin | Role::Member => Err(self.tenant_only()),
        }
    }

    /// Refuses anyone who may not read tenant `slug`: a tenant principal of another tenant gets
    /// a 404 (it learns nothing of other tenants).
    pub fn require_tenant_read(&self, slug: &str) -> AppResult<()> {
        match &self.tenant {
            None => self.require_platform(),
            Some(scope) if scope.slug == slug => Ok(()),
            Some(_) => Err(AppError::not_found("tenant", slug)),
        }
    }

    /// Refuses anyone who may not administer tenant `slug` (its API keys…): platform admins and
    /// that tenant's admins may.
    pub fn require_tenant_admin(&self, slug: &str) -> AppResult<()> {
        self.require_tenant_read(slug)?;
        match self.role {
            Role::PlatformAdmin | Role::TenantAdmin => Ok(()),
            Role::PlatformViewer | Role::Member => Err(AppError::forbidden(format!(
                "`{}` has the {} role, which may only read",
                self.name,
                self.role.as_str()
            ))),
        }
    }
}

pub(crate) fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

// ---------------------------------------------------------------------------------------------
// Bootstrap administrator

/// Checks the rules an administrator password must follow.
pub fn check_password(password: &str) -> Result<(), FieldError> {
    if password.chars().count() < 12 {
        return Err(FieldError::new(
            "password",
            "length",
            "must be at least 12 characters long",
        ));
    }
    if password.len() > 1024 {
        return Err(FieldError::new(
            "password",
            "length",
            "must be at most 1024 bytes",
        ));
    }
    Ok(())
}

fn hash_password(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing a password: {e}")))
}

fn password_matches(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Sets the bootstrap administrator's password (argon2id), audited.
pub async fn set_admin_password(ctx: &Context, actor: &Actor, password: &str) -> AppResult<()> {
    check_password(password).map_err(|e| AppError::Validation(vec![e]))?;
    let hash = hash_password(password)?;
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        store::admin::upsert_admin(
            tx,
            &AdminUserRow {
                username: BOOTSTRAP_ADMIN.into(),
                password_hash: hash,
                created_at: now,
                updated_at: now,
            },
        )
        .await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform("admin.password_set", json!({ "username": BOOTSTRAP_ADMIN })),
        )
        .await?;
        Ok(())
    })
}

/// What happened to the bootstrap administrator at start.
#[derive(Debug)]
pub enum BootstrapAdmin {
    /// A password already existed and none was configured.
    Existing,
    /// The configured password was applied.
    FromConfig,
    /// First start without a configured password: one was generated into this file.
    Generated(std::path::PathBuf),
}

/// Applies `bootstrap_admin_password` when configured; on a first start without one, generates a
/// password into `<data_dir>/initial-admin-password` (mode 0600) so that the operator can log in.
pub async fn ensure_bootstrap_admin(ctx: &Context) -> AppResult<BootstrapAdmin> {
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::admin::find_admin(&mut conn, BOOTSTRAP_ADMIN).await?
    };
    if let Some(password) = &ctx.config.bootstrap_admin_password {
        let unchanged = existing
            .as_ref()
            .is_some_and(|row| password_matches(password, &row.password_hash));
        if !unchanged {
            set_admin_password(ctx, &Actor::system(), password)
                .await
                .map_err(|err| {
                    AppError::internal(anyhow::anyhow!("TENANTRY_BOOTSTRAP_ADMIN_PASSWORD: {err}"))
                })?;
        }
        return Ok(BootstrapAdmin::FromConfig);
    }
    if existing.is_some() {
        return Ok(BootstrapAdmin::Existing);
    }
    let password = random_string(24);
    let path = ctx.config.data_dir.join("initial-admin-password");
    std::fs::create_dir_all(&ctx.config.data_dir).map_err(AppError::internal)?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(AppError::internal)?;
        writeln!(file, "{password}").map_err(AppError::internal)?;
    }
    set_admin_password(ctx, &Actor::system(), &password).await?;
    Ok(BootstrapAdmin::Generated(path))
}

/// Checks a portal login. Always spends one argon2 verification, known user or not.
pub async fn verify_admin_login(
    ctx: &Context,
    username: &str,
    password: &str,
) -> AppResult<Option<Principal>> {
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::admin::find_admin(&mut conn, username).await?
    };
    let hash = row
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| {
            // A fixed, valid hash of a random password, so an unknown user costs as much as a known one.
            static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            DUMMY
                .get_or_init(|| hash_password(&random_string(24)).unwrap_or_default())
                .clone()
        });
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || password_matches(&password, &hash))
        .await
        .map_err(AppError::internal)?;
    Ok((ok && row.is_some()).then(|| Principal {
        tenant: None,
        key: None,
        name: username.to_owned(),
        role: Role::PlatformAdmin,
    }))
}

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
    pub fn from_row(row: &ApiKeyRow) -> Self {
        let now = clock::now();
        ApiTokenInfo {
            id: row.id.clone(),
            name: row.name.clone(),
            prefix: row.prefix.clone(),
            role: Role::parse(&row.role).unwrap_or(Role::Member),
            tenant_id: row.tenant_id.clone(),
            created_by: row.created_by.clone(),
            created_at: clock::to_utc(row.created_at),
            expires_at: row.expires_at.map(clock::to_utc),
            last_used_at: row.last_used_at.map(clock::to_utc),
            revoked_at: row.revoked_at.map(clock::to_utc),
            rate_limit_per_minute: row.rate_limit_per_minute,
            replaced_by: row.replaced_by.clone(),
            live: row.revoked_at.is_none() && row.expires_at.is_none_or(|at| at > now),
        }
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

fn check_spec(spec: &KeySpec, tenant: bool) -> AppResult<String> {
    let mut errors = Vec::new();
    let name = match crate::tenants::input::check_text("name", &spec.name, 100) {
        Ok(name) => name,
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    if spec.expires_in_days == Some(0) {
        errors.push(FieldError::new(
            "expires_in_days",
            "range",
            "must be at least 1",
        ));
    }
    if spec.rate_limit_per_minute == Some(0) {
        errors.push(FieldError::new(
            "rate_limit_per_minute",
            "range",
            "must be at least 1 (leave it out for no limit of the key's own)",
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
            role: spec.role.as_str().into(),
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
        info: ApiTokenInfo::from_row(&row),
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
    Ok(rows.iter().map(ApiTokenInfo::from_row).collect())
}

pub async fn list_tenant_keys(ctx: &Context, tenant: &TenantScope) -> AppResult<Vec<ApiTokenInfo>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::admin::list_tenant_keys(&mut conn, &tenant.id).await?;
    Ok(rows.iter().map(ApiTokenInfo::from_row).collect())
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
    let mut info = ApiTokenInfo::from_row(&row);
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
    if grace_minutes > 7 * 24 * 60 {
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
            role: Role::parse(&old.role).unwrap_or(Role::Member),
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
        info: ApiTokenInfo::from_row(&new_row),
    })
}

/// What became of a bearer token.
#[derive(Debug)]
pub enum KeyOutcome {
    Authenticated(Principal),
    /// Not a live key (unknown, wrong secret, revoked, expired, or its tenant is not active).
    Refused,
    /// Too many failed attempts from this address or against this tenant's keys: wait.
    Blocked(std::time::Duration),
}

/// Resolves a bearer token to its principal, within the abuse limits: a refused token counts
/// against its source address and the tenant of the key it names, and a spent budget blocks
/// further attempts. Attempts and failures are counted in the metrics by tenant.
pub async fn authenticate_key(
    ctx: &Context,
    token: &str,
    address: Option<&str>,
) -> AppResult<KeyOutcome> {
    let refuse = |tenant: &str, reason: &str| {
        ctx.metrics
            .auth_attempts
            .with_label_values(&[tenant, "api_key"])
            .inc();
        ctx.metrics
            .auth_failures
            .with_label_values(&[tenant, "api_key", reason])
            .inc();
    };
    // A blocked address is refused before the key is even looked up (its tenant is unknown).
    if let Some(wait) = ctx.auth_limits.key_blocked(None, address) {
        refuse("unknown", "rate_limited");
        return Ok(KeyOutcome::Blocked(wait));
    }
    let parts = token
        .strip_prefix("tny_")
        .and_then(|rest| rest.split_once('_'))
        .filter(|(prefix, secret)| prefix.len() == 8 && secret.len() == 32);
    let (row, tenant_row) = match parts {
        Some((prefix, _)) => {
            let mut conn = ctx.db.conn().await?;
            match store::admin::find_key_with_tenant(&mut conn, prefix).await? {
                Some((row, tenant)) => (Some(row), tenant),
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let label = match (&row, &tenant_row) {
        (_, Some(t)) => t.slug.as_str(),
        (Some(r), None) if r.tenant_id.is_none() => "platform",
        _ => "unknown",
    };
    if let Some(wait) = ctx
        .auth_limits
        .key_blocked(row.as_ref().and_then(|r| r.tenant_id.as_deref()), None)
    {
        refuse(label, "rate_limited");
        return Ok(KeyOutcome::Blocked(wait));
    }
    let now = clock::now();
    let verdict = match (&row, parts) {
        (None, None) => Err("malformed"),
        (None, Some(_)) => Err("unknown"),
        (Some(row), Some((_, secret))) => {
            if !constant_time_eq(&sha256_hex(secret), &row.secret_hash) {
                Err("wrong_secret")
            } else if row.revoked_at.is_some() {
                Err("revoked")
            } else if row.expires_at.is_some_and(|at| at <= now) {
                Err("expired")
            } else {
                key_principal(row, tenant_row.as_ref())
            }
        }
        (Some(_), None) => Err("malformed"),
    };
    let principal = match verdict {
        Ok(principal) => {
            ctx.metrics
                .auth_attempts
                .with_label_values(&[label, "api_key"])
                .inc();
            principal
        }
        Err(reason) => {
            refuse(label, reason);
            // The attempt that spends a budget is the first one refused with 429.
            return Ok(
                match ctx
                    .auth_limits
                    .key_failed(row.as_ref().and_then(|r| r.tenant_id.as_deref()), address)
                {
                    Some(wait) => KeyOutcome::Blocked(wait),
                    None => KeyOutcome::Refused,
                },
            );
        }
    };
    let row = row.expect("a principal comes from a key");
    // Last-used time, at most once a minute per key: not a write on every request.
    if row
        .last_used_at
        .is_none_or(|at| now - at > chrono::Duration::minutes(1))
    {
        let id = row.id.clone();
        let db = ctx.db.clone();
        let _ = transaction!(db, |tx| { store::admin::touch_key(tx, &id, now).await });
    }
    Ok(KeyOutcome::Authenticated(principal))
}

/// [`authenticate_key`] without a source address: the principal of a live token, if it is one.
pub async fn authenticate_token(ctx: &Context, token: &str) -> AppResult<Option<Principal>> {
    Ok(match authenticate_key(ctx, token, None).await? {
        KeyOutcome::Authenticated(principal) => Some(principal),
        KeyOutcome::Refused | KeyOutcome::Blocked(_) => None,
    })
}

/// The principal of a key whose secret matched, if its role and tenant allow one.
fn key_principal(row: &ApiKeyRow, tenant: Option<&TenantRef>) -> Result<Principal, &'static str> {
    let role = Role::parse(&row.role).ok_or("unknown_role")?;
    let tenant = match (&row.tenant_id, tenant) {
        (None, _) if role.is_tenant_role() => return Err("unknown_role"),
        (None, _) => None,
        (Some(_), None) => return Err("unknown"),
        (Some(_), Some(t)) => {
            let active = t
                .status
                .parse::<crate::tenants::TenantStatus>()
                .is_ok_and(|s| s.is_active());
            if !active {
                return Err("tenant_inactive");
            }
            if !role.is_tenant_role() {
                return Err("unknown_role");
            }
            Some(TenantScope {
                id: t.id.clone(),
                slug: t.slug.clone(),
            })
        }
    };
    let name = match &tenant {
        None => format!("token:{}", row.name),
        Some(t) => format!("key:{}/{}", t.slug, row.name),
    };
    Ok(Principal {
        name,
        role,
        tenant,
        key: Some((
            row.id.clone(),
            row.rate_limit_per_minute
                .map(|n| n.clamp(1, u32::MAX as i64) as u32),
        )),
    })
}

/// Per-key rate limits (requests per minute, per server), as token buckets (`governor`).
#[derive(Default)]
pub struct KeyLimits {
    limiters: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (u32, std::sync::Arc<governor::DefaultDirectRateLimiter>),
        >,
    >,
}

impl KeyLimits {
    /// Takes one request from the key's bucket; the wait until the next one when it is empty.
    pub fn check(&self, key_id: &str, per_minute: u32) -> Result<(), std::time::Duration> {
        use governor::clock::Clock as _;
        let limiter = {
            let mut map = self.limiters.lock().expect("key limits lock");
            let entry = map
                .entry(key_id.to_owned())
                .or_insert_with(|| (per_minute, std::sync::Arc::new(Self::limiter(per_minute))));
            if entry.0 != per_minute {
                *entry = (per_minute, std::sync::Arc::new(Self::limiter(per_minute)));
            }
            entry.1.clone()
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    fn limiter(per_minute: u32) -> governor::DefaultDirectRateLimiter {
        let n = std::num::NonZeroU32::new(per_minute.max(1)).expect("non-zero");
        governor::RateLimiter::direct(governor::Quota::per_minute(n))
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// Which cookie a session lives in: the platform's (the admin portal: the bootstrap administrator
/// or a user of the `admin` tenant's provider) or a tenant's (a tenant's own users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Platform,
    Tenant,
}

/// A live session (portal or tenant).
#[derive(Debug, Clone)]
pub struct Session {
    /// Hash of the cookie value (what the database stores).
    pub id: String,
    /// The public id lists show and revocations name.
    pub handle: String,
    pub principal: Principal,
    pub csrf_token: String,
    /// The identity-provider user behind an OIDC session.
    pub user: Option<SessionUser>,
}

/// Who an OIDC session belongs to at its provider.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Sealed id_token (the logout hint).
    sealed_id_token: Option<String>,
}

/// A session as a tenant admin (or a platform admin) sees it. Never its cookie.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionInfo {
    pub handle: String,
    /// The principal (`user:<slug>/<email or sub>`).
    pub user: String,
    pub role: Role,
    pub email: Option<String>,
    pub name: Option<String>,
    pub subject: Option<String>,
    /// `oidc` or `password`.
    pub auth_method: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it ends at the latest (the absolute expiry; inactivity ends it sooner).
    pub expires_at: DateTime<Utc>,
}

impl SessionInfo {
    fn from_row(row: &SessionRow) -> Self {
        SessionInfo {
            handle: row.handle.clone().unwrap_or_default(),
            user: row.principal.clone(),
            role: Role::parse(&row.role).unwrap_or(Role::Member),
            email: row.email.clone(),
            name: row.display_name.clone(),
            subject: row.subject.clone(),
            auth_method: row.auth_method.clone().unwrap_or_else(|| "password".into()),
            source_ip: row.source_ip.clone(),
            user_agent: row.user_agent.clone(),
            created_at: clock::to_utc(row.created_at),
            last_seen_at: clock::to_utc(row.last_seen_at),
            expires_at: clock::to_utc(row.expires_at),
        }
    }
}

/// Where a session's sealed id_token is bound.
fn id_token_context(handle: &str) -> String {
    format!("session/{handle}/id_token")
}

/// Starts a session; returns the cookie value (shown to the browser only) and the session.
/// `user` is the identity-provider user of an OIDC login; `replaces` the cookie of a session the
/// browser had before (ended in the same transaction, so a login never leaves it behind).
pub async fn start_session(
    ctx: &Context,
    principal: &Principal,
    actor: &Actor,
    user_agent: Option<&str>,
    user: Option<&oidc::LoginUser>,
    replaces: Option<&str>,
) -> AppResult<(String, Session)> {
    let cookie = random_string(43);
    let handle = random_string(16).to_lowercase();
    let now = clock::now();
    let tenant = principal.tenant.clone();
    let row = SessionRow {
        id: sha256_hex(&cookie),
        principal: principal.name.clone(),
        role: principal.role.as_str().into(),
        tenant_id: tenant.as_ref().map(|t| t.id.clone()),
        csrf_token: random_string(32),
        source_ip: actor.source_ip.clone(),
        user_agent: user_agent.map(|ua| ua.chars().take(300).collect()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + chrono::Duration::hours(ctx.config.session_absolute_hours.into()),
        handle: Some(handle.clone()),
        auth_method: Some(if user.is_some() { "oidc" } else { "password" }.into()),
        subject: user.map(|u| u.subject.clone()),
        email: user.and_then(|u| u.email.clone()),
        display_name: user.and_then(|u| u.name.clone()),
        issuer: user.map(|u| u.issuer.clone()),
        id_token: user.map(|u| ctx.keyring.seal(&u.id_token, &id_token_context(&handle))),
    };
    let details = json!({
        "username": principal.name,
        "role": principal.role.as_str(),
        "method": row.auth_method,
        "session": handle,
        "issuer": row.issuer,
        "subject": row.subject,
    });
    let event = match &tenant {
        Some(t) => AuditEvent::tenant("tenant.login", &t.id, &t.slug, details),
        None => AuditEvent::platform("admin.login", details),
    };
    transaction!(ctx.db, |tx| {
        store::sessions::delete_expired(tx, now).await?;
        if let Some(old) = replaces {
            store::sessions::delete(tx, &sha256_hex(old)).await?;
        }
        store::sessions::insert(tx, &row).await?;
        audit::record(tx, actor, event.clone()).await?;
        Ok(())
    })?;
    Ok((
        cookie,
        Session {
            id: row.id,
            handle,
            principal: principal.clone(),
            csrf_token: row.csrf_token,
            user: user.map(|u| SessionUser {
                issuer: u.issuer.clone(),
                subject: u.subject.clone(),
                email: u.email.clone(),
                name: u.name.clone(),
                sealed_id_token: row.id_token.clone(),
            }),
        },
    ))
}

/// The session behind a cookie value, if it is live (absolute and idle expiry) and of `kind`.
/// A tenant session also needs its tenant to be `trial` or `active`.
pub async fn load_session(
    ctx: &Context,
    cookie: &str,
    kind: SessionKind,
) -> AppResult<Option<Session>> {
    let id = sha256_hex(cookie);
    let now = clock::now();
    let mut conn = ctx.db.conn().await?;
    let Some((row, tenant_ref)) =
        store::sessions::find_live_with_tenant(&mut conn, &id, now).await?
    else {
        return Ok(None);
    };
    let idle = chrono::Duration::minutes(ctx.config.session_idle_minutes.into());
    if now - row.last_seen_at > idle {
        return Ok(None);
    }
    let Some(role) = Role::parse(&row.role) else {
        return Ok(None);
    };
    let tenant = match (kind, &row.tenant_id) {
        (SessionKind::Platform, None) if !role.is_tenant_role() => None,
        (SessionKind::Tenant, Some(_)) if role.is_tenant_role() => {
            let Some(t) = tenant_ref else {
                return Ok(None);
            };
            let active = t
                .status
                .parse::<crate::tenants::TenantStatus>()
                .is_ok_and(|s| s.is_active());
            if !active {
                return Ok(None);
            }
            Some(TenantScope {
                id: t.id,
                slug: t.slug,
            })
        }
        _ => return Ok(None),
    };
    if now - row.last_seen_at > chrono::Duration::minutes(1) {
        drop(conn);
        let db = ctx.db.clone();
        let _ = transaction!(db, |tx| { store::sessions::touch(tx, &id, now).await });
    }
    let user = match (&row.issuer, &row.subject) {
        (Some(issuer), Some(subject)) => Some(SessionUser {
            issuer: issuer.clone(),
            subject: subject.clone(),
            email: row.email.clone(),
            name: row.display_name.clone(),
            sealed_id_token: row.id_token.clone(),
        }),
        _ => None,
    };
    Ok(Some(Session {
        id: row.id,
        handle: row.handle.unwrap_or_default(),
        principal: Principal {
            name: row.principal,
            role,
            tenant,
            key: None,
        },
        csrf_token: row.csrf_token,
        user,
    }))
}

/// What a logout needs to end the session at the provider too.
#[derive(Debug, Clone)]
pub struct ProviderLogout {
    pub issuer: String,
    pub id_token: Option<String>,
}

/// Ends a session (logout), audited; for an OIDC session, what RP-initiated logout needs.
pub async fn end_session(
    ctx: &Context,
    session: &Session,
    actor: &Actor,
) -> AppResult<Option<ProviderLogout>> {
    let details = json!({ "username": session.principal.name, "session": session.handle });
    let event = match &session.principal.tenant {
        Some(t) => AuditEvent::tenant("tenant.logout", &t.id, &t.slug, details),
        None => AuditEvent::platform("admin.logout", details),
    };
    transaction!(ctx.db, |tx| {
        store::sessions::delete(tx, &session.id).await?;
        audit::record(tx, actor, event.clone()).await?;
        Ok(())
    })?;
    Ok(session.user.as_ref().map(|user| ProviderLogout {
        issuer: user.issuer.clone(),
        id_token: user.sealed_id_token.as_ref().and_then(|sealed| {
            ctx.keyring
                .open(sealed, &id_token_context(&session.handle))
                .ok()
        }),
    }))
}

/// The live sessions of a tenant, newest first.
pub async fn list_tenant_sessions(
    ctx: &Context,
    tenant: &TenantScope,
) -> AppResult<Vec<SessionInfo>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::sessions::list_for_tenant(&mut conn, &tenant.id, clock::now(), 500).await?;
    let idle = chrono::Duration::minutes(ctx.config.session_idle_minutes.into());
    let now = clock::now();
    Ok(rows
        .iter()
        .filter(|row| now - row.last_seen_at <= idle)
        .map(SessionInfo::from_row)
        .collect())
}

/// Ends session `handle` of `tenant` (a tenant admin signing someone out), audited.
pub async fn revoke_tenant_session(
    ctx: &Context,
    actor: &Actor,
    tenant: &TenantScope,
    handle: &str,
) -> AppResult<()> {
    transaction!(ctx.db, |tx| {
        let row = store::sessions::delete_by_handle(tx, Some(&tenant.id), handle)
            .await?
            .ok_or_else(|| AppError::not_found("session", handle))?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.session_revoke",
                &tenant.id,
                &tenant.slug,
                json!({ "session": handle, "username": row.principal }),
            ),
        )
        .await?;
        Ok(())
    })
}

/// Compares a submitted CSRF token with the expected one in constant time.
pub fn csrf_matches(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected, submitted)
}

/// A fresh random token (login-form CSRF, request ids).
pub fn new_token() -> String {
    random_string(32)
}
