//! A tenant's single sign-on settings as a service of their own: read, change (tenant admins and
//! platform admins), "test connection" before saving, the OAuth health check, and single-use
//! setup links with which a tenant's IT administrator configures SSO without an account.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{TenantScope, random_string, sha256_hex};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::config::Config;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::identity_providers::{self, ConnectionReport, Probe};
use crate::roles::RoleMapping;
use crate::store;
use crate::store::models::SetupLinkRow;
use crate::tenants::input::{Scopes, double_option};
use crate::tenants::model::SecretStatus;
use crate::tenants::{self, Tenant, TenantPatch};
use crate::transaction;

/// The addresses at which a tenant's pages are reached from outside: `https://<slug>.<base
/// domain>` when a base domain is configured, and `<public url>/t/<slug>`.
#[derive(Debug, Clone)]
pub struct TenantUrls {
    /// Host-style base first (when configured), then the path-style one.
    pub bases: Vec<String>,
}

impl TenantUrls {
    /// `request_origin` (`scheme://host[:port]` of the request) stands in for `public_url` when
    /// none is configured.
    pub fn new(config: &Config, slug: &str, request_origin: &str) -> Self {
        let origin = config
            .public_url
            .as_deref()
            .unwrap_or(request_origin)
            .trim_end_matches('/')
            .to_owned();
        let mut bases = Vec::new();
        if let Some(domain) = &config.base_domain
            && let Ok(mut url) = url::Url::parse(&origin)
            && url.set_host(Some(&format!("{slug}.{domain}"))).is_ok()
        {
            url.set_path("");
            bases.push(url.as_str().trim_end_matches('/').to_owned());
        }
        bases.push(format!("{origin}/t/{slug}"));
        TenantUrls { bases }
    }

    /// The address links and setup URLs use.
    pub fn primary(&self) -> &str {
        &self.bases[0]
    }

    pub fn redirect_uris(&self) -> Vec<String> {
        self.bases.iter().map(|b| format!("{b}/callback")).collect()
    }

    pub fn post_logout_redirect_uris(&self) -> Vec<String> {
        self.bases
            .iter()
            .map(|b| format!("{b}/logged-out"))
            .collect()
    }
}

/// A tenant's SSO settings as shown. Never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SsoSettings {
    pub tenant: String,
    /// Issuer and client id are set: the tenant's users can log in.
    pub configured: bool,
    pub oauth_issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: SecretStatus,
    /// The secret before the last change, kept for a rollback.
    pub client_secret_previous: SecretStatus,
    pub scopes: Vec<String>,
    pub role_mapping: RoleMapping,
    /// Register these at the identity provider as redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Register these at the identity provider as post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
}

impl SsoSettings {
    pub fn of(tenant: &Tenant, urls: &TenantUrls) -> Self {
        SsoSettings {
            tenant: tenant.slug.clone(),
            configured: tenant.oauth_issuer.is_some() && tenant.client_id.is_some(),
            oauth_issuer: tenant.oauth_issuer.clone(),
            client_id: tenant.client_id.clone(),
            client_secret: tenant.client_secret.clone(),
            client_secret_previous: tenant.client_secret_previous.clone(),
            scopes: tenant.scopes.clone(),
            role_mapping: tenant.role_mapping.clone(),
            redirect_uris: urls.redirect_uris(),
            post_logout_redirect_uris: urls.post_logout_redirect_uris(),
        }
    }
}

/// A change of SSO settings: absent fields stay; `null` clears issuer, client id and secret
/// (and so turns SSO off) or restores the default role mapping.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoUpdate {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub oauth_issuer: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub client_id: Option<Option<String>>,
    /// Write-only; absent keeps the current secret, `null` removes it. A new one keeps the old
    /// for a rollback.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Option<String>>,
    #[serde(default)]
    pub scopes: Option<Scopes>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<RoleMapping>)]
    pub role_mapping: Option<Option<RoleMapping>>,
}

impl SsoUpdate {
    fn to_patch(&self) -> TenantPatch {
        TenantPatch {
            oauth_issuer: self.oauth_issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            scopes: self.scopes.clone(),
            role_mapping: self.role_mapping.clone(),
            ..TenantPatch::default()
        }
    }
}

/// Changes a tenant's SSO settings (validated like a PATCH, audited as `tenant.update`).
pub async fn update(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    change: &SsoUpdate,
) -> AppResult<Tenant> {
    let patch = change.to_patch();
    tenants::refuse_configured_fields(slug, &patch)?;
    tenants::patch_fields(ctx, actor, slug, &patch).await
}

/// What "test connection" checks: the issuer (and scopes) given, or the saved ones.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionTest {
    #[serde(default)]
    pub oauth_issuer: Option<String>,
    #[serde(default)]
    pub scopes: Option<Scopes>,
}

