//! Provisioning throughput with a no-op backend plugin, on SQLite and on PostgreSQL, against plain
//! tenant creation on the same server, measured in the same run.
//!
//!     cargo bench --bench provisioning
//!     BENCH_DATABASES=sqlite BENCH_WORKERS=4 BENCH_N=50 BENCH_N50=100 cargo bench --bench provisioning
//!
//! For each database (SQLite in a temp dir; PostgreSQL: a fresh database on `TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`, dropped at the end) and each
//! `provisioning.workers` setting (`BENCH_WORKERS`, default `4,16`; 4 is the server's default) it
//! starts a real server (in-process, loopback HTTP), installs the `recorder` test plugin without
//! its `recorder-url` secret — a no-op backend: three steps, each a sandboxed Wasm call that
//! returns at once — and then, at each concurrency (`BENCH_CONCURRENCY`, default `1,10,50`):
//!
//! - baseline: `BENCH_N` (default 100; `BENCH_N50`, default 200, at concurrency ≥ 50) plain
//!   `POST /api/v1/tenant`, `C` clients each sending its next request when the previous answered;
//! - provisioning: as many `POST /api/v1/tenant/provision` (`"backends": ["recorder"]`), `C`
//!   clients each sending its next request when its previous tenant is provisioned (closed loop:
//!   at most `C` tenants in flight). Per tenant: the 202's latency, and the end-to-end latency from
//!   sending the request to seeing the tenant leave `provisioning` (one shared poller lists
//!   `GET /api/v1/tenant?status=provisioning` every `BENCH_CLIENT_POLL_MS`, default 5 ms — one
//!   cheap query whatever the concurrency; the tenant's status and its run's `succeeded` are
//!   written in one transaction). Every run is then checked to have succeeded, and its own
//!   timestamps give a server-side breakdown: queued (created → claimed by a worker) and executing
//!   (claimed → finished).
//!
//! Throughput is reported as a ratio of the baseline's at the same concurrency. The table is also
//! written as JSON to `target/bench-provisioning.json`. `BENCH_SERVER_POLL_MS` overrides the
//! server's `provisioning.poll_interval_ms` (default: the server's default, 1000 ms).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{Value, json};
use tenantry::app::RunningServer;
use tenantry::audit::Actor;
use tenantry::auth::{self, Role};
use tenantry::config::{Config, ProvisioningConfig};
use tenantry::context::Context;
use tenantry::plugin_registry as registry;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank percentile of `q` (0–1).
fn pct(values: &[Duration], q: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL database of the benchmark's own, dropped when this is dropped (even on a panic).
struct PgDatabase {
    name: String,
}

impl PgDatabase {
    async fn create() -> (PgDatabase, String) {
        let admin = postgres_admin_url();
        let name = format!("tenantry_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin} is needed (BENCH_DATABASES=sqlite to skip it): {e}")
            });
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the benchmark database");
        let mut url = url::Url::parse(&admin).expect("TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        (PgDatabase { name }, url.to_string())
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own on a thread of its own: this may run inside the benchmark's runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    match AsyncPgConnection::establish(&postgres_admin_url()).await {
                        Ok(mut conn) => {
                            if let Err(e) = conn
                                .batch_execute(&format!(
                                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                                ))
                                .await
                            {
                                eprintln!("could not drop database {name}: {e}");
                            }
                        }
                        Err(e) => eprintln!("could not drop database {name}: {e}"),
                    }
                })
        })
        .join();
    }
}

struct Server {
    ctx: Context,
    running: RunningServer,
    base: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    pg: Option<PgDatabase>,
}

impl Server {
    async fn start(database: &str, workers: usize, server_poll_ms: Option<u64>) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let (pg, database_url) = match database {
            "sqlite" => (None, None),
            "postgres" => {
                let (pg, url) = PgDatabase::create().await;
                (Some(pg), Some(url))
            }
            other => panic!("unknown database `{other}` (sqlite or postgres)"),
        };
        let mut config = common::config(dir.path(), database_url);
        config.provisioning.workers = workers;
        if let Some(poll) = server_poll_ms {
            config.provisioning.poll_interval_ms = poll;
        }
        let (ctx, _) = tenantry::app::open(config).await.expect("open");
        let running = tenantry::app::start(ctx.clone(), TcpListener::bind("127.0.0.1:0").unwrap())
            .expect("start");
        let base = format!("http://{}", running.addr);
        let token =
            auth::create_platform_token(&ctx, &Actor::system(), "bench", Role::PlatformAdmin, None)
                .await
                .expect("token")
                .token;
        let path = format!(
            "{}/recorder.wasm",
            tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let plugin = registry::install(&ctx, &Actor::system(), bytes)
            .await
            .expect("recorder installs");
        if !plugin.enabled {
            registry::set_enabled(&ctx, &Actor::system(), "recorder", true, None)
                .await
                .expect("recorder enabled");
        }
        Server {
            ctx,
            running,
            base,
            token,
            client: reqwest::Client::new(),
            _dir: dir,
            pg,
        }
    }

