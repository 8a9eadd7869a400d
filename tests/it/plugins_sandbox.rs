//! The plugin host against real compiled components (built for wasm32-wasip2 by build.rs): the
//! built-in renderer and quota policy, and the `probe` test plugin that misbehaves on request.

use std::sync::Arc;

use crate::common::{Backend, TestApp, hold_writes};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::plugin_host::{
    CallError, PluginTenant, RenderError, Severity, Step, Template, Usage,
};
use tenantry::plugin_registry::{self as registry, Capability};

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tenant(slug: &str, tier: &str) -> PluginTenant {
    PluginTenant {
        id: format!("id-{slug}"),
        slug: slug.into(),
        name: slug.into(),
        tier: tier.parse().expect("a tier"),
        status: "active".into(),
    }
}

async fn with_probe(backend: Backend) -> TestApp {
    let app = TestApp::spawn(backend).await;
    registry::install(&app.ctx, &Actor::system(), wasm("probe"))
        .await
        .expect("probe installs");
    app
}

/// Grants the probe `host`.
async fn grant_host(app: &TestApp, host: &str) {
    registry::grant(
        &app.ctx,
        &Actor::system(),
        "probe",
        Capability::Host(host.into()),
    )
    .await
    .unwrap();
}

/// The probe's report, or the call's error.
async fn probe(app: &TestApp, slug: &str, request: Value) -> Result<Value, CallError> {
    let plan = app
        .ctx
        .plugins
        .plan("probe", &tenant(slug, "free"), request.to_string())
        .await?;
    let steps = plan.unwrap_or_else(|e| panic!("probe refused: {e:?}"));
    Ok(serde_json::from_str(&steps[0].input).unwrap())
}

