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
//! Discovery documents and key sets are cached per issuer ([`Providers`]); a token signed by a
//! key the cache does not know makes it fetch the keys once more (key rotation at the provider).
//! The protocol itself is `openidconnect`'s; what is ours is the binding to tenants and browsers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
    CoreGenderClaim, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AdditionalProviderMetadata, AuthType, AuthenticationFlow,
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IdToken,
    IdTokenVerifier, IssuerUrl, JsonWebKey as _, JsonWebKeySet, JwsSigningAlgorithm as _, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl,
    RequestTokenError, Scope, SignatureVerificationError, SubjectIdentifier, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::roles::{RoleDecision, RoleMapping};
use super::{Principal, Role, TenantScope, random_string, sha256_hex};
use crate::clock;
use crate::config::AuthConfig;
use crate::context::Context;
use crate::store;
use crate::store::models::{LoginAttemptRow, TenantRow};
use crate::tenants::{ADMIN_SLUG, TenantStatus, secret_context};
use crate::transaction;

/// Provider metadata fields beyond OpenID Connect Discovery that we act on.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    /// RP-Initiated Logout 1.0.
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: the provider adds `iss` to its authorization responses.
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// RFC 8414.
    pub code_challenge_methods_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

/// A provider's discovery document (with its key set).
pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Every claim beyond the standard ones (e.g. `groups`), kept for the role mapping.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub claims: Map<String, Value>,
}
impl AdditionalClaims for ExtraClaims {}

type TenantIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// Why talking to a provider failed. Messages never carry secrets.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// A stable reason (`provider_unreachable`, `discovery_invalid`, `discovery_issuer_mismatch`,
    /// `jwks_unreachable`, `jwks_invalid`).
    pub reason: &'static str,
    pub detail: String,
}

/// One timed request to a provider, as health checks and "test connection" report it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Probe {
    pub url: String,
    pub reachable: bool,
    /// HTTP status of the answer, when there was one.
    pub status: Option<u16>,
    pub response_time_ms: f64,
    /// What was wrong, when something was.
    pub detail: Option<String>,
}

/// The outcome of fetching a provider's discovery document and key set, with timings.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub discovery: Probe,
    pub jwks: Option<Probe>,
    pub metadata: Option<Metadata>,
    pub error: Option<ProviderError>,
}

/// A cached provider.
pub struct Provider {
    pub metadata: Metadata,
    fetched_at: Instant,
}

/// Discovery documents and key sets by issuer, with the HTTP client that fetches them.
pub struct Providers {
    http: reqwest::Client,
    ttl: Duration,
    timeout: Duration,
    cache: Mutex<HashMap<String, Arc<Provider>>>,
}

/// The largest answer taken from a provider (discovery, keys, token, userinfo): a provider is
/// configured by a tenant, and must not be able to make the server read without end.
const MAX_PROVIDER_RESPONSE: usize = 1024 * 1024;

