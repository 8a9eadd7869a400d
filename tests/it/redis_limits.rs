//! Rate limits shared through a real Redis by two servers on one database (SQLite and
//! PostgreSQL): a key's own limit and the abuse limit on failed keys hold across them (and the
//! right key is admitted all the while); a busy tenant's calls come from leases of its minute
//! budget, and calls leased and left unspent are given back; and a Redis outage — a
//! `redis-server` this test starts and kills — follows `redis_on_failure`, shows in
//! `/health/ready` and `/metrics`, and recovers by itself.

use crate::common;

use std::net::TcpListener;
use std::time::Duration;

use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::app;

backend_tests!(
    a_keys_limit_and_failed_key_blocks_hold_across_servers,
    a_busy_tenant_is_admitted_from_leases_whatever_others_fail,
    calls_leased_and_left_unspent_are_given_back,
    a_redis_outage_follows_the_setting_and_recovers,
    a_lowered_limit_is_exact_at_once_on_every_server,
);

/// A second server on the first one's database and configuration.
async fn second_server(first: &TestApp) -> (String, app::RunningServer) {
    let config = (*first.ctx.config).clone();
    let ctx = app::open_with_keyring(
        config,
        tenantry::secrets::Keyring::new(
            tenantry::secrets::MasterKey::from_base64(
                first.ctx.config.master_key.as_deref().unwrap(),
            )
            .unwrap(),
            Vec::new(),
        ),
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = app::start(ctx, listener).unwrap();
    (format!("http://{}", server.addr), server)
}

async fn key_for(app: &TestApp, slug: &str, body: Value) -> String {
    let (status, key) = app
        .post(&format!("/api/v1/tenant/{slug}/api-keys"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["token"].as_str().unwrap().to_owned()
}

async fn get(http: &reqwest::Client, url: String, token: &str) -> StatusCode {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// Two servers sharing a Redis, with failed keys from one address blocked after three.
async fn two_servers(backend: Backend) -> (TestApp, String, app::RunningServer) {
    let app = TestApp::spawn_with(backend, |config| {
        config.redis_url = Some(common::redis_url());
        // Budgets of their own on the machine's Redis: other tests fail keys from 127.0.0.1 too.
        config.redis_prefix = common::redis_prefix();
        config.auth.key_failures_per_address_per_minute = 3;
    })
    .await;
    let (other, server) = second_server(&app).await;
    (app, other, server)
}

async fn limit_calls(app: &TestApp, slug: &str, per_minute: u64) {
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/tenant/{slug}/quotas"),
            Some(json!({ "api_calls_per_minute": per_minute })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn a_busy_tenant_is_admitted_from_leases_whatever_others_fail(backend: Backend) {
    let (app, other, _server) = two_servers(backend).await;
    app.create_tenant("acme").await;
    limit_calls(&app, "acme", 1_000_000).await;
    let good = key_for(&app, "acme", json!({ "name": "app" })).await;
    let http = reqwest::Client::new();
    let base = app.url("");
    let base = base.trim_end_matches('/');

    let trips_before = common::scraped(base, "tenantry_redis_roundtrip_seconds_count").await;
    for _ in 0..300 {
        assert_eq!(
            get(&http, app.url("/api/v1/tenant/acme"), &good).await,
            StatusCode::OK
        );
    }
    let leased = common::scraped(base, "tenantry_redis_leased_admissions_total").await;
    let trips =
        common::scraped(base, "tenantry_redis_roundtrip_seconds_count").await - trips_before;
    assert!(
        leased >= 250.0 && trips <= 50.0,
        "300 calls: {leased} admitted from leases, {trips} round trips to Redis"
    );

    // Failed keys from this address on the other server spend the shared budget: failures are
    // refused with 429 on every server, but the good key from the same address keeps being
    // admitted, from this server's lease too.
    let wrong = format!("{}{}", &good[..good.len() - 4], "zzzz");
    for _ in 0..3 {
        assert_eq!(
            get(&http, format!("{other}/api/v1/tenant/acme"), &wrong).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get(&http, format!("{other}/api/v1/tenant/acme"), &wrong).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/acme"), &wrong).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the block is shared"
    );
    for _ in 0..20 {
        assert_eq!(
            get(&http, app.url("/api/v1/tenant/acme"), &good).await,
            StatusCode::OK
        );
        assert_eq!(
            get(&http, format!("{other}/api/v1/tenant/acme"), &good).await,
            StatusCode::OK
        );
    }
    app.stop().await;
}

/// Waits, when needed, so that the next ~15 s fall in one calendar minute.
async fn early_in_a_minute() {
    let second = chrono::Timelike::second(&chrono::Utc::now());
    if second >= 40 {
        tokio::time::sleep(Duration::from_millis(u64::from(60 - second) * 1000 + 200)).await;
    }
}

async fn calls_leased_and_left_unspent_are_given_back(backend: Backend) {
    let (app, other, _server) = two_servers(backend).await;
    app.create_tenant("acme").await;
    limit_calls(&app, "acme", 100).await;
    let key = key_for(&app, "acme", json!({ "name": "app" })).await;
    let http = reqwest::Client::new();
    let base = app.url("");
    let base = base.trim_end_matches('/');
    // The other server asks for the tenant's limits with its first call, which waits for them
    // and is counted under them; this one knows them since the change.
    let first_minute = chrono::Utc::now().format("%H:%M").to_string();
    assert_eq!(
        get(&http, format!("{other}/api/v1/tenant/acme"), &key).await,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    early_in_a_minute().await;
    let minute = chrono::Utc::now().format("%H:%M").to_string();
    // The first call, when it fell in this minute, spent one of its hundred.
    let carried = usize::from(minute == first_minute);

    let mut admitted = 0;
    for _ in 0..60 {
        if get(&http, app.url("/api/v1/tenant/acme"), &key).await == StatusCode::OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 60);
    assert!(common::scraped(base, "tenantry_redis_leased_admissions_total").await > 0.0);
    // This server leaves its lease unspent: given back, the other can admit the rest.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut refused = 0;
    for _ in 0..60 {
        match get(&http, format!("{other}/api/v1/tenant/acme"), &key).await {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            status => panic!("unexpected {status}"),
        }
    }
    assert_eq!(
        chrono::Utc::now().format("%H:%M").to_string(),
        minute,
        "the calls fit in one minute"
    );
    assert_eq!(
        (admitted + carried, refused),
        (100, 20 + carried),
        "exactly the limit of 100 admitted"
    );
    app.stop().await;
}

async fn a_keys_limit_and_failed_key_blocks_hold_across_servers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.redis_url = Some(common::redis_url());
        // Budgets of their own on the machine's Redis: other tests fail keys from 127.0.0.1 too.
        config.redis_prefix = common::redis_prefix();
        config.auth.key_failures_per_address_per_minute = 3;
    })
    .await;
    let (other, _server) = second_server(&app).await;
    app.create_tenant("acme").await;
    let limited = key_for(
        &app,
        "acme",
        json!({ "name": "limited", "rate_limit_per_minute": 3 }),
    )
    .await;
    let http = reqwest::Client::new();
    // Three a minute, across both servers.
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/acme"), &limited).await,
        StatusCode::OK
    );
    assert_eq!(
        get(&http, format!("{other}/api/v1/tenant/acme"), &limited).await,
        StatusCode::OK
    );
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/acme"), &limited).await,
        StatusCode::OK
    );
    let refused = http
        .get(format!("{other}/api/v1/tenant/acme"))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));

    // Failed keys from one address: three on one server spend the budget the other enforces.
    app.create_tenant("globex").await;
    let good = key_for(&app, "globex", json!({ "name": "app" })).await;
    let wrong = format!("{}{}", &good[..good.len() - 4], "zzzz");
    for _ in 0..3 {
        assert_eq!(
            get(&http, app.url("/api/v1/tenant/globex"), &wrong).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get(&http, format!("{other}/api/v1/tenant/globex"), &wrong).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the fourth failure, on the other server, spends the shared budget"
    );
    // Now failed attempts from this address are refused on both; the good key still works.
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/globex"), &wrong).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/globex"), &good).await,
        StatusCode::OK
    );
    assert_eq!(
        get(&http, format!("{other}/api/v1/tenant/globex"), &good).await,
        StatusCode::OK
    );
    let (_, ready) = app.get("/health/ready").await;
    assert_eq!(ready["redis"]["status"], "connected", "{ready}");
    assert!(
        ready["redis"].get("address").is_none(),
        "public: no address {ready}"
    );
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("tenantry_redis_up 1"), "{metrics}");
    assert!(metrics.contains("tenantry_redis_roundtrip_seconds_count"));
    app.stop().await;
}