/// Fetches the discovery document and keys of the issuer in `test` (or the tenant's saved one)
/// and reports what it found. Saves nothing.
pub async fn test_connection(
    ctx: &Context,
    tenant: &Tenant,
    test: &ConnectionTest,
    address: Option<&str>,
) -> AppResult<ConnectionReport> {
    let mut checks = tenants::input::Checks::default();
    let issuer = match &test.oauth_issuer {
        Some(issuer) => checks.issuer(issuer),
        None => tenant.oauth_issuer.clone(),
    };
    let scopes = test.scopes.as_ref().map(|s| checks.scopes(s));
    checks.finish()?;
    let Some(issuer) = issuer else {
        return Err(AppError::invalid(
            "oauth_issuer",
            "required",
            "the tenant has no issuer yet: give one to test",
        ));
    };
    let scopes = match scopes.flatten() {
        Some(text) => tenants::model::split_scopes(&text),
        None => tenant.scopes.clone(),
    };
    // A test fetches from wherever the tenant says: it spends a login start of the address and
    // the tenant, so that tests cannot be fired at the server's rate.
    if let Err(refused) = ctx.limits.check_login(&tenant.id, address).await {
        return Err(match refused {
            crate::throttle::Refusal::Unavailable(detail) => AppError::Unavailable(detail),
            crate::throttle::Refusal::Spent { wait, .. } => {
                ctx.metrics
                    .refusals
                    .count(crate::metrics::Throttle::AbuseBlock);
                AppError::RateLimited {
                    what: "too many provider tests".into(),
                    retry_after_secs: wait.as_secs().max(1),
                }
            }
        });
    }
    Ok(identity_providers::test_connection(&ctx.providers, &issuer, &scopes).await)
}

/// `GET /api/v1/tenant/{slug}/health/oauth`: whether the tenant's identity provider answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OAuthHealth {
    pub tenant: String,
    /// `healthy` (discovery and keys fetched, issuer matches), `unreachable`, `misconfigured`
    /// (answers, but wrong: issuer mismatch, no keys…) or `not_configured`.
    pub status: String,
    pub issuer: Option<String>,
    /// The discovery document could be fetched.
    pub issuer_accessible: bool,
    pub discovery: Option<Probe>,
    pub jwks: Option<Probe>,
    /// Keys in the key set.
    pub keys: usize,
    pub problems: Vec<String>,
}

pub async fn oauth_health(ctx: &Context, slug: &str) -> AppResult<OAuthHealth> {
    let tenant = tenants::get(ctx, slug).await?;
    let (Some(issuer), Some(_)) = (&tenant.oauth_issuer, &tenant.client_id) else {
        return Ok(OAuthHealth {
            tenant: tenant.slug,
            status: "not_configured".into(),
            issuer: tenant.oauth_issuer,
            issuer_accessible: false,
            discovery: None,
            jwks: None,
            keys: 0,
            problems: vec!["the tenant has no issuer and client id".into()],
        });
    };
    let report = identity_providers::test_connection(&ctx.providers, issuer, &tenant.scopes).await;
    let status = if report.ok {
        "healthy"
    } else if !report.discovery.reachable || report.jwks.as_ref().is_some_and(|j| !j.reachable) {
        "unreachable"
    } else {
        "misconfigured"
    };
    Ok(OAuthHealth {
        tenant: tenant.slug,
        status: status.into(),
        issuer: Some(issuer.clone()),
        issuer_accessible: report.discovery.reachable && report.discovery.status == Some(200),
        keys: report.key_ids.len(),
        problems: report.problems,
        discovery: Some(report.discovery),
        jwks: report.jwks,
    })
}

// ---------------------------------------------------------------------------------------------
// Setup links

/// A setup link as listed (never its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SetupLinkInfo {
    pub id: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `usable`, `used`, `expired` or `revoked`.
    pub status: String,
}

impl SetupLinkInfo {
    fn from_row(row: &SetupLinkRow) -> Self {
        let now = clock::now();
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.used_at.is_some() {
            "used"
        } else if row.expires_at <= now {
            "expired"
        } else {
            "usable"
        };
        SetupLinkInfo {
            id: row.id.clone(),
            created_by: row.created_by.clone(),
            created_at: clock::to_utc(row.created_at),
            expires_at: clock::to_utc(row.expires_at),
            used_at: row.used_at.map(clock::to_utc),
            revoked_at: row.revoked_at.map(clock::to_utc),
            status: status.into(),
        }
    }
}

/// A new setup link: its URL is shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewSetupLink {
    /// Give this to the tenant's IT administrator; it works once, until `expires_at`.
    pub url: String,
    #[serde(flatten)]
    pub info: SetupLinkInfo,
}