/// Reads a body of at most [`MAX_PROVIDER_RESPONSE`] bytes.
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe_reqwest(&e))? {
        if body.len() + chunk.len() > MAX_PROVIDER_RESPONSE {
            return Err(format!(
                "the answer is larger than {} KiB",
                MAX_PROVIDER_RESPONSE / 1024
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether `url` may be fetched for an issuer: https, or plain http on loopback when the issuer
/// itself is (development and tests). Keeps a tenant's provider from pointing the server's
/// requests (keys, token, userinfo) at plain-http addresses of its network.
fn endpoint_allowed(issuer: &str, url: &url::Url) -> bool {
    let loopback = |u: &url::Url| matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    url.scheme() == "https"
        || (url.scheme() == "http"
            && loopback(url)
            && url::Url::parse(issuer).is_ok_and(|i| i.scheme() == "http" && loopback(&i)))
}

fn elapsed_ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0
}

impl Providers {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_millis(config.provider_timeout_ms);
        let http = reqwest::Client::builder()
            // A provider's endpoints are where discovery says; a redirect is never followed
            // (it would let a compromised issuer point us anywhere).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tenantry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            ttl: Duration::from_secs(config.discovery_cache_seconds),
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Sends one of the protocol's requests (token, userinfo) for `openidconnect`: no redirects,
    /// the timeout, answers of at most [`MAX_PROVIDER_RESPONSE`].
    pub async fn send(
        &self,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, openidconnect::HttpClientError<reqwest::Error>> {
        use openidconnect::HttpClientError;
        let request: reqwest::Request = request.try_into().map_err(Box::new)?;
        let response = self.http.execute(request).await.map_err(Box::new)?;
        let mut answer = openidconnect::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let body = read_limited(response)
            .await
            .map_err(HttpClientError::Other)?;
        answer.body(body).map_err(HttpClientError::Http)
    }

    /// The provider of `issuer`: from the cache while it is fresh, else fetched (and cached).
    pub async fn get(&self, issuer: &str) -> Result<Arc<Provider>, ProviderError> {
        if let Some(cached) = self.cached(issuer) {
            return Ok(cached);
        }
        let discovery = self.discover(issuer).await;
        match (discovery.metadata, discovery.error) {
            (Some(metadata), None) => Ok(self.store(issuer, metadata)),
            (_, Some(err)) => Err(err),
            (None, None) => Err(ProviderError {
                reason: "discovery_invalid",
                detail: "no discovery document".into(),
            }),
        }
    }

    fn cached(&self, issuer: &str) -> Option<Arc<Provider>> {
        let cache = self.cache.lock().expect("provider cache lock");
        cache
            .get(issuer)
            .filter(|p| p.fetched_at.elapsed() < self.ttl)
            .cloned()
    }

    fn store(&self, issuer: &str, metadata: Metadata) -> Arc<Provider> {
        let provider = Arc::new(Provider {
            metadata,
            fetched_at: Instant::now(),
        });
        let mut cache = self.cache.lock().expect("provider cache lock");
        // Bounded: one entry per issuer in use; a flood of test connections cannot grow it
        // without bound.
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(issuer.to_owned(), provider.clone());
        provider
    }

    /// Fetches the key set of a cached provider again (a token named a key it does not hold).
    pub async fn refresh_keys(
        &self,
        issuer: &str,
        provider: &Provider,
    ) -> Result<Arc<Provider>, ProviderError> {
        let url = provider.metadata.jwks_uri().url().to_string();
        let (probe, jwks) = self.fetch_jwks(&url).await;
        let jwks = jwks.ok_or_else(|| ProviderError {
            reason: if probe.reachable {
                "jwks_invalid"
            } else {
                "jwks_unreachable"
            },
            detail: probe.detail.clone().unwrap_or_default(),
        })?;
        let metadata = provider.metadata.clone().set_jwks(jwks);
        Ok(self.store(issuer, metadata))
    }

    /// Fetches `issuer`'s discovery document and key set without the cache, timing both, and
    /// checks that the document names exactly this issuer.
    pub async fn discover(&self, issuer: &str) -> Discovery {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (discovery, body) = self.fetch(&url).await;
        let Some(body) = body else {
            return Discovery {
                error: Some(ProviderError {
                    reason: "provider_unreachable",
                    detail: discovery.detail.clone().unwrap_or_default(),
                }),
                discovery,
                jwks: None,
                metadata: None,
            };
        };
        let mut discovery = discovery;
        let metadata: Metadata = match serde_path_to_error::deserialize(
            &mut serde_json::Deserializer::from_slice(&body),
        ) {
            Ok(metadata) => metadata,
            Err(err) => {
                let detail = format!("the discovery document is not valid: {err}");
                discovery.detail = Some(detail.clone());
                return Discovery {
                    discovery,
                    jwks: None,
                    metadata: None,
                    error: Some(ProviderError {
                        reason: "discovery_invalid",
                        detail,
                    }),
                };
            }
        };
        if metadata.issuer().as_str() != issuer {
            let detail = format!(
                "the discovery document names the issuer `{}`, not `{issuer}`",
                metadata.issuer().as_str()
            );
            discovery.detail = Some(detail.clone());
            return Discovery {
                discovery,
                jwks: None,
                metadata: Some(metadata),
                error: Some(ProviderError {
                    reason: "discovery_issuer_mismatch",
                    detail,
                }),
            };
        }
        let endpoints = [
            Some(metadata.jwks_uri().url().clone()),
            metadata.token_endpoint().map(|u| u.url().clone()),
            metadata.userinfo_endpoint().map(|u| u.url().clone()),
        ];
        if let Some(bad) = endpoints
            .iter()
            .flatten()
            .find(|url| !endpoint_allowed(issuer, url))
        {
            let detail =
                format!("the discovery document names an endpoint that is not https: {bad}");
            discovery.detail = Some(detail.clone());
            return Discovery {
                discovery,
                jwks: None,
                metadata: Some(metadata),
                error: Some(ProviderError {
                    reason: "discovery_invalid",
                    detail,
                }),
            };
        }
        let jwks_url = metadata.jwks_uri().url().to_string();
        let (jwks_probe, jwks) = self.fetch_jwks(&jwks_url).await;
        let error = match &jwks {
            Some(_) => None,
            None => Some(ProviderError {
                reason: if jwks_probe.reachable {
                    "jwks_invalid"
                } else {
                    "jwks_unreachable"
                },
                detail: jwks_probe.detail.clone().unwrap_or_default(),
            }),
        };
        Discovery {
            discovery,
            jwks: Some(jwks_probe),
            metadata: Some(match jwks {
                Some(jwks) => metadata.set_jwks(jwks),
                None => metadata,
            }),
            error,
        }
    }

    async fn fetch_jwks(&self, url: &str) -> (Probe, Option<JsonWebKeySet<CoreJsonWebKey>>) {
        let (mut probe, body) = self.fetch(url).await;
        let Some(body) = body else {
            return (probe, None);
        };
        match serde_json::from_slice::<JsonWebKeySet<CoreJsonWebKey>>(&body) {
            Ok(jwks) if !jwks.keys().is_empty() => (probe, Some(jwks)),
            Ok(_) => {
                probe.detail = Some("the key set holds no keys".into());
                (probe, None)
            }
            Err(err) => {
                probe.detail = Some(format!("the key set is not valid: {err}"));
                (probe, None)
            }
        }
    }

    /// GET `url` as JSON; the body of a 200 answer.
    async fn fetch(&self, url: &str) -> (Probe, Option<Vec<u8>>) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, async {
            let response = self
                .http
                .get(url)
                .header("Accept", "application/json")
                .send()
                .await?;
            let status = response.status();
            let body = read_limited(response).await;
            Ok::<_, reqwest::Error>((status, body))
        })
        .await;
        let probe = |reachable, status: Option<u16>, detail: Option<String>| Probe {
            url: url.to_owned(),
            reachable,
            status,
            response_time_ms: elapsed_ms(started),
            detail,
        };
        match outcome {
            Err(_) => (
                probe(
                    false,
                    None,
                    Some(format!("no answer within {} ms", self.timeout.as_millis())),
                ),
                None,
            ),
            Ok(Err(err)) => (probe(false, None, Some(describe_reqwest(&err))), None),
            Ok(Ok((status, _))) if !status.is_success() => (
                probe(
                    true,
                    Some(status.as_u16()),
                    Some(format!("answered HTTP {status}")),
                ),
                None,
            ),
            Ok(Ok((status, Err(detail)))) => {
                (probe(true, Some(status.as_u16()), Some(detail)), None)
            }
            Ok(Ok((status, Ok(body)))) => (probe(true, Some(status.as_u16()), None), Some(body)),
        }
    }
}

/// A reqwest error with its causes (connection refused, DNS, TLS…), without any URL query.
fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

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

fn tenant_status(row: &TenantRow) -> TenantStatus {
    row.status.parse().unwrap_or(TenantStatus::Failed)
}

/// The SSO settings of a tenant, opened: issuer, client id and secret, scopes.
struct ClientSettings {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
}

fn client_settings(ctx: &Context, tenant: &TenantRow) -> Result<ClientSettings, LoginFailure> {
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
    let client_secret = match &tenant.client_secret {
        Some(sealed) => Some(
            ctx.keyring
                .open(sealed, &secret_context(&tenant.id, "client_secret"))
                .map_err(|_| {
                    LoginFailure::new(
                        "secret_unreadable",
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Signing in is not possible right now. The error was logged.",
                    )
                })?,
        ),
        None => None,
    };
    Ok(ClientSettings {
        issuer: issuer.clone(),
        client_id: client_id.clone(),
        client_secret,
        scopes: crate::tenants::model::split_scopes(&tenant.scopes),
    })
}

fn client_for(
    metadata: &Metadata,
    settings: &ClientSettings,
    redirect_uri: &str,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    LoginFailure,
> {
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
    tenant: &TenantRow,
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
fn refused(ctx: &Context, tenant: &TenantRow, failure: &LoginFailure, what: &str) {
    ctx.metrics
        .auth_failures
        .with_label_values(&[&tenant.slug, "oidc", failure.reason])
        .inc();
    tracing::info!(
        tenant = %tenant.slug,
        reason = failure.reason,
        detail = failure.detail.as_deref().unwrap_or(""),
        "{what}"
    );
}

async fn start_login(
    ctx: &Context,
    tenant: &TenantRow,
    redirect_uri: &str,
    next: Option<&str>,
    browser_cookie: Option<&str>,
    source_ip: Option<&str>,
) -> Result<LoginStart, LoginFailure> {
    let status = tenant_status(tenant);
    if !status.is_active() {
        return Err(LoginFailure::tenant_unavailable(&tenant.name, status));
    }
    let settings = client_settings(ctx, tenant)?;
    ctx.auth_limits
        .check_login(&tenant.id, source_ip)
        .map_err(LoginFailure::rate_limited)?;
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
        pkce_verifier: ctx.keyring.seal(
            verifier.secret(),
            &format!("login/{}/pkce", sha256_hex(&state)),
        ),
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

/// Finishes a login at `tenant`'s callback. Counts the attempt and any failure in the metrics;
/// never creates anything on failure.
pub async fn finish_login(
    ctx: &Context,
    tenant: &TenantRow,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
) -> Result<LoginUser, LoginFailure> {
    ctx.metrics
        .auth_attempts
        .with_label_values(&[&tenant.slug, "oidc"])
        .inc();
    let outcome = verify_callback(ctx, tenant, params, browser_cookie).await;
    if let Err(failure) = &outcome {
        refused(ctx, tenant, failure, "login refused");
    }
    outcome
}

async fn verify_callback(
    ctx: &Context,
    tenant: &TenantRow,
    params: &CallbackParams,
    browser_cookie: Option<&str>,
) -> Result<LoginUser, LoginFailure> {
    let start_again = |reason, message: &str| {
        LoginFailure::new(
            reason,
            StatusCode::BAD_REQUEST,
            format!("{message} Please sign in again."),
        )
    };
    let state = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
        .ok_or_else(|| {
            start_again(
                "state_missing",
                "This sign-in response is incomplete (it has no state).",
            )
        })?;
    // Consumed first: whatever happens next, this state never works again.
    let attempt = transaction!(ctx.db, |tx| {
        store::logins::take_attempt(tx, &sha256_hex(state)).await
    })
    .map_err(|err| {
        tracing::error!(tenant = %tenant.slug, "reading a login attempt: {err}");
        LoginFailure::new(
            "storage",
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing in is not possible right now. Please try again in a moment.",
        )
    })?
    .ok_or_else(|| {
        start_again(
            "state_unknown",
            "This sign-in link is not valid or was already used.",
        )
    })?;
    let now = clock::now();
    if attempt.expires_at <= now {
        return Err(start_again(
            "state_expired",
            "This sign-in attempt expired.",
        ));
    }
    let browser_ok = browser_cookie
        .is_some_and(|c| super::constant_time_eq(&sha256_hex(c), &attempt.browser_hash));
    if !browser_ok {
        return Err(start_again(
            "browser_mismatch",
            "This sign-in was started in another browser (or its cookie is gone).",
        ));
    }
    if attempt.tenant_id != tenant.id {
        return Err(start_again(
            "tenant_mismatch",
            "This sign-in response belongs to another organisation.",
        ));
    }
    let status = tenant_status(tenant);
    if !status.is_active() {
        return Err(LoginFailure::tenant_unavailable(&tenant.name, status));
    }
    if let Some(error) = &params.error {
        let description = params
            .error_description
            .as_deref()
            .map(|d| d.chars().take(300).collect::<String>());
        return Err(LoginFailure::new(
            "provider_error",
            StatusCode::BAD_REQUEST,
            match error.as_str() {
                "access_denied" => {
                    "Your sign-in provider did not let you sign in (access denied).".to_owned()
                }
                _ => "Your sign-in provider could not sign you in. Please try again.".to_owned(),
            },
        )
        .detail(match description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        }));
    }
    let settings = client_settings(ctx, tenant)?;
    if settings.issuer != attempt.issuer || settings.client_id != attempt.client_id {
        return Err(start_again(
            "settings_changed",
            "The organisation's sign-in settings changed while you were signing in.",
        ));
    }
    let provider = ctx
        .providers
        .get(&attempt.issuer)
        .await
        .map_err(LoginFailure::provider)?;
    // RFC 9207: the response says who issued it; a response from another issuer (a mix-up)
    // is refused before its code goes anywhere.
    let advertised = provider
        .metadata
        .additional_metadata()
        .authorization_response_iss_parameter_supported
        == Some(true);
    match params.iss.as_deref() {
        Some(iss) if iss != attempt.issuer => {
            return Err(LoginFailure::new(
                "issuer_mismatch",
                StatusCode::BAD_REQUEST,
                "This sign-in response came from a different sign-in provider than the one you \
                 were sent to, so it was refused for your safety. Please sign in again.",
            )
            .detail(format!(
                "the response's iss is `{iss}`, expected `{}`",
                attempt.issuer
            )));
        }
        None if advertised => {
            return Err(LoginFailure::new(
                "issuer_missing",
                StatusCode::BAD_REQUEST,
                "This sign-in response does not say which provider issued it, so it was \
                 refused for your safety. Please sign in again.",
            )
            .detail("the provider advertises the iss response parameter but sent none"));
        }
        _ => {}
    }
    let code = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| start_again("code_missing", "This sign-in response has no code."))?;
    let verifier = ctx
        .keyring
        .open(
            &attempt.pkce_verifier,
            &format!("login/{}/pkce", attempt.state_hash),
        )
        .map_err(|_| {
            LoginFailure::new(
                "secret_unreadable",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Signing in is not possible right now. The error was logged.",
            )
        })?;
    let client = client_for(&provider.metadata, &settings, &attempt.redirect_uri)?;
    let request = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| {
            LoginFailure::provider(ProviderError {
                reason: "discovery_invalid",
                detail: e.to_string(),
            })
        })?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier));
    let response = request
        .request_async(&|request| ctx.providers.send(request))
        .await
        .map_err(|err| match err {
            RequestTokenError::ServerResponse(answer) => LoginFailure::new(
                "token_rejected",
                StatusCode::BAD_REQUEST,
                "Your sign-in provider did not accept this sign-in. Please sign in again; if it \
                 keeps failing, tell your administrator (the tenant's client ID or secret may \
                 be wrong).",
            )
            .detail(format!("the token endpoint answered `{}`", answer.error())),
            RequestTokenError::Parse(err, _) => LoginFailure::unverified(
                "token_response_invalid",
                format!("the token response is not valid: {err}"),
            ),
            RequestTokenError::Request(err) => LoginFailure::provider(ProviderError {
                reason: "provider_unreachable",
                detail: format!("token endpoint: {err}"),
            }),
            RequestTokenError::Other(other) => LoginFailure::provider(ProviderError {
                reason: "provider_unreachable",
                detail: format!("token endpoint: {other}"),
            }),
        })?;
    let raw_id_token = response.id_token().map(|t| t.to_string()).ok_or_else(|| {
        LoginFailure::unverified("id_token_missing", "the token response has no id_token")
    })?;
    let id_token: TenantIdToken = raw_id_token.parse().map_err(|e| {
        LoginFailure::unverified(
            "id_token_invalid",
            format!("the id_token does not parse: {e}"),
        )
    })?;
    let attempt_minutes = i64::from(ctx.config.auth.login_attempt_minutes);
    let verifier_for = |provider: &Provider| {
        let supported: Vec<CoreJwsSigningAlgorithm> = provider
            .metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !alg.uses_shared_secret() && **alg != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        let allowed = if supported.is_empty() {
            vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
        } else {
            supported
        };
        // A public client's verifier: no client secret, so an HS* token can never verify.
        IdTokenVerifier::new_public_client(
            ClientId::new(settings.client_id.clone()),
            IssuerUrl::new(attempt.issuer.clone()).expect("a stored issuer is a URL"),
            provider.metadata.jwks().clone(),
        )
        .set_allowed_algs(allowed)
        .set_issue_time_verifier_fn(move |iat| {
            let now = chrono::Utc::now();
            if iat > now + chrono::Duration::minutes(5) {
                Err(format!("issued in the future ({iat})"))
            } else if iat < now - chrono::Duration::minutes(attempt_minutes + 5) {
                Err(format!("issued too long ago ({iat})"))
            } else {
                Ok(())
            }
        })
    };
    let nonce = Nonce::new(attempt.nonce.clone());
    let claims = match id_token.claims(&verifier_for(&provider), &nonce) {
        Ok(claims) => claims.clone(),
        Err(ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey
            | SignatureVerificationError::AmbiguousKeyId(_),
        )) => {
            // The provider may have rotated its keys since we cached them (a kid we do not
            // hold, or a token without kid that our cached set cannot tell apart): fetch them
            // once more.
            let refreshed = ctx
                .providers
                .refresh_keys(&attempt.issuer, &provider)
                .await
                .map_err(LoginFailure::provider)?;
            id_token
                .claims(&verifier_for(&refreshed), &nonce)
                .map_err(claims_failure)?
                .clone()
        }
        Err(err) => return Err(claims_failure(err)),
    };
    // OpenID Connect Core §3.1.3.7 (4, 5): openidconnect leaves `azp` to the client. Several
    // audiences are already refused (none of them is trusted besides us).
    if let Some(azp) = claims.authorized_party()
        && azp.as_str() != settings.client_id
    {
        return Err(LoginFailure::unverified(
            "id_token_azp",
            format!(
                "the id_token was issued to `{}` (azp), not to this client",
                azp.as_str()
            ),
        ));
    }
    let subject = claims.subject().as_str().to_owned();
    if subject.is_empty() || subject.len() > 255 {
        return Err(LoginFailure::unverified(
            "id_token_subject",
            "the id_token's sub is empty or longer than 255 characters",
        ));
    }
    let mut all_claims = match serde_json::to_value(&claims) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let platform = tenant.slug == ADMIN_SLUG;
    let mapping = RoleMapping::from_stored(tenant.role_mapping.as_deref(), platform);
    // Claims the mapping needs may be only at the userinfo endpoint (providers that keep the
    // id_token small).
    if !all_claims.contains_key(&mapping.claim)
        && provider.metadata.userinfo_endpoint().is_some()
        && let Ok(request) = client.user_info(
            AccessToken::new(response.access_token().secret().clone()),
            Some(SubjectIdentifier::new(subject.clone())),
        )
    {
        match request
            .request_async::<ExtraClaims, _, CoreGenderClaim>(&|request| {
                ctx.providers.send(request)
            })
            .await
        {
            Ok(info) => {
                if let Ok(Value::Object(extra)) = serde_json::to_value(&info) {
                    for (key, value) in extra {
                        all_claims.entry(key).or_insert(value);
                    }
                }
            }
            Err(err) => {
                tracing::warn!(tenant = %tenant.slug, "userinfo request failed: {err}");
            }
        }
    }
    let role = match mapping.decide(&all_claims) {
        RoleDecision::Granted(role) => role,
        RoleDecision::NoAccess => {
            return Err(LoginFailure::new(
                "no_role",
                StatusCode::FORBIDDEN,
                format!(
                    "You signed in, but your account has no access to {}. Please ask your \
                     administrator for access.",
                    tenant.name
                ),
            )
            .detail(format!(
                "no value of the `{}` claim is mapped to a role",
                mapping.claim
            )));
        }
    };
    let text_claim = |name: &str| {
        all_claims
            .get(name)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(254).collect::<String>())
    };
    Ok(LoginUser {
        tenant: TenantScope {
            id: tenant.id.clone(),
            slug: tenant.slug.clone(),
        },
        platform,
        role,
        issuer: attempt.issuer.clone(),
        subject,
        email: text_claim("email"),
        name: text_claim("name").or_else(|| text_claim("preferred_username")),
        id_token: raw_id_token,
        next: attempt.next_path.clone(),
    })
}

