//! What the benchmarks share: their settings from the environment and the configuration of a
//! server of their own (a temporary data directory, logging off).
#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};

use base64::Engine as _;
use tenantry::config::Config;

/// A number from the environment variable `name`, or `default`.
pub fn env_num<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A server's configuration: data in `dir`, the database at `database_url` (none: SQLite in
/// `dir`), a fresh master key, no logging.
pub fn config(dir: &Path, database_url: Option<String>) -> Config {
    let key: [u8; 32] = rand::random();
    Config {
        data_dir: dir.to_path_buf(),
        database_url,
        bootstrap_admin_password: Some("benchmark-password".into()),
        master_key: Some(base64::engine::general_purpose::STANDARD.encode(key)),
        log_level: "off".into(),
        ..Config::default()
    }
}

/// How a load's requests authenticate.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    None,
    Bearer(&'a str),
    Cookie(&'a str),
}

pub struct Outcome {
    pub requests: u64,
    pub per_second: f64,
    pub median: Duration,
    pub p99: Duration,
}

pub async fn load(
    url: &str,
    credential: Credential<'_>,
    concurrency: u64,
    seconds: u64,
) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .expect("client");
    let header = match credential {
        Credential::None => None,
        Credential::Bearer(token) => Some(("authorization", format!("Bearer {token}"))),
        Credential::Cookie(cookie) => Some(("cookie", format!("tenantry_tenant_acme={cookie}"))),
    };
    let run = |duration: Duration| {
        let client = client.clone();
        let header = header.clone();
        let url = url.to_owned();
        async move {
            let deadline = Instant::now() + duration;
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let client = client.clone();
                let header = header.clone();
                let url = url.clone();
                tasks.push(tokio::spawn(async move {
                    let mut times = Vec::new();
                    while Instant::now() < deadline {
                        let started = Instant::now();
                        let mut request = client.get(&url);
                        if let Some((name, value)) = &header {
                            request = request.header(*name, value);
                        }
                        let response = request.send().await.expect("request");
                        assert!(
                            response.status().is_success(),
                            "{url}: {}",
                            response.status()
                        );
                        response.bytes().await.expect("body");
                        times.push(started.elapsed());
                    }
                    times
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("load task"));
            }
            all
        }
    };
    run(Duration::from_secs(1)).await; // warm-up: connections, caches
    let started = Instant::now();
    let mut times = run(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed();
    times.sort();
    Outcome {
        requests: times.len() as u64,
        per_second: times.len() as f64 / elapsed.as_secs_f64(),
        median: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
    }
}

/// Requests at a fixed `rate` a second for `seconds` (after a second of warm-up), as wrk2 sends
/// them: [`PACED_CONNECTIONS`] connections, each sending on its own schedule. A closed loop at
/// saturation measures throughput twice (its latency is the number of clients over the rate); at
/// a rate every case sustains, the latencies are what a request costs. A request that could not
/// be sent when due, because its connection's previous one was still waiting, counts its latency
/// from when it was due, so that a stall shows in the tail instead of slowing the load down
/// (no coordinated omission).
pub async fn paced(url: &str, credential: Credential<'_>, rate: f64, seconds: u64) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(PACED_CONNECTIONS)
        .build()
        .expect("client");
    let header = match credential {
        Credential::None => None,
        Credential::Bearer(token) => Some(("authorization", format!("Bearer {token}"))),
        Credential::Cookie(cookie) => Some(("cookie", format!("tenantry_tenant_acme={cookie}"))),
    };
    let rate = rate.max(1.0);
    let run = |duration: Duration| {
        let client = client.clone();
        let header = header.clone();
        let url = url.to_owned();
        async move {
            let start = Instant::now() + Duration::from_millis(10);
            let end = start + duration;
            // Connection `i` sends at start + (i + k·n) / rate.
            let step = Duration::from_secs_f64(PACED_CONNECTIONS as f64 / rate);
            let mut tasks = Vec::new();
            for i in 0..PACED_CONNECTIONS {
                let client = client.clone();
                let header = header.clone();
                let url = url.clone();
                let first = start + Duration::from_secs_f64(i as f64 / rate);
                tasks.push(tokio::spawn(async move {
                    let mut times = Vec::new();
                    let mut due = first;
                    while due < end {
                        let late = Instant::now() > due;
                        tokio::time::sleep_until(due.into()).await;
                        let sent = if late { due } else { Instant::now() };
                        let mut request = client.get(&url);
                        if let Some((name, value)) = &header {
                            request = request.header(*name, value);
                        }
                        let response = request.send().await.expect("request");
                        assert!(response.status().is_success(), "{}", response.status());
                        response.bytes().await.expect("body");
                        times.push(sent.elapsed());
                        due += step;
                    }
                    times
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("paced connection"));
            }
            all
        }
    };
    run(Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut times = run(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed();
    times.sort();
    Outcome {
        requests: times.len() as u64,
        per_second: times.len() as f64 / elapsed.as_secs_f64(),
        median: times[times.len() / 2],
        p99: times[times.len() * 99 / 100],
    }
}

/// The connections of a [`paced`] load.
pub const PACED_CONNECTIONS: usize = 32;

/// Requests per second and latency that `wrk` (Debian's package) measured: `connections`
/// keep-alive connections on two threads for `seconds`. None when wrk is not installed.
pub fn wrk(url: &str, header: Option<&str>, connections: u64, seconds: u64) -> Option<Outcome> {
    let mut command = std::process::Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(header) = header {
        command.args(["-H", header]);
    }
    let output = command.arg(url).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed requests at {url}: {text}"
    );
    let number = |prefix: &str| -> Option<String> {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)
                .map(|v| v.trim().to_owned())
        })
    };
    let duration = |v: String| -> Duration {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = n.parse().unwrap_or(0.0);
        Duration::from_secs_f64(match unit {
            "us" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            _ => n,
        })
    };
    let per_second: f64 = number("Requests/sec:")?.parse().ok()?;
    let requests = text
        .lines()
        .find(|line| line.contains("requests in"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Outcome {
        requests,
        per_second,
        median: duration(number("50%")?),
        p99: duration(number("99%")?),
    })
}

pub struct Database {
    pub url: String,
    pub pg_name: Option<String>,
}

pub async fn database(backend: &str, dir: &std::path::Path) -> Database {
    if backend == "sqlite" {
        return Database {
            url: format!("sqlite://{}", dir.join("tenantry.db").display()),
            pg_name: None,
        };
    }
    let admin = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("tenantry_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = AsyncPgConnection::establish(&admin)
        .await
        .expect("PostgreSQL for the benchmark (TEST_POSTGRES_URL)");
    conn.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut url = url::Url::parse(&admin).expect("URL");
    url.set_path(&name);
    Database {
        url: url.to_string(),
        pg_name: Some(name),
    }
}

pub async fn drop_database(db: &Database) {
    if let Some(name) = &db.pg_name {
        let admin = std::env::var("TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        if let Ok(mut conn) = AsyncPgConnection::establish(&admin).await {
            let _ = conn
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A tenant with a slug and a name, and nothing else set.
pub fn new_tenant(slug: &str, name: &str) -> tenantry::tenants::NewTenant {
    tenantry::tenants::NewTenant {
        slug: slug.into(),
        name: name.into(),
        tier: None,
        trial_days: None,
        contact: None,
        metadata: None,
        oauth_issuer: None,
        client_id: None,
        client_secret: None,
        scopes: None,
        db_uri: None,
        default_schema: None,
        role_mapping: None,
    }
}
