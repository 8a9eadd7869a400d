//! The OpenID Connect relying party: one per tenant, each against its own issuer.
//!
//! A login is the authorization code flow with PKCE S256. Its `state`, `nonce` and code verifier
//! live in the database (`login_attempts`, so any replica can finish a login another one began),
//! bound to the browser by a cookie of its own and to the tenant, issuer and client the browser
//! was sent to; the callback consumes the attempt before it checks anything, so a state works
//! once. The callback then insists on the provider's exact issuer — in the discovery document,
//! in the RFC 9207 `iss` response parameter when the provider advertises it (mix-up defence,
//! RFC 9700 §4.4), and in the id_token — and verifies the id_token's signature against the
//! issuer's keys (asymmetric algorithms only: no `none`, no HS* keyed with a public key), its
//! `aud`, `azp`, `exp`, `iat` and `nonce`.
//!
//! Providers' discovery documents and key sets come from the server's cache of them
//! (`identity_providers`). The protocol itself is `openidconnect`'s; what is ours is the binding
//! to tenants and browsers.

use std::time::Duration;

use actix_web::http::StatusCode;
use openidconnect::core::{
    CoreClient, CoreClientAuthMethod, CoreGenderClaim, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthenticationFlow, ClientId, ClientSecret, CsrfToken, IdToken,
    Nonce, PkceCodeChallenge, RedirectUrl, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Principal, Role, TenantScope, random_string, sha256_hex};
use crate::clock;
use crate::context::Context;
use crate::identity_providers::{Metadata, ProviderError};
use crate::store;
use crate::store::models::LoginAttemptRow;
use crate::tenants::Tenant;
use crate::tenants::TenantStatus;
use crate::transaction;

mod callback;

/// Where a login attempt's sealed PKCE verifier is bound: its state's hash.
pub(crate) fn pkce_context(state_hash: &str) -> String {
    format!("login/{state_hash}/pkce")
}

/// Every claim beyond the standard ones (e.g. `groups`), kept for the role mapping.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}
impl AdditionalClaims for ExtraClaims {}

pub(super) type TenantIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

// ---------------------------------------------------------------------------------------------
// Logins

/// Why a login was refused: a stable reason (metrics, logs), the HTTP status of the page, what a
/// person reads, and a technical detail safe to show an administrator.
#[derive(Debug, Clone)]
pub struct LoginFailure {
    pub reason: &'static str,
    pub status: StatusCode,
    pub message: String,
    pub detail: Option<String>,
    /// Seconds to wait, for a rate-limited login.
    pub retry_after: Option<u64>,
}

impl LoginFailure {
    fn new(reason: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            reason,
            status,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn provider(err: ProviderError) -> Self {
        let (status, message) = match err.reason {
            "discovery_issuer_mismatch" => (
                StatusCode::BAD_GATEWAY,
                "The sign-in provider's configuration does not match this organisation's \
                 settings (its issuer differs), so signing in is not possible. Please tell \
                 your administrator.",
            ),
            _ => (
                StatusCode::BAD_GATEWAY,
                "We could not reach your organisation's sign-in provider. Please try again in a \
                 moment; if it keeps failing, tell your administrator.",
            ),
        };
        Self::new(err.reason, status, message).detail(err.detail)
    }

    fn unverified(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            reason,
            StatusCode::BAD_REQUEST,
            "Your sign-in provider's answer could not be verified, so you were not signed in. \
             Please try again; if it keeps failing, tell your administrator.",
        )
        .detail(detail)
    }

    /// The tenant is not there for its users (suspended, canceled, deleted, not provisioned).
    pub fn tenant_unavailable(name: &str, status: TenantStatus) -> Self {
        let why = match status {
            TenantStatus::Suspended => "is suspended",
            TenantStatus::Canceled => "has been canceled",
            TenantStatus::Deleted => "has been deleted",
            TenantStatus::Provisioning => "is still being set up",
            TenantStatus::Failed => "could not be set up",
            TenantStatus::Trial | TenantStatus::Active => "is available",
        };
        Self::new(
            "tenant_unavailable",
            StatusCode::FORBIDDEN,
            format!("{name} {why}: its users cannot sign in. Please contact your administrator."),
        )
    }