fn claims_failure(err: ClaimsVerificationError) -> LoginFailure {
    let reason = match &err {
        ClaimsVerificationError::InvalidIssuer(_) => "id_token_issuer",
        ClaimsVerificationError::InvalidAudience(_) => "id_token_audience",
        // Our `iat` check reports through the same variant as `exp`.
        ClaimsVerificationError::Expired(text) if text.contains("issued") => "id_token_iat",
        ClaimsVerificationError::Expired(_) => "id_token_expired",
        ClaimsVerificationError::InvalidNonce(_) => "id_token_nonce",
        ClaimsVerificationError::SignatureVerification(sig) => match sig {
            SignatureVerificationError::NoSignature
            | SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_) => "id_token_algorithm",
            SignatureVerificationError::NoMatchingKey => "id_token_unknown_key",
            _ => "id_token_signature",
        },
        _ => "id_token_invalid",
    };
    let detail = match &err {
        ClaimsVerificationError::SignatureVerification(sig) => format!("{err}: {sig}"),
        _ => err.to_string(),
    };
    LoginFailure::unverified(reason, detail)
}

/// Where RP-initiated logout sends the browser: the provider's end-session endpoint with the
/// id_token as hint and `post_logout_redirect_uri`; `None` when the provider has none (or
/// cannot be reached — the local session is gone either way).
pub async fn end_session_url(
    ctx: &Context,
    issuer: &str,
    client_id: Option<&str>,
    id_token: Option<&str>,
    post_logout_redirect_uri: &str,
) -> Option<String> {
    let provider = match ctx.providers.get(issuer).await {
        Ok(provider) => provider,
        Err(err) => {
            tracing::warn!(issuer, "logout at the provider skipped: {}", err.detail);
            return None;
        }
    };
    let endpoint = provider
        .metadata
        .additional_metadata()
        .end_session_endpoint
        .clone()?;
    let mut url = url::Url::parse(&endpoint).ok()?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(hint) = id_token {
            query.append_pair("id_token_hint", hint);
        }
        if let Some(client_id) = client_id {
            query.append_pair("client_id", client_id);
        }
        query.append_pair("post_logout_redirect_uri", post_logout_redirect_uri);
    }
    Some(url.to_string())
}

