//! Registry scale benchmark: a real `tenantry serve` process over a registry of a few tenants
//! and over one grown to many (with keys, status history and audit records), on SQLite or
//! PostgreSQL, measured in the same run:
//!
//!     cargo bench --bench registry            # 10 then 20,000 tenants, SQLite
//!     BENCH_LARGE=100000 BENCH_AUDIT=1000000 cargo bench --bench registry
//!     BENCH_BACKEND=postgres cargo bench --bench registry   # TEST_POSTGRES_URL, a database of its own
//!
//! At each size it starts the server (time until `/health/ready` answers), then measures:
//! - the first request of each page after the start, with the kernel's page cache dropped
//!   when the benchmark may (`/proc/sys/vm/drop_caches`, as root; `BENCH_COLD=0` to skip):
//!   cold;
//! - `BENCH_REQUESTS` sequential requests of each (median and p95): warm. The pages: the
//!   tenants list (a page after a cursor), a tier-filtered page, a substring search matching a
//!   few tenants and one matching none, the portal's dashboard, and the audit list filtered by
//!   tenant, action and time;
//! - a tenant-scoped `GET /api/v1/tenant/{slug}` with an API key at saturation (`wrk`, 16
//!   connections, `BENCH_SECONDS`; the benchmark's own load generator without wrk), beside
//!   `GET /health`;
//! - tenant creation over HTTP (`BENCH_CREATES` tenants, 4 clients);
//! - the server's resident memory after all of it, with every plugin loaded.
//!
//! Before the large run it grows the audit log to `BENCH_AUDIT` records (hash-chained, as the
//! server writes them) and times `audit verify`: a full check, per million records, and an
//! incremental one after a day's worth of new records. A table and `target/bench-registry.json`
//! hold the figures and the ratio large/small.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tenantry::audit::Actor;
use tenantry::auth::{self, KeySpec, Role, TenantScope};
use tenantry::lifecycle;
use tenantry::store::models::AuditRow;
use tenantry::tenants::{self, NewTenant, Transition};
use tokio::io::AsyncBufReadExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
const ADMIN_PASSWORD: &str = "benchmark-password";

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p95: Duration,
}

/// One size's figures.
#[derive(Default)]
struct Run {
    tenants: usize,
    audit_records: i64,
    ready: Duration,
    cold: Vec<Duration>,
    warm: Vec<Option<Stats>>,
    scoped: f64,
    health: f64,
    creates_per_second: f64,
    rss_mb: f64,
}

struct Serve {
    child: tokio::process::Child,
    base: String,
    ready: Duration,
}

