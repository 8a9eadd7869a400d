//! The cost of one quota-policy evaluation through the plugin host, against the same rule as a
//! plain Rust function and against a bare actix-web request, measured in the same run.
//!
//!     cargo bench --bench plugin_call
//!     BENCH_ITERATIONS=20000 cargo bench --bench plugin_call
//!
//! - plain function: the tier rule of the `tier-quota` plugin, in Rust, in this process;
//! - host, blocking: new `Store`, instantiate from the `InstancePre`, call `evaluate`, drop
//!   (`PluginHost::evaluate_blocking`);
//! - host, async API: the same through `PluginHost::evaluate` (semaphore + blocking pool hop);
//! - actix-web request: `GET /health` on the running server over loopback HTTP.

mod common;

use std::hint::black_box;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use tenantry::plugins::{PluginTenant, Usage};

/// The rule of `plugins/tier-quota` for the metrics measured, as a plain function.
fn plain_rule(tier: &str, usage: &[(&str, u64)]) -> (bool, bool) {
    let column = match tier {
        "free" => 0,
        "starter" => 1,
        "professional" => 2,
        "enterprise" => 3,
        _ => 4,
    };
    let mut allowed = true;
    let mut at_risk = false;
    for (metric, used) in usage {
        let row: [u64; 5] = match *metric {
            "users" => [1, 10, 100, 1_000, 10_000],
            "api_calls_per_minute" => [100, 1_000, 10_000, 100_000, 100_000],
            "storage_gb" => [1, 10, 100, 10_000, 100_000],
            _ => continue,
        };
        let percent = *used as f64 * 100.0 / row[column] as f64;
        allowed &= percent < 100.0;
        at_risk |= percent > 90.0;
    }
    (allowed, at_risk)
}

fn per_call(total: Duration, n: usize) -> f64 {
    total.as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = common::env_num::<usize>("BENCH_ITERATIONS", 5_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = common::config(dir.path(), None);
    let (ctx, _) = tenantry::app::open(config).await.expect("open");
    let server = tenantry::app::start(ctx.clone(), TcpListener::bind("127.0.0.1:0").unwrap())
        .expect("start");
    let tenant = PluginTenant {
        id: "bench".into(),
        slug: "bench".into(),
        name: "Bench".into(),
        tier: "starter".into(),
        status: "active".into(),
    };
    let usage = vec![
        Usage {
            metric: "users".into(),
            used: 7,
            override_limit: None,
        },
        Usage {
            metric: "api_calls_per_minute".into(),
            used: 950,
            override_limit: None,
        },
        Usage {
            metric: "storage_gb".into(),
            used: 3,
            override_limit: None,
        },
    ];
    let plain_usage = [
        ("users", 7u64),
        ("api_calls_per_minute", 950),
        ("storage_gb", 3),
    ];

    // Compile once (as at start) and check that both agree.
    let decision = ctx
        .plugins
        .evaluate("tier-quota", &tenant, usage.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (decision.allowed, decision.at_risk),
        plain_rule("starter", &plain_usage)
    );

    let started = Instant::now();
    for _ in 0..n * 100 {
        black_box(plain_rule(black_box("starter"), black_box(&plain_usage)));
    }
    let plain = per_call(started.elapsed(), n * 100);

    let blocking = {
        let ctx = ctx.clone();
        let (tenant, usage) = (tenant.clone(), usage.clone());
        let policy = ctx.plugins.loaded("tier-quota").await.unwrap();
        tokio::task::spawn_blocking(move || {
            for _ in 0..n / 10 {
                ctx.plugins
                    .evaluate_blocking(&policy, &tenant, &usage)
                    .unwrap()
                    .unwrap();
            }
            let started = Instant::now();
            for _ in 0..n {
                black_box(
                    ctx.plugins
                        .evaluate_blocking(&policy, &tenant, &usage)
                        .unwrap()
                        .unwrap(),
                );
            }
            per_call(started.elapsed(), n)
        })
        .await
        .unwrap()
    };

    let started = Instant::now();
    for _ in 0..n {
        black_box(
            ctx.plugins
                .evaluate("tier-quota", &tenant, usage.clone())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let asynchronous = per_call(started.elapsed(), n);

    let client = reqwest::Client::new();
    let url = format!("http://{}/health", server.addr);
    for _ in 0..n / 10 {
        client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let started = Instant::now();
    for _ in 0..n {
        black_box(
            client
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        );
    }
    let request = per_call(started.elapsed(), n);

    println!(
        "quota-policy evaluation ({n} calls each; the plain function {} calls)\n",
        n * 100
    );
    println!("{:<44} {:>12} {:>14}", "", "µs per call", "× plain fn");
    for (name, micros) in [
        ("plain Rust function", plain),
        ("host: new store + instantiate + call + drop", blocking),
        ("host: async API (semaphore, blocking pool)", asynchronous),
        ("bare actix-web request (GET /health)", request),
    ] {
        println!("{name:<44} {micros:>12.3} {:>14.0}", micros / plain);
    }
    println!(
        "\nthe sandboxed call costs {:.2}× a bare actix-web request",
        blocking / request
    );
    server.handle.stop(true).await;
}