    async fn stop(self) {
        self.running.worker_stop.notify_one();
        let _ = self.running.worker.await;
        self.running.handle.stop(true).await;
        drop(self.ctx);
        drop(self.pg);
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert!(status.is_success(), "GET {path}: {status} {body}");
        body
    }
}

/// Plain tenant creation: `n` requests from `c` clients.
struct Baseline {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn baseline(s: &Server, tag: &str, c: usize, n: usize) -> Baseline {
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/api/v1/tenant", s.base);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (next, url, client, token, tag) = (
            next.clone(),
            url.clone(),
            s.client.clone(),
            s.token.clone(),
            tag.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return latencies;
                }
                let slug = format!("{tag}-{i:05}");
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({ "slug": slug, "name": format!("Tenant {slug}") }))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                let body = response.bytes().await.expect("body");
                assert_eq!(status.as_u16(), 201, "{}", String::from_utf8_lossy(&body));
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.expect("client"));
    }
    Baseline {
        latencies,
        elapsed: started.elapsed(),
    }
}

/// Provisioning: `n` tenants, at most `c` in flight.
struct Provisioning {
    accepted: Vec<Duration>,
    end_to_end: Vec<Duration>,
    elapsed: Duration,
    runs: Vec<String>,
    polls: usize,
}

type Pending = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>>;

/// One poller for every client: lists the tenants still `provisioning` and tells the waiting
/// clients whose tenant is not among them any more. Only tenants registered before the list
/// request was sent are decided by its answer.
fn spawn_poller(
    s: &Server,
    pending: Pending,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> tokio::task::JoinHandle<usize> {
    let url = format!("{}/api/v1/tenant?status=provisioning&limit=200", s.base);
    let (client, token) = (s.client.clone(), s.token.clone());
    tokio::spawn(async move {
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            let waiting: Vec<String> = pending.lock().unwrap().keys().cloned().collect();
            if !waiting.is_empty() {
                let response = client
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("poll");
                let page: Value = response.json().await.expect("poll json");
                let seen = Instant::now();
                polls += 1;
                assert!(
                    page["next_cursor"].is_null(),
                    "more than 200 tenants provisioning"
                );
                let still: HashSet<&str> = page["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .filter_map(|t| t["slug"].as_str())
                    .collect();
                let mut pending = pending.lock().unwrap();
                for slug in waiting {
                    if !still.contains(slug.as_str())
                        && let Some(tx) = pending.remove(&slug)
                    {
                        let _ = tx.send(seen);
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
        polls
    })
}

async fn provisioning(s: &Server, tag: &str, c: usize, n: usize, poll: Duration) -> Provisioning {
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = spawn_poller(s, pending.clone(), stop.clone(), poll);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/api/v1/tenant/provision", s.base);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..c {
        let (next, url, client, token, tag, pending) = (
            next.clone(),
            url.clone(),
            s.client.clone(),
            s.token.clone(),
            tag.to_owned(),
            pending.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let slug = format!("{tag}-{i:05}");
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({
                        "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
                        "backends": ["recorder"],
                    }))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                let body: Value = response.json().await.expect("json");
                let accepted = sent.elapsed();
                assert_eq!(status.as_u16(), 202, "{body}");
                let (tx, rx) = tokio::sync::oneshot::channel();
                pending.lock().unwrap().insert(slug.clone(), tx);
                let done = tokio::time::timeout(Duration::from_secs(120), rx)
                    .await
                    .unwrap_or_else(|_| panic!("{slug}: not provisioned within 120 s"))
                    .expect("poller");
                out.push((
                    body["run"].as_str().expect("run id").to_owned(),
                    accepted,
                    done - sent,
                ));
            }
        }));
    }
    let mut result = Provisioning {
        accepted: Vec::with_capacity(n),
        end_to_end: Vec::with_capacity(n),
        elapsed: Duration::ZERO,
        runs: Vec::with_capacity(n),
        polls: 0,
    };
    for t in tasks {
        for (run, accepted, e2e) in t.await.expect("client") {
            result.runs.push(run);
            result.accepted.push(accepted);
            result.end_to_end.push(e2e);
        }
    }
    result.elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    result.polls = poller.await.expect("poller");
    result
}

/// What the runs' own timestamps say (server side, no polling in it).
struct ServerSide {
    queued: Vec<Duration>,
    executing: Vec<Duration>,
    total: Vec<Duration>,
}

