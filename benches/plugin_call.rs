//! The cost of one plugin call in a fresh instance, through the API the server uses, against
//! the same rule as a plain Rust function and against a bare actix-web request, in one run.
//!
//!     cargo bench --bench plugin_call
//!     BENCH_ITERATIONS=50000 cargo bench --bench plugin_call
//!
//! For a quota-policy evaluation (`tier-quota`) and a template rendering
//! (`template-renderer`), each call timed on its own (p50, p99):
//! - plain function: the same rule in Rust, in this process (batches of 1,000, per call);
//! - host, this thread: new `Store`, instantiate, call, drop, on the calling thread
//!   (`PluginHost::evaluate_blocking`, quota policy only);
//! - host API: `PluginHost::evaluate` / `render` as the server calls them (registry check,
//!   semaphore, statistics, metrics), by default on the calling thread within the inline budget;
//! - host API, blocking pool: the same with `inline_budget_ms = 0`, every call handed to
//!   tokio's blocking pool (what every call cost before the inline budget);
//! - JavaScript policy: the quota policy `tenantry plugin new --lang js` scaffolds, built with
//!   componentize-js (a pre-initialised engine snapshot), through the host API, when the
//!   toolchain of tests/js-plugin is installed (`scripts/install-test-deps`): as scaffolded
//!   (`reuse_instances`, a call takes an instance kept from an earlier one) and without it (a
//!   fresh instance per call);
//! - actix-web request: `GET /health` on the running server over loopback HTTP.
//!
//! Next to each: minor page faults, context switches (every thread of the process) and TLB
//! shootdowns (all cores, from /proc/interrupts) per call, and what the instance pool keeps
//! resident. `perf stat -e page-faults,context-switches -p <pid>` shows the same by hand.

mod common;

use std::hint::black_box;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use tenantry::plugin_host::{PluginTenant, Template, Usage};

/// The JavaScript quota policy `plugin new --lang js` scaffolds, built in `dir` as `name`;
/// `reuse` false takes `reuse_instances` out of its manifest (a fresh instance per call). None
/// without the toolchain.
fn js_policy(dir: &std::path::Path, name: &str, reuse: bool) -> Option<Vec<u8>> {
    let toolchain =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js-plugin/node_modules");
    if !toolchain.join("@bytecodealliance/componentize-js").is_dir() {
        return None;
    }
    let crate_dir = tenantry::plugin_host::scaffold::create_js(
        name,
        tenantry::plugin_host::World::QuotaPolicy,
        Some(&dir.join(name)),
    )
    .expect("scaffold");
    if !reuse {
        let manifest = crate_dir.join("tenantry-plugin.toml");
        let text = std::fs::read_to_string(&manifest).expect("manifest");
        std::fs::write(&manifest, text.replace("reuse_instances = true", "")).expect("manifest");
    }
    std::os::unix::fs::symlink(&toolchain, crate_dir.join("node_modules")).expect("symlink");
    let built = std::process::Command::new("npm")
        .args(["run", "build"])
        .current_dir(&crate_dir)
        .output()
        .expect("npm");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(std::fs::read(crate_dir.join(format!("{name}.wasm"))).expect("the component"))
}

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

/// `{name}` substitution of a `text` template, as the renderer does it for that format.
fn plain_render(body: &str, values: &[(String, String)]) -> String {
    let mut out = String::with_capacity(body.len() + 64);
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed slot") + open;
        let name = &rest[open + 1..close];
        let value = values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .expect("a value for every slot");
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Process-wide counters read from /proc.
#[derive(Clone, Copy, Default)]
struct Counters {
    minor_faults: u64,
    context_switches: u64,
    tlb_shootdowns: u64,
}

fn counters() -> Counters {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): minflt is field 10 of the line.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let minor_faults = after
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut context_switches = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    context_switches += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let tlb_shootdowns = interrupts
        .lines()
        .find(|l| l.trim_start().starts_with("TLB:"))
        .map_or(0, |l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|v| v.parse::<u64>().ok())
                .sum()
        });
    Counters {
        minor_faults,
        context_switches,
        tlb_shootdowns,
    }
}

struct Phase {
    name: &'static str,
    p50: f64,
    p99: f64,
    per_call: Option<[f64; 3]>,
}

