//! Quotas on the request path, and reported-usage ingestion.
//!
//! 1. Requests per second and latency of one tenant-scoped call (`GET /api/v1/tenant/{slug}`)
//!    with a tenant API key: with quotas off (`quotas.meter_api_calls = false`, the baseline),
//!    enforced in process, and enforced through Redis (`redis_url`) — three servers on one
//!    database, in the same run, on SQLite and on PostgreSQL. The tenant's limits are set far
//!    above the load, so every call is checked and counted and none refused.
//! 2. Reported usage on PostgreSQL in batches of 100 events (the ids remembered and the counter
//!    changed in one transaction, admission checked), against plain inserts of the same event
//!    rows in a transaction per batch: one multi-row statement (the baseline) and one statement
//!    per row.
//!
//!     cargo bench --bench quotas
//!     BENCH_SECONDS=5 BENCH_ROUNDS=3 BENCH_CONCURRENCY=16 BENCH_BACKENDS=sqlite cargo bench --bench quotas
//!
//! The three servers run side by side and the cases take turns for `BENCH_ROUNDS` rounds; each
//! case reports its median round (requests/s and p99) and the spread of its rounds. Twice: at
//! saturation (`BENCH_CONCURRENCY` clients in a closed loop: throughput, as a ratio to the
//! baseline), then at a fixed rate in an open loop (`BENCH_PACED_RATE`, default half the
//! baseline's throughput: the latency each case adds, as p99 against the case before it).
//!
//! Redis comes from `TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`). A table goes to
//! stdout and JSON to `target/bench-quotas.json`.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Credential, database, drop_database, load, paced};
use serde_json::json;
use tenantry::app;
use tenantry::audit::Actor;
use tenantry::auth::{self, KeySpec, Role, TenantScope};
use tenantry::quotas::report::UsageEvent;
use tenantry::store::models::UsageEventRow;
use tenantry::store::schema::usage_events;
use tenantry::tenants;

