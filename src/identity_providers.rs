//! The identity providers of the tenants (OpenID Connect), as this server talks to them: their
//! discovery documents and key sets, cached by issuer ([`Providers`]) and fetched through one
//! limited HTTP client — https only (plain http only for a loopback issuer), no redirects
//! followed, no answer read beyond 1 MiB, every request within the configured timeout. A token
//! signed by a key the cache does not know makes the caller fetch the keys once more (key
//! rotation at the provider). "Test connection" and RP-initiated logout ask providers through
//! it too.
//!
//! It knows nothing of tenants, logins or sessions: that is the relying party's (`auth::login`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, JsonWebKey as _, JsonWebKeySet, ProviderMetadata};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

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

impl Discovery {
    /// A discovery document refused for `reason` before its key set was fetched.
    fn refused(
        mut discovery: Probe,
        metadata: Option<Metadata>,
        reason: &'static str,
        detail: String,
    ) -> Discovery {
        discovery.detail = Some(detail.clone());
        Discovery {
            discovery,
            jwks: None,
            metadata,
            error: Some(ProviderError { reason, detail }),
        }
    }
}

/// A cached provider.
pub struct Provider {
    pub metadata: Metadata,
    fetched_at: Instant,
}

/// Discovery documents and key sets by issuer, with the HTTP client that fetches them.
pub struct Providers {
    http: reqwest::Client,
    allow_loopback: bool,
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
            .dns_resolver(Arc::new(crate::net::CheckedResolver {
                allow_loopback: config.allow_loopback_providers,
            }))
            .build()?;
        Ok(Self {
            http,
            allow_loopback: config.allow_loopback_providers,
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
        if let Some(refused) = crate::net::refused_address(request.url(), self.allow_loopback) {
            return Err(HttpClientError::Other(refused));
        }
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
        let metadata: Metadata = match serde_path_to_error::deserialize(
            &mut serde_json::Deserializer::from_slice(&body),
        ) {
            Ok(metadata) => metadata,
            Err(err) => {
                // Where, not what: the answer is the provider's text, never quoted back.
                let detail = format!(
                    "the discovery document is not valid OpenID Connect discovery (at `{}`)",
                    err.path()
                );
                return Discovery::refused(discovery, None, "discovery_invalid", detail);
            }
        };
        if metadata.issuer().as_str() != issuer {
            let detail = format!(
                "the discovery document names the issuer `{}`, not `{issuer}`",
                metadata.issuer().as_str()
            );
            return Discovery::refused(
                discovery,
                Some(metadata),
                "discovery_issuer_mismatch",
                detail,
            );
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
            return Discovery::refused(discovery, Some(metadata), "discovery_invalid", detail);
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
            Err(_) => {
                probe.detail = Some("the key set is not a valid JSON Web Key Set".into());
                (probe, None)
            }
        }
    }

    /// GET `url` as JSON; the body of a 200 answer.
    async fn fetch(&self, url: &str) -> (Probe, Option<Vec<u8>>) {
        let started = Instant::now();
        if let Some(refused) = url::Url::parse(url)
            .ok()
            .and_then(|u| crate::net::refused_address(&u, self.allow_loopback))
        {
            return (
                Probe {
                    url: url.to_owned(),
                    reachable: false,
                    status: None,
                    response_time_ms: 0.0,
                    detail: Some(refused),
                },
                None,
            );
        }
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

/// Where RP-initiated logout sends the browser: the provider's end-session endpoint with the
/// id_token as hint and `post_logout_redirect_uri`; `None` when the provider has none (or
/// cannot be reached — the local session is gone either way).
pub async fn end_session_url(
    providers: &Providers,
    issuer: &str,
    client_id: Option<&str>,
    id_token: Option<&str>,
    post_logout_redirect_uri: &str,
) -> Option<String> {
    let provider = match providers.get(issuer).await {
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
pub async fn test_connection(
    providers: &Providers,
    issuer: &str,
    scopes: &[String],
) -> ConnectionReport {
    let found = providers.discover(issuer).await;
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
