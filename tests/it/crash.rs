//! Crash safety with real server processes (`tenantry serve`) killed with SIGKILL:
//!
//! - a server is killed with SIGKILL in the middle of a run, at a point chosen by the test-only
//!   `provisioning.fault_injection` setting (after a backend call, before its result was
//!   journaled); a restarted server takes the run over when its lease expires, and the backend
//!   holds every resource exactly once;
//! - two servers on one PostgreSQL provision 50 tenants requested through both: every run is
//!   executed once (`FOR UPDATE SKIP LOCKED` leases);
//! - a server is killed right after a lifecycle change (a suspension) committed, before its
//!   worker heard of the change: the run that carries it to the backends was stored with it, so
//!   a restarted server suspends the tenant in its backend;
//! - a server is killed during a stream of reported usage events and API calls: after a restart,
//!   every event acknowledged is counted and one sent again is not counted twice, and at most
//!   the last flush interval of API-call counts is lost.
//!
//! The backend is the `recorder` test plugin's recording test double (`common::recorder`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::process::ServerProcess;
use crate::common::recorder::RecorderBackend;
use crate::common::{Backend, TestDatabase, random_master_key, test_config};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::auth::{self, Role};
use tenantry::plugin_registry::{self as registry, Capability};

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The database, master key and an admin token shared by the server processes of one test.
struct Setup {
    database: TestDatabase,
    master_key: String,
    token: String,
    _dir: tempfile::TempDir,
}

