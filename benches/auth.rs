//! Authentication overhead benchmark: requests per second for one tenant-scoped API call
//! (`GET /api/v1/tenant/{slug}`) authenticated by a tenant API key and by a tenant session
//! cookie, against the same handler on a server that skips authentication
//! (`app::start_unauthenticated`), all in the same run, on SQLite and on PostgreSQL.
//!
//!     cargo bench --bench auth
//!     BENCH_SECONDS=5 BENCH_CONCURRENCY=16 BENCH_BACKENDS=sqlite cargo bench --bench auth
//!
//! Each case runs `BENCH_CONCURRENCY` keep-alive clients in a loop for `BENCH_SECONDS` (after a
//! warm-up of a second), the cases taking turns for `BENCH_ROUNDS` rounds (default 3), and
//! reports its median round — requests/s, median and p99 latency, and the ratio of its
//! requests/s to the unauthenticated baseline's — and the spread of its rounds. Quotas are enforced (every call metered and
//! checked against the tenant's limits). Then the whole path with `wrk` (Debian's package, left
//! out when it is not installed): the same GET with the key and the cookie against `GET /health`
//! of the same server, the cases taking turns likewise. A table goes to stdout and JSON to `target/bench-auth.json`.

mod common;

use common::{Credential, database, drop_database, load};

use std::net::TcpListener;

use tenantry::app;
use tenantry::audit::Actor;
use tenantry::auth::{self, KeySpec, Principal, Role, TenantScope};
use tenantry::tenants;