    /// A new user of a tenant whose hard `users` quota is reached.
    pub fn user_limit(name: &str, limit: u64) -> Self {
        Self::new(
            "user_limit",
            StatusCode::FORBIDDEN,
            format!(
                "{name} has reached its limit of {limit} users: new users cannot sign in until an administrator raises it. Users who signed in before still can."
            ),
        )
    }

    fn limited(refusal: crate::throttle::Refusal) -> Self {
        use crate::throttle::Refusal;
        match refusal {
            Refusal::Spent { wait, .. } => Self::rate_limited(wait),
            Refusal::Unavailable(detail) => Self::new(
                "rate_limits_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Signing in is paused for a moment. Please try again shortly.",
            )
            .detail(detail),
        }
    }

    fn rate_limited(wait: Duration) -> Self {
        let secs = wait.as_secs().max(1);
        let mut failure = Self::new(
            "rate_limited",
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many sign-in attempts. Please wait {secs} seconds and try again."),
        );
        failure.retry_after = Some(secs);
        failure
    }
}

/// Name of the cookie that binds a login attempt to the browser that started it.
pub const LOGIN_BROWSER_COOKIE: &str = "tenantry_login";

/// Where to send the browser to start a login.
#[derive(Debug)]
pub struct LoginStart {
    /// The provider's authorization URL.
    pub authorize_url: String,
    /// The browser-binding cookie value to set (new, or the one the browser already had).
    pub browser_cookie: String,
}

/// What a callback needs from the browser's request.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    /// RFC 9207.
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The user a login established.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub tenant: TenantScope,
    /// Whether this was a login of the platform's own tenant (platform roles).
    pub platform: bool,
    pub role: Role,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The raw id_token (sealed before it is stored), for the logout hint.
    pub id_token: String,
    /// Local path to go to now.
    pub next: Option<String>,
}

impl LoginUser {
    /// The principal the session carries.
    pub fn principal(&self) -> Principal {
        let who = self.email.clone().unwrap_or_else(|| self.subject.clone());
        if self.platform {
            Principal {
                name: format!("sso:{who}"),
                role: self.role,
                tenant: None,
                key: None,
            }
        } else {
            Principal {
                name: format!("user:{}/{who}", self.tenant.slug),
                role: self.role,
                tenant: Some(self.tenant.clone()),
                key: None,
            }
        }
    }
}

/// The SSO settings of a tenant, opened: issuer, client id and secret, scopes.
pub(super) struct ClientSettings {
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) scopes: Vec<String>,
}

pub(super) async fn client_settings(
    ctx: &Context,
    tenant: &Tenant,
) -> Result<ClientSettings, LoginFailure> {
    let (Some(issuer), Some(client_id)) = (&tenant.oauth_issuer, &tenant.client_id) else {
        return Err(LoginFailure::new(
            "not_configured",
            StatusCode::CONFLICT,
            format!(
                "Single sign-on is not set up for {} yet. Please ask your administrator.",
                tenant.name
            ),
        ));
    };
    let client_secret = crate::tenants::open_client_secret(ctx, &tenant.id)
        .await
        .map_err(|err| {
            tracing::error!(tenant = %tenant.slug, "opening the client secret: {err}");
            LoginFailure::new(
                "secret_unreadable",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Signing in is not possible right now. The error was logged.",
            )
        })?;
    Ok(ClientSettings {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret,
        scopes: tenant.scopes.clone(),
    })
}

pub(super) type Client = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

pub(super) fn client_for(
    metadata: &Metadata,
    settings: &ClientSettings,
    redirect_uri: &str,
) -> Result<Client, LoginFailure> {
    let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| {
        LoginFailure::new(
            "redirect_uri_invalid",
            StatusCode::INTERNAL_SERVER_ERROR,
            "Signing in is not possible right now. The error was logged.",
        )
        .detail(e.to_string())
    })?;
    let mut client = CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(settings.client_id.clone()),
        settings.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect);
    // client_secret_basic unless the provider says it takes only client_secret_post.
    let methods = metadata.token_endpoint_auth_methods_supported();
    if let Some(methods) = methods
        && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
        && methods.contains(&CoreClientAuthMethod::ClientSecretPost)
    {
        client = client.set_auth_type(AuthType::RequestBody);
    }
    Ok(client)
}

