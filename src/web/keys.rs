//! A tenant's API keys and its users' sessions, managed from two places — the portal's tenant
//! page (platform admins) and the tenant's own site (its admins) — with one set of handlers:
//! each place says whose keys they are, who acts, where the browser goes back to, and how a
//! new key is shown (once, on the page that answers the form, never in a redirect).

use serde::Deserialize;

use super::error::PageResult;
use super::{Flash, back_or_error, redirect_with};
use crate::audit::Actor;
use crate::auth::{self, KeySpec, NewApiToken, Role};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::TenantScope;

/// Where a tenant's keys and sessions are managed.
pub trait KeysPlace {
    /// The tenant whose keys and sessions these are.
    fn scope(&self) -> &TenantScope;
    /// Who acts.
    fn actor(&self) -> &Actor;
    /// Where the browser goes after a change: the place's page, at `section` (`api-keys`,
    /// `sessions`).
    fn back(&self, section: &str) -> String;
    /// The page that shows a new key once (`grace_minutes`: the old key's, after a rotation).
    fn show_key(&self, key: &NewApiToken, grace_minutes: Option<u32>) -> PageResult;
}

/// The form of a new key, or of a rotation.
#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    rate_limit_per_minute: String,
    #[serde(default)]
    grace_minutes: String,
}

impl KeyForm {
    /// The key the form asks for.
    fn spec(&self) -> AppResult<KeySpec> {
        Ok(KeySpec {
            name: self.name.clone(),
            role: match self.role.as_str() {
                "tenant-admin" => Role::TenantAdmin,
                _ => Role::Member,
            },
            expires_in_days: number("expires_in_days", &self.expires_in_days)?,
            rate_limit_per_minute: number("rate_limit_per_minute", &self.rate_limit_per_minute)?,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The role asked for, as the form sends it.
    pub(crate) fn role(&self) -> &str {
        &self.role
    }

    /// Days until the key expires; none: it does not.
    pub(crate) fn expires_in_days(&self) -> AppResult<Option<u32>> {
        number("expires_in_days", &self.expires_in_days)
    }

    /// Minutes the rotated key keeps working (default 60).
    pub(crate) fn grace(&self) -> AppResult<u32> {
        Ok(number("grace_minutes", &self.grace_minutes)?.unwrap_or(60))
    }
}

/// A number field of a form: empty is none; anything else must be a whole number.
fn number(field: &str, text: &str) -> AppResult<Option<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| AppError::invalid(field, "number", "must be a whole number"))
}

/// Makes a key and shows it once.
pub async fn create_key(ctx: &Context, place: &impl KeysPlace, form: &KeyForm) -> PageResult {
    let made = match form.spec() {
        Ok(spec) => auth::create_key(ctx, place.actor(), Some(place.scope()), &spec).await,
        Err(err) => Err(err),
    };
    match made {
        Ok(key) => place.show_key(&key, None),
        Err(err) => back_or_error(&place.back("api-keys"), err),
    }
}

/// Revokes key `id`.
pub async fn revoke_key(ctx: &Context, place: &impl KeysPlace, id: &str) -> PageResult {
    auth::revoke_key(ctx, place.actor(), place.scope(), id).await?;
    Ok(redirect_with(
        &place.back("api-keys"),
        Flash::success("The key is revoked."),
    ))
}

/// Rotates key `id`: the new key is shown once; the old one works for the grace period.
pub async fn rotate_key(
    ctx: &Context,
    place: &impl KeysPlace,
    id: &str,
    form: &KeyForm,
) -> PageResult {
    let rotated = match form.grace() {
        Ok(grace) => auth::rotate_key(ctx, place.actor(), Some(place.scope()), id, grace)
            .await
            .map(|key| (key, grace)),
        Err(err) => Err(err),
    };
    match rotated {
        Ok((key, grace)) => place.show_key(&key, Some(grace)),
        Err(err) => back_or_error(&place.back("api-keys"), err),
    }
}

/// Signs a user of the tenant out: ends their session `handle`.
pub async fn revoke_session(ctx: &Context, place: &impl KeysPlace, handle: &str) -> PageResult {
    auth::revoke_tenant_session(ctx, place.actor(), place.scope(), handle).await?;
    Ok(redirect_with(
        &place.back("sessions"),
        Flash::success("The user is signed out."),
    ))
}