#[tokio::main]
async fn main() {
    let seconds = common::env_num::<u64>("BENCH_SECONDS", 5);
    let concurrency = common::env_num::<u64>("BENCH_CONCURRENCY", 16);
    let rounds = common::env_num::<usize>("BENCH_ROUNDS", 3).max(1);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let redis =
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let mut report = Vec::new();
    println!(
        "quotas benchmark: GET /api/v1/tenant/acme with a tenant API key, {concurrency} keep-alive clients, {rounds} rounds of {seconds} s per case (each after 1 s warm-up), median round\n"
    );
    println!(
        "{:<10} {:<32} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "db", "case", "requests", "req/s", "median", "p99", "ratio"
    );
    for backend in backends.split(',').filter(|b| !b.is_empty()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = database(backend, dir.path()).await;
        let base_config = common::config(dir.path(), Some(db.url.clone()));
        let (ctx, _) = app::open(base_config.clone()).await.expect("server opens");
        let actor = Actor::system();
        let tenant = tenants::create(&ctx, &actor, &common::new_tenant("acme", "Acme"))
            .await
            .expect("tenant");
        let changes = tenantry::quotas::parse_overrides(
            &ctx,
            json!({ "api_calls_per_minute": 1_000_000_000u64, "api_calls_per_month": 1_000_000_000_000u64 })
                .as_object()
                .unwrap(),
        )
        .expect("overrides");
        tenantry::quotas::set_overrides(&ctx, &actor, &tenant, &changes)
            .await
            .expect("set");
        let scope = TenantScope {
            id: tenant.id.clone(),
            slug: tenant.slug.clone(),
        };
        let key = auth::create_key(
            &ctx,
            &actor,
            Some(&scope),
            &KeySpec {
                name: "bench".into(),
                role: Role::Member,
                expires_in_days: None,
                rate_limit_per_minute: None,
            },
        )
        .await
        .expect("key")
        .token;

        let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let variants: [(&str, Box<dyn Fn(&mut tenantry::config::Config)>); 3] = [
            (
                "quotas off (baseline)",
                Box::new(|c| c.quotas.meter_api_calls = false),
            ),
            ("quotas enforced, in process", Box::new(|_| {})),
            (
                "quotas enforced, Redis",
                Box::new(|c| {
                    c.redis_url = Some(redis.clone());
                    c.redis_prefix = prefix.clone();
                }),
            ),
        ];
        // All three servers run at once; the cases take turns, round after round, so that the
        // machine's drift falls on each of them alike. Each case reports its median round.
        let mut servers = Vec::new();
        for (name, adjust) in &variants {
            let mut config = base_config.clone();
            adjust(&mut config);
            let (server_ctx, _) = app::open(config).await.expect("server opens");
            let listener = TcpListener::bind("127.0.0.1:0").expect("port");
            let server = app::start(server_ctx, listener).expect("server");
            let url = format!("http://{}/api/v1/tenant/acme", server.addr);
            servers.push((*name, url, server, Vec::new(), Vec::new()));
        }
        for _ in 0..rounds {
            for (_, url, _, outcomes, _) in servers.iter_mut() {
                outcomes.push(load(url, Credential::Bearer(&key), concurrency, seconds).await);
            }
        }
        // Then at a fixed rate every case sustains (half the baseline's, unless given): the
        // latency a request has when the server is not saturated.
        let baseline_rate = {
            let mut rates: Vec<f64> = servers[0].3.iter().map(|o| o.per_second).collect();
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        let paced_rate = common::env_num::<f64>("BENCH_PACED_RATE", (baseline_rate / 2.0).round());
        for _ in 0..rounds {
            for (_, url, _, _, outcomes) in servers.iter_mut() {
                outcomes.push(paced(url, Credential::Bearer(&key), paced_rate, seconds).await);
            }
        }
        let median = |outcomes: &mut Vec<common::Outcome>| {
            outcomes.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            let spread = (
                outcomes.first().map_or(0.0, |o| o.per_second),
                outcomes.last().map_or(0.0, |o| o.per_second),
            );
            let mid = outcomes.len() / 2;
            let mut p99s: Vec<Duration> = outcomes.iter().map(|o| o.p99).collect();
            p99s.sort();
            let p99_spread = (p99s[0], p99s[p99s.len() - 1]);
            (
                outcomes.swap_remove(mid),
                p99s[p99s.len() / 2],
                spread,
                p99_spread,
            )
        };
        let mut medians = Vec::new();
        for (name, _, server, saturated, paced) in servers.iter_mut() {
            medians.push((*name, median(saturated), median(paced)));
            if name.ends_with("Redis") {
                let roundtrips = redis_roundtrips(&format!("http://{}/metrics", server.addr)).await;
                println!(
                    "{backend}: Redis round trips as the server timed them, over both loads: {roundtrips}"
                );
            }
            server.handle.stop(true).await;
            server.worker_stop.notify_one();
        }
        let base_rate = (medians[0].1).0.per_second;
        for (name, (outcome, p99, spread, _), _) in &medians {
            let ratio = outcome.per_second / base_rate;
            println!(
                "{:<10} {:<32} {:>9} {:>9.0} {:>9.2?} {:>9.2?} {:>7.3}   rounds {:.0}–{:.0} req/s",
                backend,
                name,
                outcome.requests,
                outcome.per_second,
                outcome.median,
                p99,
                ratio,
                spread.0,
                spread.1
            );
            report.push(json!({
                "db": backend, "case": name, "load": "saturated", "rounds": rounds,
                "concurrency": concurrency,
                "requests_per_second": outcome.per_second,
                "requests_per_second_spread": [spread.0, spread.1],
                "median_ms": outcome.median.as_secs_f64() * 1000.0,
                "p99_ms": p99.as_secs_f64() * 1000.0,
                "ratio_to_baseline": ratio,
            }));
        }
        println!(
            "\n{backend}: at a fixed {paced_rate:.0} requests/s (an open loop), median round\n"
        );
        println!(
            "{:<10} {:<32} {:>9} {:>9} {:>9} {:>12} {:>22}",
            "db", "case", "requests", "median", "p99", "p99 added", "p99 of rounds"
        );
        for (i, (name, _, (outcome, p99, _, p99_spread))) in medians.iter().enumerate() {
            // Each case against the one before it: in process against off, Redis against in process.
            let added = (i > 0).then(|| {
                let before = (medians[i - 1].2).1;
                p99.as_secs_f64() - before.as_secs_f64()
            });
            println!(
                "{:<10} {:<32} {:>9} {:>9.2?} {:>9.2?} {:>12} {:>10.2?}–{:.2?}",
                backend,
                name,
                outcome.requests,
                outcome.median,
                p99,
                added.map_or("".into(), |a| format!("{:+.3} ms", a * 1000.0)),
                p99_spread.0,
                p99_spread.1,
            );
            report.push(json!({
                "db": backend, "case": name, "load": "paced", "rounds": rounds,
                "requests_per_second": paced_rate,
                "median_ms": outcome.median.as_secs_f64() * 1000.0,
                "p99_ms": p99.as_secs_f64() * 1000.0,
                "p99_spread_ms": [p99_spread.0.as_secs_f64() * 1000.0, p99_spread.1.as_secs_f64() * 1000.0],
                "p99_added_over_previous_case_ms": added.map(|a| a * 1000.0),
            }));
        }

        if backend == "postgres" {
            report.extend(ingestion(&ctx, seconds).await);
        }
        drop(ctx);
        drop_database(&db).await;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-quotas.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "concurrency": concurrency, "seconds": seconds, "results": report,
        }))
        .expect("json"),
    );
    println!("\n(JSON in {})", out.display());
}

