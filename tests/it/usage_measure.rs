//! Usage measured in the backends, on demand and on a schedule: each enabled provisioner's
//! `measure` (WIT 0.2.0), with the catalogue's gauges recorded and everything else shown with
//! why it was not.

use crate::common;

use crate::common::cli::Cli;
use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Provisions `slug` into `provisioner-v2` (so that the plugin holds resources of it).
async fn provisioned(app: &TestApp, slug: &str) {
    let response = app
        .request(reqwest::Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", format!("measure-{slug}"))
        .json(&json!({
            "tenant": { "slug": slug, "name": slug },
            "tier": "starter",
            "backends": { "provisioner-v2": {} },
        }))
        .send()
        .await
        .unwrap();
    let (status, accepted) = common::into_json(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let url = accepted["url"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    loop {
        let (_, run) = app.get(&url).await;
        match run["status"].as_str() {
            Some("succeeded") => return,
            Some("queued" | "running") => {}
            _ => panic!("{run}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{run}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

backend_tests!(
    measuring_records_the_gauges_plugins_report_through_the_api,
    only_the_plugins_that_hold_a_tenant_measure_it_and_only_what_they_declare_within_bounds,
    measuring_from_the_cli,
    provisioned_tenants_are_measured_on_a_schedule
);

fn figure<'a>(outcome: &'a Value, metric: &str) -> &'a Value {
    outcome["measured"]
        .as_array()
        .expect("measured")
        .iter()
        .find(|m| m["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} in {outcome}"))
}

async fn used(app: &TestApp, metric: &str) -> Value {
    used_by(app, "acme", metric).await
}

/// Tenant `slug`'s use of `metric`.
async fn used_by(app: &TestApp, slug: &str, metric: &str) -> Value {
    let (_, usage) = app.get(&format!("/api/v1/tenant/{slug}/usage")).await;
    usage["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} in {usage}"))["used"]
        .clone()
}

async fn measuring_records_the_gauges_plugins_report_through_the_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.install_test_plugin("provisioner_v2").await;
    app.install_test_plugin("provisioner_v1").await;
    provisioned(&app, "acme").await;
    let (status, outcome) = app
        .post("/api/v1/tenant/acme/usage/measure", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    let storage = figure(&outcome, "storage_gb");
    assert_eq!(
        (
            storage["plugin"].as_str(),
            storage["value"].as_f64(),
            storage["recorded"].as_bool()
        ),
        (Some("provisioner-v2"), Some(1.5), Some(true))
    );
    assert_eq!(used(&app, "storage_gb").await, 2, "rounded up");
    let users = figure(&outcome, "users");
    assert_eq!(users["recorded"], false);
    assert_eq!(users["note"], "counted by the server itself");
    assert_eq!(used(&app, "users").await, 0);
    let dashboards = figure(&outcome, "dashboards");
    assert_eq!(dashboards["note"], "not a metric of the quota catalogue");
    assert_eq!(
        outcome["failures"],
        json!([]),
        "a 0.1.0 plugin measures nothing, and that is no failure"
    );

    // Configured, measured again: the value follows.
    app.put(
        "/api/v1/plugin/provisioner-v2/config",
        json!({ "seats": 9 }),
    )
    .await;
    let (_, outcome) = app
        .post("/api/v1/tenant/acme/usage/measure", json!({}))
        .await;
    assert_eq!(figure(&outcome, "storage_gb")["value"], 4.5);
    assert_eq!(used(&app, "storage_gb").await, 5);

    // A suspended tenant is not measured.
    app.post("/api/v1/tenant/acme/suspend", json!({ "reason": "unpaid" }))
        .await;
    let (status, body) = app
        .post("/api/v1/tenant/acme/usage/measure", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    app.stop().await;
}

/// A plugin is asked about the tenants it holds resources of, and only the metrics its manifest
/// declares are recorded, within the catalogue's bound: an undeclared gauge and a lie of 1e300
/// are shown, not recorded, and a tenant the plugin holds nothing of is not asked at all.
async fn only_the_plugins_that_hold_a_tenant_measure_it_and_only_what_they_declare_within_bounds(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.install_test_plugin("provisioner_v2").await;
    provisioned(&app, "huge-co").await;
    app.create_tenant("idle").await;
    let (status, outcome) = app
        .post("/api/v1/tenant/huge-co/usage/measure", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    let retention = figure(&outcome, "data_retention_days");
    assert_eq!(retention["recorded"], false, "{outcome}");
    assert!(
        retention["note"]
            .as_str()
            .unwrap()
            .contains("not one of the metrics the plugin's manifest declares"),
        "{outcome}"
    );
    let agents = figure(&outcome, "concurrent_agents");
    assert_eq!(agents["recorded"], false, "{outcome}");
    assert_eq!(
        agents["note"], "past the catalogue's bound of 1000000000 for it (`max_value`)",
        "{outcome}"
    );
    assert_eq!(figure(&outcome, "storage_gb")["recorded"], true);
    assert_eq!(
        used_by(&app, "huge-co", "concurrent_agents").await,
        0,
        "the lie is not recorded"
    );
    // The catalogue states the bound.
    let (_, catalogue) = app.get("/api/v1/quotas/metrics").await;
    assert!(
        catalogue
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["max_value"] == 1_000_000_000),
        "{catalogue}"
    );
    // The plugin holds nothing of `idle`: it is not asked.
    let (status, outcome) = app
        .post("/api/v1/tenant/idle/usage/measure", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(outcome["measured"], json!([]), "{outcome}");
    app.stop().await;
}

async fn measuring_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    let wasm = format!(
        "{}/provisioner_v2.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &wasm]).await;
    let request = cli.file(
        "acme.yaml",
        "tenant:\n  slug: acme\n  name: Acme\ntier: starter\nbackends:\n  provisioner-v2: {}\n",
    );
    let out = cli
        .ok(&["tenant", "provision", "-f", request.to_str().unwrap()])
        .await;
    assert!(out.contains("succeeded"), "{out}");
    let text = cli.ok(&["usage", "measure", "acme"]).await;
    assert!(
        text.contains("provisioner-v2 storage_gb = 1.5: recorded"),
        "{text}"
    );
    assert!(
        text.contains("provisioner-v2 users = 3: not recorded (counted by the server itself)"),
        "{text}"
    );
    let usage = cli.ok(&["tenant", "usage", "acme"]).await;
    assert!(usage.contains("storage_gb"), "{usage}");
}

async fn provisioned_tenants_are_measured_on_a_schedule(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.quotas.measure_interval_seconds = 1).await;
    app.install_test_plugin("provisioner_v2").await;
    let response = app
        .request(reqwest::Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "measure-acme")
        .json(&json!({
            "tenant": {
                "slug": "acme",
                "name": "Acme",
                "oauth_issuer": "https://idp.example.com/oauth2/default",
                "client_id": "acme-client",
                "client_secret": "acme-client-secret",
            },
            "tier": "starter",
            "backends": { "provisioner-v2": {} },
        }))
        .send()
        .await
        .unwrap();
    let (status, accepted) = common::into_json(response).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    // An unprovisioned tenant holds nothing in a backend: the schedule passes it by.
    app.create_tenant("idle").await;
    let started = std::time::Instant::now();
    while used(&app, "storage_gb").await != 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the schedule measured nothing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, idle) = app.get("/api/v1/tenant/idle/usage").await;
    let storage = idle["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "storage_gb")
        .unwrap();
    assert_eq!(storage["used"], 0, "{idle}");
    app.stop().await;
}
