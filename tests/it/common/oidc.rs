//! A real OpenID provider for tests: the npm package `oidc-provider` (9.13.3, in
//! `tests/oidc/node_modules` — run `scripts/install-test-deps`) run by Node as several issuers on
//! loopback, by `tests/oidc/provider.mjs`, with a control API that changes clients, users and keys
//! at runtime and makes an issuer misbehave on purpose, so that the relying party's refusals can
//! be tested.
//!
//! ```ignore
//! let op = OidcProviders::start(json!({"issuers": [{
//!     "name": "alpha",
//!     "clients": [{"client_id": "tenantry", "client_secret": "s3cret",
//!                  "redirect_uris": [redirect_uri], "post_logout_redirect_uris": [after_logout],
//!                  "token_endpoint_auth_method": "client_secret_basic"}],
//!     "users": [{"sub": "alice", "claims": {"email": "alice@alpha.example",
//!                "email_verified": true, "name": "Alice", "groups": ["alpha-admins"]}}],
//! }]})).await;
//! let issuer = op.issuer("alpha").await; // "http://127.0.0.1:PORT", no trailing slash
//! op.misbehave("alpha", json!({"id_token_claims": {"nonce": null}})).await;
//! ```
//!
//! Every issuer has its own port and its own cookie names (prefixed with its name), so several
//! issuers and the relying party share one browser on 127.0.0.1. Its login page (`GET
//! /interaction/:uid`, title "Sign in to <name>") has `#login` (prefilled with the first user's
//! sub) and `#sign-in`; there is no consent page. The provider process lives in a process group
//! of its own, is killed with it when this value is dropped, and ends by itself when the test
//! process dies (its stdin, a pipe from here, reaches EOF). Its log is in `log_path()`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long the provider may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The running provider process and its issuers.
pub struct OidcProviders {
    issuers: BTreeMap<String, String>,
    child: Child,
    /// Kept open: the provider exits when it reaches EOF.
    _stdin: ChildStdin,
    _stdout: ChildStdout,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// `tests/oidc`, where the harness and its `node_modules` are.
pub fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("oidc")
}