fn uri_template(body: &str, placeholders: &[&str]) -> Template {
    Template {
        name: "pg".into(),
        body: body.into(),
        placeholders: placeholders.iter().map(|s| s.to_string()).collect(),
        format: "uri".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_renderer_percent_encodes_values_inside_a_uri() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let rendered = app
        .ctx
        .plugins
        .render(
            "template-renderer",
            uri_template(
                "postgresql://{user}:{password}@{host}:{port}/{database_name}",
                &["user", "password", "host", "port", "database_name"],
            ),
            vec![
                ("user".into(), "acme_user".into()),
                ("password".into(), "p@ss/w:rd#1".into()),
                ("host".into(), "db.example.com".into()),
                ("port".into(), "5432".into()),
                ("database_name".into(), "acme db".into()),
            ],
        )
        .await
        .expect("the call runs");
    assert_eq!(
        rendered.unwrap(),
        "postgresql://acme_user:p%40ss%2Fw%3Ard%231@db.example.com:5432/acme%20db"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_renderer_names_missing_undeclared_and_unexpected_placeholders() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let render = |template: Template, values: Vec<(&'static str, &'static str)>| {
        let app = &app;
        async move {
            app.ctx
                .plugins
                .render(
                    "template-renderer",
                    template,
                    values
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect(),
                )
                .await
                .expect("the call runs")
        }
    };
    let missing = render(
        uri_template("postgresql://{user}@{host}/db", &["user", "host"]),
        vec![("user", "u")],
    )
    .await;
    assert!(
        matches!(missing, Err(RenderError::Missing(ref names)) if names == &["host".to_string()]),
        "{missing:?}"
    );
    let undeclared = render(
        uri_template("postgresql://{user}@{host}/db", &["user"]),
        vec![("user", "u")],
    )
    .await;
    assert!(
        matches!(undeclared, Err(RenderError::Undeclared(ref names)) if names == &["host".to_string()]),
        "{undeclared:?}"
    );
    let unexpected = render(
        uri_template("postgresql://{user}/db", &["user"]),
        vec![("user", "u"), ("port", "1")],
    )
    .await;
    assert!(
        matches!(unexpected, Err(RenderError::Unexpected(ref names)) if names == &["port".to_string()]),
        "{unexpected:?}"
    );
    let json = render(
        Template {
            name: "j".into(),
            body: "{{\"name\": \"{name}\"}}".into(),
            placeholders: vec!["name".into()],
            format: "json".into(),
        },
        vec![("name", "say \"hi\"\n")],
    )
    .await;
    assert_eq!(json.unwrap(), "{\"name\": \"say \\\"hi\\\"\\n\"}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_quota_warns_at_80_is_critical_at_95_blocks_at_100_and_flags_at_risk_above_90() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let usage = |metric: &str, used: u64| Usage {
        metric: metric.into(),
        used,
        override_limit: None,
    };
    let decision = app
        .ctx
        .plugins
        .evaluate(
            "tier-quota",
            &tenant("acme", "starter"),
            vec![
                usage("users", 7),
                usage("agents", 80),
                usage("storage_gb", 9),
                usage("api_calls_per_minute", 950),
            ],
        )
        .await
        .expect("the call runs")
        .expect("a decision");
    let severities: Vec<Severity> = decision.metrics.iter().map(|m| m.severity).collect();
    assert_eq!(
        severities,
        vec![
            Severity::Ok,
            Severity::Warning,
            Severity::Warning,
            Severity::Critical
        ]
    );
    assert_eq!(decision.metrics[3].limit, Some(1000));
    assert!(decision.allowed);
    assert!(decision.at_risk, "950/1000 is above 90 %");

    let blocked = app
        .ctx
        .plugins
        .evaluate(
            "tier-quota",
            &tenant("acme", "free"),
            vec![Usage {
                metric: "users".into(),
                used: 1,
                override_limit: None,
            }],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blocked.metrics[0].severity, Severity::Blocked);
    assert!(!blocked.allowed);
    let overridden = app
        .ctx
        .plugins
        .evaluate(
            "tier-quota",
            &tenant("acme", "free"),
            vec![Usage {
                metric: "users".into(),
                used: 1,
                override_limit: Some(5),
            }],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(overridden.metrics[0].severity, Severity::Ok);
    assert!(!overridden.at_risk);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_loops_forever_is_stopped_at_its_deadline_while_the_server_keeps_answering() {
    let app = with_probe(Backend::Sqlite).await;
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", true, Some(1500))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let looping = {
        let ctx = app.ctx.clone();
        tokio::spawn(async move {
            ctx.plugins
                .plan(
                    "probe",
                    &tenant("acme", "free"),
                    json!({ "do": "loop" }).to_string(),
                )
                .await
        })
    };
    // Meanwhile the server answers.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..5 {
        let response = app.client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        !looping.is_finished(),
        "still looping while the server answered"
    );
    let err = looping.await.unwrap().expect_err("the loop is stopped");
    assert!(
        matches!(
            err,
            CallError::Deadline {
                deadline_ms: 1500,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("stopped at its deadline of 1500 ms (its own code ran past it)"),
        "{err}"
    );
    assert!(
        !err.waited_on_hosts(),
        "a loop in guest code is not a slow backend: it is not retried"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The host still works after it.
    let report = probe(&app, "acme", json!({ "do": "env" })).await.unwrap();
    assert_eq!(report["vars"], json!([]));

    // A call that spends its deadline waiting on a granted host that answers late is a slow
    // backend: it may answer next time.
    grant_host(&app, "127.0.0.1").await;
    let port = slow_server(std::time::Duration::from_millis(2_000));
    let err = app
        .ctx
        .plugins
        .plan(
            "probe",
            &tenant("acme", "free"),
            json!({ "do": "http", "url": format!("http://127.0.0.1:{port}/") }).to_string(),
        )
        .await
        .expect_err("stopped at the deadline once the answer came");
    assert!(err.waited_on_hosts(), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "ms of it waiting in host calls, longest on 127.0.0.1:{port} (HTTP)"
        )),
        "{err}"
    );
    app.stop().await;
}

/// A deadline covers the time a call spends in host calls: a sleep of two minutes and a host
/// that answers after a minute (which the plugin's request would wait 10 s for) both end at a
/// deadline of 1.5 s, and the error names what the call waited on, never "its own code".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_sleeps_and_slow_hosts_and_says_which_it_was() {
    let app = with_probe(Backend::Sqlite).await;
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", true, Some(1500))
        .await
        .unwrap();
    grant_host(&app, "127.0.0.1").await;
    let port = slow_server(std::time::Duration::from_secs(60));
    for (request, waited_on) in [
        (
            json!({ "do": "sleep", "ms": 120_000 }),
            "the clock (a sleep)".to_owned(),
        ),
        (
            json!({ "do": "http", "url": format!("http://127.0.0.1:{port}/") }),
            format!("127.0.0.1:{port} (HTTP)"),
        ),
    ] {
        let started = std::time::Instant::now();
        let err = app
            .ctx
            .plugins
            .plan("probe", &tenant("acme", "free"), request.to_string())
            .await
            .expect_err("stopped at the deadline");
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_millis(2_500),
            "{request}: the call took {took:?} under a deadline of 1.5 s"
        );
        let text = err.to_string();
        assert_eq!(
            err.waited_on_hosts(),
            !waited_on.contains("sleep"),
            "a slow host may answer next time (retried); a sleep will sleep again: {text}"
        );
        assert!(
            text.contains("stopped at its deadline of 1500 ms")
                && text.contains(&format!("longest on {waited_on}"))
                && !text.contains("its own code"),
            "{text}"
        );
    }
    app.stop().await;
}

/// A disable or a revoke cancels the calls of the plugin already running: a guest in its own
/// loop, a guest waiting on a host and a guest asleep all stop at once, long before their
/// deadline, and the error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_or_a_revoke_stops_the_calls_in_flight() {
    let app = with_probe(Backend::Sqlite).await;
    grant_host(&app, "127.0.0.1").await;
    let port = slow_server(std::time::Duration::from_secs(60));
    let call = |request: Value| {
        let ctx = app.ctx.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = ctx
                .plugins
                .plan("probe", &tenant("acme", "free"), request.to_string())
                .await;
            (result, started.elapsed())
        })
    };
    // Waiting on a host (the deadline is 30 s): the grant revoked.
    let waiting = call(json!({ "do": "http", "url": format!("http://127.0.0.1:{port}/") }));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished());
    registry::revoke(&app.ctx, &Actor::system(), "probe", "host", "127.0.0.1")
        .await
        .unwrap();
    let (result, took) = waiting.await.unwrap();
    let err = result.expect_err("cancelled");
    assert!(
        took < std::time::Duration::from_secs(3),
        "the revoke stopped it after {took:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin `probe` was stopped while it ran: its host grant `127.0.0.1` was revoked while the call ran"
    );
    // Its own loop, and a sleep on the clock: the plugin disabled.
    let looping = call(json!({ "do": "loop" }));
    let sleeping = call(json!({ "do": "sleep", "ms": 60_000 }));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!looping.is_finished() && !sleeping.is_finished());
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", false, None)
        .await
        .unwrap();
    for (what, task) in [("loop", looping), ("sleep", sleeping)] {
        let (result, took) = task.await.unwrap();
        let err = result.expect_err("cancelled");
        assert!(
            took < std::time::Duration::from_secs(3),
            "the disable stopped the {what} after {took:?}"
        );
        assert_eq!(
            err.to_string(),
            "plugin `probe` was stopped while it ran: it was disabled while the call ran",
            "{what}"
        );
    }
    app.stop().await;
}

