//! Apache Airflow as the tests see it: the settings of the real Airflow that `scripts/test`
//! starts (through `scripts/backends/up`), a small client of its REST API (v2) to check what a
//! plugin created, and the grants that let the `airflow` plugin reach it.
//!
//! Tests that need Airflow fail — never skip — when `AIRFLOW_URL`, `AIRFLOW_USERNAME` or
//! `AIRFLOW_PASSWORD` is missing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use tenantry::audit::Actor;
use tenantry::context::Context;
use tenantry::plugin_registry::{self as registry, Capability};

/// Where Airflow is and how to sign in.
#[derive(Debug, Clone)]
pub struct AirflowSettings {
    pub url: String,
    pub username: String,
    pub password: String,
}

impl AirflowSettings {
    /// From `AIRFLOW_URL`, `AIRFLOW_USERNAME`, `AIRFLOW_PASSWORD`; panics (fails the test)
    /// saying how to get them when one is missing.
    pub fn from_env() -> AirflowSettings {
        let var =
            |name: &str| {
                std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                panic!(
                    "{name} is not set: this test needs a real Apache Airflow. Run it through \
                     `scripts/test` (which starts Airflow with scripts/backends/up), or start one \
                     with `scripts/backends/up /tmp/bk airflow` and export the lines of \
                     /tmp/bk/env (AIRFLOW_URL, AIRFLOW_USERNAME, AIRFLOW_PASSWORD)"
                )
            })
            };
        AirflowSettings {
            url: var("AIRFLOW_URL").trim_end_matches('/').to_string(),
            username: var("AIRFLOW_USERNAME"),
            password: var("AIRFLOW_PASSWORD"),
        }
    }

    /// `host:port` of the URL.
    pub fn host_port(&self) -> String {
        let url = url::Url::parse(&self.url).expect("AIRFLOW_URL is a URL");
        format!(
            "{}:{}",
            url.host_str().expect("AIRFLOW_URL has a host"),
            url.port_or_known_default().expect("AIRFLOW_URL has a port")
        )
    }
}

/// Grants `host` to the `airflow` plugin: `host:port` when its manifest requests exactly that,
/// otherwise the bare host (any port; the manifest requests `127.0.0.1`).
pub async fn grant_host(ctx: &Context, host_port: &str) {
    let exact = registry::grant(
        ctx,
        &Actor::system(),
        "airflow",
        Capability::Host(host_port.into()),
    )
    .await;
    if exact.is_err() {
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        registry::grant(
            ctx,
            &Actor::system(),
            "airflow",
            Capability::Host(host.into()),
        )
        .await
        .unwrap_or_else(|e| panic!("grant host {host} to the airflow plugin: {e:?}"));
    }
}

