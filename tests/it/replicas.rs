//! Several real server processes (`tenantry serve`) on one PostgreSQL, sharing one Redis:
//!
//! - three servers share a tenant's API-call budget through Redis: with a limit of 600 a
//!   minute and 1,200 calls offered across them, the admitted count is within max(1 %, 1) of
//!   600 (each server alone would let up to its own 600 through), while most calls come from
//!   leases of the budget;
//! - the same usage event id, sent to two servers at once, is counted once.
//!
//! Redis is the machine's (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379/0`); keys are
//! per tenant id, so tests never share a budget.

use crate::common;

use std::time::Duration;

use crate::common::process::{ServerProcess, SharedDatabase};
use serde_json::{Value, json};

type Setup = SharedDatabase;

async fn setup() -> Setup {
    SharedDatabase::create().await
}

async fn servers(setup: &Setup, n: usize) -> Vec<ServerProcess> {
    let redis = common::redis_url();
    let prefix = common::redis_prefix();
    let settings = [
        ("TENANTRY_REDIS_URL", redis.as_str()),
        ("TENANTRY_REDIS_PREFIX", prefix.as_str()),
        ("TENANTRY_QUOTAS__DECISION_TTL_SECONDS", "600"),
    ];
    let mut out = Vec::new();
    for i in 0..n {
        out.push(setup.server(&format!("server-{i}"), &settings).await);
    }
    out
}

async fn admin(setup: &Setup, method: reqwest::Method, url: String, body: Option<Value>) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(&setup.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_sharing_one_redis_admit_a_tenants_limit_exactly() {
    let setup = setup().await;
    let servers = servers(&setup, 3).await;
    let base = &servers[0].base;
    admin(
        &setup,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenant"),
        Some(json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" })),
    )
    .await;
    admin(
        &setup,
        reqwest::Method::PUT,
        format!("{base}/api/v1/tenant/acme/quotas"),
        Some(json!({ "api_calls_per_minute": 600 })),
    )
    .await;
    let key = admin(
        &setup,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenant/acme/api-keys"),
        Some(json!({ "name": "load" })),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    // One call on each server: it asks the tenant's policy for its limits in the background.
    for server in &servers {
        let r = http
            .get(format!("{}/api/v1/tenant/acme", server.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Start at the top of a minute: the budget is the calls of one calendar minute.
    let now = chrono::Utc::now();
    let into_minute = u64::from(chrono::Timelike::second(&now)) * 1000
        + u64::from(chrono::Timelike::nanosecond(&now) / 1_000_000);
    tokio::time::sleep(Duration::from_millis(60_000 - into_minute + 300)).await;

    let started = chrono::Utc::now();
    let offered = 1200;
    let mut tasks = Vec::new();
    for worker in 0..24 {
        let http = http.clone();
        let key = key.clone();
        let url = format!("{}/api/v1/tenant/acme", servers[worker % 3].base);
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut limited) = (0u32, 0u32);
            for _ in 0..offered / 24 {
                let r = http.get(&url).bearer_auth(&key).send().await.unwrap();
                match r.status().as_u16() {
                    200 => ok += 1,
                    429 => {
                        assert!(r.headers().contains_key("retry-after"));
                        limited += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            (worker % 3, ok, limited)
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    let mut per_server = [0u32; 3];
    for task in tasks {
        let (server, ok, limited) = task.await.unwrap();
        admitted += ok;
        refused += limited;
        per_server[server] += ok;
    }
    let finished = chrono::Utc::now();
    assert_eq!(admitted + refused, offered as u32);
    assert_eq!(
        started.format("%H:%M").to_string(),
        finished.format("%H:%M").to_string(),
        "the load fit in one minute"
    );
    let tolerance = (600.0_f64 * 0.01).max(1.0) as u32;
    println!("admitted {admitted} of {offered} (limit 600) across 3 servers: {per_server:?}");
    assert!(
        admitted.abs_diff(600) <= tolerance,
        "admitted {admitted}, not within {tolerance} of 600 ({per_server:?})"
    );
    assert!(
        per_server.iter().all(|n| *n > 0),
        "every server admitted some: {per_server:?}"
    );
    // Most calls were admitted from leases of the budget, without a round trip each.
    let mut leased = 0.0;
    for server in &servers {
        leased += common::scraped(&server.base, "tenantry_redis_leased_admissions_total").await;
    }
    println!("{leased} of the admitted calls came from leases");
    assert!(leased > 0.0, "no call was admitted from a lease");
    for server in servers {
        server.kill().await;
    }
    setup.database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_id_sent_to_two_servers_at_once_is_counted_once() {
    let setup = setup().await;
    let servers = servers(&setup, 2).await;
    let base = &servers[0].base;
    admin(
        &setup,
        reqwest::Method::POST,
        format!("{base}/api/v1/tenant"),
        Some(json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" })),
    )
    .await;
    let http = reqwest::Client::new();
    // 50 events, each sent to both servers at the same moment.
    for i in 0..50 {
        let body =
            json!({ "id": format!("ev-{i}"), "metric": "llm_tokens_per_day", "increment": 7 });
        let send = |server: &ServerProcess| {
            http.post(format!("{}/api/v1/tenant/acme/usage", server.base))
                .bearer_auth(&setup.token)
                .json(&body)
                .send()
        };
        let (a, b) = tokio::join!(send(&servers[0]), send(&servers[1]));
        let (a, b): (Value, Value) = (
            a.unwrap().json().await.unwrap(),
            b.unwrap().json().await.unwrap(),
        );
        let counted = a["counted"].as_u64().unwrap() + b["counted"].as_u64().unwrap();
        let duplicates = a["duplicates"].as_u64().unwrap() + b["duplicates"].as_u64().unwrap();
        assert_eq!((counted, duplicates), (1, 1), "{a} {b}");
    }
    for server in &servers {
        let usage = admin(
            &setup,
            reqwest::Method::GET,
            format!("{}/api/v1/tenant/acme/usage", server.base),
            None,
        )
        .await;
        let tokens = usage["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == "llm_tokens_per_day")
            .unwrap();
        assert_eq!(tokens["used"], 350, "each event once: {tokens}");
    }
    for server in servers {
        server.kill().await;
    }
    setup.database.drop_database().await;
}