/// Starts `tenantry serve` on the benchmark's database and waits until it is ready.
async fn serve(database_url: &str, master_key: &str, dir: &Path) -> Serve {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("TENANTRY_DATA_DIR", dir)
        .env("TENANTRY_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", database_url)
        .env("TENANTRY_MASTER_KEY", master_key)
        .env("TENANTRY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("TENANTRY_LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("tenantry serve starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let base = loop {
        let line = lines
            .next_line()
            .await
            .expect("stdout")
            .expect("tenantry serve ended before it listened");
        if let Some(url) = line.split("listening on ").nth(1) {
            break url.trim().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Serve {
        child,
        base,
        ready: started.elapsed(),
    }
}

impl Serve {
    fn rss_mb(&self) -> f64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Drops the kernel's page cache (root only): the next reads come from the disk.
fn drop_page_cache() -> bool {
    if std::env::var("BENCH_COLD").as_deref() == Ok("0") {
        return false;
    }
    let _ = std::process::Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn tenant(i: usize) -> NewTenant {
    NewTenant {
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
    }
}

/// Grows the registry from `from` to `to` tenants: each with an API key, every tenth
/// suspended and reactivated (status history). The token of tenant 0's key, when made here.
async fn grow(ctx: &tenantry::context::Context, from: usize, to: usize) -> Option<String> {
    let actor = Actor::system();
    let mut first_key = None;
    for i in from..to {
        let created = tenants::create(ctx, &actor, &tenant(i))
            .await
            .expect("create");
        let scope = TenantScope {
            id: created.id.clone(),
            slug: created.slug.clone(),
        };
        let key = auth::create_key(
            ctx,
            &actor,
            Some(&scope),
            &KeySpec {
                name: "app".into(),
                role: Role::Member,
                expires_in_days: None,
                rate_limit_per_minute: None,
            },
        )
        .await
        .expect("key");
        if i == 0 {
            // The tenant the load runs against: no per-minute limit in the way.
            let changes = tenantry::quotas::parse_overrides(
                ctx,
                json!({ "api_calls_per_minute": 1_000_000_000u64, "api_calls_per_month": 1_000_000_000_000u64 })
                    .as_object()
                    .expect("object"),
            )
            .expect("overrides");
            tenantry::quotas::set_overrides(ctx, &actor, &created, &changes)
                .await
                .expect("set");
            first_key = Some(key.token);
        }
        if i % 10 == 0 {
            for (transition, reason) in [
                (Transition::Suspend, "invoice overdue"),
                (Transition::Reactivate, "paid"),
            ] {
                lifecycle::transition(ctx, &actor, &created.slug, transition, reason)
                    .await
                    .expect("transition");
            }
        }
    }
    first_key
}

/// Appends records to the audit chain, as the server writes them, until it holds `total`;
/// spread over the last 30 days, among the tenants and a few actions.
async fn grow_audit(ctx: &tenantry::context::Context, tenants: usize, total: i64) {
    let actions = [
        "tenant.update",
        "tenant.api_key_create",
        "quota.updated",
        "tenant.suspend",
    ];
    let now = tenantry::clock::now();
    loop {
        let mut tx = ctx.db.begin().await.expect("begin");
        let (mut seq, mut hash) = tenantry::store::audit::lock_head(&mut tx)
            .await
            .expect("head");
        if seq >= total {
            tx.rollback().await;
            return;
        }
        let batch_end = (seq + 5_000).min(total);
        while seq < batch_end {
            seq += 1;
            let i = (seq as usize * 7919) % tenants;
            let mut row = AuditRow {
                seq,
                at: now - chrono::Duration::seconds((total - seq) * 30 * 86_400 / total.max(1)),
                actor: "admin".into(),
                tenant_id: None,
                tenant_slug: Some(format!("tenant-{i:06}")),
                action: actions[seq as usize % actions.len()].into(),
                details: json!({ "n": seq }).to_string(),
                source_ip: Some("10.0.0.1".into()),
                request_id: None,
                prev_hash: hash,
                hash: String::new(),
            };
            row.hash = tenantry::audit::chain_hash(&row);
            tenantry::store::audit::append(&mut tx, &row)
                .await
                .expect("append");
            hash = row.hash;
        }
        tx.commit().await.expect("commit");
    }
}

async fn timed_get(client: &reqwest::Client, url: &str, token: Option<&str>) -> Duration {
    let started = Instant::now();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.bytes().await.expect("body");
    started.elapsed()
}

/// A client logged in to the portal as the bootstrap administrator.
async fn portal(base: &str) -> reqwest::Client {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let form = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("login page");
    let hidden = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        form.split(&marker)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    let csrf = hidden("csrf");
    let next = Some(hidden("next"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    let response = client
        .post(format!("{base}/login"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("next", next.as_str()),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .expect("login");
    assert!(
        response.status().is_success(),
        "portal login: {}",
        response.status()
    );
    client
}

const PAGES: [&str; 6] = [
    "tenants list (a page after a cursor)",
    "tenants of a tier (a page)",
    "search matching a few",
    "search matching none",
    "dashboard (portal)",
    "audit by tenant, action and time",
];

/// The URL of page `page`'s `i`-th request on a registry of `n` tenants.
fn page_url(page: usize, i: usize, n: usize) -> String {
    let since = (chrono::Utc::now() - chrono::Duration::days(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    match page {
        0 => format!(
            "/api/v1/tenant?limit=50&cursor=tenant-{:06}",
            (i * 7919) % n
        ),
        1 => format!(
            "/api/v1/tenant?tier={}&limit=50",
            ["free", "starter", "professional", "enterprise"][i % 4]
        ),
        2 => format!("/api/v1/tenant?q=number%20{}", (i * 7919) % n),
        3 => format!("/api/v1/tenant?q=zq{i}x"),
        4 => "/".into(),
        _ => format!(
            "/api/v1/audit?tenant=tenant-{:06}&action=tenant.api_key_create&since={since}&limit=50",
            (i * 7919) % n
        ),
    }
}

/// What every size's measurement shares.
struct Setup<'a> {
    database_url: &'a str,
    master_key: &'a str,
    dir: &'a Path,
    /// A platform administrator's token, and tenant 0's API key.
    token: &'a str,
    key: &'a str,
    requests: usize,
    seconds: u64,
    creates: usize,
}

async fn measure_size(setup: &Setup<'_>, run: &mut Run) {
    let Setup {
        token,
        key,
        requests,
        seconds,
        creates,
        ..
    } = *setup;
    let cold = drop_page_cache();
    let server = serve(setup.database_url, setup.master_key, setup.dir).await;
    run.ready = server.ready;
    let base = server.base.clone();
    let api = reqwest::Client::new();
    let portal = portal(&base).await;
    let client_of = |page: usize| if page == 4 { &portal } else { &api };
    let token_of = |page: usize| if page == 4 { None } else { Some(token) };
    for page in 0..PAGES.len() {
        let url = format!("{base}{}", page_url(page, 1, run.tenants));
        run.cold
            .push(timed_get(client_of(page), &url, token_of(page)).await);
    }
    if !cold {
        run.cold.clear();
    }
    for page in 0..PAGES.len() {
        let urls: Vec<String> = (0..requests)
            .map(|i| format!("{base}{}", page_url(page, i, run.tenants)))
            .collect();
        for url in &urls[..requests / 10] {
            timed_get(client_of(page), url, token_of(page)).await;
        }
        let mut times = Vec::with_capacity(requests);
        for url in &urls {
            times.push(timed_get(client_of(page), url, token_of(page)).await);
        }
        times.sort();
        run.warm.push(Some(Stats {
            median: times[times.len() / 2],
            p95: times[times.len() * 95 / 100],
        }));
    }
    let scoped_url = format!("{base}/api/v1/tenant/tenant-000000");
    let (scoped, health) = match common::wrk(
        &scoped_url,
        Some(&format!("Authorization: Bearer {key}")),
        16,
        seconds,
    ) {
        Some(scoped) => (
            scoped.per_second,
            common::wrk(&format!("{base}/health"), None, 16, seconds).map_or(0.0, |o| o.per_second),
        ),
        None => (
            common::load(&scoped_url, common::Credential::Bearer(key), 16, seconds)
                .await
                .per_second,
            common::load(
                &format!("{base}/health"),
                common::Credential::None,
                16,
                seconds,
            )
            .await
            .per_second,
        ),
    };
    run.scoped = scoped;
    run.health = health;
    // Creation over HTTP, four clients at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let api = api.clone();
        let base = base.clone();
        let token = token.to_owned();
        let size = run.tenants;
        tasks.push(tokio::spawn(async move {
            for j in (worker..creates).step_by(4) {
                let response = api
                    .post(format!("{base}/api/v1/tenant"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "slug": format!("created-{size}-{j:05}"),
                        "name": format!("Created at {size}, number {j}"),
                        "tier": "starter",
                    }))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.expect("creating tenants");
    }
    run.creates_per_second = creates as f64 / started.elapsed().as_secs_f64();
    run.rss_mb = server.rss_mb();
    server.stop().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let small = common::env_num::<usize>("BENCH_SMALL", 10).max(1);
    let large = common::env_num::<usize>("BENCH_LARGE", 20_000).max(small);
    let audit = common::env_num::<i64>("BENCH_AUDIT", 0);
    let requests = common::env_num::<usize>("BENCH_REQUESTS", 300).max(20);
    let seconds = common::env_num::<u64>("BENCH_SECONDS", 5);
    let creates = common::env_num::<usize>("BENCH_CREATES", 200).max(4);
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "sqlite".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let database = common::database(&backend, dir.path()).await;
    let config = common::config(dir.path(), Some(database.url.clone()));
    let master_key = config.master_key.clone().expect("master key");
    let (ctx, _) = tenantry::app::open(config).await.expect("open");
    // The built-in plugins compiled into the data directory's cache once, here: every server
    // started below loads them from it, as a server does after its first start.
    ctx.plugins.warm_up().await;
    let token =
        auth::create_platform_token(&ctx, &Actor::system(), "bench", Role::PlatformAdmin, None)
            .await
            .expect("token")
            .token;
    println!(
        "registry benchmark ({backend}): {small} then {large} tenants, `tenantry serve` over loopback HTTP"
    );

    let started = Instant::now();
    let key = grow(&ctx, 0, small).await.expect("tenant 0's key");
    let small_growth = small as f64 / started.elapsed().as_secs_f64();
    let mut at_small = Run {
        tenants: small,
        ..Run::default()
    };
    at_small.audit_records = audit_head(&ctx).await;
    let setup = Setup {
        database_url: &database.url,
        master_key: &master_key,
        dir: dir.path(),
        token: &token,
        key: &key,
        requests,
        seconds,
        creates,
    };
    measure_size(&setup, &mut at_small).await;

    let started = Instant::now();
    grow(&ctx, small, large).await;
    let large_growth = (large - small) as f64 / started.elapsed().as_secs_f64();
    println!(
        "grew the registry: {small_growth:.0} tenants/s at first, {large_growth:.0}/s on the way to {large} (each with a key, every tenth suspended and reactivated)"
    );
    let started = Instant::now();
    grow_audit(&ctx, large, audit).await;
    let records = audit_head(&ctx).await;
    if audit > 0 {
        println!(
            "grew the audit log to {records} records in {:.1?}",
            started.elapsed()
        );
    }
    if database.pg_name.is_some() {
        // The planner's statistics as autovacuum leaves them within a minute of the growth.
        use diesel_async::AsyncConnection as _;
        use diesel_async::SimpleAsyncConnection as _;
        let mut conn = diesel_async::AsyncPgConnection::establish(&database.url)
            .await
            .expect("PostgreSQL");
        conn.batch_execute("ANALYZE").await.expect("ANALYZE");
    }
    let started = Instant::now();
    let full = tenantry::audit::verify(&ctx.db, true)
        .await
        .expect("verify");
    let full_time = started.elapsed();
    assert!(full.ok, "{:?}", full.problem);
    // A day's worth of new records (a thirtieth of the log), then the daily check.
    let day = (records / 30).max(1);
    grow_audit(&ctx, large, records + day).await;
    let started = Instant::now();
    let daily = tenantry::audit::verify(&ctx.db, false)
        .await
        .expect("verify");
    let daily_time = started.elapsed();
    assert!(daily.ok, "{:?}", daily.problem);
    println!(
        "audit verify: full, {} records in {:.2?} ({:.2?} per million); incremental, {} new records in {:.2?}",
        full.checked,
        full_time,
        full_time.mul_f64(1e6 / full.checked.max(1) as f64),
        daily.checked,
        daily_time
    );

    let mut at_large = Run {
        tenants: large,
        audit_records: audit_head(&ctx).await,
        ..Run::default()
    };
    measure_size(&setup, &mut at_large).await;

    report(
        &backend,
        &at_small,
        &at_large,
        (full.checked, full_time, daily.checked, daily_time),
    );
    drop(ctx);
    common::drop_database(&database).await;
}

async fn audit_head(ctx: &tenantry::context::Context) -> i64 {
    let mut conn = ctx.db.conn().await.expect("conn");
    tenantry::store::audit::read_head(&mut conn)
        .await
        .expect("head")
        .0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(backend: &str, small: &Run, large: &Run, verify: (i64, Duration, i64, Duration)) {
    let (n, m) = (small.tenants, large.tenants);
    println!(
        "\n{:<40} {:>12} {:>12} {:>8} {:>10}",
        "",
        format!("{n} tenants"),
        format!("{m} tenants"),
        "ratio",
        "target"
    );
    let line = |name: &str, a: String, b: String, ratio: String, target: &str| {
        println!("{name:<40} {a:>12} {b:>12} {ratio:>8} {target:>10}");
    };
    line(
        "audit records",
        small.audit_records.to_string(),
        large.audit_records.to_string(),
        String::new(),
        "",
    );
    line(
        "serve ready (s)",
        format!("{:.2}", small.ready.as_secs_f64()),
        format!("{:.2}", large.ready.as_secs_f64()),
        String::new(),
        "≤ 2 s",
    );
    line(
        "tenant GET with a key (req/s, wrk)",
        format!("{:.0}", small.scoped),
        format!("{:.0}", large.scoped),
        format!("{:.3}", large.scoped / small.scoped),
        "≥ 0.95",
    );
    line(
        "  GET /health in the same run (req/s)",
        format!("{:.0}", small.health),
        format!("{:.0}", large.health),
        format!("{:.3}", large.health / small.health),
        "",
    );
    line(
        "tenant creation over HTTP (per s)",
        format!("{:.0}", small.creates_per_second),
        format!("{:.0}", large.creates_per_second),
        format!("{:.3}", large.creates_per_second / small.creates_per_second),
        "≥ 0.8",
    );
    for (i, page) in PAGES.iter().enumerate() {
        let (Some(a), Some(b)) = (small.warm[i], large.warm[i]) else {
            continue;
        };
        line(
            &format!("{page}: warm median (ms)"),
            format!("{:.2}", ms(a.median)),
            format!("{:.2}", ms(b.median)),
            format!("{:.2}", ms(b.median) / ms(a.median)),
            "≤ 50 ms",
        );
        line(
            "  p95 (ms)",
            format!("{:.2}", ms(a.p95)),
            format!("{:.2}", ms(b.p95)),
            String::new(),
            "",
        );
        if let (Some(a), Some(b)) = (small.cold.get(i), large.cold.get(i)) {
            line(
                "  cold: first after start, no page cache (ms)",
                format!("{:.2}", ms(*a)),
                format!("{:.2}", ms(*b)),
                String::new(),
                "≤ 50 ms",
            );
        }
    }
    line(
        "resident memory after the load (MB)",
        format!("{:.0}", small.rss_mb),
        format!("{:.0}", large.rss_mb),
        format!("{:.2}", large.rss_mb / small.rss_mb),
        "≤ 150 MB",
    );
    let (full, full_time, daily, daily_time) = verify;
    let json = json!({
        "backend": backend,
        "sizes": [n, m],
        "audit_records": [small.audit_records, large.audit_records],
        "ready_seconds": [small.ready.as_secs_f64(), large.ready.as_secs_f64()],
        "tenant_get_per_second": [small.scoped, large.scoped],
        "health_per_second": [small.health, large.health],
        "creates_per_second": [small.creates_per_second, large.creates_per_second],
        "pages": PAGES.iter().enumerate().map(|(i, page)| json!({
            "page": page,
            "warm_median_ms": [small.warm[i].map(|s| ms(s.median)), large.warm[i].map(|s| ms(s.median))],
            "warm_p95_ms": [small.warm[i].map(|s| ms(s.p95)), large.warm[i].map(|s| ms(s.p95))],
            "cold_ms": [small.cold.get(i).map(|d| ms(*d)), large.cold.get(i).map(|d| ms(*d))],
        })).collect::<Vec<_>>(),
        "rss_mb": [small.rss_mb, large.rss_mb],
        "audit_verify": {
            "full_records": full, "full_seconds": full_time.as_secs_f64(),
            "incremental_records": daily, "incremental_seconds": daily_time.as_secs_f64(),
        },
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-registry.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    println!("\n(JSON in {})", out.display());
}
