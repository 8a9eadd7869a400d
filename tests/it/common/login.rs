//! Logins against the real OpenID provider ([`super::oidc`]): a server with two tenants, `alpha`
//! and `bravo`, each with an issuer of its own, and the login round trip
//! of a [`Browser`], step by step, so that a test can stop anywhere in it and tamper with it.

use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

use super::oidc::OidcProviders;
pub use super::web::{Browser, Page};
use super::{Backend, TestApp};
use tenantry::config::Config;

pub const SCOPES: &str = "openid profile email groups";

/// The users each issuer knows.
fn users(issuer: &str) -> Value {
    match issuer {
        "alpha" => json!([
            {"sub": "alice", "claims": {"email": "alice@alpha.example", "email_verified": true, "name": "Alice Admin", "groups": ["alpha-admins", "staff"]}},
            {"sub": "carol", "claims": {"email": "carol@alpha.example", "email_verified": true, "name": "Carol Member", "groups": ["staff"]}},
        ]),
        _ => json!([
            {"sub": "bob", "claims": {"email": "bob@bravo.example", "email_verified": true, "name": "Bob Bravo", "groups": ["bravo-users"]}},
        ]),
    }
}

/// A server with tenants `alpha` and `bravo`, each logging in through its own issuer (of the
/// same names) as client `tenantry-<slug>` with secret `secret-<slug>`.
pub struct LoginWorld {
    pub app: TestApp,
    pub op: OidcProviders,
}