impl OidcProviders {
    /// Starts every issuer of `config` (`{"issuers": [{"name", "host"?, "port"?, "clients": [...],
    /// "users": [{"sub", "claims"}]}]}`; port 0 or none picks a free port) in one Node process
    /// and waits for them to listen. Panics, with the tail of the provider's log, when it does
    /// not come up within 30 s; panics naming `scripts/install-test-deps` when Node or the npm
    /// package is missing (a test fails, never skips).
    pub async fn start(config: Value) -> OidcProviders {
        let harness = harness_dir();
        let package = harness.join("node_modules/oidc-provider/package.json");
        assert!(
            package.exists(),
            "{} is missing: the OpenID provider test double needs the npm package oidc-provider. \
             Run scripts/install-test-deps (it runs `npm ci` in tests/oidc) and run the test again.",
            package.display()
        );

        let dir = tempfile::tempdir().expect("a temporary directory for the OpenID provider");
        let config_path = dir.path().join("oidc-config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("the config as JSON"),
        )
        .unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
        let log = dir.path().join("oidc-provider.log");
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));

        let mut command = Command::new("node");
        command
            .arg(harness.join("provider.mjs"))
            .arg(&config_path)
            .current_dir(&harness)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            // A process group of its own: Drop kills the whole group.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                panic!(
                    "`node` is not on PATH: the OpenID provider test double needs Node.js 20 or \
                     later and npm. Install them, run scripts/install-test-deps, and run the test \
                     again."
                )
            }
            panic!(
                "starting node {}: {e}",
                harness.join("provider.mjs").display()
            )
        });
        let stdin = child.stdin.take().expect("the provider's stdin");
        let stdout = child.stdout.take().expect("the provider's stdout");

        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(READY_TIMEOUT, reader.read_line(&mut line)).await;
        let fail = |child: &mut Child, why: String| -> ! {
            kill_group(child);
            panic!(
                "the OpenID provider test double did not start: {why}\n--- tail of {} ---\n{}",
                log.display(),
                tail(&log, 40)
            )
        };
        match read {
            Err(_) => fail(
                &mut child,
                format!("no ready line within {} s", READY_TIMEOUT.as_secs()),
            ),
            Ok(Err(e)) => fail(&mut child, format!("reading its stdout: {e}")),
            Ok(Ok(0)) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                fail(
                    &mut child,
                    format!("it exited ({status}) before it was ready"),
                )
            }
            Ok(Ok(_)) => {}
        }
        let ready: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            fail(
                &mut child,
                format!("its first line is not the ready JSON ({e}): {line}"),
            )
        });
        if ready["ready"] != true {
            fail(&mut child, format!("unexpected first line: {line}"));
        }
        let issuers = ready["issuers"]
            .as_object()
            .map(|issuers| {
                issuers
                    .iter()
                    .map(|(name, url)| (name.clone(), url.as_str().unwrap_or_default().to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_else(|| fail(&mut child, format!("no issuers in the ready line: {line}")));

        OidcProviders {
            issuers,
            child,
            _stdin: stdin,
            _stdout: reader.into_inner(),
            log,
            _dir: dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("HTTP client"),
        }
    }

    /// The issuer URL of `name`, exactly as discovery and the id_tokens say it
    /// (`http://127.0.0.1:PORT`, no trailing slash).
    pub async fn issuer(&self, name: &str) -> String {
        self.url(name).to_string()
    }

    /// Every issuer: name → issuer URL.
    pub fn issuers(&self) -> &BTreeMap<String, String> {
        &self.issuers
    }

    /// The provider's log (stderr: one line per request, misbehaviour changes, errors).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the provider's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Creates or replaces a client of issuer `name` (metadata as in the config: client_secret,
    /// redirect_uris, post_logout_redirect_uris, token_endpoint_auth_method…; client_id is
    /// taken from `client_id`). Effective at the next request: a changed client_secret is the
    /// only one the next token request is authenticated with.
    pub async fn set_client(&self, name: &str, client_id: &str, metadata: Value) {
        self.control(
            name,
            Method::PUT,
            &format!("clients/{}", encode(client_id)),
            Some(metadata),
        )
        .await;
    }

    /// Creates or replaces a user of issuer `name` with these claims (email, email_verified,
    /// name, preferred_username, groups); used from the next login or token on.
    pub async fn set_user(&self, name: &str, sub: &str, claims: Value) {
        self.control(
            name,
            Method::PUT,
            &format!("users/{}", encode(sub)),
            Some(serde_json::json!({ "claims": claims })),
        )
        .await;
    }

    /// Makes issuer `name` misbehave until `behave` (replaces the previous misbehaviour). Fields,
    /// all optional:
    /// - `id_token_claims`: `{claim: value|null}` overrides claims of the token endpoint's
    ///   id_token (null removes one), re-signed with the active key and its kid;
    /// - `id_token_signing`: `"none"` | `"bad-signature"` | `"unknown-key"` (a key not in the
    ///   JWKS, the active kid) | `"hs256-public-key"` (HS256 keyed with the active public key's
    ///   SPKI PEM text, the active kid);
    /// - `discovery_issuer`: the `issuer` discovery announces;
    /// - `authorization_response_iss`: the `iss` of the redirect back to the client (null: none);
    /// - `token_error`: the token endpoint answers 400 `{"error": this}`.
    pub async fn misbehave(&self, name: &str, misbehaviour: Value) {
        self.control(name, Method::PUT, "misbehave", Some(misbehaviour))
            .await;
    }

    /// Issuer `name` behaves normally again.
    pub async fn behave(&self, name: &str) {
        self.control(name, Method::DELETE, "misbehave", None).await;
    }

    /// A new RSA key with a new kid signs from now on; the JWKS serves `[new, old]` and the
    /// end-session endpoint accepts an id_token_hint signed by either. Returns the JWKS now
    /// served (`{"keys": [...]}`).
    pub async fn rotate_keys(&self, name: &str) -> Value {
        let answer = self
            .control(
                name,
                Method::POST,
                "keys",
                Some(serde_json::json!({"action": "rotate"})),
            )
            .await;
        answer["jwks"].clone()
    }

    /// A fresh key becomes the only one: the JWKS holds exactly that key, without `kid`, and
    /// id_tokens are signed by it with no `kid` in their header. Returns the JWKS now served.
    pub async fn single_key_without_kid(&self, name: &str) -> Value {
        let answer = self
            .control(
                name,
                Method::POST,
                "keys",
                Some(serde_json::json!({"action": "single-without-kid"})),
            )
            .await;
        answer["jwks"].clone()
    }

    /// The parameters of the last request to issuer `name`'s authorization endpoint
    /// (client_id, redirect_uri, state, nonce, code_challenge, code_challenge_method, scope,
    /// response_type, prompt…), `{}` if none.
    pub async fn last_authorization(&self, name: &str) -> Value {
        self.control(name, Method::GET, "last-authorization", None)
            .await
    }

    /// `{"location": …}`: the last redirect back to a client's redirect_uri (code or error,
    /// state, iss) as sent, after any misbehaviour; `{}` if none.
    pub async fn last_authorization_response(&self, name: &str) -> Value {
        self.control(name, Method::GET, "last-authorization-response", None)
            .await
    }

    /// The parameters the end-session endpoint of issuer `name` last received (id_token_hint,
    /// post_logout_redirect_uri, client_id, state — each only when sent), `{}` if none.
    pub async fn last_end_session(&self, name: &str) -> Value {
        self.control(name, Method::GET, "last-end-session", None)
            .await
    }

    /// `{"count": n, "last": {"client_id", "authenticated", "grant_type", "status", "error"}}`:
    /// how many token requests issuer `name` received, and whether the last one's client
    /// authentication succeeded (`last` is null before the first).
    pub async fn token_requests(&self, name: &str) -> Value {
        self.control(name, Method::GET, "token-requests", None)
            .await
    }

    fn url(&self, name: &str) -> &str {
        self.issuers.get(name).unwrap_or_else(|| {
            panic!(
                "no issuer {name} in this OpenID provider (it has {:?})",
                self.issuers.keys().collect::<Vec<_>>()
            )
        })
    }

    /// One control API call; panics unless it answers 2xx.
    async fn control(&self, name: &str, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/__test/{path}", self.url(name));
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "{method} {url}: {e}\n--- tail of {} ---\n{}",
                self.log.display(),
                self.log_tail(20)
            )
        });
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {url} answered {status}: {text}"
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {url} answered no JSON ({e}): {text}"))
    }
}

impl Drop for OidcProviders {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the process group the provider leads (only that one: its id is the provider's pid).
fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.start_kill();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
