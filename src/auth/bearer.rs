//! A request's bearer token, resolved to its principal: the key looked up by its prefix, its
//! secret compared in constant time, its expiry, revocation, role and tenant checked, and every
//! refusal counted against the abuse limits (`throttle`) and in the metrics.

use super::{Principal, TenantScope, constant_time_eq, sha256_hex};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;
use crate::store::models::{ApiKeyRow, TenantRow};
use crate::tenants::TenantStatus;
use crate::transaction;

/// What became of a bearer token.
#[derive(Debug)]
pub enum KeyOutcome {
    Authenticated(Principal),
    /// Not a live key (unknown, wrong secret, revoked, expired).
    Refused,
    /// A live key of a tenant that is not active (suspended, canceled, deleted…): the caller
    /// holds a good key, so it is told why.
    TenantInactive {
        slug: String,
        status: TenantStatus,
    },
    /// Too many failed attempts from this address or against this tenant's keys: wait.
    Blocked(std::time::Duration),
}

/// Resolves a bearer token to its principal. A correct key is accepted whatever others failed;
/// a refused token counts against its source address and, when it names a key that exists,
/// against that key, and once either budget is spent further failures get 429 (see
/// `throttle`). Attempts and failures are counted in the metrics by tenant.
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
    let parts = token
        .strip_prefix("tny_")
        .and_then(|rest| rest.split_once('_'))
        .filter(|(prefix, secret)| prefix.len() == 8 && secret.len() == 32);
    let (key, tenant_row) = match parts {
        Some((prefix, _)) => match ctx.caches.key_with_tenant(prefix).await {
            Ok(Some((key, tenant))) => (Some(key), tenant),
            Ok(None) => (None, None),
            // A row this version cannot read authenticates nothing; the operator hears of it.
            Err(e) if e.is_unknown_stored_word() => {
                tracing::error!(prefix, "API key refused: {e}");
                refuse("unknown", "unknown_stored_word");
                return Ok(KeyOutcome::Refused);
            }
            Err(e) => return Err(e),
        },
        None => (None, None),
    };
    let row = key.as_ref().map(|key| &key.row);
    let label = match (&row, &tenant_row) {
        (_, Some(t)) => t.slug.as_str(),
        (Some(r), None) if r.tenant_id.is_none() => "platform",
        _ => "unknown",
    };
    let now = clock::now();
    let verdict = match (&row, parts) {
        (None, None) | (Some(_), None) => Verdict::Refused(Refusal::Malformed),
        (None, Some(_)) => Verdict::Refused(Refusal::Unknown),
        (Some(row), Some((_, secret))) => {
            if !constant_time_eq(&sha256_hex(secret), &row.secret_hash) {
                Verdict::Refused(Refusal::WrongSecret)
            } else if row.revoked_at.is_some() {
                Verdict::Refused(Refusal::Revoked)
            } else if row.expires_at.is_some_and(|at| at <= now) {
                Verdict::Refused(Refusal::Expired)
            } else {
                key_principal(row, tenant_row.as_deref())
            }
        }
    };
    let principal = match verdict {
        Verdict::Principal(principal) => {
            ctx.metrics
                .auth_attempts
                .with_label_values(&[label, "api_key"])
                .inc();
            principal
        }
        Verdict::TenantInactive { slug, status } => {
            refuse(label, "tenant_inactive");
            return Ok(KeyOutcome::TenantInactive { slug, status });
        }
        Verdict::Refused(reason) => {
            refuse(label, reason.as_str());
            // The attempt that spends a budget is the first one refused with 429; failures
            // count against the key only when the token named one that exists.
            return Ok(
                match ctx
                    .limits
                    .key_failed(row.as_ref().map(|r| r.prefix.as_str()), address)
                    .await
                {
                    Ok(Some(wait)) => KeyOutcome::Blocked(wait),
                    Ok(None) => KeyOutcome::Refused,
                    Err(crate::throttle::Refusal::Unavailable(detail)) => {
                        return Err(AppError::Unavailable(detail));
                    }
                    Err(crate::throttle::Refusal::Spent { wait, .. }) => KeyOutcome::Blocked(wait),
                },
            );
        }
    };
    let key = key.expect("a principal comes from a key");
    // Last-used time, at most once a minute per key: not a write on every request.
    if key.touch_due(now) {
        let id = key.row.id.clone();
        let db = ctx.db.clone();
        let _ = transaction!(db, |tx| { store::admin::touch_key(tx, &id, now).await });
    }
    Ok(KeyOutcome::Authenticated(principal))
}

/// [`authenticate_key`] without a source address: the principal of a live token, if it is one.
pub async fn authenticate_token(ctx: &Context, token: &str) -> AppResult<Option<Principal>> {
    Ok(match authenticate_key(ctx, token, None).await? {
        KeyOutcome::Authenticated(principal) => Some(principal),
        KeyOutcome::Refused | KeyOutcome::Blocked(_) | KeyOutcome::TenantInactive { .. } => None,
    })
}

/// What a token is, once looked up.
enum Verdict {
    Principal(Principal),
    /// A live key of a tenant that is not active.
    TenantInactive {
        slug: String,
        status: TenantStatus,
    },
    Refused(Refusal),
}

/// Why a token is not a live key: the `reason` label of the failure metric.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Malformed,
    Unknown,
    WrongSecret,
    Revoked,
    Expired,
    /// A tenant role without a tenant, or a platform role on a tenant's key.
    RoleOutOfPlace,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::RoleOutOfPlace => "unknown_role",
        }
    }
}

/// The verdict on a key whose secret matched: its principal, if its role and tenant allow one.
fn key_principal(row: &ApiKeyRow, tenant: Option<&TenantRow>) -> Verdict {
    let role = row.role;
    let tenant = match (&row.tenant_id, tenant) {
        (None, _) if role.is_tenant_role() => return Verdict::Refused(Refusal::RoleOutOfPlace),
        (None, _) => None,
        (Some(_), None) => return Verdict::Refused(Refusal::Unknown),
        (Some(_), Some(t)) => {
            if !t.status.is_active() {
                return Verdict::TenantInactive {
                    slug: t.slug.clone(),
                    status: t.status,
                };
            }
            if !role.is_tenant_role() {
                return Verdict::Refused(Refusal::RoleOutOfPlace);
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
    Verdict::Principal(Principal {
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
