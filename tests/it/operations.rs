//! Storage guarantees and logs: concurrent writers, SQLite's settings, JSON logs with the
//! request id and tenant on each request. The dashboards and alerting rules of `deploy/` name
//! only what `/metrics` exports, and the rules pass `promtool check rules`.

use crate::common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::common::{Backend, TestApp};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::json;
use tenantry::store::Pooled;

backend_tests!(concurrent_changes_all_land_and_the_audit_chain_stays_intact);

async fn concurrent_changes_all_land_and_the_audit_chain_stays_intact(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let client = app.client.clone();
        let url = app.url("/api/v1/tenant");
        let token = app.token.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "slug": format!("tenant-{i:02}"), "name": format!("Tenant {i}") }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    // Concurrent transitions on one tenant: exactly one suspend wins.
    app.create_tenant("contended").await;
    let mut suspends = Vec::new();
    for _ in 0..6 {
        let client = app.client.clone();
        let url = app.url("/api/v1/tenant/contended/suspend");
        let token = app.token.clone();
        suspends.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "reason": "race" }))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::CREATED);
    }
    let mut outcomes = Vec::new();
    for task in suspends {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{outcomes:?}"
    );

    let (_, page) = app.get("/api/v1/tenant?q=tenant-&limit=100").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 24);
    let (_, verify) = app.get("/api/v1/audit/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    // admin tenant + password + 6 built-in plugins + test token + 25 creates + 1 suspend
    assert_eq!(verify["records"], 35, "{verify}");
    app.stop().await;
}

#[derive(QueryableByName)]
struct Pragma {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(QueryableByName)]
struct IntPragma {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut conn = app.ctx.db.conn().await.unwrap();
    let Pooled::Sqlite(c) = conn.pooled() else {
        panic!("sqlite")
    };
    let mode: Vec<Pragma> = diesel::sql_query("PRAGMA journal_mode")
        .load(&mut **c)
        .await
        .unwrap();
    assert_eq!(mode[0].journal_mode, "wal");
    let fk: Vec<IntPragma> =
        diesel::sql_query("SELECT foreign_keys AS value FROM pragma_foreign_keys")
            .load(&mut **c)
            .await
            .unwrap();
    assert_eq!(fk[0].value, 1);
    let timeout: Vec<IntPragma> =
        diesel::sql_query("SELECT timeout AS value FROM pragma_busy_timeout")
            .load(&mut **c)
            .await
            .unwrap();
    assert!(
        timeout[0].value >= 5000,
        "busy timeout {}",
        timeout[0].value
    );
    drop(conn);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_the_tenant_of_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TENANTRY_DATA_DIR", dir.path())
            .env("TENANTRY_LOG_FORMAT", "json")
            .current_dir(dir.path())
            .args(args);
        cmd
    };
    let out = run(&[
        "admin", "token", "create", "--name", "logs", "--output", "json",
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();

    let mut child = run(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = stdout
        .next()
        .unwrap()
        .unwrap()
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({ "slug": "acme", "name": "Acme" }))
        .send()
        .await
        .unwrap();
    let request_id = created.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    client
        .get(format!("{base}/api/v1/tenant/acme"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["span"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("a log line for request {request_id}: {stderr}"));
    assert_eq!(request["span"]["tenant"], "acme");
    assert_eq!(request["span"]["http.route"], "/api/v1/tenant");
    assert_eq!(request["span"]["http.status_code"], 201);
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["http.route"] == "/api/v1/tenant/{slug}"
                && l["span"]["tenant"] == "acme"),
        "{stderr}"
    );
}

/// Every dashboard (but identity's, checked where logins happen, in tests/it/api_sso.rs) and every
/// rule file names only metrics and labels a fresh server exports, and the rules pass promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_name_what_metrics_exports_and_promtool_accepts_the_rules() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_tenant("acme").await;
    // A provisioner enabled: its step failures and backend checks are exported from then on.
    let (status, body) = app.post("/api/v1/plugin/superset/enable", json!({})).await;
    assert!(status.is_success(), "{body}");
    let (status, _) = app.get("/api/v1/tenant/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A tenant's own request, written: its per-tenant traffic series are exported then.
    let (_, key) = app
        .post("/api/v1/tenant/acme/api-keys", json!({ "name": "app" }))
        .await;
    let response = app
        .client
        .get(app.url("/api/v1/tenant/acme"))
        .bearer_auth(key["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tenantry::quotas::traffic::flush(&app.ctx).await.unwrap();
    let exported = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (file, at_least) in [
        ("tenantry-overview.json", 8),
        ("tenantry-provisioning.json", 6),
        ("tenantry-plugins.json", 5),
    ] {
        let named = common::assert_dashboard_names_exported(file, &exported);
        assert!(named >= at_least, "{file} names {named} metrics");
    }
    let named = common::assert_rules_name_exported("tenantry-operations-alerts.yml", &exported);
    assert!(named >= 8, "the operations rules name {named} metrics");
    // The series the rules watch exist before the first event.
    for series in [
        r#"tenantry_job_runs_total{job="retention",outcome="failed"} 0"#,
        r#"tenantry_provisioning_runs{status="queued"} 0"#,
        r#"tenantry_backend_checks_total{plugin="superset",status="unreachable"} 0"#,
        r#"tenantry_plugin_deadline_hits_total{plugin="tier-quota"} 0"#,
    ] {
        assert!(exported.contains(series), "{series} missing:\n{exported}");
    }

    let rules: Vec<std::path::PathBuf> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml"))
            .collect();
    assert_eq!(rules.len(), 4, "{rules:?}");
    let checked = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .args(&rules)
        .output()
        .expect("promtool (Debian's prometheus package) is installed by scripts/install-test-deps");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    app.stop().await;
}
