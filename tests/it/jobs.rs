//! Scheduled jobs: each runs once per interval across every replica. Two real servers
//! (`tenantry serve`) on one PostgreSQL run the `housekeeping` job every 2 s: the runs the
//! database records are the runs the servers made (no interval run twice), it sweeps what
//! expired, and the jobs show through the API and the CLI. The `retention` job purges a
//! canceled tenant whose retention period has ended (its status change moved back in time by
//! the test), and leaves one still within it. Trials end and retention purges happen by
//! themselves, once, with two servers on a clock the test moves (`TENANTRY_TEST_CLOCK_FILE`),
//! after a `trial_ending` alert and its webhook, and after an export of each purged tenant; a
//! job that fails raises an alert its next good run resolves.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::Backend;
use crate::common::cli::Cli;
use crate::common::process::SharedDatabase;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::Value;

backend_tests!(
    retention_purges_tenants_whose_retention_period_ended,
    a_failing_job_raises_an_alert_its_next_good_run_resolves,
    a_trial_is_converted_by_an_operator_or_by_the_job,
    the_alerts_job_evaluates_tenants_no_server_was_told_about
);

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
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "alerts",
            "housekeeping",
            "retention",
            "trials",
            "database-probes",
            "usage-measure"
        ]
    );
}

/// Sets `slug`'s last status change `days` ago.
async fn changed_days_ago(app: &common::TestApp, slug: &str, days: i64) {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use tenantry::store::schema::tenants;
    let past = tenantry::clock::now() - chrono::Duration::days(days);
    let mut conn = app.ctx.db.conn().await.unwrap();
    let changed = tenantry::with_conn!(conn, |c| diesel::update(
        tenants::table.filter(tenants::slug.eq(slug))
    )
    .set(tenants::status_changed_at.eq(past))
    .execute(c)
    .await)
    .unwrap();
    assert_eq!(changed, 1);
}