async fn server_side(s: &Server, runs: &[String]) -> ServerSide {
    let at = |v: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap_or_else(|| panic!("{k}: {v}")))
            .expect("rfc3339")
    };
    let span = |a: chrono::DateTime<chrono::FixedOffset>,
                b: chrono::DateTime<chrono::FixedOffset>| {
        (b - a).to_std().unwrap_or_default()
    };
    let mut out = ServerSide {
        queued: Vec::new(),
        executing: Vec::new(),
        total: Vec::new(),
    };
    for id in runs {
        let run = s.get(&format!("/api/v1/provisioning/{id}")).await;
        assert_eq!(run["status"], "succeeded", "run {id}: {run}");
        assert_eq!(run["steps"].as_array().map(Vec::len), Some(3), "{run}");
        let (created, started, finished) = (
            at(&run, "created_at"),
            at(&run, "started_at"),
            at(&run, "finished_at"),
        );
        out.queued.push(span(created, started));
        out.executing.push(span(started, finished));
        out.total.push(span(created, finished));
    }
    out
}

struct Row {
    database: String,
    workers: usize,
    concurrency: usize,
    n: usize,
    base: Baseline,
    prov: Provisioning,
    server: ServerSide,
}

impl Row {
    fn base_rate(&self) -> f64 {
        self.n as f64 / self.base.elapsed.as_secs_f64()
    }
    fn prov_rate(&self) -> f64 {
        self.n as f64 / self.prov.elapsed.as_secs_f64()
    }
    fn json(&self, default_workers: usize) -> Value {
        let p = |v: &[Duration], q| (ms(pct(v, q)) * 1000.0).round() / 1000.0;
        json!({
            "database": self.database,
            "workers": self.workers,
            "workers_is_default": self.workers == default_workers,
            "concurrency": self.concurrency,
            "tenants": self.n,
            "baseline_create": {
                "p50_ms": p(&self.base.latencies, 0.5),
                "p99_ms": p(&self.base.latencies, 0.99),
                "tenants_per_second": self.base_rate(),
                "seconds": self.base.elapsed.as_secs_f64(),
            },
            "provisioning": {
                "accepted_p50_ms": p(&self.prov.accepted, 0.5),
                "accepted_p99_ms": p(&self.prov.accepted, 0.99),
                "end_to_end_p50_ms": p(&self.prov.end_to_end, 0.5),
                "end_to_end_p99_ms": p(&self.prov.end_to_end, 0.99),
                "tenants_per_second": self.prov_rate(),
                "seconds": self.prov.elapsed.as_secs_f64(),
                "status_polls": self.prov.polls,
                "server_queued_p50_ms": p(&self.server.queued, 0.5),
                "server_queued_p99_ms": p(&self.server.queued, 0.99),
                "server_queued_max_ms": p(&self.server.queued, 1.0),
                "server_executing_p50_ms": p(&self.server.executing, 0.5),
                "server_executing_p99_ms": p(&self.server.executing, 0.99),
                "server_created_to_finished_p50_ms": p(&self.server.total, 0.5),
                "server_created_to_finished_p99_ms": p(&self.server.total, 0.99),
            },
            "throughput_ratio_provisioning_over_create": self.prov_rate() / self.base_rate(),
            "p50_latency_ratio_end_to_end_over_create":
                pct(&self.prov.end_to_end, 0.5).as_secs_f64() / pct(&self.base.latencies, 0.5).as_secs_f64(),
        })
    }
}

fn print_row(r: &Row) {
    println!(
        "{:<9} {:>3} {:>4} {:>4} │ {:>8.2} {:>8.2} {:>7.0} │ {:>8.2} {:>8.2} {:>8.2} {:>7.1} │ {:>7.3} {:>7.1} │ {:>8.1} {:>8.1} {:>8.2}",
        r.database,
        r.workers,
        r.concurrency,
        r.n,
        ms(pct(&r.base.latencies, 0.5)),
        ms(pct(&r.base.latencies, 0.99)),
        r.base_rate(),
        ms(pct(&r.prov.accepted, 0.5)),
        ms(pct(&r.prov.end_to_end, 0.5)),
        ms(pct(&r.prov.end_to_end, 0.99)),
        r.prov_rate(),
        r.prov_rate() / r.base_rate(),
        pct(&r.prov.end_to_end, 0.5).as_secs_f64() / pct(&r.base.latencies, 0.5).as_secs_f64(),
        ms(pct(&r.server.queued, 0.5)),
        ms(pct(&r.server.queued, 0.99)),
        ms(pct(&r.server.executing, 0.5)),
    );
}