#[tokio::main]
async fn main() {
    let seconds = common::env_num::<u64>("BENCH_SECONDS", 5);
    let concurrency = common::env_num::<u64>("BENCH_CONCURRENCY", 16);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let mut report = Vec::new();
    println!(
        "auth benchmark: GET /api/v1/tenant/acme, {concurrency} keep-alive clients for {seconds} s per case (after 1 s warm-up), loopback HTTP\n"
    );
    println!(
        "{:<10} {:<34} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "db", "case", "requests", "req/s", "median", "p99", "ratio"
    );
    for backend in backends.split(',').filter(|b| !b.is_empty()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = database(backend, dir.path()).await;
        let (ctx, _) = app::open(common::config(dir.path(), Some(db.url.clone())))
            .await
            .expect("server opens");
        let actor = Actor::system();
        let tenant = tenants::create(&ctx, &actor, &common::new_tenant("acme", "Acme"))
            .await
            .expect("tenant");
        // Limits far above the load: every call is metered and checked, none refused.
        let unlimited = tenantry::quotas::parse_overrides(
            &ctx,
            serde_json::json!({ "api_calls_per_minute": 1_000_000_000u64, "api_calls_per_month": 1_000_000_000_000u64 })
                .as_object()
                .unwrap(),
        )
        .expect("overrides");
        tenantry::quotas::set_overrides(&ctx, &actor, &tenant, &unlimited)
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
        let principal = Principal {
            name: "user:acme/bench@acme.example".into(),
            role: Role::Member,
            tenant: Some(scope.clone()),
            key: None,
        };
        let (cookie, _) = auth::start_session(&ctx, &principal, &actor, None, None, None)
            .await
            .expect("session");

        let listener = TcpListener::bind("127.0.0.1:0").expect("port");
        let server = app::start(ctx.clone(), listener).expect("server");
        let base = format!("http://{}", server.addr);
        let bare_listener = TcpListener::bind("127.0.0.1:0").expect("port");
        let bare = app::start_unauthenticated(ctx.clone(), bare_listener, principal.clone())
            .expect("server");
        let bare_base = format!("http://{}", bare.addr);

        let url = format!("{base}/api/v1/tenant/acme");
        let cases: [(&str, String, Credential<'_>); 3] = [
            (
                "no authentication (baseline)",
                format!("{bare_base}/api/v1/tenant/acme"),
                Credential::None,
            ),
            ("tenant API key", url.clone(), Credential::Bearer(&key)),
            (
                "tenant session cookie",
                url.clone(),
                Credential::Cookie(&cookie),
            ),
        ];
        // The cases take turns for `BENCH_ROUNDS` rounds, so that the machine's drift falls on
        // each of them alike; each reports its median round and the spread of its rounds.
        let rounds = common::env_num::<usize>("BENCH_ROUNDS", 3).max(1);
        let mut runs: Vec<Vec<common::Outcome>> = cases.iter().map(|_| Vec::new()).collect();
        for _ in 0..rounds {
            for (i, (_, url, credential)) in cases.iter().enumerate() {
                runs[i].push(load(url, *credential, concurrency, seconds).await);
            }
        }
        let mut baseline = None;
        for ((name, _, _), mut runs) in cases.iter().zip(runs) {
            runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
            let spread = (runs[0].per_second, runs[runs.len() - 1].per_second);
            let outcome = runs.swap_remove(runs.len() / 2);
            let base_rate = *baseline.get_or_insert(outcome.per_second);
            let ratio = outcome.per_second / base_rate;
            println!(
                "{:<10} {:<34} {:>10} {:>10.0} {:>10.2?} {:>10.2?} {:>8.3}   rounds {:.0}–{:.0} req/s",
                backend,
                name,
                outcome.requests,
                outcome.per_second,
                outcome.median,
                outcome.p99,
                ratio,
                spread.0,
                spread.1
            );
            report.push(serde_json::json!({
                "db": backend, "case": name, "rounds": rounds, "requests": outcome.requests,
                "requests_per_second": outcome.per_second,
                "requests_per_second_spread": [spread.0, spread.1],
                "median_ms": outcome.median.as_secs_f64() * 1000.0,
                "p99_ms": outcome.p99.as_secs_f64() * 1000.0,
                "ratio_to_baseline": ratio,
            }));
        }
        // The whole path against the bare server, with wrk: the same GET against `GET /health`
        // of the same server, the cases taking turns likewise.
        let bearer = format!("Authorization: Bearer {key}");
        let cookie_header = format!("Cookie: tenantry_tenant_acme={cookie}");
        let wrk_cases: [(&str, String, Option<&str>); 3] = [
            ("GET /health (wrk baseline)", format!("{base}/health"), None),
            ("tenant API key (wrk)", url.clone(), Some(bearer.as_str())),
            (
                "tenant session cookie (wrk)",
                url.clone(),
                Some(cookie_header.as_str()),
            ),
        ];
        let mut outcomes: Vec<Vec<common::Outcome>> =
            wrk_cases.iter().map(|_| Vec::new()).collect();
        let mut have_wrk = true;
        'rounds: for _ in 0..rounds {
            for (i, (_, url, header)) in wrk_cases.iter().enumerate() {
                match common::wrk(url, *header, concurrency, seconds) {
                    Some(outcome) => outcomes[i].push(outcome),
                    None => {
                        have_wrk = false;
                        break 'rounds;
                    }
                }
            }
        }
        if have_wrk {
            let mut health_rate = None;
            for ((name, _, _), mut runs) in wrk_cases.iter().zip(outcomes) {
                runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
                let spread = (runs[0].per_second, runs[runs.len() - 1].per_second);
                let outcome = runs.swap_remove(runs.len() / 2);
                let ratio = outcome.per_second / *health_rate.get_or_insert(outcome.per_second);
                println!(
                    "{:<10} {:<34} {:>10} {:>10.0} {:>10.2?} {:>10.2?} {:>8.3}   rounds {:.0}–{:.0} req/s",
                    backend,
                    name,
                    outcome.requests,
                    outcome.per_second,
                    outcome.median,
                    outcome.p99,
                    ratio,
                    spread.0,
                    spread.1
                );
                report.push(serde_json::json!({
                    "db": backend, "case": name, "tool": "wrk", "rounds": rounds,
                    "requests_per_second": outcome.per_second,
                    "requests_per_second_spread": [spread.0, spread.1],
                    "median_ms": outcome.median.as_secs_f64() * 1000.0,
                    "p99_ms": outcome.p99.as_secs_f64() * 1000.0,
                    "ratio_to_health": ratio,
                }));
            }
        } else {
            println!(
                "{backend}: wrk is not installed (apt-get install wrk): the whole-path comparison is left out"
            );
        }
        server.handle.stop(true).await;
        bare.handle.stop(true).await;
        server.worker_stop.notify_one();
        bare.worker_stop.notify_one();
        drop(ctx);
        drop_database(&db).await;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-auth.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::json!({
            "concurrency": concurrency, "seconds": seconds, "results": report,
        }))
        .expect("json"),
    );
    println!("\n(JSON in {})", out.display());
}
