//! Quotas and alerts in the admin portal, in a real headless Chromium: the dashboard counts a
//! tenant's open alert and names it at risk, the tenant's page shows its usage bars and alerts,
//! the quota override form refuses a bad limit next to its field and saves a good one (the
//! alert then resolves), and the Alerts page filters. A screenshot of each step lands in
//! `target/screenshots/alerts/<backend>/`.

use std::time::Duration;

use crate::common::browser::{ChromeDriver, Ui, fresh_screenshots};
use crate::common::{ADMIN_PASSWORD, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

const TEST_TIMEOUT: Duration = Duration::from_secs(180);

backend_tests!(an_operator_sees_alerts_and_overrides_a_quota_in_the_portal);

async fn an_operator_sees_alerts_and_overrides_a_quota_in_the_portal(backend: Backend) {
    let shots = fresh_screenshots(Some("alerts"), backend);
    let driver = ChromeDriver::start(&shots).await;
    let app = TestApp::spawn_with(backend, |config| config.alerts.min_open_seconds = 0).await;
    // A free-tier tenant with 10 of its 10 agents: every line crossed.
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (status, body) = app
        .post(
            "/api/v1/tenant/acme/usage",
            json!({ "id": "a1", "metric": "agents", "value": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for_open_alerts(&app, 4).await;
    let ui = Ui {
        client: driver.connect().await,
        base: app.base.clone(),
        shots,
    };
    tokio::time::timeout(TEST_TIMEOUT, walk(&ui))
        .await
        .unwrap_or_else(|_| panic!("the browser walk did not finish within {TEST_TIMEOUT:?}"));
    let _ = ui.client.close().await;
    // What the form saved is what the API reads, audited.
    let (_, quotas) = app.get("/api/v1/tenant/acme/quotas").await;
    let agents = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["metric"] == "agents")
        .unwrap();
    assert_eq!(agents["override_limit"], 100);
    assert_eq!(agents["hard"], false);
    let (_, audit) = app.get("/api/v1/audit?action=quota.updated").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    app.stop().await;
    drop(driver);
}

async fn wait_for_open_alerts(app: &TestApp, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = app.get("/api/v1/alerts").await;
        if page["items"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn walk(ui: &Ui) {
    ui.goto("/login").await;
    ui.fill("#username", "admin").await;
    ui.fill("#password", ADMIN_PASSWORD).await;
    ui.click("form[action='/login'] button[type=submit]").await;

    // 1. The dashboard: open alerts by severity, and the tenant at risk.
    ui.wait_for_text("#open-alerts", "Open alerts").await;
    assert_eq!(ui.text("#open-blocked").await, "1");
    assert_eq!(ui.text("#open-critical").await, "1");
    assert_eq!(
        ui.text("#open-warning").await,
        "2",
        "the 80 % line and at-risk"
    );
    ui.wait_for_text("#at-risk", "acme").await;
    assert!(!ui.text("#at-risk").await.contains("globex"));
    ui.shot("01-dashboard").await;

    // 2. The tenant's page: usage bars coloured by severity, and its alerts.
    ui.click("#at-risk a[href='/tenants/acme']").await;
    ui.wait_for_text("h1", "Tenant acme").await;
    let badge = ui.find("#usage-agents .badge").await;
    assert_eq!(
        badge.attr("class").await.unwrap().as_deref(),
        Some("badge severity-blocked")
    );
    assert_eq!(badge.text().await.unwrap(), "100 %");
    let alerts = ui.text("#tenant-alerts").await;
    for line in [
        "quota: agents at warning",
        "quota: agents at critical",
        "quota: agents at blocked",
        "at risk",
    ] {
        assert!(alerts.contains(line), "{line} in {alerts}");
    }
    ui.shot("02-tenant").await;

    // 3. A bad limit: refused, the error next to its field, what was typed kept.
    ui.fill("#limit_agents", "lots").await;
    ui.click("#save-quotas").await;
    ui.wait_for_text("[role=alert]", "Please correct the fields marked below.")
        .await;
    let placement = ui
        .script(
            "const input = document.getElementById('limit_agents');
             const error = document.getElementById('limit_agents-error');
             const i = input.getBoundingClientRect(), e = error.getBoundingClientRect();
             return { text: error.textContent, value: input.value, invalid: input.getAttribute('aria-invalid'),
                      describedby: input.getAttribute('aria-describedby'), below: e.top >= i.bottom - 1, near: e.top - i.bottom < 40 };",
        )
        .await;
    assert_eq!(placement["value"], "lots", "{placement}");
    assert_eq!(placement["invalid"], "true", "{placement}");
    assert_eq!(placement["describedby"], "limit_agents-error");
    assert_eq!(placement["below"], true, "{placement}");
    assert_eq!(placement["near"], true, "{placement}");
    assert!(
        placement["text"].as_str().unwrap().contains("whole number"),
        "{placement}"
    );
    ui.shot("03-quota-refused").await;

    // 4. A good one, soft: saved; the tenant is far from its new limit.
    ui.fill("#limit_agents", "100").await;
    ui.find("select[name=hard_agents]")
        .await
        .select_by_value("soft")
        .await
        .expect("choosing soft");
    ui.click("#save-quotas").await;
    ui.wait_for_text("[role=status]", "Quotas of acme saved.")
        .await;
    ui.wait_for_text("#usage-agents", "(soft)").await;
    assert_eq!(ui.text("#usage-agents .badge").await, "10 %");
    ui.shot("04-quota-saved").await;

    // 5. The Alerts page: the tenant's alerts resolved (the evaluator runs within a second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        ui.goto("/alerts?tenant=acme&status=resolved").await;
        let rows = ui
            .script("return document.querySelectorAll('#alerts tbody tr[id^=alert-]').length")
            .await;
        if rows == json!(4) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} alerts resolved"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ui.text("#alerts").await.contains("resolved"));
    ui.shot("05-alerts-resolved").await;
    ui.goto("/alerts").await;
    ui.wait_for_text("#alerts", "No alerts.").await;
    assert!(ui.text("#open-counts").await.contains("0 blocked"));
    ui.shot("06-alerts-open").await;
}