fn print_header() {
    println!(
        "{:<9} {:>3} {:>4} {:>4} │ {:>8} {:>8} {:>7} │ {:>8} {:>8} {:>8} {:>7} │ {:>7} {:>7} │ {:>8} {:>8} {:>8}",
        "",
        "",
        "",
        "",
        "POST /tenant (baseline)",
        "",
        "",
        "POST /tenant/provision → succeeded",
        "",
        "",
        "",
        "ratios",
        "",
        "server side (run timestamps)",
        "",
        ""
    );
    println!(
        "{:<9} {:>3} {:>4} {:>4} │ {:>8} {:>8} {:>7} │ {:>8} {:>8} {:>8} {:>7} │ {:>7} {:>7} │ {:>8} {:>8} {:>8}",
        "database",
        "wkr",
        "conc",
        "N",
        "p50 ms",
        "p99 ms",
        "/s",
        "202 p50",
        "e2e p50",
        "e2e p99",
        "/s",
        "thr×",
        "p50×",
        "queue50",
        "queue99",
        "exec p50"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = common::env_num::<usize>("BENCH_N", 100);
    let n50 = common::env_num::<usize>("BENCH_N50", 200);
    let client_poll = Duration::from_millis(common::env_num::<u64>("BENCH_CLIENT_POLL_MS", 5));
    let server_poll = std::env::var("BENCH_SERVER_POLL_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let databases = env_list("BENCH_DATABASES", "sqlite,postgres");
    let workers: Vec<usize> = env_list("BENCH_WORKERS", "4,16")
        .iter()
        .map(|w| w.parse().expect("BENCH_WORKERS: numbers"))
        .collect();
    let levels: Vec<usize> = env_list("BENCH_CONCURRENCY", "1,10,50")
        .iter()
        .map(|c| c.parse().expect("BENCH_CONCURRENCY: numbers"))
        .collect();
    let defaults = ProvisioningConfig::default();
    let pool = Config::default().database_pool_size;
    let server_poll_ms = server_poll.unwrap_or(defaults.poll_interval_ms);
    let command = {
        let vars: Vec<String> = [
            "BENCH_DATABASES",
            "BENCH_WORKERS",
            "BENCH_CONCURRENCY",
            "BENCH_N",
            "BENCH_N50",
            "BENCH_CLIENT_POLL_MS",
            "BENCH_SERVER_POLL_MS",
            "TEST_POSTGRES_URL",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect();
        let mut c = vars.join(" ");
        if !c.is_empty() {
            c.push(' ');
        }
        c + "cargo bench --bench provisioning"
    };
    println!(
        "provisioning benchmark: no-op backend (`recorder` plugin without its secret: 3 steps, each a \
         sandboxed Wasm call), in-process server, loopback HTTP, {} CPUs\n\
         server: provisioning.workers {:?} (default {}), provisioning.poll_interval_ms {} (default {}), \
         database_pool_size {} (default)\n\
         client: closed loop, C clients; N = {n} per level ({n50} at C ≥ 50); end-to-end seen by one poller \
         listing tenants in `provisioning` every {} ms\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        workers,
        defaults.workers,
        server_poll_ms,
        defaults.poll_interval_ms,
        pool,
        client_poll.as_millis(),
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    print_header();
    for database in &databases {
        for &w in &workers {
            let server = Server::start(database, w, server_poll).await;
            // Warm-up: connections, the plugin's first instances, the poller.
            baseline(&server, "warm-base", 2, 10).await;
            provisioning(&server, "warm-prov", 2, 10, client_poll).await;
            for &c in &levels {
                let count = if c >= 50 { n50 } else { n };
                let base = baseline(&server, &format!("base-c{c}"), c, count).await;
                let prov =
                    provisioning(&server, &format!("prov-c{c}"), c, count, client_poll).await;
                let server_side = server_side(&server, &prov.runs).await;
                let row = Row {
                    database: database.clone(),
                    workers: w,
                    concurrency: c,
                    n: count,
                    base,
                    prov,
                    server: server_side,
                };
                print_row(&row);
                rows.push(row);
            }
            server.stop().await;
        }
    }
    let total = started.elapsed();
    println!(
        "\nthr× = provisioned tenants/s ÷ created tenants/s (POST /api/v1/tenant) at the same concurrency on the same server;\n\
         p50× = end-to-end p50 ÷ create p50. e2e: from sending the request to the poller seeing the tenant provisioned.\n\
         queue: run created → claimed by a worker; exec: claimed → finished (the runs' own timestamps).\n\
         whole benchmark: {:.1} s",
        total.as_secs_f64()
    );
    let report = json!({
        "benchmark": "provisioning",
        "command": command,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "server": {
            "provisioning_workers_default": defaults.workers,
            "provisioning_poll_interval_ms": server_poll_ms,
            "provisioning_poll_interval_ms_default": defaults.poll_interval_ms,
            "database_pool_size": pool,
        },
        "client_poll_ms": client_poll.as_millis() as u64,
        "seconds": total.as_secs_f64(),
        "results": rows.iter().map(|r| r.json(defaults.workers)).collect::<Vec<_>>(),
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into());
    let path = std::path::Path::new(&target).join("bench-provisioning.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("written to {}", path.display());
}
