//! Test harness: each test gets a real server on a random port with its own database — a fresh
//! SQLite file, or a fresh PostgreSQL database on the machine's server — and talks HTTP to it.
//!
//! `backend_tests!(a, b, …)` turns each `async fn a(backend: Backend)` into two tests,
//! `sqlite::a` and `postgres::a`. PostgreSQL comes from `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); a test fails, never skips, when it is down.
//! Logs are silent unless `TEST_LOG=debug` (or another filter) is set.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod airflow;
pub mod browser;
pub mod cli;
pub mod crm;
pub mod kube;
pub mod login;
pub mod oidc;
pub mod pg;
pub mod process;
pub mod recorder;
pub mod superset;
pub mod web;
pub mod webhooks;

use std::net::TcpListener;
use std::path::PathBuf;

use base64::Engine as _;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use tenantry::app::{self, RunningServer};
use tenantry::audit::Actor;
use tenantry::auth::{self, Role};
use tenantry::config::Config;
use tenantry::context::Context;

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )+
        }
    };
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &std::path::Path) -> TestDatabase {
        match backend {
            Backend::Sqlite => TestDatabase {
                url: format!("sqlite://{}", dir.join("tenantry.db").display()),
                pg_name: None,
            },
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("tenantry_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = AsyncPgConnection::establish(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {admin_url} is needed by this test: {e}")
                    });
                conn.batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin_url).expect("TEST_POSTGRES_URL is a URL");
                url.set_path(&name);
                TestDatabase {
                    url: url.to_string(),
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Some(name) = &self.pg_name
            && let Ok(mut conn) = AsyncPgConnection::establish(&postgres_admin_url()).await
        {
            let _ = conn
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// The Redis of the shared-budget tests: `TEST_REDIS_URL`, default the machine's.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A `redis_prefix` of a test's own: tests share the machine's Redis, and fail keys from the
/// same address.
pub fn redis_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// A counter or gauge without labels from `/metrics` of the server at `base` (0 when absent).
pub async fn scraped(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

pub fn random_master_key() -> String {
    let mut bytes = [0u8; 32];
    for b in bytes.iter_mut() {
        *b = rand::random();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A configuration for a test: its own data directory and database, a known admin password.
pub fn test_config(dir: &std::path::Path, database_url: &str) -> Config {
    let mut auth = tenantry::config::AuthConfig::default();
    // The OpenID provider test double listens on loopback.
    auth.allow_loopback_providers = true;
    // The database probes run when a test runs them (tests/it/database_probes.rs), not every
    // 30 s beside tests that count alerts.
    let database_probes = tenantry::config::DatabaseProbesConfig {
        interval_seconds: 0,
        ..Default::default()
    };
    Config {
        auth,
        database_probes,
        bind: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        database_url: Some(database_url.to_owned()),
        database_pool_size: 4,
        bootstrap_admin_password: Some(ADMIN_PASSWORD.into()),
        master_key: Some(random_master_key()),
        log_level: std::env::var("TEST_LOG").unwrap_or_else(|_| "off".into()),
        ..Config::default()
    }
}

/// A running server with its own database, and an admin API token.
pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
    pub ctx: Context,
    pub dir: tempfile::TempDir,
    pub database: TestDatabase,
    server: RunningServer,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a configuration changed by `adjust`.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = TestDatabase::create(backend, dir.path()).await;
        let mut config = test_config(dir.path(), &database.url);
        adjust(&mut config);
        tenantry::telemetry::init(&config);
        let (ctx, _) = app::open(config).await.expect("server opens");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let server = app::start(ctx.clone(), listener).expect("server starts");
        let base = format!("http://{}", server.addr);
        let token =
            auth::create_platform_token(&ctx, &Actor::system(), "test", Role::PlatformAdmin, None)
                .await
                .expect("admin token")
                .token;
        TestApp {
            backend,
            base,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            token,
            ctx,
            dir,
            database,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the admin token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends JSON with the admin token; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_json(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a tenant through the API and returns its JSON.
    pub async fn create_tenant(&self, slug: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/tenant",
                serde_json::json!({ "slug": slug, "name": format!("Tenant {slug}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Installs the test plugin `<file>.wasm` (built with the test plugins) through the API.
    pub async fn install_test_plugin(&self, file: &str) {
        let wasm = std::fs::read(format!(
            "{}/{file}.wasm",
            tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
        ))
        .unwrap_or_else(|e| panic!("the {file} test plugin is built: {e}"));
        let response = self
            .request(Method::POST, "/api/v1/plugin")
            .header("content-type", "application/wasm")
            .body(wasm)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    /// Another API token with `role`.
    pub async fn token_with_role(&self, name: &str, role: Role) -> String {
        auth::create_platform_token(&self.ctx, &Actor::system(), name, role, None)
            .await
            .expect("token")
            .token
    }

    /// The SQLite database file and its WAL, as bytes (empty for PostgreSQL).
    pub fn sqlite_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if self.backend == Backend::Sqlite {
            for suffix in ["", "-wal"] {
                let path = PathBuf::from(format!(
                    "{}{suffix}",
                    self.dir.path().join("tenantry.db").display()
                ));
                if let Ok(b) = std::fs::read(path) {
                    bytes.extend(b);
                }
            }
        }
        bytes
    }

    pub async fn stop(self) {
        self.server.worker_stop.notify_one();
        let _ = self.server.worker.await;
        self.server.handle.stop(true).await;
        self.database.drop_database().await;
    }
}

pub async fn into_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// A tenant with a slug and a name, and nothing else set.
/// Tenant `acme` (free, active) as a plugin sees it, for calls made straight to the host.
pub fn plugin_acme() -> tenantry::plugin_host::PluginTenant {
    tenantry::plugin_host::PluginTenant {
        id: "id-acme".into(),
        slug: "acme".into(),
        name: "Acme".into(),
        tier: tenantry::tenants::Tier::Free,
        status: "active".into(),
    }
}

pub fn new_tenant(slug: &str, name: &str) -> tenantry::tenants::NewTenant {
    tenantry::tenants::NewTenant {
        slug: slug.into(),
        name: name.into(),
        tier: None,
        trial_days: None,
        contact: None,
        metadata: None,
        oauth_issuer: None,
        client_id: None,
        client_secret: None,
        scopes: None,
        db_uri: None,
        default_schema: None,
        role_mapping: None,
    }
}

/// The field errors of a 422 body, as (field, rule) pairs.
pub fn field_rules(body: &Value) -> Vec<(String, String)> {
    body["error"]["details"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| {
                    (
                        f["field"].as_str().unwrap_or("").to_owned(),
                        f["rule"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the alerting rules of `deploy/prometheus/<file>`: each rule has an alert name and a
/// severity, and every metric and grouping label its expression names is in `exported` (the
/// text of `/metrics`). Returns how many metrics the rules name.
pub fn assert_rules_name_exported(file: &str, exported: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/prometheus")
        .join(file);
    let rules: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let mut named = 0;
    for rule in rules["groups"][0]["rules"].as_array().expect("rules") {
        let expr = rule["expr"].as_str().expect("an expr");
        assert!(
            rule["alert"].is_string() && rule["labels"]["severity"].is_string(),
            "{rule}"
        );
        for metric in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("tenantry_"))
        {
            assert!(
                is_exported(metric, exported),
                "{metric} (in {}) is not exported",
                rule["alert"]
            );
            named += 1;
        }
        let by = expr
            .split("by (")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .flat_map(|labels| labels.split(','))
            .map(str::trim);
        let matched = expr
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .flat_map(|matchers| matchers.split(','))
            .filter_map(|matcher| matcher.split(['=', '!', '~']).next())
            .map(str::trim)
            .filter(|label| !label.is_empty() && !label.starts_with('$'));
        for label in by.chain(matched) {
            assert!(
                exported.contains(&format!("{label}=\"")),
                "label {label} (in {}) is not exported",
                rule["alert"]
            );
        }
    }
    named
}

/// Whether `/metrics` (`exported`) has a sample of `metric`, with labels or without.
fn is_exported(metric: &str, exported: &str) -> bool {
    exported.contains(&format!("{metric}{{"))
        || exported
            .lines()
            .any(|l| l.starts_with(&format!("{metric} ")))
}

/// Checks the Grafana dashboard `deploy/grafana/<file>`: valid JSON with panels, and every
/// metric its queries name is in `exported` (the text of `/metrics`). Returns how many metrics
/// the queries name.
pub fn assert_dashboard_names_exported(file: &str, exported: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana")
        .join(file);
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let mut named = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expr");
            for metric in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("tenantry_"))
            {
                assert!(
                    is_exported(metric, exported),
                    "{metric} (panel {}) is not exported",
                    panel["title"]
                );
                named += 1;
            }
        }
    }
    named
}

/// Someone else's hold on what a write to `table` needs: on SQLite the one write lock (`BEGIN
/// IMMEDIATE`), on PostgreSQL an `EXCLUSIVE` lock on the table, which lets reads through and
/// blocks writes. Held until dropped.
#[expect(
    dead_code,
    reason = "held, never read: dropping it lets the writes through"
)]
pub enum WriteHold {
    Sqlite(diesel::SqliteConnection),
    Postgres(diesel_async::AsyncPgConnection),
}

pub async fn hold_writes(app: &TestApp, table: &str) -> WriteHold {
    use diesel_async::SimpleAsyncConnection as _;
    match app.backend {
        Backend::Sqlite => {
            use diesel::Connection as _;
            let path = app.database.url.trim_start_matches("sqlite://").to_owned();
            let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
            diesel::connection::SimpleConnection::batch_execute(&mut conn, "BEGIN IMMEDIATE")
                .unwrap();
            WriteHold::Sqlite(conn)
        }
        Backend::Postgres => {
            use diesel_async::AsyncConnection as _;
            let mut conn = diesel_async::AsyncPgConnection::establish(&app.database.url)
                .await
                .unwrap();
            conn.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE"))
                .await
                .unwrap();
            WriteHold::Postgres(conn)
        }
    }
}

/// Runs `statement` on the app's database behind its back (a hand edit, a downgrade).
pub async fn run_sql(app: &TestApp, statement: &str) {
    use diesel_async::SimpleAsyncConnection as _;
    match app.backend {
        Backend::Sqlite => {
            use diesel::Connection as _;
            let path = app.database.url.trim_start_matches("sqlite://").to_owned();
            let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
            diesel::connection::SimpleConnection::batch_execute(&mut conn, statement).unwrap();
        }
        Backend::Postgres => {
            use diesel_async::AsyncConnection as _;
            let mut conn = diesel_async::AsyncPgConnection::establish(&app.database.url)
                .await
                .unwrap();
            conn.batch_execute(statement).await.unwrap();
        }
    }
}