/// What a plugin returns is capped: the steps of a plan, the input of a step, the bytes of a
/// result, the measurements of a report; each refusal names the cap, its setting and the
/// figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_plugin_returns_is_capped_and_the_refusal_names_the_cap() {
    let app = with_probe(Backend::Sqlite).await;
    let plan = |request: Value| {
        let ctx = app.ctx.clone();
        async move {
            ctx.plugins
                .plan("probe", &tenant("acme", "free"), request.to_string())
                .await
        }
    };
    let ok = plan(json!({ "do": "many-steps", "steps": 1000 })).await;
    assert_eq!(ok.unwrap().unwrap().len(), 1000, "at the cap: accepted");
    for (request, expected) in [
        (
            json!({ "do": "many-steps", "steps": 200_000 }),
            "returned a plan of 200000 steps, past the cap of 1000 steps (`plugins.max_plan_steps`)",
        ),
        (
            json!({ "do": "big-input", "bytes": 300_000 }),
            "returned step `big` with an input of 300008 bytes, past the cap of 262144 bytes (`plugins.max_step_input_bytes`)",
        ),
    ] {
        let err = plan(request).await.expect_err("refused");
        assert!(matches!(err, CallError::TooLarge { .. }), "{err}");
        assert_eq!(err.to_string(), format!("plugin `probe` {expected}"));
    }
    let err = app
        .ctx
        .plugins
        .measure("probe", &tenant("measure-101", "free"), Vec::new())
        .await
        .result
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("a measure report of 101 measurements, past the cap of 100 measurements (`plugins.max_measurements`)"),
        "{err}"
    );
    let report = app
        .ctx
        .plugins
        .measure("probe", &tenant("measure-3", "free"), Vec::new())
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(report.len(), 3);

    // A step's outcome is journaled: past its cap, nothing of it is kept.
    let apply = |bytes: usize| {
        let ctx = app.ctx.clone();
        async move {
            let step = Step {
                id: "out".into(),
                description: "an output".into(),
                input: json!({ "output_bytes": bytes }).to_string(),
            };
            ctx.plugins
                .apply("probe", &tenant("acme", "free"), step, "key".into())
                .await
                .result
        }
    };
    let at_cap = apply(262_144).await.unwrap().unwrap();
    assert_eq!(at_cap.output.len(), 262_144, "at the cap: accepted");
    let err = apply(12 << 20).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        "plugin `probe` returned an outcome of 12582912 bytes, past the cap of 262144 bytes (`plugins.max_step_output_bytes`)"
    );
    // A bundle part is one call's result.
    let export = |slug: &'static str| {
        let ctx = app.ctx.clone();
        async move {
            ctx.plugins
                .export_tenant("probe", &tenant(slug, "free"), Vec::new())
                .await
                .result
        }
    };
    let part = export("export-1000")
        .await
        .unwrap()
        .unwrap()
        .expect("a part");
    assert_eq!(part.data.len(), 1000);
    let err = export("export-5000000").await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        "plugin `probe` returned a bundle part of 5000000 bytes, past the cap of 4194304 bytes (`plugins.max_result_bytes`)"
    );
    app.stop().await;
}