impl LoginWorld {
    pub async fn start(backend: Backend) -> LoginWorld {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> LoginWorld {
        let op = OidcProviders::start(json!({"issuers": [
            {"name": "alpha", "clients": [], "users": users("alpha")},
            {"name": "bravo", "clients": [], "users": users("bravo")},
        ]}))
        .await;
        let app = TestApp::spawn_with(backend, adjust).await;
        let world = LoginWorld { app, op };
        for slug in ["alpha", "bravo"] {
            world.register(slug, &world.app.base.clone()).await;
            let (status, body) = world
                .app
                .post(
                    "/api/v1/tenant",
                    json!({
                        "slug": slug, "name": format!("{} Corp", capitalised(slug)),
                        // The free tier has one user; these have several.
                        "tier": "starter",
                        "oauth_issuer": world.op.issuer(slug).await,
                        "client_id": format!("tenantry-{slug}"),
                        "client_secret": format!("secret-{slug}"),
                        "scopes": SCOPES,
                        "role_mapping": {"claim": "groups", "values": {format!("{slug}-admins"): "tenant-admin"}, "default_role": "member"},
                    }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        world
    }

    /// Registers the client of tenant `slug` at its issuer with the redirect URIs of `base`.
    pub async fn register(&self, slug: &str, base: &str) {
        self.register_as(
            slug,
            &format!("tenantry-{slug}"),
            &format!("secret-{slug}"),
            &format!("{base}/t/{slug}"),
        )
        .await;
    }

    /// Registers client `client_id` at `issuer` for the tenant site at `site` (its callback and
    /// logged-out pages).
    pub async fn register_as(&self, issuer: &str, client_id: &str, secret: &str, site: &str) {
        self.op
            .set_client(
                issuer,
                client_id,
                json!({
                    "client_secret": secret,
                    "redirect_uris": [format!("{site}/callback")],
                    "post_logout_redirect_uris": [format!("{site}/logged-out")],
                    "token_endpoint_auth_method": "client_secret_basic",
                }),
            )
            .await;
    }

    /// The live sessions of tenant `slug`, as the API lists them.
    pub async fn sessions(&self, slug: &str) -> Vec<Value> {
        let (status, body) = self
            .app
            .get(&format!("/api/v1/tenant/{slug}/sessions"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    pub async fn stop(self) {
        self.app.stop().await;
    }
}

fn capitalised(slug: &str) -> String {
    let mut chars = slug.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// The OpenID login round trip, step by step.
impl Browser {
    /// Starts a login at tenant `slug` of `base`: the provider's authorization URL.
    pub async fn start(&self, base: &str, slug: &str) -> Url {
        let page = self.get(&format!("{base}/t/{slug}/login/oauth")).await;
        assert_eq!(
            page.status,
            StatusCode::SEE_OTHER,
            "starting a login at {slug}: {}",
            page.body
        );
        page.location.expect("a redirect to the provider")
    }

    /// At the provider: signs in as `login` (when it asks) and returns the URL it sends the
    /// browser back to (the relying party's callback, with code, state and iss), unvisited.
    pub async fn at_provider(&self, authorize: &Url, login: &str) -> Url {
        let provider = format!(
            "{}://{}",
            authorize.scheme(),
            authorize.host_str().unwrap_or_default()
        );
        let provider_port = authorize.port();
        let mut url = authorize.clone();
        for _ in 0..12 {
            let page = self.get(url.as_str()).await;
            if let Some(next) = page
                .location
                .clone()
                .filter(|_| page.status.is_redirection())
            {
                let back_home = format!(
                    "{}://{}",
                    next.scheme(),
                    next.host_str().unwrap_or_default()
                ) != provider
                    || next.port() != provider_port;
                if back_home {
                    return next;
                }
                url = next;
                continue;
            }
            assert!(
                page.status == StatusCode::OK && url.path().starts_with("/interaction/"),
                "unexpected {} at the provider ({url}): {}",
                page.status,
                page.body
            );
            let action = url
                .join(&format!("{}/login", url.path()))
                .expect("login URL");
            let signed_in = self.post(action.as_str(), &[("login", login)]).await;
            assert_eq!(
                signed_in.status,
                StatusCode::SEE_OTHER,
                "signing in as {login}: {}",
                signed_in.body
            );
            url = signed_in.location.expect("a redirect after signing in");
        }
        panic!("the provider never sent the browser back (last: {url})")
    }

    /// A whole login at tenant `slug` as `login`: the page it ends on.
    pub async fn login(&self, base: &str, slug: &str, login: &str) -> Page {
        let authorize = self.start(base, slug).await;
        let callback = self.at_provider(&authorize, login).await;
        self.follow(callback.as_str()).await
    }
}

/// The query parameters of a URL, as a map.
pub fn query(url: &Url) -> std::collections::HashMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `url` with query parameter `name` set to `value` (or removed when `None`).
pub fn with_param(url: &Url, name: &str, value: Option<&str>) -> Url {
    let mut out = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut q = out.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        if let Some(value) = value {
            q.append_pair(name, value);
        }
    }
    out
}

/// The value of a Prometheus counter with exactly these labels (0 when absent).
pub async fn counter(app: &TestApp, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(app.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Each way a provider's answer can be wrong (a misbehaviour of `tests/oidc`) and the reason
/// the login page names — with `now` in seconds, for the time claims.
pub fn tampered_cases(now: i64) -> Vec<(&'static str, Value, &'static str)> {
    vec![
        (
            "wrong iss",
            json!({"id_token_claims": {"iss": "http://evil.example"}}),
            "id_token_issuer",
        ),
        (
            "wrong aud",
            json!({"id_token_claims": {"aud": "someone-else"}}),
            "id_token_audience",
        ),
        (
            "several audiences",
            json!({"id_token_claims": {"aud": ["tenantry-alpha", "someone-else"]}}),
            "id_token_audience",
        ),
        (
            "foreign azp",
            json!({"id_token_claims": {"azp": "someone-else"}}),
            "id_token_azp",
        ),
        (
            "bad signature",
            json!({"id_token_signing": "bad-signature"}),
            "id_token_signature",
        ),
        (
            "key not in the JWKS",
            json!({"id_token_signing": "unknown-key"}),
            "id_token_signature",
        ),
        (
            "alg none",
            json!({"id_token_signing": "none"}),
            "id_token_algorithm",
        ),
        (
            "HS256 keyed with the public key",
            json!({"id_token_signing": "hs256-public-key"}),
            "id_token_algorithm",
        ),
        (
            "wrong nonce",
            json!({"id_token_claims": {"nonce": "not-the-nonce"}}),
            "id_token_nonce",
        ),
        (
            "missing nonce",
            json!({"id_token_claims": {"nonce": null}}),
            "id_token_nonce",
        ),
        (
            "missing sub",
            json!({"id_token_claims": {"sub": null}}),
            "token_response_invalid",
        ),
        (
            "expired",
            json!({"id_token_claims": {"exp": now - 600}}),
            "id_token_expired",
        ),
        (
            "issued in the future",
            json!({"id_token_claims": {"iat": now + 3600, "exp": now + 7200}}),
            "id_token_iat",
        ),
        (
            "iss response parameter of another issuer",
            json!({"authorization_response_iss": "http://evil.example"}),
            "issuer_mismatch",
        ),
        (
            "iss response parameter missing",
            json!({"authorization_response_iss": null}),
            "issuer_missing",
        ),
        (
            "code refused at the token endpoint",
            json!({"token_error": "invalid_grant"}),
            "token_rejected",
        ),
        (
            "discovery names another issuer",
            json!({"discovery_issuer": "http://127.0.0.1:9"}),
            "discovery_issuer_mismatch",
        ),
    ]
}
