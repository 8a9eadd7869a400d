//! The OpenID provider test double (`tests/oidc/provider.mjs`, driven by `common::oidc`) does
//! what it says: a hand-written authorization code flow (PKCE S256, state, nonce, the login
//! page, client_secret_basic) against real `oidc-provider` issuers, and every control switch —
//! misbehaviours, key rotation, a key without kid, client and user changes — with its stated
//! effect. No tenantry server is involved. Each test starts its own provider process (random
//! ports), and fails, never skips, when Node or the npm package is missing.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::common::oidc::OidcProviders;

const CLIENT_ID: &str = "tenantry";
const SECRET: &str = "alpha-secret";
/// Never contacted: the flow stops at the redirect to it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oidc/callback";
const AFTER_LOGOUT: &str = "http://127.0.0.1:9/signed-out";
const SCOPE: &str = "openid email profile groups";

fn issuer_config(name: &str, secret: &str) -> Value {
    json!({
        "name": name,
        "host": "127.0.0.1",
        "port": 0,
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [AFTER_LOGOUT],
            "token_endpoint_auth_method": "client_secret_basic",
        }],
        "users": [{
            "sub": "alice",
            "claims": {
                "email": format!("alice@{name}.example"),
                "email_verified": true,
                "name": "Alice",
                "groups": [format!("{name}-admins")],
            },
        }],
    })
}

async fn start_alpha() -> OidcProviders {
    OidcProviders::start(json!({"issuers": [issuer_config("alpha", SECRET)]})).await
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

fn b64_json(part: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .unwrap_or_else(|e| panic!("{part} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{part} is not JSON: {e}"))
}

/// A JWT's header and payload, decoded without any verification.
fn jwt_parts(jwt: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact serialization: {jwt}");
    (b64_json(parts[0]), b64_json(parts[1]), parts[2].to_string())
}

fn query_map(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// What the authorization endpoint sent back to the client's redirect_uri.
#[derive(Debug)]
struct Authorization {
    location: Url,
    params: HashMap<String, String>,
    state: String,
    nonce: String,
    verifier: String,
}

/// A relying party written by hand: one cookie jar, redirects followed one by one.
struct Rp {
    http: reqwest::Client,
}

impl Rp {
    fn new() -> Rp {
        Rp {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
        }
    }

    async fn get_json(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.expect(url);
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        response.json().await.expect("JSON")
    }

    async fn discovery(&self, issuer: &str) -> Value {
        self.get_json(&format!("{issuer}/.well-known/openid-configuration"))
            .await
    }

    async fn jwks(&self, issuer: &str) -> Value {
        let discovery = self.discovery(issuer).await;
        self.get_json(discovery["jwks_uri"].as_str().expect("jwks_uri"))
            .await
    }

    /// A standard authorization request (code, PKCE S256, state, nonce), signed in as `login`
    /// when the provider asks; `adjust` changes the parameters (None removes one).
    async fn authorize_with(
        &self,
        issuer: &str,
        login: &str,
        adjust: &[(&str, Option<&str>)],
    ) -> Authorization {
        let verifier = random_token(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_token(16);
        let nonce = random_token(16);
        let mut params: Vec<(String, String)> = [
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", SCOPE),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (name, value) in adjust {
            params.retain(|(k, _)| k != name);
            if let Some(value) = value {
                params.push((name.to_string(), value.to_string()));
            }
        }
        let discovery = self.discovery(issuer).await;
        let endpoint = discovery["authorization_endpoint"]
            .as_str()
            .expect("authorization_endpoint");
        let mut url = Url::parse_with_params(endpoint, &params).expect("authorization URL");
        let mut signed_in = false;
        for _ in 0..10 {
            let response = self.http.get(url.clone()).send().await.expect("GET");
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()[LOCATION].to_str().expect("Location");
                let next = url.join(location).expect("a Location URL");
                if next.as_str().starts_with(REDIRECT_URI) {
                    return Authorization {
                        params: query_map(&next),
                        location: next,
                        state,
                        nonce,
                        verifier,
                    };
                }
                url = next;
                continue;
            }
            let body = response.text().await.unwrap_or_default();
            assert!(
                status == StatusCode::OK && url.path().starts_with("/interaction/"),
                "unexpected {status} at {url}: {body}"
            );
            assert!(
                !signed_in,
                "the login page came back after signing in: {body}"
            );
            assert!(
                body.contains("<title>Sign in to ") && body.contains(r#"id="sign-in""#),
                "the login page: {body}"
            );
            let action = url
                .join(&format!("{}/login", url.path()))
                .expect("login URL");
            let response = self
                .http
                .post(action.clone())
                .form(&[("login", login)])
                .send()
                .await
                .expect("POST login");
            assert_eq!(
                response.status(),
                StatusCode::SEE_OTHER,
                "signing in as {login} at {action}"
            );
            let location = response.headers()[LOCATION].to_str().expect("Location");
            url = action.join(location).expect("a Location URL");
            signed_in = true;
        }
        panic!("no redirect to {REDIRECT_URI} after 10 steps (last: {url})")
    }

    async fn authorize(&self, issuer: &str) -> Authorization {
        self.authorize_with(issuer, "alice", &[]).await
    }

    /// The token request (client_secret_basic).
    async fn token(
        &self,
        issuer: &str,
        authorization: &Authorization,
        client_id: &str,
        secret: &str,
    ) -> (StatusCode, Value) {
        let discovery = self.discovery(issuer).await;
        let endpoint = discovery["token_endpoint"]
            .as_str()
            .expect("token_endpoint");
        let response = self
            .http
            .post(endpoint)
            .basic_auth(client_id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &authorization.params["code"]),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &authorization.verifier),
            ])
            .send()
            .await
            .expect("token request");
        let status = response.status();
        (status, response.json().await.expect("token response JSON"))
    }

    /// A whole sign-in: the authorization response (with its checks) and the id_token.
    async fn sign_in(&self, issuer: &str) -> (Authorization, String) {
        let authorization = self.authorize(issuer).await;
        assert_eq!(
            authorization.params.get("state"),
            Some(&authorization.state),
            "state comes back: {}",
            authorization.location
        );
        assert!(
            authorization.params.contains_key("code"),
            "a code: {}",
            authorization.location
        );
        let (status, tokens) = self.token(issuer, &authorization, CLIENT_ID, SECRET).await;
        assert_eq!(status, StatusCode::OK, "token response: {tokens}");
        let id_token = tokens["id_token"]
            .as_str()
            .expect("an id_token")
            .to_string();
        (authorization, id_token)
    }
}

