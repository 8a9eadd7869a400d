//! The real BottleCRM that `scripts/test` starts (`scripts/backends/bottlecrm`), seen from the
//! tests: what exists in it, checked through its own API with the operator's token, and
//! sign-ins as other users through the magic-link code flow (codes read from the mail files).
//!
//! Needs `CRM_URL`, `CRM_TOKEN` and `CRM_MAIL_DIR`; a test that uses [`CrmClient::from_env`]
//! fails (never skips) without them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use tenantry::audit::Actor;
use tenantry::plugin_registry::{self as registry, Capability};

use super::TestApp;

/// An organization the operator belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmOrg {
    pub id: String,
    pub name: String,
}

/// A member of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmUser {
    pub id: String,
    pub email: String,
    pub role: String,
    pub active: bool,
}

/// BottleCRM's API with the operator's token (the credential the `crm` plugin is granted).
#[derive(Clone)]
pub struct CrmClient {
    pub url: String,
    pub token: String,
    pub mail_dir: PathBuf,
    pub http: reqwest::Client,
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim().to_owned(),
        _ => panic!(
            "{name} is not set: this test needs the real BottleCRM. Run it through `scripts/test` \
             (which starts it with scripts/backends/up), or start it yourself: \
             `scripts/backends/up /tmp/bk bottlecrm && set -a && . /tmp/bk/env && set +a`"
        ),
    }
}

