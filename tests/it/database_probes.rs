//! The `database-probes` job against real databases: a tenant database that answers (this
//! machine's PostgreSQL) and one that does not (a closed port), probed at a bounded rate,
//! recorded, alerted on and resolved, and counted in `/metrics`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{self, Backend, TestApp};

backend_tests!(
    databases_are_probed_recorded_and_alerted_on_and_the_alert_resolves_when_they_answer,
    probes_keep_to_their_rate_and_take_the_longest_unprobed_first,
);

async fn create(app: &TestApp, slug: &str, db_uri: Option<&str>) {
    let mut body = json!({ "slug": slug, "name": slug });
    if let Some(uri) = db_uri {
        body["db_uri"] = json!(uri);
    }
    let (status, created) = app.post("/api/v1/tenant", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

async fn open_alerts(app: &TestApp, kind: &str) -> Vec<Value> {
    let (_, page) = app.get(&format!("/api/v1/alerts?kind={kind}")).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn databases_are_probed_recorded_and_alerted_on_and_the_alert_resolves_when_they_answer(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| {
        let probes = &mut config.database_probes;
        probes.interval_seconds = 1;
        probes.down_after_seconds = 0;
        probes.per_second = 100;
    })
    .await;
    let reachable = common::postgres_admin_url();
    create(&app, "good", Some(&reachable)).await;
    create(
        &app,
        "down",
        Some("postgresql://u:topsecret@127.0.0.1:1/db"),
    )
    .await;
    create(&app, "none", None).await;

    let ran = tenantry::database_probes::run(&app.ctx).await.unwrap();
    assert_eq!(ran, "probed 2 databases: 1 down, 1 up");
    // Nothing is due again before the interval.
    assert_eq!(
        tenantry::database_probes::run(&app.ctx).await.unwrap(),
        "no database was due"
    );

    let (_, good) = app.get("/api/v1/tenant/good/health/database").await;
    assert_eq!(good["status"], "connected", "{good}");
    assert_eq!(good["last_probe"]["status"], "up", "{good}");
    assert!(good["last_probe"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(good["last_probe"]["p95_ms"].as_f64().unwrap() > 0.0);
    let (_, down) = app.get("/api/v1/tenant/down/health/database").await;
    assert_eq!(down["last_probe"]["status"], "down", "{down}");
    assert!(down["last_probe"]["failing_since"].is_string(), "{down}");
    assert!(!down.to_string().contains("topsecret"), "{down}");
    let (_, none) = app.get("/api/v1/tenant/none/health/database").await;
    assert_eq!(none["last_probe"], Value::Null);

    // Down past `down_after_seconds` (0 here): a critical alert on that tenant only, which
    // names the error but never the URI's password.
    let down_alerts = open_alerts(&app, "database_down").await;
    assert_eq!(down_alerts.len(), 1, "{down_alerts:?}");
    assert_eq!(down_alerts[0]["tenant"], "down");
    assert_eq!(down_alerts[0]["severity"], "critical");
    assert!(
        down_alerts[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("down's database has not answered since "),
        "{down_alerts:?}"
    );
    assert!(!down_alerts[0].to_string().contains("topsecret"));
    let scraped = metrics(&app).await;
    for line in [
        "tenantry_tenant_databases{status=\"down\"} 1",
        "tenantry_tenant_databases{status=\"up\"} 1",
        "tenantry_tenant_database_probe_seconds_count 1",
    ] {
        assert!(scraped.contains(line), "{line} missing: {scraped}");
    }

    // The database answers again: the next probe resolves the alert.
    let (status, _) = app
        .patch("/api/v1/tenant/down", json!({ "db_uri": reachable }))
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        tenantry::database_probes::run(&app.ctx).await.unwrap(),
        "probed 2 databases: 2 up"
    );
    assert_eq!(
        open_alerts(&app, "database_down").await,
        Vec::<Value>::new()
    );
    let (_, resolved) = app
        .get("/api/v1/alerts?kind=database_down&status=resolved")
        .await;
    assert_eq!(resolved["items"][0]["tenant"], "down", "{resolved}");
    assert!(
        resolved["items"][0]["resolved_at"].is_string(),
        "{resolved}"
    );
    assert!(
        resolved["items"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("down's database answers again ("),
        "{resolved}"
    );
    assert!(
        metrics(&app)
            .await
            .contains("tenantry_tenant_databases{status=\"down\"} 0")
    );
    app.stop().await;
}

async fn probes_keep_to_their_rate_and_take_the_longest_unprobed_first(backend: Backend) {
    // One probe a second, a run every two seconds: at most two databases a run, started a
    // second apart; a database probed within the interval is not due again. (The scheduler's
    // own first run comes two seconds after the start, and finds nothing due.)
    let app = TestApp::spawn_with(backend, |config| {
        let probes = &mut config.database_probes;
        probes.interval_seconds = 60;
        probes.per_second = 1;
        probes.run_every_seconds = 2;
        probes.slow_p95_ms = 0.001;
    })
    .await;
    let reachable = common::postgres_admin_url();
    for slug in ["alpha", "bravo", "charlie"] {
        create(&app, slug, Some(&reachable)).await;
    }
    let started = Instant::now();
    let ran = tenantry::database_probes::run(&app.ctx).await.unwrap();
    assert_eq!(ran, "probed 2 databases: 2 slow");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the second probe started {:?} after the first",
        started.elapsed()
    );
    // charlie, never probed, is the one left.
    assert_eq!(
        tenantry::database_probes::run(&app.ctx).await.unwrap(),
        "probed 1 database: 1 slow"
    );
    let (_, charlie) = app.get("/api/v1/tenant/charlie/health/database").await;
    assert_eq!(charlie["last_probe"]["status"], "slow", "{charlie}");
    assert_eq!(
        tenantry::database_probes::run(&app.ctx).await.unwrap(),
        "no database was due"
    );
    // Slow past the line: a warning per tenant, with its p95.
    let slow = open_alerts(&app, "database_slow").await;
    assert_eq!(slow.len(), 3, "{slow:?}");
    assert!(slow.iter().all(|a| a["severity"] == "warning"));
    assert!(
        slow[0]["message"]
            .as_str()
            .unwrap()
            .contains("database answers slowly"),
        "{slow:?}"
    );
    app.stop().await;
}
