//! Sessions in the database, for the portal and for each tenant's users: started after a login,
//! loaded from the cookie (its SHA-256), ended, listed and revoked by a tenant's admins; the
//! id_token sealed for RP-initiated logout.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Principal, Role, TenantScope, login, random_string, sha256_hex};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::models::SessionRow;
use crate::transaction;

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
            role: row.role,
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
pub(crate) fn id_token_context(handle: &str) -> String {
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
    user: Option<&login::LoginUser>,
    replaces: Option<&str>,
) -> AppResult<(String, Session)> {
    let cookie = random_string(43);
    let handle = random_string(16).to_lowercase();
    let now = clock::now();
    let tenant = principal.tenant.clone();
    let row = SessionRow {
        id: sha256_hex(&cookie),
        principal: principal.name.clone(),
        role: principal.role,
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

/// A session row this version cannot read (a stored word it does not know) authenticates
/// nothing: as no session, and the operator hears of it.
fn readable<T>(found: AppResult<Option<T>>) -> AppResult<Option<T>> {
    match found {
        Err(e) if e.is_unknown_stored_word() => {
            tracing::error!("session refused: {e}");
            Ok(None)
        }
        other => other,
    }
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
    let idle = chrono::Duration::minutes(ctx.config.session_idle_minutes.into());
    let Some((session, tenant_row)) = readable(ctx.caches.session_with_tenant(&id, now).await)?
    else {
        return Ok(None);
    };
    let (session, tenant_row) = if now - session.last_seen() > idle {
        // Idle as this server saw it: another server may have seen it since.
        ctx.caches.recheck_session(&id);
        match readable(ctx.caches.session_with_tenant(&id, now).await)? {
            Some(fresh) if now - fresh.0.last_seen() <= idle => fresh,
            _ => return Ok(None),
        }
    } else {
        (session, tenant_row)
    };
    let row = &session.row;
    let role = row.role;
    let tenant = match (kind, &row.tenant_id) {
        (SessionKind::Platform, None) if !role.is_tenant_role() => None,
        (SessionKind::Tenant, Some(_)) if role.is_tenant_role() => {
            let Some(t) = tenant_row else {
                return Ok(None);
            };
            if !t.status.is_active() {
                return Ok(None);
            }
            Some(TenantScope {
                id: t.id.clone(),
                slug: t.slug.clone(),
            })
        }
        _ => return Ok(None),
    };
    // Last activity, written back at most once a minute.
    if session.seen_at(now) {
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
        id: row.id.clone(),
        handle: row.handle.clone().unwrap_or_default(),
        principal: Principal {
            name: row.principal.clone(),
            role,
            tenant,
            key: None,
        },
        csrf_token: row.csrf_token.clone(),
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