/// The distribution of the Redis round trips a server timed, from its
/// `tenantry_redis_roundtrip_seconds` histogram (the share within each bucket's bound), and how
/// many requests it admitted from leases instead.
async fn redis_roundtrips(metrics_url: &str) -> String {
    let text = reqwest::get(metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("tenantry_redis_roundtrip_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    let shares: Vec<String> = buckets
        .iter()
        .filter(|(le, _)| le != "+Inf")
        .map(|(le, n)| {
            let bound = le.parse::<f64>().unwrap_or(0.0) * 1e6;
            format!("≤{bound:.0}µs {:.2}%", n / total.max(1.0) * 100.0)
        })
        .collect();
    let leased: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("tenantry_redis_leased_admissions_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    format!(
        "{total:.0} round trips, {leased:.0} requests admitted from leases without one; {}",
        shares.join(", ")
    )
}

/// Batches of 100 reported events, against plain inserts of the same rows.
async fn ingestion(ctx: &tenantry::context::Context, seconds: u64) -> Vec<serde_json::Value> {
    use diesel_async::RunQueryDsl as _;
    let actor = Actor::system();
    let reported = tenants::create(ctx, &actor, &common::new_tenant("ingest", "Ingest"))
        .await
        .expect("tenant");
    let plain = tenants::create(ctx, &actor, &common::new_tenant("plain", "Plain"))
        .await
        .expect("tenant");
    let unlimited = tenantry::quotas::parse_overrides(
        ctx,
        json!({ "llm_tokens_per_day": 1_000_000_000_000u64 })
            .as_object()
            .unwrap(),
    )
    .expect("overrides");
    tenantry::quotas::set_overrides(ctx, &actor, &reported, &unlimited)
        .await
        .expect("set");
    let batch = |case: usize, n: u64| -> Vec<UsageEvent> {
        (0..100)
            .map(|i| UsageEvent {
                id: format!("e-{case}-{n}-{i}"),
                metric: "llm_tokens_per_day".into(),
                increment: Some(1),
                value: None,
                timestamp: None,
            })
            .collect()
    };
    println!(
        "\nreported usage on PostgreSQL, batches of 100 events, one writer, {seconds} s each\n"
    );
    println!(
        "{:<48} {:>9} {:>12} {:>7}",
        "case", "batches", "events/s", "ratio"
    );
    let mut out = Vec::new();
    let mut baseline = None;
    for (case_index, case) in [
        "plain insert, one multi-row statement (baseline)",
        "plain inserts, one statement per row",
        "POST usage: dedup + counters + admission",
    ]
    .into_iter()
    .enumerate()
    {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut batches = 0u64;
        while Instant::now() < deadline {
            let events = batch(case_index, batches);
            if case.starts_with("plain") {
                let now = tenantry::clock::now();
                let rows: Vec<UsageEventRow> = events
                    .iter()
                    .map(|e| UsageEventRow {
                        tenant_id: plain.id.clone(),
                        event_id: e.id.clone(),
                        metric: e.metric.clone(),
                        period: "2026-12-04".into(),
                        amount: 1,
                        received_at: now,
                    })
                    .collect();
                let per_row = case.contains("per row");
                tenantry::transaction!(ctx.db, |tx| {
                    if per_row {
                        for row in &rows {
                            tenantry::with_conn!(tx, |c| diesel::insert_into(usage_events::table)
                                .values(row)
                                .execute(c)
                                .await)?;
                        }
                    } else {
                        // SQLite has no multi-row insert in diesel; this case runs on PostgreSQL.
                        tenantry::with_conn!(
                            tx,
                            postgres
                                | c
                                | diesel::insert_into(usage_events::table)
                                    .values(&rows)
                                    .execute(c)
                                    .await?,
                            sqlite | c | {
                                for row in &rows {
                                    diesel::insert_into(usage_events::table)
                                        .values(row)
                                        .execute(c)
                                        .await?;
                                }
                                rows.len()
                            }
                        );
                    }
                    Ok(())
                })
                .expect("plain insert");
            } else {
                let outcome = tenantry::quotas::report::report(ctx, &reported, &events, false)
                    .await
                    .expect("report");
                assert_eq!(outcome.counted, 100);
            }
            batches += 1;
        }
        let per_second = (batches * 100) as f64 / started.elapsed().as_secs_f64();
        let base = *baseline.get_or_insert(per_second);
        println!(
            "{:<48} {:>9} {:>12.0} {:>7.3}",
            case,
            batches,
            per_second,
            per_second / base
        );
        out.push(json!({
            "db": "postgres", "case": case, "batches": batches,
            "events_per_second": per_second, "ratio_to_baseline": per_second / base,
        }));
    }
    out
}