/// Starts a login at `tenant`'s provider: checks the tenant and the rate limits, stores the
/// attempt, and returns where to send the browser. A login refused before it reaches the
/// provider counts as an attempt and a failure in the metrics (one that gets there is counted
/// at its callback).
pub async fn begin_login(
    ctx: &Context,
    tenant: &Tenant,
    redirect_uri: &str,
    next: Option<&str>,
    browser_cookie: Option<&str>,
    source_ip: Option<&str>,
) -> Result<LoginStart, LoginFailure> {
    let outcome = start_login(ctx, tenant, redirect_uri, next, browser_cookie, source_ip).await;
    if let Err(failure) = &outcome {
        ctx.metrics
            .auth_attempts
            .with_label_values(&[&tenant.slug, "oidc"])
            .inc();
        refused(ctx, tenant, failure, "login refused before the provider");
    }
    outcome
}

/// Counts and logs a refused login (once, here).
fn refused(ctx: &Context, tenant: &Tenant, failure: &LoginFailure, what: &str) {
    ctx.metrics
        .auth_failures
        .with_label_values(&[&tenant.slug, "oidc", failure.reason])
        .inc();
    tracing::info!(
        tenant = %tenant.slug,
        reason = failure.reason,
        // The provider's words, escaped: they cannot start a log line of their own.
        detail = %crate::telemetry::escape_for_log(failure.detail.as_deref().unwrap_or("")),
        "{what}"
    );
}

async fn start_login(
    ctx: &Context,
    tenant: &Tenant,
    redirect_uri: &str,
    next: Option<&str>,
    browser_cookie: Option<&str>,
    source_ip: Option<&str>,
) -> Result<LoginStart, LoginFailure> {
    let status = tenant.status;
    if !status.is_active() {
        return Err(LoginFailure::tenant_unavailable(&tenant.name, status));
    }
    let settings = client_settings(ctx, tenant).await?;
    ctx.limits
        .check_login(&tenant.id, source_ip)
        .await
        .map_err(LoginFailure::limited)?;
    let provider = ctx
        .providers
        .get(&settings.issuer)
        .await
        .map_err(LoginFailure::provider)?;
    let client = client_for(&provider.metadata, &settings, redirect_uri)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state = random_string(43);
    let nonce = random_string(43);
    let browser = browser_cookie
        .filter(|c| c.len() == 43 && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .unwrap_or_else(|| random_string(43));
    let mut request = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            {
                let state = state.clone();
                move || CsrfToken::new(state)
            },
            {
                let nonce = nonce.clone();
                move || Nonce::new(nonce)
            },
        )
        .set_pkce_challenge(challenge);
    for scope in settings.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, _, _) = request.url();
    let now = clock::now();
    let row = LoginAttemptRow {
        state_hash: sha256_hex(&state),
        tenant_id: tenant.id.clone(),
        issuer: settings.issuer.clone(),
        client_id: settings.client_id.clone(),
        browser_hash: sha256_hex(&browser),
        nonce,
        pkce_verifier: ctx
            .keyring
            .seal(verifier.secret(), &pkce_context(&sha256_hex(&state))),
        redirect_uri: redirect_uri.to_owned(),
        next_path: next.map(str::to_owned),
        source_ip: source_ip.map(str::to_owned),
        created_at: now,
        expires_at: now + chrono::Duration::minutes(ctx.config.auth.login_attempt_minutes.into()),
    };
    transaction!(ctx.db, |tx| {
        store::logins::delete_expired_attempts(tx, now).await?;
        store::logins::insert_attempt(tx, &row).await
    })
    .map_err(|err| {
        tracing::error!(tenant = %tenant.slug, "storing a login attempt: {err}");
        LoginFailure::new(
            "storage",
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is not possible right now. Please try again in a moment.",
        )
    })?;
    Ok(LoginStart {
        authorize_url: url.to_string(),
        browser_cookie: browser,
    })
}

/// Finishes a login at `tenant`'s callback, from the client at `address`. Counts the attempt and
/// any failure in the metrics; never creates anything on failure.
pub async fn finish_login(
    ctx: &Context,
    tenant: &Tenant,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
    address: Option<&str>,
) -> Result<LoginUser, LoginFailure> {
    ctx.metrics
        .auth_attempts
        .with_label_values(&[&tenant.slug, "oidc"])
        .inc();
    let outcome = callback::verify(ctx, tenant, params, browser_cookie, address).await;
    if let Err(failure) = &outcome {
        refused(ctx, tenant, failure, "login refused");
    }
    outcome
}