/// Grants a secret to the `airflow` plugin.
pub async fn grant_secret(ctx: &Context, name: &str, value: &str) {
    registry::grant(
        ctx,
        &Actor::system(),
        "airflow",
        Capability::Secret {
            name: name.into(),
            value: value.into(),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("grant secret {name} to the airflow plugin: {e:?}"));
}

/// Enables the `airflow` plugin (built-in provisioners start disabled).
pub async fn enable(ctx: &Context) {
    registry::set_enabled(ctx, &Actor::system(), "airflow", true, None)
        .await
        .unwrap_or_else(|e| panic!("enable the airflow plugin: {e:?}"));
}

/// Enables the `airflow` plugin, configures its `url` and `username` and grants it its host
/// and the secret `airflow-password` for `settings`.
pub async fn grant_airflow(ctx: &Context, settings: &AirflowSettings) {
    enable(ctx).await;
    grant_host(ctx, &settings.host_port()).await;
    configure(ctx, &settings.url, &settings.username).await;
    grant_secret(ctx, "airflow-password", &settings.password).await;
}

/// Sets the `airflow` plugin's configuration: its `url` and `username`.
pub async fn configure(ctx: &Context, url: &str, username: &str) {
    registry::configure(
        ctx,
        &Actor::system(),
        "airflow",
        json!({ "url": url, "username": username })
            .as_object()
            .unwrap()
            .clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("configure the airflow plugin: {e:?}"));
}

/// A client of Airflow's REST API, signed in.
pub struct AirflowClient {
    pub settings: AirflowSettings,
    client: reqwest::Client,
    token: String,
}

impl AirflowClient {
    /// Signs in to the Airflow of the environment (see [`AirflowSettings::from_env`]).
    pub async fn from_env() -> AirflowClient {
        Self::connect(AirflowSettings::from_env()).await
    }

    pub async fn connect(settings: AirflowSettings) -> AirflowClient {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/auth/token", settings.url))
            .json(&json!({"username": settings.username, "password": settings.password}))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Airflow at {} is not reachable ({e}); is it running? (scripts/backends/up)",
                    settings.url
                )
            });
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "Airflow sign-in: {status} {body}");
        let token = body["access_token"]
            .as_str()
            .expect("Airflow's token answer has an access_token")
            .to_string();
        AirflowClient {
            settings,
            client,
            token,
        }
    }

    /// Any request to `/api/v2/{path}`: the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}/api/v2/{path}", self.settings.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Airflow answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn one(&self, collection: &str, name: &str) -> Option<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, &format!("{collection}/{name}"), None)
            .await;
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET /api/v2/{collection}/{name}: {other} {body}"),
        }
    }

    /// The pool `name`, if it exists.
    pub async fn pool(&self, name: &str) -> Option<Value> {
        self.one("pools", name).await
    }

    /// The connection `id`, if it exists (Airflow masks its password as `***`).
    pub async fn connection(&self, id: &str) -> Option<Value> {
        self.one("connections", id).await
    }

    /// The variable `key`, if it exists.
    pub async fn variable(&self, key: &str) -> Option<Value> {
        self.one("variables", key).await
    }

    /// The value of the variable `key`, if it exists.
    pub async fn variable_value(&self, key: &str) -> Option<String> {
        self.variable(key)
            .await
            .map(|v| v["value"].as_str().unwrap_or_default().to_string())
    }

    /// The keys of every variable starting with `prefix`.
    pub async fn variable_keys(&self, prefix: &str) -> Vec<String> {
        self.names("variables", "variables", "key", prefix).await
    }

    /// The ids of every connection starting with `prefix`.
    pub async fn connection_ids(&self, prefix: &str) -> Vec<String> {
        self.names("connections", "connections", "connection_id", prefix)
            .await
    }

    /// The names of every pool starting with `prefix`.
    pub async fn pool_names(&self, prefix: &str) -> Vec<String> {
        self.names("pools", "pools", "name", prefix).await
    }

    async fn names(&self, collection: &str, list: &str, field: &str, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("{collection}?limit=1000"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "GET /api/v2/{collection}: {body}");
        body[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item[field].as_str())
            .filter(|name| name.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// Changes a pool's slots behind the plugin's back.
    pub async fn set_pool_slots(&self, name: &str, slots: i64) {
        let (status, body) = self
            .call(
                reqwest::Method::PATCH,
                &format!("pools/{name}?update_mask=slots"),
                Some(json!({"name": name, "slots": slots, "include_deferred": false})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "PATCH pool {name}: {body}");
    }

    /// Changes a variable's value behind the plugin's back.
    pub async fn set_variable(&self, key: &str, value: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PATCH,
                &format!("variables/{key}"),
                Some(json!({"key": key, "value": value})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "PATCH variable {key}: {body}");
    }

    /// Deletes a connection behind the plugin's back.
    pub async fn delete_connection(&self, id: &str) {
        let (status, body) = self
            .call(reqwest::Method::DELETE, &format!("connections/{id}"), None)
            .await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "DELETE connection {id}: {body}"
        );
    }

    /// Deletes a variable behind the plugin's back (a missing one is fine).
    pub async fn delete_variable(&self, key: &str) {
        self.call(reqwest::Method::DELETE, &format!("variables/{key}"), None)
            .await;
    }

    /// Removes everything of the tenant `slug` (pool, connections, variables), for cleanup.
    pub async fn remove_tenant(&self, slug: &str) {
        let key_slug = slug.replace('-', "_");
        for pool in self.pool_names(&format!("tenant-{slug}")).await {
            self.call(reqwest::Method::DELETE, &format!("pools/{pool}"), None)
                .await;
        }
        for id in self.connection_ids(&format!("tenant_{key_slug}_")).await {
            self.call(reqwest::Method::DELETE, &format!("connections/{id}"), None)
                .await;
        }
        for key in self.variable_keys(&format!("tenant_{key_slug}_")).await {
            self.delete_variable(&key).await;
        }
    }
}