/// Prepares the database before any server starts: migrations, the recorder plugin granted its
/// test double, a connection template, an admin token.
async fn setup(backend: Backend, double: &RecorderBackend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(backend, dir.path()).await;
    let mut config = test_config(dir.path(), &database.url);
    let master_key = random_master_key();
    config.master_key = Some(master_key.clone());
    let (ctx, _) = tenantry::app::open(config).await.expect("opens");
    let actor = Actor::system();
    registry::install(&ctx, &actor, wasm("recorder"))
        .await
        .unwrap();
    let host = double.url.trim_start_matches("http://").to_owned();
    registry::grant(&ctx, &actor, "recorder", Capability::Host(host))
        .await
        .unwrap();
    registry::grant(
        &ctx,
        &actor,
        "recorder",
        Capability::Secret {
            name: "recorder-url".into(),
            value: double.url.clone(),
        },
    )
    .await
    .unwrap();
    tenantry::provisioning::templates::create(
        &ctx,
        &actor,
        &serde_json::from_value(json!({
            "name": "pg", "kind": "connection",
            "body": "postgresql://{user}:{password}@db:5432/{db}",
            "placeholders": ["user", "password", "db"],
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let token = auth::create_platform_token(&ctx, &actor, "crash", Role::PlatformAdmin, None)
        .await
        .unwrap()
        .token;
    Setup {
        database,
        master_key,
        token,
        _dir: dir,
    }
}

/// A `tenantry serve` process.
type Server = ServerProcess;

/// A server on the setup's database with the provisioning settings these tests need, paused at
/// `fault` when one is given.
async fn start(setup: &Setup, data_dir: &Path, fault: Option<&str>) -> Server {
    start_with(setup, data_dir, fault, &[]).await
}

/// [`start`] with more `TENANTRY_*` settings.
async fn start_with(
    setup: &Setup,
    data_dir: &Path,
    fault: Option<&str>,
    settings: &[(&str, &str)],
) -> Server {
    let mut all = vec![
        ("TENANTRY_PROVISIONING__LEASE_SECONDS", "2"),
        ("TENANTRY_PROVISIONING__POLL_INTERVAL_MS", "200"),
        ("TENANTRY_PROVISIONING__WORKERS", "8"),
    ];
    if let Some(fault) = fault {
        all.push(("TENANTRY_PROVISIONING__FAULT_INJECTION", fault));
    }
    all.extend_from_slice(settings);
    ServerProcess::start(&setup.database.url, &setup.master_key, data_dir, &all).await
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn provision(setup: &Setup, server: &Server, slug: &str) -> String {
    let response = client()
        .post(format!("{}/api/v1/tenant/provision", server.base))
        .bearer_auth(&setup.token)
        .json(&json!({
            "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
            "connection_template": { "template_name": "pg", "placeholders": { "user": "u", "password": "pw", "db": slug } },
            "backends": { "recorder": {} },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    let body: Value = response.json().await.unwrap();
    body["url"].as_str().unwrap().to_owned()
}

async fn run(setup: &Setup, server: &Server, url: &str) -> Value {
    let response = client()
        .get(format!("{}{url}", server.base))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn wait_finished(setup: &Setup, server: &Server, url: &str, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let run = run(setup, server, url).await;
        if matches!(run["status"].as_str(), Some("succeeded" | "failed")) {
            return run;
        }
        assert!(started.elapsed() < limit, "run did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_run_survives_sigkill_and_creates_each_resource_once(backend: Backend) {
    let double = RecorderBackend::start().await;
    let setup = setup(backend, &double).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(&setup, data.path(), Some("pause-after-apply:recorder:beta")).await;
    let url = provision(&setup, &server, "crashco").await;

    // The server stops right after beta reached the backend, before it journaled it.
    let marker = server.data_dir.join("fault-reached");
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fault point not reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = run(&setup, &server, &url).await;
    assert_eq!(during["status"], "running");
    let beta = during["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "beta")
        .unwrap();
    assert_eq!(beta["state"], "running", "{during}");
    assert!(double.exists("crashco-beta"), "beta reached the backend");
    assert!(!double.exists("crashco-gamma"));
    server.kill().await;
    std::fs::remove_file(&marker).unwrap();

    // The same server restarted takes the run over once the dead one's lease has expired.
    let server = start(&setup, data.path(), None).await;
    let done = wait_finished(&setup, &server, &url, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["executions"], 2, "taken over once: {done}");
    let attempts: Vec<(String, i64)> = done["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("alpha".into(), 1),
            ("beta".into(), 2),
            ("gamma".into(), 1),
            ("validate".into(), 1)
        ],
        "only the interrupted step ran again"
    );
    for name in ["crashco-alpha", "crashco-beta", "crashco-gamma"] {
        assert_eq!(double.creations(name), 1, "{name} created exactly once");
        assert!(double.exists(name));
    }
    assert!(!marker.exists(), "the fault is not injected again");
    server.kill().await;
    setup.database.drop_database().await;
    double.stop().await;
}

async fn two_replicas_execute_every_run_once(backend: Backend) {
    let double = RecorderBackend::start().await;
    let setup = setup(backend, &double).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&setup, dir_a.path(), None).await;
    let b = start(&setup, dir_b.path(), None).await;

    // 50 tenants, requested alternately through both servers, ten at a time.
    let mut urls = Vec::new();
    for chunk in (0..50).collect::<Vec<_>>().chunks(10) {
        let requests = chunk.iter().map(|i| {
            let server = if i % 2 == 0 { &a } else { &b };
            let setup = &setup;
            async move { provision(setup, server, &format!("replica-{i:02}")).await }
        });
        urls.extend(futures_util::future::join_all(requests).await);
    }
    let mut executors = std::collections::BTreeSet::new();
    for url in &urls {
        let done = wait_finished(&setup, &a, url, Duration::from_secs(120)).await;
        executors.insert(done["executed_by"].as_str().unwrap().to_owned());
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["executions"], 1, "executed once: {done}");
        for step in done["steps"].as_array().unwrap() {
            assert_eq!(step["attempts"], 1, "{done}");
        }
    }
    assert_eq!(
        executors.len(),
        2,
        "both servers executed runs: {executors:?}"
    );
    assert_eq!(double.names().len(), 150, "three resources per tenant");
    assert_eq!(double.duplicates(), vec![], "nothing created twice");
    a.kill().await;
    b.kill().await;
    setup.database.drop_database().await;
    double.stop().await;
}

async fn wait_for_marker(server: &Server) {
    let marker = server.data_dir.join("fault-reached");
    let started = Instant::now();
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fault point not reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::remove_file(&marker).unwrap();
}

async fn a_suspension_reaches_the_backends_after_a_crash_at_its_commit(backend: Backend) {
    let double = RecorderBackend::start().await;
    let setup = setup(backend, &double).await;
    let data = tempfile::tempdir().unwrap();
    let server = start(&setup, data.path(), None).await;
    let url = provision(&setup, &server, "outboxco").await;
    let done = wait_finished(&setup, &server, &url, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    server.kill().await;

    // A server whose worker would not look for runs for a minute, stopped right after the
    // suspension committed (before it could wake its worker), then killed.
    let server = start_with(
        &setup,
        data.path(),
        Some("pause-after-lifecycle-commit"),
        &[("TENANTRY_PROVISIONING__POLL_INTERVAL_MS", "60000")],
    )
    .await;
    let suspend = {
        let request = client()
            .post(format!("{}/api/v1/tenant/outboxco/suspend", server.base))
            .bearer_auth(&setup.token)
            .json(&json!({ "reason": "invoice overdue" }))
            .send();
        tokio::spawn(request)
    };
    wait_for_marker(&server).await;
    let tenant: Value = client()
        .get(format!("{}/api/v1/tenant/outboxco", server.base))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tenant["status"], "suspended", "{tenant}");
    assert!(
        double.events().is_empty(),
        "nothing reached the backend yet: {:?}",
        double.events()
    );
    server.kill().await;
    assert!(
        suspend.await.unwrap().is_err(),
        "the request died with its server"
    );

    // A restarted server carries the suspension into the backend.
    let server = start(&setup, data.path(), None).await;
    let started = Instant::now();
    loop {
        let events = double.events();
        if let Some(event) = events.iter().find(|e| e["tenant"] == "outboxco") {
            assert_eq!(event["change"], "suspend", "{events:?}");
            assert_eq!(event["reason"], "invoice overdue");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the backend never heard of the suspension"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs: Value = client()
        .get(format!(
            "{}/api/v1/provisioning?tenant=outboxco",
            server.base
        ))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let suspend_run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "suspend")
        .unwrap_or_else(|| panic!("a suspend run: {runs}"));
    let run_url = suspend_run["url"].as_str().unwrap().to_owned();
    let done = wait_finished(&setup, &server, &run_url, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(double.events().len(), 1, "suspended once");
    server.kill().await;
    setup.database.drop_database().await;
    double.stop().await;
}

async fn usage_survives_sigkill_exactly_once_and_api_calls_lose_at_most_a_flush(backend: Backend) {
    let double = RecorderBackend::start().await;
    let setup = setup(backend, &double).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = [("TENANTRY_QUOTAS__FLUSH_INTERVAL_MS", "500")];
    let server = start_with(&setup, dir.path(), None, &settings).await;
    let http = client();
    let admin =
        |method: reqwest::Method, url: String| http.request(method, url).bearer_auth(&setup.token);
    let created = admin(
        reqwest::Method::POST,
        format!("{}/api/v1/tenant", server.base),
    )
    .json(&json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" }))
    .send()
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let key: Value = admin(
        reqwest::Method::POST,
        format!("{}/api/v1/tenant/acme/api-keys", server.base),
    )
    .json(&json!({ "name": "app" }))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let key = key["token"].as_str().unwrap().to_owned();

    // API calls, given time to be written.
    for _ in 0..20 {
        let response = http
            .get(format!("{}/api/v1/tenant/acme", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // A stream of reported events and API calls, cut by SIGKILL.
    let base = server.base.clone();
    let token = setup.token.clone();
    let stream = tokio::spawn(async move {
        let http = client();
        let mut acknowledged = Vec::new();
        for i in 0..10_000 {
            let id = format!("evt-{i}");
            let sent = http
                .post(format!("{base}/api/v1/tenant/acme/usage"))
                .bearer_auth(&token)
                .json(&json!({ "id": id, "metric": "llm_tokens_per_day", "increment": 1 }))
                .send()
                .await;
            match sent {
                Ok(response) if response.status() == 200 => acknowledged.push(i),
                _ => return (acknowledged, i),
            }
        }
        (acknowledged, 10_000)
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill().await;
    let (acknowledged, sent) = stream.await.unwrap();
    assert!(
        !acknowledged.is_empty() && sent < 10_000,
        "killed mid-stream"
    );

    let server = start_with(&setup, dir.path(), None, &settings).await;
    let used = |metric: &'static str| {
        let request = admin(
            reqwest::Method::GET,
            format!("{}/api/v1/tenant/acme/usage", server.base),
        );
        async move {
            let usage: Value = request.send().await.unwrap().json().await.unwrap();
            usage["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["metric"] == metric)
                .unwrap()["used"]
                .as_u64()
                .unwrap()
        }
    };
    let counted = used("llm_tokens_per_day").await;
    // Every acknowledged event is counted; the one in flight at the kill may be too.
    assert!(
        counted == acknowledged.len() as u64 || counted == acknowledged.len() as u64 + 1,
        "counted {counted}, acknowledged {}",
        acknowledged.len()
    );
    // The client sends again what was not acknowledged: each is counted once, in all.
    for i in 0..=sent {
        if acknowledged.contains(&i) {
            continue;
        }
        let response = admin(
            reqwest::Method::POST,
            format!("{}/api/v1/tenant/acme/usage", server.base),
        )
        .json(&json!({ "id": format!("evt-{i}"), "metric": "llm_tokens_per_day", "increment": 1 }))
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(used("llm_tokens_per_day").await, sent as u64 + 1);
    // The 20 API calls written before the stream survive; a crash loses at most the calls of
    // the last flush interval (here none were made after them).
    assert_eq!(used("api_calls_per_month").await, 20);
    server.kill().await;
    setup.database.drop_database().await;
    double.stop().await;
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_survives_sigkill_exactly_once_and_api_calls_lose_at_most_a_flush() {
        super::usage_survives_sigkill_exactly_once_and_api_calls_lose_at_most_a_flush(
            super::Backend::Sqlite,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_survives_sigkill_and_creates_each_resource_once() {
        super::a_run_survives_sigkill_and_creates_each_resource_once(super::Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_suspension_reaches_the_backends_after_a_crash_at_its_commit() {
        super::a_suspension_reaches_the_backends_after_a_crash_at_its_commit(super::Backend::Sqlite)
            .await
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn usage_survives_sigkill_exactly_once_and_api_calls_lose_at_most_a_flush() {
        super::usage_survives_sigkill_exactly_once_and_api_calls_lose_at_most_a_flush(
            super::Backend::Postgres,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_survives_sigkill_and_creates_each_resource_once() {
        super::a_run_survives_sigkill_and_creates_each_resource_once(super::Backend::Postgres).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_suspension_reaches_the_backends_after_a_crash_at_its_commit() {
        super::a_suspension_reaches_the_backends_after_a_crash_at_its_commit(
            super::Backend::Postgres,
        )
        .await
    }

    /// Replicas share a PostgreSQL (an SQLite file belongs to one server).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_execute_every_run_once() {
        super::two_replicas_execute_every_run_once(super::Backend::Postgres).await
    }
}