/// What a provider's configuration offers, for "test connection" and `health/oauth`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionReport {
    /// Discovery and the key set were fetched and the issuer matches.
    pub ok: bool,
    pub issuer: String,
    pub discovery: Probe,
    pub jwks: Option<Probe>,
    /// The issuer the discovery document names.
    pub discovered_issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    /// Ids of the keys the key set holds (`null` for a key without one).
    pub key_ids: Vec<Option<String>>,
    pub signing_algorithms: Vec<String>,
    /// Whether the provider says it supports PKCE S256 (`null`: it does not say).
    pub pkce_s256: Option<bool>,
    /// RFC 9207.
    pub iss_parameter_supported: bool,
    /// Scopes the tenant asks for that the provider does not list.
    pub scopes_not_supported: Vec<String>,
    /// What a person should look at, one sentence each.
    pub problems: Vec<String>,
}

/// Fetches `issuer`'s discovery document and keys (never from the cache) and reports what it
/// found, judged against the scopes a tenant would ask for.
pub async fn test_connection(ctx: &Context, issuer: &str, scopes: &[String]) -> ConnectionReport {
    let found = ctx.providers.discover(issuer).await;
    let mut problems = Vec::new();
    if let Some(err) = &found.error {
        problems.push(match err.reason {
            "provider_unreachable" => format!(
                "The discovery document could not be fetched: {}",
                err.detail
            ),
            "discovery_issuer_mismatch" => format!("Issuer mismatch: {}", err.detail),
            "jwks_unreachable" => format!("The key set could not be fetched: {}", err.detail),
            _ => err.detail.clone(),
        });
    }
    let meta = found.metadata.as_ref();
    let extra = meta
        .map(|m| m.additional_metadata().clone())
        .unwrap_or_default();
    let pkce_s256 = extra
        .code_challenge_methods_supported
        .as_ref()
        .map(|methods| methods.iter().any(|m| m == "S256"));
    if pkce_s256 == Some(false) {
        problems.push("The provider does not list PKCE S256, which tenantry requires.".into());
    }
    let scopes_not_supported: Vec<String> = match meta.and_then(|m| m.scopes_supported()) {
        Some(supported) => scopes
            .iter()
            .filter(|s| !supported.iter().any(|x| x.as_str() == s.as_str()))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    if !scopes_not_supported.is_empty() {
        problems.push(format!(
            "The provider does not list these scopes: {}",
            scopes_not_supported.join(", ")
        ));
    }
    let key_ids: Vec<Option<String>> = meta
        .map(|m| {
            m.jwks()
                .keys()
                .iter()
                .map(|k| k.key_id().map(|id| id.as_str().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let signing_algorithms: Vec<String> = meta
        .map(|m| {
            m.id_token_signing_alg_values_supported()
                .iter()
                .filter_map(|a| serde_json::to_value(a).ok())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if meta.is_some()
        && !signing_algorithms.is_empty()
        && signing_algorithms
            .iter()
            .all(|a| a.starts_with("HS") || a == "none")
    {
        problems.push(
            "The provider signs id_tokens only with HS* or none, which tenantry refuses.".into(),
        );
    }
    ConnectionReport {
        ok: found.error.is_none() && pkce_s256 != Some(false),
        issuer: issuer.to_owned(),
        discovered_issuer: meta.map(|m| m.issuer().as_str().to_owned()),
        authorization_endpoint: meta.map(|m| m.authorization_endpoint().as_str().to_owned()),
        token_endpoint: meta.and_then(|m| m.token_endpoint().map(|u| u.as_str().to_owned())),
        userinfo_endpoint: meta.and_then(|m| m.userinfo_endpoint().map(|u| u.as_str().to_owned())),
        end_session_endpoint: extra.end_session_endpoint.clone(),
        key_ids,
        signing_algorithms,
        pkce_s256,
        iss_parameter_supported: extra.authorization_response_iss_parameter_supported == Some(true),
        scopes_not_supported,
        problems,
        discovery: found.discovery,
        jwks: found.jwks,
    }
}