/// With `jobs.export_before_purge_dir` a tenant whose export cannot be written is not purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_export_cannot_be_written_is_not_purged() {
    let blocked = tempfile::NamedTempFile::new().unwrap();
    let dir = blocked.path().join("exports");
    let app = common::TestApp::spawn_with(Backend::Sqlite, |c| {
        c.jobs.retention_interval_seconds = 1;
        c.jobs.export_before_purge_dir = Some(dir.clone());
    })
    .await;
    app.create_tenant("kept-co").await;
    let (status, body) = app
        .post(
            "/api/v1/tenant/kept-co/cancel",
            serde_json::json!({ "reason": "left" }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    changed_days_ago(&app, "kept-co", 31).await;
    eventually(
        Duration::from_secs(15),
        "a failed retention run",
        || async {
            let (_, jobs) = app.get("/api/v1/jobs").await;
            job(jobs.as_array().unwrap(), "retention")["failures"].as_i64() >= Some(1)
        },
    )
    .await;
    let (_, jobs) = app.get("/api/v1/jobs").await;
    let retention = job(jobs.as_array().unwrap(), "retention");
    assert!(
        retention["last_error"]
            .as_str()
            .unwrap()
            .contains("kept-co: not purged, its export failed"),
        "{retention}"
    );
    let (status, _) = app.get("/api/v1/tenant/kept-co").await;
    assert_eq!(status, reqwest::StatusCode::OK, "kept");
    app.stop().await;
}

async fn retention_purges_tenants_whose_retention_period_ended(backend: Backend) {
    let exports = tempfile::tempdir().unwrap();
    let dir = exports.path().join("before-purge");
    let app = common::TestApp::spawn_with(backend, |c| {
        c.jobs.retention_interval_seconds = 1;
        c.retention_days = 30;
        c.jobs.export_before_purge_dir = Some(dir.clone());
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
    changed_days_ago(&app, "old-co", 31).await;
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
    // Its export was written first, for this user only; it restores the tenant.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("old-co-") && name.ends_with(".tar"),
        "{name}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let response = app
        .request(reqwest::Method::POST, "/api/v1/tenant/bundle")
        .header("Content-Type", "application/x-tar")
        .body(std::fs::read(&files[0]).unwrap())
        .send()
        .await
        .unwrap();
    let (status, restored) = common::into_json(response).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{restored}");
    assert_eq!(restored["plan"]["tenant"], "old-co");
    assert_eq!(restored["ok"], true, "{restored}");
    app.stop().await;
}

/// Sends `method` to `path` on `base` with `token` and `body`; the status must be a success.
async fn send(base: &str, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Two servers on one PostgreSQL, the clock moved by the test: a canceled and a deleted tenant
/// are purged when their retention ends, once (one export, one purge, one audit record each),
/// while one canceled later is kept until its own end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_once_with_two_servers_on_a_clock_the_test_moves() {
    let shared = SharedDatabase::create().await;
    let token = &shared.token;
    let clock = shared.dir.path().join("clock-offset");
    std::fs::write(&clock, "0").unwrap();
    let exports = shared.dir.path().join("before-purge");
    let actor = tenantry::audit::Actor::system();
    for slug in ["gone-a", "gone-b", "kept-c", "back-d"] {
        tenantry::tenants::create(&shared.ctx, &actor, &common::new_tenant(slug, slug))
            .await
            .unwrap();
    }
    let settings = [
        ("TENANTRY_TEST_CLOCK_FILE", clock.to_str().unwrap()),
        ("TENANTRY_RETENTION_DAYS", "30"),
        ("TENANTRY_JOBS__RETENTION_INTERVAL_SECONDS", "1"),
        (
            "TENANTRY_JOBS__EXPORT_BEFORE_PURGE_DIR",
            exports.to_str().unwrap(),
        ),
        ("TENANTRY_JOBS__ALERTS_INTERVAL_SECONDS", "0"),
        ("TENANTRY_QUOTAS__MEASURE_INTERVAL_SECONDS", "0"),
        ("TENANTRY_JOBS__LEASE_SECONDS", "3"),
    ];
    let mut servers = Vec::new();
    for i in 0..2 {
        servers.push(shared.server(&format!("server-{i}"), &settings).await);
    }
    let (base, other) = (servers[0].base.clone(), servers[1].base.clone());
    let post = reqwest::Method::POST;
    send(
        &base,
        token,
        post.clone(),
        "/api/v1/tenant/gone-a/cancel",
        serde_json::json!({ "reason": "left" }),
    )
    .await;
    send(
        &other,
        token,
        reqwest::Method::DELETE,
        "/api/v1/tenant/gone-b?reason=closed",
        Value::Null,
    )
    .await;
    send(
        &base,
        token,
        post.clone(),
        "/api/v1/tenant/back-d/cancel",
        serde_json::json!({ "reason": "left" }),
    )
    .await;
    let canceled = get(&base, token, "/api/v1/tenant/gone-a").await;
    let ends: chrono::DateTime<chrono::Utc> = canceled["retention_ends_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let days_left = (ends - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days_left), "{canceled}");

    // Twenty days on, kept-c is canceled: its retention ends ten days after the others'; back-d
    // is restored before its purge.
    std::fs::write(&clock, days(20)).unwrap();
    send(
        &base,
        token,
        post.clone(),
        "/api/v1/tenant/back-d/restore",
        serde_json::json!({ "reason": "came back" }),
    )
    .await;
    send(
        &other,
        token,
        post,
        "/api/v1/tenant/kept-c/cancel",
        serde_json::json!({ "reason": "left too" }),
    )
    .await;
    let runs = job(&jobs(&base, token).await, "retention")["runs"]
        .as_i64()
        .unwrap();
    eventually(Duration::from_secs(10), "runs of retention", || async {
        job(&jobs(&base, token).await, "retention")["runs"].as_i64() >= Some(runs + 2)
    })
    .await;
    for slug in ["gone-a", "gone-b", "kept-c"] {
        let tenant = get(&base, token, &format!("/api/v1/tenant/{slug}")).await;
        assert!(tenant["retention_ends_at"].is_string(), "not yet: {tenant}");
    }
    let back = get(&base, token, "/api/v1/tenant/back-d").await;
    assert!(back["retention_ends_at"].is_null(), "restored: {back}");
    assert!(!exports.exists(), "nothing exported before a purge is due");

    // Past thirty days, both servers running: each of the two is purged once.
    std::fs::write(&clock, (30 * 86_400 + 3_600).to_string()).unwrap();
    for slug in ["gone-a", "gone-b"] {
        eventually(Duration::from_secs(15), "the purge", || async {
            let response = reqwest::Client::new()
                .get(format!("{base}/api/v1/tenant/{slug}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            response.status() == reqwest::StatusCode::NOT_FOUND
        })
        .await;
    }
    let runs = job(&jobs(&base, token).await, "retention")["runs"]
        .as_i64()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "more runs of retention",
        || async { job(&jobs(&base, token).await, "retention")["runs"].as_i64() >= Some(runs + 2) },
    )
    .await;
    let audit = get(&base, token, "/api/v1/audit?action=tenant.purge").await;
    let items = audit["items"].as_array().unwrap();
    let mut purged: Vec<&str> = items
        .iter()
        .map(|i| i["tenant"].as_str().unwrap())
        .collect();
    purged.sort();
    assert_eq!(purged, ["gone-a", "gone-b"], "once each: {audit}");
    assert!(
        items.iter().all(|i| i["actor"] == "job:retention"),
        "{audit}"
    );
    let mut written: Vec<String> = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "one export each: {written:?}");
    assert!(
        written[0].starts_with("gone-a-") && written[1].starts_with("gone-b-"),
        "{written:?}"
    );
    let kept = get(&base, token, "/api/v1/tenant/kept-c").await;
    assert_eq!(
        kept["status"], "canceled",
        "within its own retention: {kept}"
    );
    let back = get(&base, token, "/api/v1/tenant/back-d").await;
    assert_eq!(
        back["status"], "active",
        "restored before its purge: {back}"
    );
    drop(servers);
    shared.database.drop_database().await;
}

/// Polls `check` every 200 ms until it holds, for at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get(base: &str, token: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

fn days(n: i64) -> String {
    (n * 86_400).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trials_end_once_with_two_servers_on_a_clock_the_test_moves() {
    let shared = SharedDatabase::create().await;
    let token = &shared.token;
    let clock = shared.dir.path().join("clock-offset");
    std::fs::write(&clock, "0").unwrap();
    let actor = tenantry::audit::Actor::system();
    for slug in ["trial-a", "trial-b", "trial-c"] {
        let mut new = common::new_tenant(slug, slug);
        new.trial_days = Some(10);
        tenantry::tenants::create(&shared.ctx, &actor, &new)
            .await
            .unwrap();
    }
    let receiver = common::webhooks::Receiver::start(0).await;
    let settings = [
        ("TENANTRY_TEST_CLOCK_FILE", clock.to_str().unwrap()),
        ("TENANTRY_JOBS__TRIALS_INTERVAL_SECONDS", "1"),
        ("TENANTRY_JOBS__ALERTS_INTERVAL_SECONDS", "0"),
        ("TENANTRY_QUOTAS__MEASURE_INTERVAL_SECONDS", "0"),
        ("TENANTRY_JOBS__LEASE_SECONDS", "3"),
    ];
    let mut servers = Vec::new();
    for i in 0..2 {
        servers.push(shared.server(&format!("server-{i}"), &settings).await);
    }
    let base = servers[0].base.clone();
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "url": receiver.url, "events": ["alert.raised"] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // Today nothing is due: the trials run, and end nothing.
    eventually(Duration::from_secs(10), "a first run of trials", || async {
        job(&jobs(&base, token).await, "trials")["runs"].as_i64() >= Some(1)
    })
    .await;
    let alerts = get(&base, token, "/api/v1/alerts?kind=trial_ending").await;
    assert_eq!(alerts["items"], serde_json::json!([]), "{alerts}");

    // An operator converts trial-c before its end: it is no trial any more.
    let converted = reqwest::Client::new()
        .post(format!("{base}/api/v1/tenant/trial-c/convert"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "reason": "signed the contract" }))
        .send()
        .await
        .unwrap();
    assert!(converted.status().is_success(), "{}", converted.status());

    // Eight days on, two trials end within three days: an alert and a webhook each, once.
    std::fs::write(&clock, days(8)).unwrap();
    eventually(Duration::from_secs(15), "trial_ending alerts", || async {
        let alerts = get(&base, token, "/api/v1/alerts?kind=trial_ending").await;
        alerts["items"].as_array().unwrap().len() == 2
    })
    .await;
    let alerts = get(&base, token, "/api/v1/alerts?kind=trial_ending").await;
    for alert in alerts["items"].as_array().unwrap() {
        assert_eq!(alert["severity"], "warning", "{alert}");
        assert_eq!(alert["value"], 2.0, "two days left: {alert}");
        let message = alert["message"].as_str().unwrap();
        assert!(
            message.contains("(in 2 days); it is then suspended"),
            "{message}"
        );
    }
    let received = receiver.wait_for(2, Duration::from_secs(15)).await;
    // More runs go by: nothing is raised or sent twice.
    let runs = job(&jobs(&base, token).await, "trials")["runs"]
        .as_i64()
        .unwrap();
    eventually(Duration::from_secs(10), "more runs of trials", || async {
        job(&jobs(&base, token).await, "trials")["runs"].as_i64() >= Some(runs + 2)
    })
    .await;
    let received_later = receiver.received();
    assert_eq!(received_later.len(), 2, "{received_later:?}");
    let mut told: Vec<String> = received
        .iter()
        .map(|r| {
            r.json()["data"]["alert"]["tenant"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    told.sort();
    assert_eq!(told, ["trial-a", "trial-b"]);
    assert!(
        received
            .iter()
            .all(|r| r.json()["data"]["alert"]["kind"] == "trial_ending")
    );

    // Past the end: both are suspended, once, by the job, with its reason.
    std::fs::write(&clock, (10 * 86_400 + 3_600).to_string()).unwrap();
    for slug in ["trial-a", "trial-b"] {
        eventually(Duration::from_secs(15), "the trial ends", || async {
            get(&base, token, &format!("/api/v1/tenant/{slug}")).await["status"] == "suspended"
        })
        .await;
    }
    let runs = job(&jobs(&base, token).await, "trials")["runs"]
        .as_i64()
        .unwrap();
    eventually(Duration::from_secs(10), "more runs of trials", || async {
        job(&jobs(&base, token).await, "trials")["runs"].as_i64() >= Some(runs + 2)
    })
    .await;
    for slug in ["trial-a", "trial-b"] {
        let tenant = get(&base, token, &format!("/api/v1/tenant/{slug}")).await;
        assert!(
            tenant["status_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("trial ended on ")),
            "{tenant}"
        );
        let history = get(&base, token, &format!("/api/v1/tenant/{slug}/history")).await;
        let suspensions: Vec<&Value> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["to"] == "suspended")
            .collect();
        assert_eq!(suspensions.len(), 1, "once: {history}");
        assert_eq!(suspensions[0]["actor"], "job:trials", "{history}");
    }
    let audit = get(&base, token, "/api/v1/audit?action=tenant.suspend").await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    assert!(items.iter().all(|i| i["actor"] == "job:trials"), "{audit}");
    let converted = get(&base, token, "/api/v1/tenant/trial-c").await;
    assert_eq!(converted["status"], "active", "{converted}");
    // The alerts are over with the trials.
    let open = get(&base, token, "/api/v1/alerts?kind=trial_ending").await;
    assert_eq!(open["items"], serde_json::json!([]), "{open}");
    let resolved = get(
        &base,
        token,
        "/api/v1/alerts?kind=trial_ending&status=resolved",
    )
    .await;
    assert_eq!(resolved["items"].as_array().unwrap().len(), 2, "{resolved}");
    assert!(
        resolved["items"][0]["message"]
            .as_str()
            .unwrap()
            .contains("it is suspended"),
        "{resolved}"
    );
    drop(servers);
    receiver.stop().await;
    shared.database.drop_database().await;
}

async fn a_failing_job_raises_an_alert_its_next_good_run_resolves(backend: Backend) {
    let app = common::TestApp::spawn_with(backend, |c| {
        c.quotas.measure_interval_seconds = 1;
    })
    .await;
    app.install_test_plugin("provisioner_v2").await;
    let response = app
        .request(reqwest::Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "failing-job")
        .json(&serde_json::json!({
            "tenant": { "slug": "acme", "name": "Acme" },
            "backends": { "provisioner-v2": {} },
        }))
        .send()
        .await
        .unwrap();
    let (status, accepted) = common::into_json(response).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{accepted}");
    eventually(Duration::from_secs(20), "a good run", || async {
        let (_, jobs) = app.get("/api/v1/jobs").await;
        job(jobs.as_array().unwrap(), "usage-measure")["last_outcome"]
            .as_str()
            .is_some_and(|o| o.starts_with("1 tenants measured"))
    })
    .await;

    // The backend cannot be reached: the run fails, and says so in an alert.
    let (status, body) = app
        .put(
            "/api/v1/plugin/provisioner-v2/config",
            serde_json::json!({ "unreachable": true }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    eventually(Duration::from_secs(20), "a job_failing alert", || async {
        let (_, alerts) = app.get("/api/v1/alerts?kind=job_failing").await;
        alerts["items"].as_array().unwrap().len() == 1
    })
    .await;
    let (_, alerts) = app.get("/api/v1/alerts?kind=job_failing").await;
    let alert = &alerts["items"][0];
    assert_eq!(alert["subject"], "usage-measure", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["tenant"], tenantry::tenants::ADMIN_SLUG, "{alert}");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("1 measurements failed"),
        "{alert}"
    );
    let (_, jobs) = app.get("/api/v1/jobs").await;
    let measure = job(jobs.as_array().unwrap(), "usage-measure");
    assert!(measure["failures"].as_i64().unwrap() >= 1, "{measure}");
    assert!(measure["last_error"].is_string(), "{measure}");

    // Reachable again: the next good run resolves it.
    let (status, body) = app
        .put(
            "/api/v1/plugin/provisioner-v2/config",
            serde_json::json!({ "unreachable": false }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    eventually(Duration::from_secs(20), "the alert resolved", || async {
        let (_, alerts) = app.get("/api/v1/alerts?kind=job_failing").await;
        alerts["items"].as_array().unwrap().is_empty()
    })
    .await;
    let (_, resolved) = app
        .get("/api/v1/alerts?kind=job_failing&status=resolved")
        .await;
    assert!(
        resolved["items"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ran again"),
        "{resolved}"
    );
    app.stop().await;
}

/// `tenantry tenant convert` ends a trial from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_converts_a_trial() {
    let cli = Cli::new(Backend::Sqlite).await;
    cli.ok(&[
        "tenant",
        "create",
        "--slug",
        "acme",
        "--name",
        "Acme",
        "--trial-days",
        "7",
    ])
    .await;
    let text = cli
        .ok(&["tenant", "convert", "acme", "--reason", "paid"])
        .await;
    assert!(text.contains("active"), "{text}");
    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["status_reason"], "paid", "{shown}");
}

async fn a_trial_is_converted_by_an_operator_or_by_the_job(backend: Backend) {
    let app = common::TestApp::spawn_with(backend, |c| {
        c.jobs.trials_interval_seconds = 1;
        c.trials.end_action = tenantry::config::TrialEndAction::Convert;
    })
    .await;
    for slug in ["early", "ending"] {
        let (status, body) = app
            .post(
                "/api/v1/tenant",
                serde_json::json!({ "slug": slug, "name": slug, "trial_days": 14 }),
            )
            .await;
        assert!(status.is_success(), "{body}");
        assert_eq!(body["status"], "trial", "{body}");
    }
    // Convert: only from trial, with its reason, audited.
    let (status, body) = app
        .post("/api/v1/tenant/early/convert", serde_json::json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, tenant) = app
        .post(
            "/api/v1/tenant/early/convert",
            serde_json::json!({ "reason": "paid" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{tenant}");
    assert_eq!(tenant["status"], "active");
    let (status, again) = app
        .post(
            "/api/v1/tenant/early/convert",
            serde_json::json!({ "reason": "paid" }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{again}");
    assert_eq!(
        again["error"]["details"]["allowed_from"],
        serde_json::json!(["trial"]),
        "{again}"
    );
    // A suspension and a reactivation find it active, not back in trial.
    for action in ["suspend", "reactivate"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/tenant/early/{action}"),
                serde_json::json!({ "reason": "check" }),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }
    let (_, early) = app.get("/api/v1/tenant/early").await;
    assert_eq!(early["status"], "active", "{early}");

    // `ending`'s trial ended an hour ago: the job converts it (trials.end_action = convert).
    {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use tenantry::store::schema::tenants;
        let past = tenantry::clock::now() - chrono::Duration::hours(1);
        let mut conn = app.ctx.db.conn().await.unwrap();
        tenantry::with_conn!(conn, |c| diesel::update(
            tenants::table.filter(tenants::slug.eq("ending"))
        )
        .set(tenants::trial_ends_at.eq(Some(past)))
        .execute(c)
        .await)
        .unwrap();
    }
    eventually(Duration::from_secs(15), "the job converts it", || async {
        app.get("/api/v1/tenant/ending").await.1["status"] == "active"
    })
    .await;
    let (_, audit) = app.get("/api/v1/audit?action=tenant.convert").await;
    let actors: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors.len(), 2, "{audit}");
    assert!(actors.contains(&"job:trials"), "{audit}");
    app.stop().await;
}

/// The `alerts` job evaluates every live tenant, also one whose usage changed where no server
/// saw it (here a counter written straight into the database).
async fn the_alerts_job_evaluates_tenants_no_server_was_told_about(backend: Backend) {
    let app = common::TestApp::spawn_with(backend, |c| {
        c.jobs.alerts_interval_seconds = 1;
        c.alerts.evaluate_interval_seconds = 3600;
    })
    .await;
    app.create_tenant("quiet-co").await;
    let (status, body) = app
        .put(
            "/api/v1/tenant/quiet-co/quotas",
            serde_json::json!({ "agents": 100 }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (_, tenant) = app.get("/api/v1/tenant/quiet-co").await;
    // The change of limits had the tenant evaluated (nothing crossed); let that pass.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, none) = app.get("/api/v1/alerts?tenant=quiet-co").await;
    assert_eq!(none["items"], serde_json::json!([]), "{none}");
    {
        use diesel_async::RunQueryDsl;
        let now = tenantry::clock::now();
        let row = tenantry::store::models::UsageCounterRow {
            tenant_id: tenant["id"].as_str().unwrap().to_owned(),
            metric: "agents".into(),
            period: "current".into(),
            value: 90,
            measured_at: now,
            updated_at: now,
        };
        let mut conn = app.ctx.db.conn().await.unwrap();
        tenantry::with_conn!(conn, |c| diesel::insert_into(
            tenantry::store::schema::usage_counters::table
        )
        .values(&row)
        .execute(c)
        .await)
        .unwrap();
    }
    eventually(
        Duration::from_secs(20),
        "the job raises the alert",
        || async {
            let (_, alerts) = app.get("/api/v1/alerts?tenant=quiet-co&kind=quota").await;
            alerts["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["threshold"] == "warning" && a["subject"] == "agents")
        },
    )
    .await;
    let (_, jobs) = app.get("/api/v1/jobs").await;
    let job = job(jobs.as_array().unwrap(), "alerts");
    assert!(job["runs"].as_i64().unwrap() >= 1, "{job}");
    assert!(
        job["last_outcome"]
            .as_str()
            .is_some_and(|o| o.contains("tenants evaluated")),
        "{job}"
    );
    app.stop().await;
}