impl CrmClient {
    /// From `CRM_URL`, `CRM_TOKEN`, `CRM_MAIL_DIR`; panics (with how to get them) when one is
    /// missing or BottleCRM does not answer.
    pub async fn from_env() -> CrmClient {
        let client = CrmClient {
            url: env("CRM_URL").trim_end_matches('/').to_owned(),
            token: env("CRM_TOKEN"),
            mail_dir: PathBuf::from(env("CRM_MAIL_DIR")),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        let health = client
            .http
            .get(format!("{}/healthz/", client.url))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "BottleCRM at {} does not answer ({e}); run `scripts/test`",
                    client.url
                )
            });
        assert!(
            health.status().is_success(),
            "BottleCRM /healthz/: {}",
            health.status()
        );
        client
    }

    /// `host:port` of `CRM_URL` (what the plugin is granted).
    pub fn host(&self) -> String {
        let url = url::Url::parse(&self.url).expect("CRM_URL is a URL");
        format!(
            "{}:{}",
            url.host_str().expect("CRM_URL has a host"),
            url.port_or_known_default().expect("CRM_URL has a port")
        )
    }

    /// Enables the `crm` plugin, configures its `url` and grants it the CRM's host and the
    /// secret `crm-token`.
    pub async fn grant(&self, app: &TestApp) {
        registry::set_enabled(&app.ctx, &Actor::system(), "crm", true, None)
            .await
            .unwrap_or_else(|e| panic!("enabling the crm plugin: {e:?}"));
        self.grant_with_url(app, &self.url).await;
    }

    /// As [`grant`](Self::grant), with another `url`.
    pub async fn grant_with_url(&self, app: &TestApp, crm_url: &str) {
        let actor = Actor::system();
        let url = url::Url::parse(crm_url).expect("a URL");
        let target = format!(
            "{}:{}",
            url.host_str().expect("a host"),
            url.port_or_known_default().expect("a port")
        );
        for host in [self.host(), target] {
            registry::grant(&app.ctx, &actor, "crm", Capability::Host(host.clone()))
                .await
                .unwrap_or_else(|e| panic!("granting host {host}: {e:?}"));
        }
        registry::configure(
            &app.ctx,
            &actor,
            "crm",
            serde_json::json!({ "url": crm_url })
                .as_object()
                .unwrap()
                .clone(),
        )
        .await
        .unwrap_or_else(|e| panic!("configuring the crm plugin: {e:?}"));
        registry::grant(
            &app.ctx,
            &actor,
            "crm",
            Capability::Secret {
                name: "crm-token".into(),
                value: self.token.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("granting secret crm-token: {e:?}"));
    }

    /// Sends a request with `token`; the status and the JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("BottleCRM {path}: {e}"));
        super::into_json(response).await
    }

    /// The operator's email (the user of `CRM_TOKEN`).
    pub async fn operator_email(&self) -> String {
        let (status, body) = self
            .send(Method::GET, "/api/auth/me/", &self.token, None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET /api/auth/me/: {body}");
        body["email"].as_str().expect("me.email").to_owned()
    }

    /// The organizations the operator belongs to.
    pub async fn organizations(&self) -> Vec<CrmOrg> {
        let (status, body) = self.send(Method::GET, "/api/org/", &self.token, None).await;
        assert_eq!(status, StatusCode::OK, "GET /api/org/: {body}");
        body["profile_org_list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| CrmOrg {
                id: entry["org"]["id"].as_str().unwrap_or_default().to_owned(),
                name: entry["org"]["name"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Every organization of the operator named `name` (one, or none).
    pub async fn organizations_named(&self, name: &str) -> Vec<CrmOrg> {
        self.organizations()
            .await
            .into_iter()
            .filter(|o| o.name == name)
            .collect()
    }

    /// The operator's organization named `name`.
    pub async fn organization_named(&self, name: &str) -> Option<CrmOrg> {
        self.organizations_named(name).await.into_iter().next()
    }

    /// Creates an organization as the operator (behind the plugin's back); the status and body.
    pub async fn create_organization(&self, name: &str) -> (StatusCode, Value) {
        self.send(
            Method::POST,
            "/api/org/",
            &self.token,
            Some(json!({ "name": name })),
        )
        .await
    }

    /// The operator's token bound to `org_id`.
    pub async fn org_token(&self, org_id: &str) -> String {
        switch_org(self, &self.token, org_id)
            .await
            .unwrap_or_else(|(status, body)| panic!("switch-org {org_id}: {status} {body}"))
    }

    /// The members of `org_id`, the operator included, active and inactive.
    pub async fn org_users(&self, org_id: &str) -> Vec<CrmUser> {
        let token = self.org_token(org_id).await;
        // Large enough for one page: the plugin reads page by page, the test checks it all.
        let (status, body) = self
            .send(Method::GET, "/api/users/?limit=10000", &token, None)
            .await;
        assert_eq!(status, StatusCode::OK, "GET /api/users/: {body}");
        let mut users = Vec::new();
        for (list, active) in [
            (&body["active_users"]["active_users"], true),
            (&body["inactive_users"]["inactive_users"], false),
        ] {
            for entry in list.as_array().into_iter().flatten() {
                users.push(CrmUser {
                    id: entry["user_details"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    email: entry["user_details"]["email"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    role: entry["role"].as_str().unwrap_or_default().to_owned(),
                    active,
                });
            }
        }
        users
    }

    /// The member of `org_id` with `email`.
    pub async fn org_user(&self, org_id: &str, email: &str) -> Option<CrmUser> {
        self.org_users(org_id)
            .await
            .into_iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// Adds a member to `org_id` as the operator.
    pub async fn add_user(&self, org_id: &str, email: &str, role: &str) {
        let token = self.org_token(org_id).await;
        let (status, body) = self
            .send(
                Method::POST,
                "/api/users/",
                &token,
                Some(json!({ "email": email, "role": role })),
            )
            .await;
        assert!(status.is_success(), "POST /api/users/: {status} {body}");
    }

    /// Deactivates (or activates) a member of `org_id` as the operator.
    pub async fn set_user_active(&self, org_id: &str, user_id: &str, active: bool) {
        let token = self.org_token(org_id).await;
        let status_word = if active { "Active" } else { "Inactive" };
        let (status, body) = self
            .send(
                Method::POST,
                &format!("/api/user/{user_id}/status/"),
                &token,
                Some(json!({ "status": status_word })),
            )
            .await;
        assert!(status.is_success(), "user status: {status} {body}");
    }

    /// The newest sign-in code mailed to `email` after `since`.
    async fn sign_in_code(&self, email: &str, since: std::time::SystemTime) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let to = format!("to: {}", email.to_ascii_lowercase());
        loop {
            let mut newest: Option<(std::time::SystemTime, String)> = None;
            if let Ok(entries) = std::fs::read_dir(&self.mail_dir) {
                for entry in entries.flatten() {
                    let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                        continue;
                    };
                    if modified < since {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(entry.path()) else {
                        continue;
                    };
                    // One file per connection; the sign-in code goes alone to its recipient.
                    let lower = text.to_ascii_lowercase();
                    if !lower.lines().any(|l| l.trim() == to) {
                        continue;
                    }
                    let code = text.lines().find_map(|l| {
                        l.strip_prefix("Subject: Your BottleCRM sign-in code: ")
                            .map(|c| c.trim().to_owned())
                    });
                    if let Some(code) = code {
                        if newest.as_ref().is_none_or(|(t, _)| modified >= *t) {
                            newest = Some((modified, code));
                        }
                    }
                }
            }
            if let Some((_, code)) = newest {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "no sign-in code for {email} in {}",
                self.mail_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Signs in as `email` through the magic-link code flow and returns an access token bound
    /// to `org_id`. BottleCRM sends at most 5 codes per email and hour.
    pub async fn sign_in(&self, email: &str, org_id: &str) -> String {
        let since = std::time::SystemTime::now() - Duration::from_secs(1);
        let (status, body) = self
            .send(
                Method::POST,
                "/api/auth/magic-link/request/",
                "",
                Some(json!({ "email": email, "delivery": "code" })),
            )
            .await;
        assert!(status.is_success(), "magic-link request: {status} {body}");
        let code = self.sign_in_code(email, since).await;
        let (status, body) = self
            .send(
                Method::POST,
                "/api/auth/magic-link/verify-code/",
                "",
                Some(json!({ "email": email, "code": code })),
            )
            .await;
        assert!(status.is_success(), "verify-code: {status} {body}");
        let token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("verify-code answer without access_token: {body}"))
            .to_owned();
        switch_org(self, &token, org_id)
            .await
            .unwrap_or_else(|(status, body)| panic!("switch-org as {email}: {status} {body}"))
    }
}

async fn switch_org(
    crm: &CrmClient,
    token: &str,
    org_id: &str,
) -> Result<String, (StatusCode, Value)> {
    let (status, body) = crm
        .send(
            Method::POST,
            "/api/auth/switch-org/",
            token,
            Some(json!({ "org_id": org_id })),
        )
        .await;
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => Err((status, body)),
    }
}