/// Times `n` calls of `call` one by one, after `n / 10` to warm up.
async fn phase<F, Fut>(name: &'static str, n: usize, mut call: F) -> Phase
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        call().await;
    }
    let mut times = Vec::with_capacity(n);
    let before = counters();
    for _ in 0..n {
        let started = Instant::now();
        call().await;
        times.push(started.elapsed());
    }
    let after = counters();
    times.sort();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / n as f64;
    Phase {
        name,
        p50: micros(times[n / 2]),
        p99: micros(times[n * 99 / 100]),
        per_call: Some([
            per(after.minor_faults, before.minor_faults),
            per(after.context_switches, before.context_switches),
            per(after.tlb_shootdowns, before.tlb_shootdowns),
        ]),
    }
}

/// Times `n` batches of 1,000 calls of a plain function, per call.
fn plain_phase(name: &'static str, n: usize, mut call: impl FnMut()) -> Phase {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        for _ in 0..1_000 {
            call();
        }
        times.push(started.elapsed().as_secs_f64() * 1e6 / 1_000.0);
    }
    times.sort_by(f64::total_cmp);
    Phase {
        name,
        p50: times[n / 2],
        p99: times[n * 99 / 100],
        per_call: None,
    }
}

fn print(title: &str, phases: &[Phase]) {
    println!("\n{title}");
    println!(
        "{:<46} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "", "p50 µs", "p99 µs", "p50 ×fn", "faults", "ctx sw", "TLB"
    );
    let plain = phases[0].p50;
    for phase in phases {
        let [faults, switches, tlb] = phase.per_call.unwrap_or([0.0; 3]);
        let counts = match phase.per_call {
            Some(_) => format!("{faults:>8.2} {switches:>8.2} {tlb:>8.2}"),
            None => format!("{:>8} {:>8} {:>8}", "-", "-", "-"),
        };
        println!(
            "{:<46} {:>9.3} {:>9.3} {:>9.0} {counts}",
            phase.name,
            phase.p50,
            phase.p99,
            phase.p50 / plain
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = common::env_num::<usize>("BENCH_ITERATIONS", 20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let (ctx, _) = tenantry::app::open(common::config(dir.path(), None))
        .await
        .expect("open");
    let pool_dir = tempfile::tempdir().expect("temp dir");
    let mut pool_config = common::config(pool_dir.path(), None);
    pool_config.plugins.inline_budget_ms = 0;
    let (pool_ctx, _) = tenantry::app::open(pool_config).await.expect("open");
    let server = tenantry::app::start(ctx.clone(), TcpListener::bind("127.0.0.1:0").unwrap())
        .expect("start");

    let tenant = PluginTenant {
        id: "bench".into(),
        slug: "bench".into(),
        name: "Bench".into(),
        tier: tenantry::tenants::Tier::Starter,
        status: "active".into(),
    };
    let usage: Vec<Usage> = [
        ("users", 7),
        ("api_calls_per_minute", 950),
        ("storage_gb", 3),
    ]
    .into_iter()
    .map(|(metric, used)| Usage {
        metric: metric.into(),
        used,
        override_limit: None,
    })
    .collect();
    let plain_usage = [
        ("users", 7u64),
        ("api_calls_per_minute", 950),
        ("storage_gb", 3),
    ];
    let template = Template {
        name: "warehouse".into(),
        body: "host={host} port={port} dbname={database} user={user} schema={schema}".into(),
        placeholders: ["host", "port", "database", "user", "schema"]
            .map(String::from)
            .to_vec(),
        format: "text".into(),
    };
    let values: Vec<(String, String)> = [
        ("host", "db.internal.example.com"),
        ("port", "5432"),
        ("database", "acme"),
        ("user", "acme_reader"),
        ("schema", "analytics"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();

    // Compile once (as at start) and check that the sandboxed and the plain rules agree.
    for host in [&ctx.plugins, &pool_ctx.plugins] {
        let decision = host
            .evaluate("tier-quota", &tenant, usage.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (decision.allowed, decision.at_risk),
            plain_rule("starter", &plain_usage)
        );
        let rendered = host
            .render("template-renderer", template.clone(), values.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rendered, plain_render(&template.body, &values));
    }

    let batches = (n / 100).max(100);
    let mut quota = vec![plain_phase("plain Rust function", batches, || {
        black_box(plain_rule(black_box("starter"), black_box(&plain_usage)));
    })];
    let policy = ctx.plugins.loaded("tier-quota").await.unwrap();
    quota.push(
        phase("host, this thread: store + instantiate + call", n, || {
            black_box(
                ctx.plugins
                    .evaluate_blocking(&policy, &tenant, &usage)
                    .unwrap()
                    .unwrap(),
            );
            async {}
        })
        .await,
    );
    quota.push(
        phase("host API (as the server calls it)", n, || async {
            black_box(
                ctx.plugins
                    .evaluate("tier-quota", &tenant, usage.clone())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        })
        .await,
    );
    quota.push(
        phase("host API, every call on the blocking pool", n, || async {
            black_box(
                pool_ctx
                    .plugins
                    .evaluate("tier-quota", &tenant, usage.clone())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        })
        .await,
    );

    // The same kind of policy in JavaScript (the scaffold of `plugin new --lang js`, built with
    // the pinned componentize-js of tests/js-plugin), when that toolchain is installed.
    let js_dir = tempfile::tempdir().expect("temp dir");
    let js = [
        (
            "js-quota",
            true,
            "JavaScript policy, host API, kept instance",
        ),
        (
            "js-fresh",
            false,
            "JavaScript policy, host API, fresh instance",
        ),
    ];
    let mut js_built = false;
    for (name, reuse, label) in js {
        let Some(wasm) = js_policy(js_dir.path(), name, reuse) else {
            break;
        };
        js_built = true;
        println!(
            "(the JavaScript policy is a component of {} bytes)",
            wasm.len()
        );
        tenantry::plugin_registry::install(&ctx, &tenantry::audit::Actor::system(), wasm)
            .await
            .expect("the JavaScript policy installs");
        let decision = ctx
            .plugins
            .evaluate(name, &tenant, usage.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(decision.metrics.len(), usage.len());
        let js_n = (n / 10).max(200);
        quota.push(
            phase(label, js_n, || async {
                black_box(
                    ctx.plugins
                        .evaluate(name, &tenant, usage.clone())
                        .await
                        .unwrap()
                        .unwrap(),
                );
            })
            .await,
        );
    }
    if !js_built {
        println!(
            "(no JavaScript toolchain in tests/js-plugin: run scripts/install-test-deps for the JavaScript policy)"
        );
    }

    let mut render = vec![plain_phase("plain Rust function", batches, || {
        black_box(plain_render(black_box(&template.body), black_box(&values)));
    })];
    render.push(
        phase("host API (as the server calls it)", n, || async {
            black_box(
                ctx.plugins
                    .render("template-renderer", template.clone(), values.clone())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        })
        .await,
    );
    render.push(
        phase("host API, every call on the blocking pool", n, || async {
            black_box(
                pool_ctx
                    .plugins
                    .render("template-renderer", template.clone(), values.clone())
                    .await
                    .unwrap()
                    .unwrap(),
            );
        })
        .await,
    );

    let client = reqwest::Client::new();
    let url = format!("http://{}/health", server.addr);
    let request = phase("bare actix-web request (GET /health)", n, || async {
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
    })
    .await;

    println!(
        "plugin calls, each in a fresh instance ({n} calls per phase; plain functions in \
         {batches} batches of 1,000); per call: minor page faults, context switches, TLB \
         shootdowns"
    );
    let (quota_api, render_api) = (quota[2].p50, render[1].p50);
    quota.push(request);
    print("quota-policy evaluation (tier-quota)", &quota);
    print("template rendering (template-renderer)", &render);
    let request = quota.last().expect("the request phase");
    println!(
        "\nthrough the host API, p50 against a bare request: quota {:.2}×, render {:.2}×",
        quota_api / request.p50,
        render_api / request.p50
    );
    let pool = ctx.plugins.pool();
    println!(
        "instance pool: {} memories kept warm, {} KiB resident; {} tables, {} KiB resident",
        pool.warm_memories,
        pool.resident_memory_bytes / 1024,
        pool.warm_tables,
        pool.resident_table_bytes / 1024
    );
    server.handle.stop(true).await;
}