/// A one-request HTTP server on 127.0.0.1 that answers after `delay`.
fn slow_server(delay: std::time::Duration) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            std::thread::sleep(delay);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// Sleeping and slow-host plugins do not hold the provisioning workers other tenants' runs need:
/// with two workers and three runs whose steps sleep or wait on a slow host, an honest
/// tenant's run is carried out at once, while those three are still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_plugins_never_hold_the_workers_another_tenants_run_needs() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.provisioning.workers = 2;
        c.provisioning.step_aside_ms = 300;
    })
    .await;
    registry::install(&app.ctx, &Actor::system(), wasm("probe"))
        .await
        .expect("probe installs");
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", true, Some(20_000))
        .await
        .unwrap();
    grant_host(&app, "127.0.0.1").await;
    let port = slow_server(std::time::Duration::from_secs(60));
    let provision = |slug: &str, settings: Value| {
        let body = json!({
            "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
            "backends": { "probe": settings },
        });
        let app = &app;
        async move {
            let (status, accepted) = app.post("/api/v1/tenant/provision", body).await;
            assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{accepted}");
            accepted["url"].as_str().expect("url").to_owned()
        }
    };
    let status = |url: String| {
        let app = &app;
        async move {
            app.get(&url).await.1["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let mut slow = Vec::new();
    for (slug, settings) in [
        (
            "sleeper-1",
            json!({ "do": "slow-apply", "sleep_ms": 60_000 }),
        ),
        (
            "sleeper-2",
            json!({ "do": "slow-apply", "sleep_ms": 60_000 }),
        ),
        (
            "waiter",
            json!({ "do": "slow-apply", "url": format!("http://127.0.0.1:{port}/") }),
        ),
    ] {
        slow.push(provision(slug, settings).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    let honest = provision("honest", json!({ "do": "log", "message": "hello" })).await;
    loop {
        let now = status(honest.clone()).await;
        if now == "succeeded" {
            break;
        }
        assert!(
            matches!(now.as_str(), "queued" | "running"),
            "the honest run ended {now}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the honest run waited {:?} behind slow plugins ({now})",
            started.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for url in slow {
        assert_eq!(
            status(url.clone()).await,
            "running",
            "{url}: still waiting on its plugin"
        );
    }
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", false, None)
        .await
        .unwrap();
    app.stop().await;
}

/// A quota policy or a renderer runs where it is called, within the inline budget (5 ms by
/// default); one that needs longer is run again, from a fresh instance, on the blocking pool
/// with its whole deadline, and its failure names that deadline, never the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_outruns_the_inline_budget_answers_within_its_deadline() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.install_test_plugin("flat_quota").await;
    let usage = || {
        vec![Usage {
            metric: "users".into(),
            used: 2,
            override_limit: None,
        }]
    };
    let evaluate = |slug: &'static str| {
        let ctx = app.ctx.clone();
        let usage = usage();
        async move {
            ctx.plugins
                .evaluate("flat-quota", &tenant(slug, "free"), usage)
                .await
        }
    };
    // Quick calls answer as they always did.
    for _ in 0..3 {
        let decision = evaluate("acme").await.unwrap().unwrap();
        assert_eq!(decision.metrics[0].limit, Some(3));
    }
    // 30 ms: past the 5 ms budget, well within the 100 ms deadline of a quota policy. It
    // answers, and counts as one call that took the whole time.
    let started = std::time::Instant::now();
    let decision = evaluate("slow-30").await.unwrap().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(30));
    assert_eq!(decision.metrics[0].severity, Severity::Warning);
    let stats = app.ctx.plugins.stats("flat-quota").await.unwrap();
    assert_eq!((stats.calls, stats.failures), (4, 0));
    assert!(stats.max_ms >= 30.0, "{stats:?}");
    // A loop is stopped at the policy's deadline, not at the budget.
    let err = evaluate("loop").await.expect_err("the loop is stopped");
    assert!(
        matches!(
            err,
            CallError::Deadline {
                deadline_ms: 100,
                ..
            }
        ),
        "{err}"
    );
    // Later calls still answer (on the blocking pool now).
    let decision = evaluate("acme").await.unwrap().unwrap();
    assert_eq!(decision.metrics[0].limit, Some(3));
    let stats = app.ctx.plugins.stats("flat-quota").await.unwrap();
    assert_eq!((stats.calls, stats.failures), (6, 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_grows_memory_past_its_limit_traps_or_panics_fails_cleanly() {
    let app = with_probe(Backend::Sqlite).await;
    let err = probe(&app, "acme", json!({ "do": "grow-memory" }))
        .await
        .expect_err("out of memory");
    assert!(
        matches!(err, CallError::OutOfMemory { limit_mib: 64, .. }),
        "{err}"
    );
    let err = probe(&app, "acme", json!({ "do": "trap" }))
        .await
        .expect_err("trap");
    assert!(matches!(err, CallError::Trapped { .. }), "{err}");
    assert!(
        err.to_string().contains("it overflowed its stack"),
        "deep recursion is a stack overflow: {err}"
    );
    // Overflowing the stack the compiler keeps in linear memory shows as an access out of
    // bounds; it is named for what it is.
    let err = probe(&app, "acme", json!({ "do": "stack-overflow" }))
        .await
        .expect_err("stack overflow");
    assert!(err.to_string().contains("it overflowed its stack"), "{err}");
    let err = probe(&app, "acme", json!({ "do": "exit" }))
        .await
        .expect_err("exit");
    // WASI 0.2's `exit` carries success or failure only: `exit(3)` arrives as a failure, and
    // the error says the code is lost rather than naming a status the plugin never gave.
    assert!(
        err.to_string().ends_with(
            "crashed: it exited with a failure status (WASI 0.2 carries no exit code: what it passed to `exit` is lost); a plugin returns its errors, it does not exit"
        ),
        "{err}"
    );
    let err = probe(&app, "acme", json!({ "do": "panic" }))
        .await
        .expect_err("panic");
    assert!(err.to_string().contains("panicked"), "{err}");
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200, "the server lives on");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reads_no_file_no_environment_and_opens_no_socket() {
    let app = with_probe(Backend::Sqlite).await;
    // SAFETY: no other thread of this test reads the environment meanwhile.
    unsafe { std::env::set_var("TENANTRY_PROBE_SECRET", "host-only") };
    let file = probe(&app, "acme", json!({ "do": "read-file" }))
        .await
        .unwrap();
    assert_eq!(file["read"], false, "{file}");
    let env = probe(&app, "acme", json!({ "do": "env" })).await.unwrap();
    assert_eq!(env["vars"], json!([]), "{env}");
    assert_eq!(env["args"], json!([]), "{env}");
    let socket = probe(&app, "acme", json!({ "do": "socket" }))
        .await
        .unwrap();
    assert_eq!(socket["connected"], false, "{socket}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reaches_only_granted_hosts_and_secrets_only_granted_ones() {
    let app = with_probe(Backend::Sqlite).await;
    let url = app.url("/health");
    let refused = probe(&app, "acme", json!({ "do": "http", "url": url }))
        .await
        .unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("NotGranted"),
        "{refused}"
    );
    // The refusal names the host with its port, and what is granted.
    let port = url::Url::parse(&url).unwrap().port().unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains(&format!(
            "127.0.0.1:{port} is not granted to plugin `probe` (granted: none)"
        )),
        "{refused}"
    );
    grant_host(&app, "127.0.0.1").await;
    let fetched = probe(&app, "acme", json!({ "do": "http", "url": url }))
        .await
        .unwrap();
    assert_eq!(fetched["status"], 200, "{fetched}");
    // https is spoken (the server here answers plain HTTP, so the TLS handshake fails).
    let tls = probe(
        &app,
        "acme",
        json!({ "do": "http", "url": url.replace("http://", "https://") }),
    )
    .await
    .unwrap();
    let tls_error = tls["error"].as_str().unwrap();
    assert!(
        tls_error.contains("Connection") && tls_error.contains("InvalidContentType"),
        "a TLS handshake: {tls}"
    );
    let other_host = probe(
        &app,
        "acme",
        json!({ "do": "http", "url": url.replace("127.0.0.1", "127.0.0.2") }),
    )
    .await
    .unwrap();
    assert!(
        other_host["error"].as_str().unwrap().contains(&format!(
            "127.0.0.2:{port} is not requested by plugin `probe` in its manifest (requested: 127.0.0.1, localhost)"
        )),
        "{other_host}"
    );
    let not_requested = registry::grant(
        &app.ctx,
        &Actor::system(),
        "probe",
        Capability::Host("example.com".into()),
    )
    .await;
    let message = not_requested
        .expect_err("a host the manifest does not request cannot be granted")
        .to_string();
    assert!(
        message.contains("does not request host `example.com` (it requests: 127.0.0.1, localhost)"),
        "{message}"
    );
    // `*` is a manifest's request, never a grant, and the refusal says so.
    let star = registry::grant(
        &app.ctx,
        &Actor::system(),
        "probe",
        Capability::Host("*".into()),
    )
    .await
    .expect_err("`*` is not a grant")
    .to_string();
    assert!(star.contains("must name one host"), "{star}");

    let secret = probe(
        &app,
        "acme",
        json!({ "do": "secret", "name": "probe-token" }),
    )
    .await
    .unwrap();
    assert!(
        secret["error"].as_str().unwrap().contains("not granted"),
        "{secret}"
    );
    registry::grant(
        &app.ctx,
        &Actor::system(),
        "probe",
        Capability::Secret {
            name: "probe-token".into(),
            value: "s3cr3t-token".into(),
        },
    )
    .await
    .unwrap();
    let secret = probe(
        &app,
        "acme",
        json!({ "do": "secret", "name": "probe-token" }),
    )
    .await
    .unwrap();
    assert_eq!(secret["value"], "s3cr3t-token");
    let other = probe(
        &app,
        "acme",
        json!({ "do": "secret", "name": "other-token" }),
    )
    .await
    .unwrap();
    assert!(
        other["error"].as_str().unwrap().contains("not granted"),
        "{other}"
    );
    let unknown = probe(
        &app,
        "acme",
        json!({ "do": "secret", "name": "db-password" }),
    )
    .await
    .unwrap();
    assert!(
        unknown["error"].as_str().unwrap().contains("not requested"),
        "{unknown}"
    );
    app.stop().await;
}

async fn concurrent_calls_for_different_tenants_never_see_each_others_state(backend: Backend) {
    let app = Arc::new(with_probe(backend).await);
    let mut calls = Vec::new();
    for i in 0..100 {
        let app = app.clone();
        calls.push(tokio::spawn(async move {
            let slug = format!("tenant-{i:03}");
            let report = probe(
                &app,
                &slug,
                json!({ "do": "state", "value": format!("value of {slug}") }),
            )
            .await
            .unwrap();
            (slug, report)
        }));
    }
    for call in calls {
        let (slug, report) = call.await.unwrap();
        assert_eq!(report["tenant"], slug.as_str());
        assert_eq!(report["read"], format!("value of {slug}"), "{report}");
        assert_eq!(
            report["keys"],
            json!(["mine"]),
            "only its own keys: {report}"
        );
    }
    Arc::try_unwrap(app).ok().expect("last owner").stop().await;
}

/// A state write that waits on the database (another connection holds what it needs) ends at
/// the call's deadline, writes nothing, and the error names the wait.
async fn a_state_write_waiting_on_the_database_ends_at_the_deadline(backend: Backend) {
    let app = with_probe(backend).await;
    registry::set_enabled(&app.ctx, &Actor::system(), "probe", true, Some(1500))
        .await
        .unwrap();
    let hold = hold_writes(&app, "plugin_state").await;
    let started = std::time::Instant::now();
    let err = probe(&app, "acme", json!({ "do": "state", "value": "late" }))
        .await
        .expect_err("stopped at the deadline");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(3_000),
        "the call took {took:?} under a deadline of 1.5 s"
    );
    let text = err.to_string();
    assert!(
        text.contains("stopped at its deadline of 1500 ms")
            && text.contains("longest on its state (the database)")
            && !text.contains("its own code"),
        "{text}"
    );
    drop(hold);
    // Nothing of the write stayed, and the state works again.
    let mut conn = app.ctx.db.conn().await.unwrap();
    let stored = tenantry::store::plugins::state_get(&mut conn, "probe", "id-acme", "mine")
        .await
        .unwrap();
    drop(conn);
    assert_eq!(stored, None, "the cut write left a value behind");
    let report = probe(&app, "acme", json!({ "do": "state", "value": "next" }))
        .await
        .unwrap();
    assert_eq!(report["read"], "next", "{report}");
    app.stop().await;
}

backend_tests!(
    concurrent_calls_for_different_tenants_never_see_each_others_state,
    a_state_write_waiting_on_the_database_ends_at_the_deadline,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wrong_world_and_unsupported_wit_components_are_refused_clearly() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let actor = Actor::system();
    let corrupt = registry::install(&app.ctx, &actor, b"\0asm\x0d\0\x01\0garbage".to_vec())
        .await
        .unwrap_err();
    assert!(
        corrupt.to_string().contains("not a WebAssembly component"),
        "{corrupt}"
    );
    let not_wasm = registry::install(&app.ctx, &actor, b"hello".to_vec())
        .await
        .unwrap_err();
    assert!(
        not_wasm.to_string().contains("not WebAssembly"),
        "{not_wasm}"
    );
    let old = registry::install(&app.ctx, &actor, wasm("renderer_old_wit"))
        .await
        .unwrap_err();
    assert!(
        old.to_string()
            .contains("built for WIT version 0.0.9; this server supports 0.2.0, 0.1.0"),
        "{old}"
    );
    // A quota policy called as a renderer.
    let wrong = app
        .ctx
        .plugins
        .render("tier-quota", uri_template("x", &[]), vec![])
        .await
        .unwrap_err();
    assert!(
        wrong
            .to_string()
            .contains("is a quota-policy plugin, not a renderer"),
        "{wrong}"
    );
    // A built-in cannot be replaced by an installed plugin of the same name.
    let mut renamed = wasm("tier_quota");
    renamed.extend_from_slice(b"");
    let builtin = registry::install(&app.ctx, &actor, renamed)
        .await
        .unwrap_err();
    assert!(builtin.to_string().contains("built-in"), "{builtin}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_plugins_describe_themselves_and_output_goes_to_the_log_capped() {
    let app = with_probe(Backend::Sqlite).await;
    for name in ["superset", "airflow", "crm", "postgres"] {
        // Backend plugins start disabled until an operator has granted them their backend.
        registry::set_enabled(&app.ctx, &Actor::system(), name, true, None)
            .await
            .unwrap();
        let info = app.ctx.plugins.describe(name).await.unwrap();
        assert_eq!(info.name, name);
        assert_eq!(info.version, "0.2.0");
        assert!(!info.description.is_empty());
    }
    let printed = probe(&app, "acme", json!({ "do": "print" })).await.unwrap();
    assert_eq!(
        printed["printed"], true,
        "writing past the output cap does not fail the call"
    );
    let stats = app.ctx.plugins.stats("probe").await.unwrap();
    assert_eq!(stats.calls, 1);

    // `println!` panics on a failed write; past the cap, writes succeed and are dropped, and
    // the log says how much was.
    let logged = app
        .ctx
        .plugins
        .plan_logged(
            "probe",
            &tenant("acme", "free"),
            json!({ "do": "println" }).to_string(),
        )
        .await;
    let steps = logged
        .result
        .expect("the call succeeds")
        .expect("the probe answers");
    let answer: Value = serde_json::from_str(&steps[0].input).unwrap();
    assert_eq!(answer["printed"], true);
    let kept = logged
        .log
        .iter()
        .filter(|l| l.level == "stdout" && l.message.starts_with("println line"))
        .count();
    assert!(kept > 0 && kept <= 64, "{kept} lines kept");
    let note = logged
        .log
        .iter()
        .find(|l| l.message.contains("more bytes of stdout dropped"))
        .unwrap_or_else(|| panic!("no note of the dropped output in {:?}", logged.log.last()));
    let written: usize = (0..2_000)
        .map(|i| format!("println line {i} {}\n", "y".repeat(100)).len())
        .sum();
    let dropped: usize = note.message[1..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(dropped, written - 16 * 1024, "{}", note.message);
    app.stop().await;
}

/// A one-route HTTP server on 127.0.0.1 that redirects every request to `location`.
fn redirecting_server(location: impl Fn(u16) -> String + Send + 'static) -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let reply = format!(
                "HTTP/1.1 302 Found\r\nLocation: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                location(port)
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

/// A granted name is resolved by the host, and one that lands on an internal address (here
/// `localhost`, as a name rebound to 127.0.0.1 or 169.254.169.254 would) is refused unless that
/// address itself is granted. `Host` and hop-by-hop headers are the host's: a plugin's own would
/// reach another virtual host behind the granted address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_on_an_internal_address_is_reached_only_through_a_grant_of_that_address() {
    let app = with_probe(Backend::Sqlite).await;
    let port = url::Url::parse(&app.url("/health"))
        .unwrap()
        .port()
        .unwrap();
    let by_name = format!("http://localhost:{port}/health");
    grant_host(&app, "localhost").await;
    let refused = probe(&app, "acme", json!({ "do": "http", "url": by_name }))
        .await
        .unwrap();
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("NotGranted") && error.contains("resolves to the internal address"),
        "{refused}"
    );
    grant_host(&app, "127.0.0.1").await;
    let fetched = probe(&app, "acme", json!({ "do": "http", "url": by_name }))
        .await
        .unwrap();
    assert_eq!(
        fetched["status"], 200,
        "the address granted as such: {fetched}"
    );
    for header in ["Host", "Connection", "Transfer-Encoding", "Upgrade"] {
        let refused = probe(
            &app,
            "acme",
            json!({ "do": "http", "url": app.url("/health"), "headers": { header: "x" } }),
        )
        .await
        .unwrap();
        let error = refused["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("Invalid") && error.contains("written by the host"),
            "{header}: {refused}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_host_not_granted_is_refused() {
    let app = with_probe(Backend::Sqlite).await;
    grant_host(&app, "127.0.0.1").await;
    let port = redirecting_server(|port| format!("http://localhost:{port}/elsewhere"));
    let report = probe(
        &app,
        "acme",
        json!({ "do": "http", "url": format!("http://127.0.0.1:{port}/start") }),
    )
    .await
    .unwrap();
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("NotGranted") && error.contains("localhost"),
        "{report}"
    );
    // A redirect to a granted host is followed.
    let health = app.url("/health");
    let port = redirecting_server(move |_| health.clone());
    let report = probe(
        &app,
        "acme",
        json!({ "do": "http", "url": format!("http://127.0.0.1:{port}/start") }),
    )
    .await
    .unwrap();
    assert_eq!(report["status"], 200, "{report}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_plugins_are_cached_on_disk_for_the_next_start() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let cache = app.dir.path().join("plugin-cache");
    let count = || {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(count(), 0, "nothing is compiled before it is used");
    registry::set_enabled(&app.ctx, &Actor::system(), "superset", true, None)
        .await
        .unwrap();
    app.ctx.plugins.describe("superset").await.unwrap();
    assert_eq!(count(), 1);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "compiled code is trusted: only the owner may write it"
    );
    // A new host (a restart) loads the compiled code instead of compiling again.
    let services = tenantry::plugin_host::HostServices::new(
        app.ctx.db.clone(),
        app.ctx.keyring.clone(),
        app.ctx.config.plugins.clone(),
        app.ctx.metrics.clone(),
    );
    let host =
        Arc::new(tenantry::plugin_host::PluginHost::new(services, Some(cache.clone())).unwrap());
    let plugin = app.ctx.plugins.loaded("superset").await.unwrap();
    let reloaded = host.loaded("superset").await.unwrap();
    let cached_file = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(Result::ok)
        .next()
        .unwrap()
        .path();
    let written = std::fs::metadata(&cached_file).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    host.prepare(&reloaded).unwrap();
    assert_eq!(count(), 1);
    assert_eq!(
        std::fs::metadata(&cached_file).unwrap().modified().unwrap(),
        written,
        "the cached compilation was used, not rewritten"
    );
    let info = host.describe("superset").await.unwrap();
    assert_eq!(info.name, "superset", "the cached code runs");
    assert_eq!(plugin.inspection.sha256, reloaded.inspection.sha256);
    app.stop().await;
}
