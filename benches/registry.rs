//! Registry load benchmark: request latency against the real server (SQLite, in-process, loopback
//! HTTP) with a small registry and with a registry 100× larger, measured in the same run.
//!
//!     cargo bench --bench registry            # N = 200 then 20 000 tenants, SQLite
//!     BENCH_SMALL=100 BENCH_LARGE=20000 BENCH_REQUESTS=3000 cargo bench --bench registry
//!     BENCH_BACKEND=postgres cargo bench --bench registry   # TEST_POSTGRES_URL, a database of its own
//!
//! It prints each operation's median and p95 at both sizes and the ratio large/small: per-request
//! work that does not grow with the number of tenants shows a ratio near 1. Every list request
//! returns a full page (50) at both sizes, so the responses compared are the same size, except
//! the searches: one that matches a few tenants (a name's number, ~11 matches) and one that
//! matches none, which without an index read every tenant.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tenantry::audit::Actor;
use tenantry::auth::{self, Role};
use tenantry::tenants::{self, NewTenant};

struct Stats {
    median: Duration,
    p95: Duration,
}

async fn measure(client: &reqwest::Client, token: &str, urls: &[String]) -> Stats {
    let mut times = Vec::with_capacity(urls.len());
    for url in urls {
        let started = Instant::now();
        let response = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.bytes().await.expect("body");
        times.push(started.elapsed());
    }
    times.sort();
    Stats {
        median: times[times.len() / 2],
        p95: times[times.len() * 95 / 100],
    }
}

async fn grow(ctx: &tenantry::context::Context, from: usize, to: usize) {
    let actor = Actor::system();
    for i in from..to {
        let request = NewTenant {
            slug: format!("tenant-{i:06}"),
            name: format!("Customer number {i}"),
            tier: Some(["free", "starter", "professional", "enterprise"][i % 4].into()),
            trial_days: None,
            contact: None,
            metadata: None,
            oauth_issuer: Some("https://idp.example.com".into()),
            client_id: Some(format!("client-{i}")),
            client_secret: Some(format!("secret-{i}")),
            scopes: None,
            db_uri: None,
            default_schema: None,
            role_mapping: None,
        };
        tenants::create(ctx, &actor, &request)
            .await
            .expect("create");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let small = common::env_num::<usize>("BENCH_SMALL", 200);
    let large = common::env_num::<usize>("BENCH_LARGE", 20_000);
    let requests = common::env_num::<usize>("BENCH_REQUESTS", 2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let database = common::database(&backend, dir.path()).await;
    let config = common::config(dir.path(), Some(database.url.clone()));
    let (ctx, _) = tenantry::app::open(config).await.expect("open");
    let server = tenantry::app::start(ctx.clone(), TcpListener::bind("127.0.0.1:0").unwrap())
        .expect("start");
    let base = format!("http://{}", server.addr);
    let token =
        auth::create_platform_token(&ctx, &Actor::system(), "bench", Role::PlatformAdmin, None)
            .await
            .expect("token")
            .token;
    let client = reqwest::Client::new();

    let operations: [(&str, Box<dyn Fn(usize, usize) -> String>); 5] = [
        (
            "GET /api/v1/tenant/{slug}",
            Box::new(|i, n| format!("/api/v1/tenant/tenant-{:06}", (i * 7919) % n)),
        ),
        (
            "GET /api/v1/tenant?limit=50&cursor=…",
            Box::new(|i, n| {
                format!(
                    "/api/v1/tenant?limit=50&cursor=tenant-{:06}",
                    (i * 7919) % n
                )
            }),
        ),
        (
            "GET /api/v1/tenant?tier=…&limit=50",
            Box::new(|i, _| {
                format!(
                    "/api/v1/tenant?tier={}&limit=50",
                    ["free", "starter", "professional", "enterprise"][i % 4]
                )
            }),
        ),
        (
            "GET /api/v1/tenant?q=number%20N (few)",
            Box::new(|i, n| format!("/api/v1/tenant?q=number%20{}", (i * 7919) % n)),
        ),
        (
            "GET /api/v1/tenant?q=… (none)",
            Box::new(|i, _| format!("/api/v1/tenant?q=zq{i}x")),
        ),
    ];
    let mut results = Vec::new();
    let started = Instant::now();
    grow(&ctx, 0, small).await;
    let small_setup = started.elapsed();
    for (name, url) in &operations {
        let urls: Vec<String> = (0..requests)
            .map(|i| format!("{base}{}", url(i, small)))
            .collect();
        measure(&client, &token, &urls[..requests / 10]).await; // warm-up
        results.push((name.to_string(), measure(&client, &token, &urls).await));
    }
    let started = Instant::now();
    grow(&ctx, small, large).await;
    let large_setup = started.elapsed();
    if database.pg_name.is_some() {
        // The planner's statistics as autovacuum leaves them within a minute of the growth.
        use diesel_async::AsyncConnection as _;
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = diesel_async::AsyncPgConnection::establish(&database.url)
            .await
            .expect("PostgreSQL");
        conn.batch_execute("ANALYZE tenants")
            .await
            .expect("ANALYZE");
    }
    println!(
        "registry benchmark: {requests} sequential requests per operation, {backend}, loopback HTTP\n\
         created {small} tenants in {:.2?} ({:.0}/s), then {} more in {:.2?} ({:.0}/s)\n",
        small_setup,
        small as f64 / small_setup.as_secs_f64(),
        large - small,
        large_setup,
        (large - small) as f64 / large_setup.as_secs_f64()
    );
    println!(
        "{:<40} {:>14} {:>14} {:>10} {:>12}",
        "operation",
        format!("median@{small}"),
        format!("median@{large}"),
        "ratio",
        format!("p95@{large}")
    );
    for (i, (name, url)) in operations.iter().enumerate() {
        let urls: Vec<String> = (0..requests)
            .map(|i| format!("{base}{}", url(i, large)))
            .collect();
        measure(&client, &token, &urls[..requests / 10]).await;
        let at_large = measure(&client, &token, &urls).await;
        let at_small = &results[i].1;
        println!(
            "{:<40} {:>14.2?} {:>14.2?} {:>10.2} {:>12.2?}",
            name,
            at_small.median,
            at_large.median,
            at_large.median.as_secs_f64() / at_small.median.as_secs_f64(),
            at_large.p95
        );
    }
    server.handle.stop(true).await;
    drop(ctx);
    common::drop_database(&database).await;
}
