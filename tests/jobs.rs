//! Scheduled jobs: each runs once per interval across every replica. Two real servers
//! (`tenantry serve`) on one PostgreSQL run the `housekeeping` job every 2 s: the runs the
//! database records are the runs the servers made (no interval run twice), it sweeps what
//! expired, and the jobs show through the API and the CLI. The `retention` job purges a
//! canceled tenant whose retention period has ended (its status change moved back in time by
//! the test), and leaves one still within it.

mod common;

use std::time::{Duration, Instant};

use common::Backend;
use common::cli::Cli;
use common::process::SharedDatabase;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::Value;

backend_tests!(retention_purges_tenants_whose_retention_period_ended);

const RUNS: &str = r#"tenantry_job_runs_total{job="housekeeping",outcome="succeeded"}"#;

async fn jobs(base: &str, token: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let jobs: Value = response.json().await.unwrap();
    jobs.as_array().unwrap().clone()
}

fn job<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {jobs:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_run_each_interval_of_a_job_once() {
    let shared = SharedDatabase::create().await;
    let (database, token) = (&shared.database, &shared.token);
    // An idempotency key that expired: the housekeeping sweeps it.
    let mut conn = AsyncPgConnection::establish(&database.url).await.unwrap();
    conn.batch_execute(
        "INSERT INTO idempotency_keys (key, fingerprint, run_id, response, created_at, expires_at) \
         VALUES ('old', 'f', 'r', '{}', now() - interval '2 days', now() - interval '1 day')",
    )
    .await
    .unwrap();

    let settings = [
        ("TENANTRY_JOBS__HOUSEKEEPING_INTERVAL_SECONDS", "2"),
        ("TENANTRY_QUOTAS__MEASURE_INTERVAL_SECONDS", "0"),
        ("TENANTRY_JOBS__LEASE_SECONDS", "3"),
    ];
    let mut servers = Vec::new();
    for i in 0..2 {
        servers.push(shared.server(&format!("server-{i}"), &settings).await);
    }
    let base = servers[0].base.clone();
    let listed = jobs(&base, token).await;
    assert!(
        listed.iter().all(|j| j["name"] != "usage-measure"),
        "an interval of 0 turns a job off: {listed:?}"
    );
    assert_eq!(job(&listed, "housekeeping")["interval_seconds"], 2);

    // Over about four intervals, each is run once, by one server or the other.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let listed = jobs(&base, token).await;
    let housekeeping = job(&listed, "housekeeping");
    let runs = housekeeping["runs"].as_i64().unwrap();
    let mut made = 0.0;
    for server in &servers {
        made += common::scraped(&server.base, RUNS).await;
    }
    assert!(
        (2..=(elapsed / 2.0).ceil() as i64 + 1).contains(&runs),
        "{runs} runs in {elapsed:.1} s: {housekeeping}"
    );
    assert!(
        (made - runs as f64).abs() <= 1.0,
        "the servers made {made} runs, the database recorded {runs} (one may be in flight)"
    );
    assert_eq!(housekeeping["failures"], 0, "{housekeeping}");
    assert!(
        housekeeping["last_outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("swept ")),
        "{housekeeping}"
    );
    assert!(housekeeping["last_server"].is_string(), "{housekeeping}");
    assert!(housekeeping["last_duration_ms"].is_i64(), "{housekeeping}");
    let left: i64 = {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SELECT count(*) AS n FROM idempotency_keys WHERE key = 'old'")
            .get_result::<Count>(&mut conn)
            .await
            .unwrap()
            .n
    };
    assert_eq!(left, 0, "the expired idempotency key is swept");

    // A server that dies (SIGKILL, perhaps mid-run) leaves the job to the other.
    servers.remove(0).kill().await;
    let before = runs;
    let base = servers[0].base.clone();
    let started = Instant::now();
    loop {
        let runs = job(&jobs(&base, token).await, "housekeeping")["runs"]
            .as_i64()
            .unwrap();
        if runs >= before + 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the job stopped at {runs}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(servers);
    shared.database.drop_database().await;
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// `tenantry job list` shows the jobs and their schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_the_jobs() {
    let cli = Cli::new(Backend::Sqlite).await;
    let text = cli.ok(&["job", "list"]).await;
    assert!(
        text.contains("housekeeping") && text.contains("3600 s"),
        "{text}"
    );
    assert!(text.contains("usage-measure"), "{text}");
    assert!(text.contains("never"), "no run yet: {text}");
    let listed = cli.json(&["job", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
}

async fn retention_purges_tenants_whose_retention_period_ended(backend: Backend) {
    let app = common::TestApp::spawn_with(backend, |c| {
        c.jobs.retention_interval_seconds = 1;
        c.retention_days = 30;
    })
    .await;
    for slug in ["old-co", "recent-co"] {
        app.create_tenant(slug).await;
        let (status, body) = app
            .post(
                &format!("/api/v1/tenant/{slug}/cancel"),
                serde_json::json!({ "reason": "left" }),
            )
            .await;
        assert!(status.is_success(), "{body}");
    }
    let (_, recent) = app.get("/api/v1/tenant/recent-co").await;
    assert!(recent["retention_ends_at"].is_string(), "{recent}");
    // old-co was canceled 31 days ago.
    {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use tenantry::store::schema::tenants;
        let past = tenantry::clock::now() - chrono::Duration::days(31);
        let mut conn = app.ctx.db.conn().await.unwrap();
        let changed = tenantry::with_conn!(conn, |c| diesel::update(
            tenants::table.filter(tenants::slug.eq("old-co"))
        )
        .set(tenants::status_changed_at.eq(past))
        .execute(c)
        .await)
        .unwrap();
        assert_eq!(changed, 1);
    }
    let started = Instant::now();
    loop {
        let (status, _) = app.get("/api/v1/tenant/old-co").await;
        if status == reqwest::StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "old-co was not purged"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = app.get("/api/v1/tenant/recent-co").await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "within its retention period"
    );
    let (_, audit) = app.get("/api/v1/audit?action=tenant.purge").await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["actor"], "job:retention", "{audit}");
    let listed: Vec<Value> = {
        let (_, jobs) = app.get("/api/v1/jobs").await;
        jobs.as_array().unwrap().clone()
    };
    let retention = job(&listed, "retention");
    assert!(retention["runs"].as_i64().unwrap() >= 1, "{retention}");
    app.stop().await;
}