/// A `redis-server` of this test's own, on `port`, keeping nothing on disk.
fn start_redis(port: u16, dir: &std::path::Path) -> std::process::Child {
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server runs (the redis-server package)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

async fn ready_until(app: &TestApp, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, ready) = app.get("/health/ready").await;
        if ready["redis"]["status"] == status {
            return ready;
        }
        assert!(tokio::time::Instant::now() < deadline, "{ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_redis_outage_follows_the_setting_and_recovers(backend: Backend) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = start_redis(port, dir.path());
    let url = format!("redis://127.0.0.1:{port}/0");
    let app = TestApp::spawn_with(backend, |config| {
        config.redis_url = Some(url.clone());
        config.redis_timeout_ms = 200;
    })
    .await;
    app.create_tenant("acme").await;
    app.call(
        reqwest::Method::PUT,
        "/api/v1/tenant/acme/quotas",
        Some(json!({ "api_calls_per_minute": 1000 })),
    )
    .await;
    let key = key_for(&app, "acme", json!({ "name": "app" })).await;
    let http = reqwest::Client::new();
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/acme"), &key).await,
        StatusCode::OK
    );
    ready_until(&app, "connected").await;

    // Down: fail open, the server's own budgets decide; ready, but Redis unreachable.
    redis.kill().unwrap();
    redis.wait().unwrap();
    for _ in 0..5 {
        assert_eq!(
            get(&http, app.url("/api/v1/tenant/acme"), &key).await,
            StatusCode::OK
        );
    }
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK, "fail open stays ready: {ready}");
    assert_eq!(ready["redis"]["status"], "unreachable");
    assert_eq!(ready["redis"]["on_failure"], "open");
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("tenantry_redis_up 0"), "{metrics}");
    assert!(!metrics.contains("tenantry_redis_errors_total 0"));

    // Back: it recovers by itself.
    let _redis = RedisGuard(start_redis(port, dir.path()));
    ready_until(&app, "connected").await;
    assert_eq!(
        get(&http, app.url("/api/v1/tenant/acme"), &key).await,
        StatusCode::OK
    );
    // The gauge follows the next round trip to Redis: a request admitted from a budget this
    // server had leased makes none, so it may take a few.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, metrics) = app.get("/metrics").await;
        if metrics.as_str().unwrap().contains("tenantry_redis_up 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tenantry_redis_up stayed 0 after Redis came back"
        );
        get(&http, app.url("/api/v1/tenant/acme"), &key).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    app.stop().await;

    // Fail closed: without Redis, authenticated requests are refused and the server is not
    // ready.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = TestApp::spawn_with(backend, |config| {
        config.redis_url = Some(format!("redis://127.0.0.1:{dead}/0"));
        config.redis_on_failure = tenantry::config::FailMode::Closed;
        config.redis_timeout_ms = 100;
    })
    .await;
    // A request with no limit of its own (the platform's token) needs no Redis; a tenant's key
    // under a per-minute limit does, and is refused.
    let (status, body) = closed.get("/api/v1/tenant").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    closed.create_tenant("acme").await;
    let (status, body) = closed
        .call(
            reqwest::Method::PUT,
            "/api/v1/tenant/acme/quotas",
            Some(json!({ "api_calls_per_minute": 1000 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let key = key_for(&closed, "acme", json!({ "name": "app" })).await;
    let response = reqwest::Client::new()
        .get(closed.url("/api/v1/tenant/acme"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redis_on_failure"),
        "{body}"
    );
    let (status, ready) = closed.get("/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "unavailable");
    let (status, _) = closed.get("/health").await;
    assert_eq!(status, StatusCode::OK, "the process itself is up");
    closed.stop().await;
}

struct RedisGuard(std::process::Child);

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Both servers admitting a tenant under a high limit (from leases of its minute), then the
/// limit lowered on one of them: from that moment the two together admit exactly the new limit
/// in the minute — the other server hears of the override at once (not after its decision's
/// time to live), and what it leased under the old limit is given back, not spent.
async fn a_lowered_limit_is_exact_at_once_on_every_server(backend: Backend) {
    let (app, other, _server) = two_servers(backend).await;
    app.create_tenant("acme").await;
    limit_calls(&app, "acme", 1000).await;
    let good = key_for(&app, "acme", json!({ "name": "app" })).await;
    let http = reqwest::Client::new();
    early_in_a_minute().await;
    for _ in 0..3 {
        for base in [app.url(""), format!("{other}/")] {
            let url = format!(
                "{}api/v1/tenant/acme",
                base.trim_end_matches('/').to_owned() + "/"
            );
            assert_eq!(get(&http, url, &good).await, StatusCode::OK);
        }
    }
    // Six calls so far in this minute; the limit goes down to ten.
    limit_calls(&app, "acme", 10).await;
    let mut admitted = 0;
    for round in 0..20 {
        // Give the other server's dropped lease a moment to go back (it holds the shared count
        // meanwhile: a lowered limit may refuse early, never admit past itself).
        if round == 2 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        for base in [app.url(""), format!("{other}/")] {
            let url = format!(
                "{}api/v1/tenant/acme",
                base.trim_end_matches('/').to_owned() + "/"
            );
            match get(&http, url, &good).await {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                status => panic!("{status}"),
            }
        }
    }
    assert_eq!(admitted, 4, "ten in the minute: six before, four after");
    app.stop().await;
}