/// Creates a single-use setup link for `tenant`, valid `hours` (default from configuration,
/// at most a week).
pub async fn create_setup_link(
    ctx: &Context,
    actor: &Actor,
    tenant: &TenantScope,
    hours: Option<u32>,
    urls: &TenantUrls,
) -> AppResult<NewSetupLink> {
    refuse_platform_tenant(&tenant.slug)?;
    let hours = hours.unwrap_or(ctx.config.auth.setup_link_hours);
    if !(1..=168).contains(&hours) {
        return Err(AppError::invalid(
            "expires_in_hours",
            "range",
            "must be between 1 and 168 (a week)",
        ));
    }
    let token = format!("tsl_{}", random_string(40));
    let now = clock::now();
    let row = SetupLinkRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id.clone(),
        token_hash: sha256_hex(&token),
        created_by: actor.name.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(hours.into()),
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    transaction!(ctx.db, |tx| {
        store::logins::insert_link(tx, &row).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.sso_setup_link_create",
                &tenant.id,
                &tenant.slug,
                json!({ "id": row.id, "expires_at": clock::rfc3339(row.expires_at) }),
            ),
        )
        .await?;
        Ok(())
    })?;
    Ok(NewSetupLink {
        url: format!("{}/setup/{token}", urls.primary()),
        info: SetupLinkInfo::from_row(&row),
    })
}

pub async fn list_setup_links(
    ctx: &Context,
    tenant: &TenantScope,
) -> AppResult<Vec<SetupLinkInfo>> {
    let mut conn = ctx.db.conn().await?;
    let rows = store::logins::list_links(&mut conn, &tenant.id).await?;
    Ok(rows.iter().map(SetupLinkInfo::from_row).collect())
}

pub async fn revoke_setup_link(
    ctx: &Context,
    actor: &Actor,
    tenant: &TenantScope,
    id: &str,
) -> AppResult<()> {
    transaction!(ctx.db, |tx| {
        let row = store::logins::revoke_link(tx, &tenant.id, id, clock::now())
            .await?
            .ok_or_else(|| AppError::not_found("setup link", id))?;
        if row.revoked_at.is_none() {
            audit::record(
                tx,
                actor,
                AuditEvent::tenant(
                    "tenant.sso_setup_link_revoke",
                    &tenant.id,
                    &tenant.slug,
                    json!({ "id": row.id }),
                ),
            )
            .await?;
        }
        Ok(())
    })
}

/// Why a setup link cannot be used, for its page.
fn unusable(info: &SetupLinkInfo) -> AppError {
    AppError::Forbidden(
        match info.status.as_str() {
            "used" => "This setup link was already used. Ask your platform contact for a new one.",
            "expired" => "This setup link has expired. Ask your platform contact for a new one.",
            _ => "This setup link was revoked. Ask your platform contact for a new one.",
        }
        .into(),
    )
}

/// The tenant a usable setup link belongs to; 404 for an unknown link or one of another
/// tenant, 403 for a used, expired or revoked one.
pub async fn open_setup_link(ctx: &Context, slug: &str, token: &str) -> AppResult<Tenant> {
    refuse_platform_tenant(slug)?;
    let tenant = tenants::get(ctx, slug).await?;
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::logins::find_link(&mut conn, &sha256_hex(token)).await?
    }
    .filter(|row| row.tenant_id == tenant.id)
    .ok_or_else(|| AppError::not_found("setup link", "…"))?;
    let info = SetupLinkInfo::from_row(&row);
    if info.status != "usable" {
        return Err(unusable(&info));
    }
    Ok(tenant)
}

/// The platform's own tenant has no setup links: whoever set up its SSO would choose who logs in
/// as a platform administrator. Its SSO comes from the server's configuration or a platform
/// admin. (A setup link stored for it anyway is refused, as not found.)
fn refuse_platform_tenant(slug: &str) -> AppResult<()> {
    if slug == tenants::ADMIN_SLUG {
        return Err(AppError::forbidden(format!(
            "the platform's own tenant `{slug}` has no setup links: its single sign-on is set in \
             the server's configuration ([admin_tenant]) or by a platform admin"
        )));
    }
    Ok(())
}

/// Saves SSO settings through a setup link and uses it up, in one transaction: a refused change
/// leaves the link usable; a saved one makes it unusable.
pub async fn use_setup_link(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    token: &str,
    change: &SsoUpdate,
) -> AppResult<Tenant> {
    let tenant = open_setup_link(ctx, slug, token).await?;
    let patch = change.to_patch();
    tenants::refuse_configured_fields(slug, &patch)?;
    let checked = tenants::check_patch(&patch, slug == tenants::ADMIN_SLUG)?;
    let token_hash = sha256_hex(token);
    let now = clock::now();
    let (row, _) = transaction!(ctx.db, |tx| {
        let link = store::logins::find_link(tx, &token_hash)
            .await?
            .filter(|row| row.tenant_id == tenant.id)
            .ok_or_else(|| AppError::not_found("setup link", "…"))?;
        if !store::logins::use_link(tx, &link.id, now, actor.source_ip.as_deref()).await? {
            return Err(unusable(&SetupLinkInfo::from_row(&link)));
        }
        let applied = tenants::apply_patch(tx, &ctx.keyring, actor, slug, checked).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.sso_setup_link_use",
                &tenant.id,
                &tenant.slug,
                json!({ "id": link.id }),
            ),
        )
        .await?;
        Ok(applied)
    })?;
    Tenant::from_row(&row, ctx.config.retention_days)
}