fn validation(issuer: &str) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Verifies `jwt` against a JWKS the way an RP does: the key with the header's kid, or every key
/// when the header has none.
fn verify(jwt: &str, jwks: &Value, validation: &Validation) -> Result<Value, String> {
    let (header, _, _) = jwt_parts(jwt);
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| format!("JWKS {jwks}: {e}"))?;
    let kid = header["kid"].as_str();
    let candidates: Vec<_> = set
        .keys
        .iter()
        .filter(|key| kid.is_none() || key.common.key_id.as_deref() == kid)
        .collect();
    if candidates.is_empty() {
        return Err(format!("no key in the JWKS for kid {kid:?}"));
    }
    let mut errors = Vec::new();
    for jwk in candidates {
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK: {e}"))?;
        match jsonwebtoken::decode::<Value>(jwt, &key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(errors.join("; "))
}

fn verified(jwt: &str, jwks: &Value, issuer: &str) -> Value {
    verify(jwt, jwks, &validation(issuer))
        .unwrap_or_else(|e| panic!("the id_token should verify against {jwks}: {e}"))
}

/// An RSA public JWK as the SPKI PEM text Node's `KeyObject.export({type: "spki", format:
/// "pem"})` writes (64-character lines, trailing newline).
fn spki_pem(jwk: &Value) -> String {
    fn len(n: usize) -> Vec<u8> {
        match n {
            0..=127 => vec![n as u8],
            128..=255 => vec![0x81, n as u8],
            _ => vec![0x82, (n >> 8) as u8, n as u8],
        }
    }
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(len(content.len()));
        out.extend(content);
        out
    }
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let mut content = Vec::new();
        if bytes[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend(bytes);
        tlv(0x02, &content)
    }
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let rsa_public_key = tlv(0x30, &[integer(&n), integer(&e)].concat());
    let algorithm = tlv(
        0x30,
        &[
            tlv(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let bit_string = tlv(0x03, &[&[0u8][..], &rsa_public_key].concat());
    let der = tlv(0x30, &[algorithm, bit_string].concat());
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// GET the end-session endpoint; returns its status and body.
async fn end_session(rp: &Rp, issuer: &str, params: &[(&str, &str)]) -> (StatusCode, String, Url) {
    let discovery = rp.discovery(issuer).await;
    let endpoint = discovery["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint");
    let url = Url::parse_with_params(endpoint, params).expect("end-session URL");
    let response = rp.http.get(url.clone()).send().await.expect("end session");
    let status = response.status();
    (status, response.text().await.unwrap_or_default(), url)
}

/// The `action` and `xsrf` of the end-session page's form.
fn logout_form(html: &str) -> (String, String) {
    let between = |start: &str| -> String {
        let from = html
            .find(start)
            .unwrap_or_else(|| panic!("{start} in the end-session page: {html}"))
            + start.len();
        let to = html[from..].find('"').expect("closing quote") + from;
        html[from..to].replace("&amp;", "&")
    };
    (between(r#"action=""#), between(r#"name="xsrf" value=""#))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_is_exact_and_pkce_is_required() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");
    assert!(!issuer.ends_with('/'), "no trailing slash: {issuer}");

    let rp = Rp::new();
    let discovery = rp.discovery(&issuer).await;
    assert_eq!(discovery["issuer"], json!(issuer), "{discovery}");
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    ] {
        let url = discovery[endpoint].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("{issuer}/")), "{endpoint}: {url}");
    }
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        json!(true)
    );
    for scope in ["openid", "email", "profile", "groups"] {
        assert!(
            discovery["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(scope)),
            "scope {scope}: {discovery}"
        );
    }

    // Without PKCE: back to the redirect URI with an error, before any login.
    let refused = rp
        .authorize_with(
            &issuer,
            "alice",
            &[("code_challenge", None), ("code_challenge_method", None)],
        )
        .await;
    assert_eq!(
        refused.params.get("error").map(String::as_str),
        Some("invalid_request"),
        "{}",
        refused.location
    );
    assert!(
        refused.params["error_description"].contains("PKCE"),
        "{}",
        refused.location
    );
    assert!(!refused.params.contains_key("code"));
    assert_eq!(refused.params.get("iss"), Some(&issuer));

    // `plain` is not S256.
    let plain = rp
        .authorize_with(
            &issuer,
            "alice",
            &[
                (
                    "code_challenge",
                    Some("a-plain-challenge-that-is-long-enough-43-chars"),
                ),
                ("code_challenge_method", Some("plain")),
            ],
        )
        .await;
    assert_eq!(
        plain.params.get("error").map(String::as_str),
        Some("invalid_request"),
        "{}",
        plain.location
    );
    assert_eq!(
        op.token_requests("alpha").await,
        json!({"count": 0, "last": null})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_gives_a_verified_id_token_with_the_claims() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    assert_eq!(op.last_authorization("alpha").await, json!({}));
    assert_eq!(op.last_authorization_response("alpha").await, json!({}));

    let rp = Rp::new();
    let (authorization, id_token) = rp.sign_in(&issuer).await;
    assert_eq!(authorization.params.get("iss"), Some(&issuer));

    let (header, _, _) = jwt_parts(&id_token);
    assert_eq!(header["alg"], "RS256");
    let jwks = rp.jwks(&issuer).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    assert_eq!(header["kid"], jwks["keys"][0]["kid"], "{header} {jwks}");
    let claims = verified(&id_token, &jwks, &issuer);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], CLIENT_ID);
    assert_eq!(claims["iss"], json!(issuer));
    assert_eq!(claims["nonce"], json!(authorization.nonce));
    assert_eq!(claims["email"], "alice@alpha.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["groups"], json!(["alpha-admins"]));

    // What the control API saw.
    let last = op.last_authorization("alpha").await;
    assert_eq!(last["client_id"], CLIENT_ID);
    assert_eq!(last["redirect_uri"], REDIRECT_URI);
    assert_eq!(last["state"], json!(authorization.state));
    assert_eq!(last["nonce"], json!(authorization.nonce));
    assert_eq!(last["code_challenge_method"], "S256");
    assert_eq!(last["scope"], SCOPE);
    assert_eq!(last["response_type"], "code");
    assert!(
        last["code_challenge"]
            .as_str()
            .is_some_and(|c| c.len() == 43),
        "{last}"
    );
    assert_eq!(
        op.last_authorization_response("alpha").await,
        json!({"location": authorization.location.as_str()})
    );
    let requests = op.token_requests("alpha").await;
    assert_eq!(requests["count"], 1, "{requests}");
    assert_eq!(requests["last"]["client_id"], CLIENT_ID);
    assert_eq!(requests["last"]["authenticated"], true);

    // A changed user: the next sign-in carries the new claims (same browser: no login page).
    op.set_user(
        "alpha",
        "alice",
        json!({"email": "alice@new.example", "email_verified": false, "name": "Alice N",
               "groups": ["g1", "g2"]}),
    )
    .await;
    let (_, id_token) = rp.sign_in(&issuer).await;
    let claims = verified(&id_token, &jwks, &issuer);
    assert_eq!(claims["email"], "alice@new.example");
    assert_eq!(claims["email_verified"], false);
    assert_eq!(claims["groups"], json!(["g1", "g2"]));

    // A new user, and the login page refusing an unknown one.
    op.set_user(
        "alpha",
        "bob",
        json!({"email": "bob@alpha.example", "groups": []}),
    )
    .await;
    let fresh = Rp::new();
    let bob = fresh.authorize_with(&issuer, "bob", &[]).await;
    let (status, tokens) = fresh.token(&issuer, &bob, CLIENT_ID, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = verified(tokens["id_token"].as_str().unwrap(), &jwks, &issuer);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["email"], "bob@alpha.example");

    let stranger = Rp::new();
    let discovery = stranger.discovery(&issuer).await;
    let start = Url::parse_with_params(
        discovery["authorization_endpoint"].as_str().unwrap(),
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "s"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let response = stranger.http.get(start.clone()).send().await.unwrap();
    let interaction = start
        .join(response.headers()[LOCATION].to_str().unwrap())
        .unwrap();
    let page = stranger
        .http
        .get(interaction.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>Sign in to alpha</title>"), "{page}");
    assert!(
        page.contains(r#"<input name="login" id="login" value="alice">"#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"action="{}/login""#, interaction.path())),
        "{page}"
    );
    let response = stranger
        .http
        .post(format!("{interaction}/login"))
        .form(&[("login", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("unknown user mallory") && page.contains(r#"id="sign-in""#),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_claims_are_overridden_and_re_signed() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    let jwks = rp.jwks(&issuer).await;
    let active_kid = jwks["keys"][0]["kid"].clone();

    op.misbehave(
        "alpha",
        json!({"id_token_claims": {"sub": null, "nonce": null, "email": "mallory@evil.example"}}),
    )
    .await;
    let (_, id_token) = rp.sign_in(&issuer).await;
    let (header, payload, _) = jwt_parts(&id_token);
    assert_eq!(header["kid"], active_kid, "re-signed with the active kid");
    assert!(payload.get("sub").is_none(), "{payload}");
    assert!(payload.get("nonce").is_none(), "{payload}");
    assert_eq!(payload["email"], "mallory@evil.example");
    assert_eq!(
        payload["groups"],
        json!(["alpha-admins"]),
        "other claims stay"
    );
    let mut lenient = validation(&issuer);
    lenient.set_required_spec_claims(&["exp"]);
    verify(&id_token, &jwks, &lenient).expect("the signature is valid");

    // Sticky until changed; a new misbehaviour replaces the previous one.
    let (_, again) = rp.sign_in(&issuer).await;
    assert!(jwt_parts(&again).1.get("sub").is_none());
    op.misbehave(
        "alpha",
        json!({"id_token_claims": {"iss": "http://evil", "aud": "someone-else", "exp": 1}}),
    )
    .await;
    let (_, id_token) = rp.sign_in(&issuer).await;
    let (_, payload, _) = jwt_parts(&id_token);
    assert_eq!(payload["iss"], "http://evil");
    assert_eq!(payload["aud"], "someone-else");
    assert_eq!(payload["exp"], 1);
    assert_eq!(payload["sub"], "alice", "the previous misbehaviour is gone");
    let error = verify(&id_token, &jwks, &validation(&issuer)).unwrap_err();
    assert!(
        error.contains("Expired") || error.contains("Invalid"),
        "{error}"
    );
    let mut signature_only = Validation::new(Algorithm::RS256);
    signature_only.validate_exp = false;
    signature_only.validate_aud = false;
    signature_only.set_required_spec_claims::<&str>(&[]);
    verify(&id_token, &jwks, &signature_only).expect("the signature is valid");

    op.behave("alpha").await;
    let (_, id_token) = rp.sign_in(&issuer).await;
    let claims = verified(&id_token, &jwks, &issuer);
    assert_eq!(claims["sub"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_signing_misbehaviours() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    let jwks = rp.jwks(&issuer).await;
    let active = jwks["keys"][0].clone();
    let mut signature_only = validation(&issuer);
    signature_only.validate_exp = false;

    // A normal token verifies.
    let (_, normal) = rp.sign_in(&issuer).await;
    verified(&normal, &jwks, &issuer);

    op.misbehave("alpha", json!({"id_token_signing": "none"}))
        .await;
    let (_, token) = rp.sign_in(&issuer).await;
    let (header, payload, signature) = jwt_parts(&token);
    assert_eq!(header, json!({"alg": "none"}));
    assert_eq!(signature, "");
    assert!(token.ends_with('.'));
    assert_eq!(payload["email"], "alice@alpha.example");

    op.misbehave("alpha", json!({"id_token_signing": "bad-signature"}))
        .await;
    let (_, token) = rp.sign_in(&issuer).await;
    let (header, payload, _) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], active["kid"]);
    assert_eq!(payload["sub"], "alice");
    let error = verify(&token, &jwks, &signature_only).unwrap_err();
    assert!(error.contains("InvalidSignature"), "{error}");

    op.misbehave("alpha", json!({"id_token_signing": "unknown-key"}))
        .await;
    let (_, token) = rp.sign_in(&issuer).await;
    let (header, _, _) = jwt_parts(&token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], active["kid"], "the active kid, another key");
    let error = verify(&token, &jwks, &signature_only).unwrap_err();
    assert!(error.contains("InvalidSignature"), "{error}");
    assert_eq!(
        rp.jwks(&issuer).await,
        jwks,
        "the unknown key is not published"
    );

    op.misbehave("alpha", json!({"id_token_signing": "hs256-public-key"}))
        .await;
    let (_, token) = rp.sign_in(&issuer).await;
    let (header, _, _) = jwt_parts(&token);
    assert_eq!(header["alg"], "HS256");
    assert_eq!(header["kid"], active["kid"]);
    let error = verify(&token, &jwks, &signature_only).unwrap_err();
    assert!(error.contains("InvalidAlgorithm"), "{error}");
    // It is the algorithm-confusion token: an HMAC keyed with the public key's PEM text.
    let pem = spki_pem(&active);
    let mut hs256 = Validation::new(Algorithm::HS256);
    hs256.set_audience(&[CLIENT_ID]);
    hs256.set_issuer(&[&issuer]);
    jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(pem.as_bytes()), &hs256)
        .unwrap_or_else(|e| panic!("HMAC-SHA256 with the SPKI PEM\n{pem}: {e}"));

    // Misbehaviour combines: overridden claims with a bad signature.
    op.misbehave(
        "alpha",
        json!({"id_token_claims": {"nonce": null}, "id_token_signing": "bad-signature"}),
    )
    .await;
    let (_, token) = rp.sign_in(&issuer).await;
    assert!(jwt_parts(&token).1.get("nonce").is_none());
    assert!(verify(&token, &jwks, &signature_only).is_err());

    op.behave("alpha").await;
    let (_, token) = rp.sign_in(&issuer).await;
    verified(&token, &jwks, &issuer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_authorization_response_and_token_misbehaviours() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();

    op.misbehave("alpha", json!({"discovery_issuer": format!("{issuer}/")}))
        .await;
    let discovery = rp.discovery(&issuer).await;
    assert_eq!(discovery["issuer"], json!(format!("{issuer}/")));
    assert_eq!(
        discovery["token_endpoint"],
        json!(format!("{issuer}/token")),
        "only the issuer changes"
    );

    op.misbehave(
        "alpha",
        json!({"authorization_response_iss": "http://evil"}),
    )
    .await;
    assert_eq!(rp.discovery(&issuer).await["issuer"], json!(issuer));
    let authorization = rp.authorize(&issuer).await;
    assert_eq!(
        authorization.params.get("iss").map(String::as_str),
        Some("http://evil")
    );
    assert!(authorization.params.contains_key("code"));
    assert_eq!(
        op.last_authorization_response("alpha").await["location"],
        json!(authorization.location.as_str())
    );
    // The code itself is good.
    let (status, tokens) = rp.token(&issuer, &authorization, CLIENT_ID, SECRET).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");

    op.misbehave("alpha", json!({"authorization_response_iss": null}))
        .await;
    let authorization = rp.authorize(&issuer).await;
    assert!(
        !authorization.params.contains_key("iss"),
        "{}",
        authorization.location
    );
    assert_eq!(
        authorization.params.get("state"),
        Some(&authorization.state)
    );
    let location = op.last_authorization_response("alpha").await["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!location.contains("iss="), "{location}");

    op.misbehave("alpha", json!({"token_error": "invalid_grant"}))
        .await;
    let authorization = rp.authorize(&issuer).await;
    assert_eq!(authorization.params.get("iss"), Some(&issuer));
    let (status, body) = rp.token(&issuer, &authorization, CLIENT_ID, SECRET).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("id_token").is_none());
    let requests = op.token_requests("alpha").await;
    assert_eq!(requests["count"], 2, "{requests}");
    assert_eq!(requests["last"]["authenticated"], true);

    // Unknown switches are refused rather than ignored.
    let response = reqwest::Client::new()
        .put(format!("{issuer}/__test/misbehave"))
        .json(&json!({"id_token_sigining": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    op.behave("alpha").await;
    let (authorization, _) = rp.sign_in(&issuer).await;
    assert_eq!(authorization.params.get("iss"), Some(&issuer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_served_new_first_and_both_accepted_at_end_session() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    let before = rp.jwks(&issuer).await;
    let old_kid = before["keys"][0]["kid"].as_str().unwrap().to_string();
    let (_, old_token) = rp.sign_in(&issuer).await;
    assert_eq!(jwt_parts(&old_token).0["kid"], json!(old_kid));

    let rotated = op.rotate_keys("alpha").await;
    let kids: Vec<&str> = rotated["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().expect("a kid"))
        .collect();
    assert_eq!(kids.len(), 2, "{rotated}");
    assert_ne!(kids[0], old_kid);
    assert_eq!(kids[1], old_kid);
    let jwks = rp.jwks(&issuer).await;
    assert_eq!(jwks, rotated, "the JWKS served is the one returned");
    assert!(jwks["keys"][0].get("d").is_none(), "public keys only");

    // Same browser after the rotation: the session survived (no login page), new kid.
    let (_, new_token) = rp.sign_in(&issuer).await;
    assert_eq!(jwt_parts(&new_token).0["kid"], json!(kids[0]));
    verified(&new_token, &jwks, &issuer);
    verified(&old_token, &jwks, &issuer);

    for hint in [&old_token, &new_token] {
        let (status, page, _) = end_session(
            &rp,
            &issuer,
            &[
                ("id_token_hint", hint.as_str()),
                ("post_logout_redirect_uri", AFTER_LOGOUT),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains(r#"name="xsrf""#), "{page}");
    }
    // A hint that does not verify is refused there.
    op.misbehave("alpha", json!({"id_token_signing": "unknown-key"}))
        .await;
    let (_, forged) = rp.sign_in(&issuer).await;
    op.behave("alpha").await;
    let (status, page, _) = end_session(
        &rp,
        &issuer,
        &[
            ("id_token_hint", forged.as_str()),
            ("post_logout_redirect_uri", AFTER_LOGOUT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");

    // A second rotation keeps [new, previous].
    let again = op.rotate_keys("alpha").await;
    assert_eq!(again["keys"].as_array().unwrap().len(), 2);
    assert_eq!(again["keys"][1]["kid"], json!(kids[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_key_without_kid() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    let before = rp.jwks(&issuer).await;

    let jwks = op.single_key_without_kid("alpha").await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    assert!(keys[0].get("kid").is_none(), "{jwks}");
    assert_eq!(keys[0]["kty"], "RSA");
    assert_ne!(keys[0]["n"], before["keys"][0]["n"], "a fresh key");
    assert_eq!(rp.jwks(&issuer).await, jwks);

    let (_, token) = rp.sign_in(&issuer).await;
    let (header, _, _) = jwt_parts(&token);
    assert!(header.get("kid").is_none(), "{header}");
    assert_eq!(header["alg"], "RS256");
    let claims = verified(&token, &jwks, &issuer);
    assert_eq!(claims["groups"], json!(["alpha-admins"]));
    assert!(verify(&token, &before, &validation(&issuer)).is_err());

    // The end-session endpoint takes it as id_token_hint.
    let (status, page, _) = end_session(
        &rp,
        &issuer,
        &[
            ("id_token_hint", token.as_str()),
            ("post_logout_redirect_uri", AFTER_LOGOUT),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");

    // Rotating from there: [new with kid, the kid-less one].
    let rotated = op.rotate_keys("alpha").await;
    assert!(rotated["keys"][0]["kid"].is_string());
    assert!(rotated["keys"][1].get("kid").is_none());
    let (_, token) = rp.sign_in(&issuer).await;
    assert_eq!(jwt_parts(&token).0["kid"], rotated["keys"][0]["kid"]);
    verified(&token, &rotated, &issuer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_client_secret_is_used_at_the_next_token_request() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    let authorization = rp.authorize(&issuer).await;

    op.set_client(
        "alpha",
        CLIENT_ID,
        json!({
            "client_secret": "rotated-secret",
            "redirect_uris": [REDIRECT_URI],
            "post_logout_redirect_uris": [AFTER_LOGOUT],
            "token_endpoint_auth_method": "client_secret_basic",
        }),
    )
    .await;

    let (status, body) = rp.token(&issuer, &authorization, CLIENT_ID, SECRET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let requests = op.token_requests("alpha").await;
    assert_eq!(
        requests,
        json!({"count": 1, "last": {"client_id": CLIENT_ID, "authenticated": false,
               "grant_type": "authorization_code", "status": 401, "error": "invalid_client"}})
    );

    // The same code: a failed client authentication does not use it up.
    let (status, body) = rp
        .token(&issuer, &authorization, CLIENT_ID, "rotated-secret")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["id_token"].is_string());
    let requests = op.token_requests("alpha").await;
    assert_eq!(requests["count"], 2);
    assert_eq!(requests["last"]["authenticated"], true);

    // A client added at runtime works at once; bad metadata is refused.
    op.set_client(
        "alpha",
        "second",
        json!({"client_secret": "second-secret", "redirect_uris": [REDIRECT_URI]}),
    )
    .await;
    let authorization = rp
        .authorize_with(&issuer, "alice", &[("client_id", Some("second"))])
        .await;
    let (status, body) = rp
        .token(&issuer, &authorization, "second", "second-secret")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        jwt_parts(body["id_token"].as_str().unwrap()).1["aud"],
        "second"
    );
    // A deleted client is unknown at once.
    let authorization = rp
        .authorize_with(&issuer, "alice", &[("client_id", Some("second"))])
        .await;
    let response = reqwest::Client::new()
        .delete(format!("{issuer}/__test/clients/second"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, body) = rp
        .token(&issuer, &authorization, "second", "second-secret")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");

    let response = reqwest::Client::new()
        .put(format!("{issuer}/__test/clients/broken"))
        .json(&json!({"redirect_uris": "not-a-list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuers_in_one_process_are_independent() {
    let op = OidcProviders::start(json!({"issuers": [
        issuer_config("alpha", SECRET),
        issuer_config("beta", "beta-secret"),
    ]}))
    .await;
    let alpha = op.issuer("alpha").await;
    let beta = op.issuer("beta").await;
    assert_ne!(alpha, beta);
    assert_eq!(op.issuers().len(), 2);

    op.misbehave(
        "alpha",
        json!({"id_token_signing": "none", "discovery_issuer": "http://evil"}),
    )
    .await;
    op.rotate_keys("alpha").await;

    // One browser for both: their cookies do not clash.
    let rp = Rp::new();
    assert_eq!(rp.discovery(&beta).await["issuer"], json!(beta));
    assert_eq!(rp.discovery(&alpha).await["issuer"], "http://evil");
    let beta_jwks = rp.jwks(&beta).await;
    assert_eq!(beta_jwks["keys"].as_array().unwrap().len(), 1);

    let authorization = rp.authorize(&beta).await;
    assert_eq!(authorization.params.get("iss"), Some(&beta));
    // Same client_id, other secret: beta's own client.
    let (status, _) = rp.token(&beta, &authorization, CLIENT_ID, SECRET).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, tokens) = rp
        .token(&beta, &authorization, CLIENT_ID, "beta-secret")
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let claims = verified(tokens["id_token"].as_str().unwrap(), &beta_jwks, &beta);
    assert_eq!(claims["email"], "alice@beta.example");
    assert_eq!(claims["groups"], json!(["beta-admins"]));

    let (_, alpha_token) = rp.sign_in(&alpha).await;
    assert_eq!(jwt_parts(&alpha_token).0, json!({"alg": "none"}));
    assert_eq!(jwt_parts(&alpha_token).1["email"], "alice@alpha.example");

    // Both sessions live in the one jar: beta signs in again without its login page.
    let again = rp.authorize(&beta).await;
    assert!(again.params.contains_key("code"));

    assert_eq!(op.token_requests("beta").await["count"], 2);
    assert_eq!(op.token_requests("alpha").await["count"], 1);
    assert_ne!(
        op.last_authorization("alpha").await["state"],
        op.last_authorization("beta").await["state"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_session_shows_the_form_and_redirects_after_it() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    assert_eq!(op.last_end_session("alpha").await, json!({}));
    let (_, id_token) = rp.sign_in(&issuer).await;

    let (status, page, _) = end_session(
        &rp,
        &issuer,
        &[
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", AFTER_LOGOUT),
            ("state", "logout-state"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<title>Sign out of alpha</title>"), "{page}");
    let (action, xsrf) = logout_form(&page);
    assert_eq!(action, format!("{issuer}/session/end/confirm"));
    assert!(!xsrf.is_empty());
    let last = op.last_end_session("alpha").await;
    assert_eq!(last["id_token_hint"], json!(id_token));
    assert_eq!(last["post_logout_redirect_uri"], AFTER_LOGOUT);
    assert_eq!(last["state"], "logout-state");

    let response = rp
        .http
        .post(&action)
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = Url::parse(response.headers()[LOCATION].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(AFTER_LOGOUT), "{location}");
    assert_eq!(
        query_map(&location).get("state").map(String::as_str),
        Some("logout-state")
    );

    // Signed out: the next authorization asks for the login again.
    let discovery = rp.discovery(&issuer).await;
    let start = Url::parse_with_params(
        discovery["authorization_endpoint"].as_str().unwrap(),
        &[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", "openid"),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap();
    let response = rp.http.get(start).send().await.unwrap();
    let location = response.headers()[LOCATION].to_str().unwrap();
    assert!(location.starts_with("/interaction/"), "{location}");

    // Without a hint, with client_id: recorded as sent.
    let (status, _, _) = end_session(&rp, &issuer, &[("client_id", CLIENT_ID)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        op.last_end_session("alpha").await,
        json!({"client_id": CLIENT_ID})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_provider() {
    let op = start_alpha().await;
    let issuer = op.issuer("alpha").await;
    let rp = Rp::new();
    rp.discovery(&issuer).await;
    drop(op);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = reqwest::Client::new();
        if fresh
            .get(format!("{issuer}/.well-known/openid-configuration"))
            .send()
            .await
            .is_err()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{issuer} still answers after the drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_start_fails_with_its_log() {
    let started = tokio::spawn(OidcProviders::start(json!({"issuers": [{
        "name": "broken",
        "clients": [{"client_id": "c", "client_secret": "s", "redirect_uris": "not-a-list"}],
    }]})))
    .await;
    let panic = started.err().expect("start panics").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("did not start") && message.contains("invalid client metadata"),
        "{message}"
    );
}
