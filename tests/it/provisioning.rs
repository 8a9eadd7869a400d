//! Templates and the provisioning saga through the HTTP API, against SQLite and PostgreSQL, with
//! real compiled plugins: the built-in renderer and the `recorder` test plugin, whose backend is
//! a recording test double (`common::recorder`) that counts every creation.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::recorder::RecorderBackend;
use crate::common::{Backend, TestApp, field_rules};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::auth::Role;
use tenantry::plugin_registry::{self as registry, Capability};

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A server with the recorder plugin installed, granted its test double, and fast retries.
async fn with_recorder(backend: Backend) -> (TestApp, RecorderBackend) {
    with_recorder_and(backend, |_| {}).await
}

async fn with_recorder_and(
    backend: Backend,
    adjust: impl FnOnce(&mut tenantry::config::Config),
) -> (TestApp, RecorderBackend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.provisioning.backoff_base_ms = 50;
        c.provisioning.backoff_max_ms = 200;
        c.provisioning.max_attempts = 3;
        c.provisioning.poll_interval_ms = 100;
        adjust(c);
    })
    .await;
    let double = RecorderBackend::start().await;
    let actor = Actor::system();
    registry::install(&app.ctx, &actor, wasm("recorder"))
        .await
        .expect("recorder installs");
    let host = double.url.trim_start_matches("http://").to_owned();
    registry::grant(&app.ctx, &actor, "recorder", Capability::Host(host))
        .await
        .expect("host granted");
    registry::grant(
        &app.ctx,
        &actor,
        "recorder",
        Capability::Secret {
            name: "recorder-url".into(),
            value: double.url.clone(),
        },
    )
    .await
    .expect("secret granted");
    (app, double)
}

async fn postgres_template(app: &TestApp) {
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({
                "name": "postgresql-default",
                "kind": "connection",
                "body": "postgresql://{user}:{password}@{host}:{port}/{database_name}",
                "placeholders": ["user", "password", "host", "port", "database_name"],
                "tags": ["default"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn option_a(slug: &str, settings: Value) -> Value {
    json!({
        "tenant": {
            "slug": slug,
            "name": format!("Tenant {slug}"),
            "oauth_issuer": "https://idp.example.com/oauth2/default",
            "client_id": "client-1",
            "client_secret": "s3cret-client",
            "default_schema": "acme_schema",
        },
        "connection_template": {
            "use_admin_template": true,
            "template_name": "postgresql-default",
            "placeholders": {
                "user": "acme_user",
                "password": "p@ss/word",
                "host": "db.example.com",
                "port": 5432,
                "database_name": "acme_db",
            },
        },
        "tier": "professional",
        "backends": { "recorder": settings },
    })
}

/// A server with the recorder backend and the PostgreSQL template, and tenant `slug`
/// provisioned into it (Option A).
async fn provisioned(backend: Backend, slug: &str) -> (TestApp, RecorderBackend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let run = provision(&app, option_a(slug, json!({}))).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    (app, double)
}

/// Polls the run until it has finished.
async fn wait_run(app: &TestApp, url: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, run) = app.get(url).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if !matches!(
            run["status"].as_str(),
            Some("queued" | "running" | "compensating")
        ) {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn provision(app: &TestApp, body: Value) -> Value {
    let (status, accepted) = app.post("/api/v1/tenant/provision", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    wait_run(app, accepted["url"].as_str().expect("url")).await
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

/// The resource of step `id` in a tenant's resources as the API lists them.
fn resource<'a>(resources: &'a Value, id: &str) -> &'a Value {
    resources
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["step"] == id)
        .unwrap_or_else(|| panic!("no resource of step {id} in {resources}"))
}

/// The renderer world has a way in: an installation names the renderer its templates go
/// through (`plugins.template_renderer`), here a third party's that writes values in capitals;
/// a template is checked with it when saved and rendered with it. Until it is installed, a
/// rendering fails naming it.
async fn an_installation_renders_its_templates_through_a_renderer_of_its_own(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.plugins.template_renderer = "shout-renderer".into();
    })
    .await;
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "greeting", "kind": "asset", "body": "hello {who}", "placeholders": ["who"] }),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.to_string()
            .contains("`shout-renderer` (`plugins.template_renderer`)"),
        "{body}"
    );
    app.install_test_plugin("shout_renderer").await;
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "greeting", "kind": "asset", "body": "hello {who}", "placeholders": ["who"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/template/greeting/render",
            json!({ "values": { "who": "acme corp" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["rendered"], "hello ACME CORP",
        "rendered by the third party's renderer"
    );
    app.stop().await;
}

async fn templates_are_versioned_and_validated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    postgres_template(&app).await;

    // Rendering escapes values for a URI and names what is missing or undeclared.
    let (status, body) = app
        .post(
            "/api/v1/template/postgresql-default/render",
            json!({ "values": { "user": "u", "password": "p@ss/w:rd", "host": "h", "port": 5432, "database_name": "d" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rendered"], "postgresql://u:p%40ss%2Fw%3Ard@h:5432/d");
    assert_eq!(body["version"], 1);
    assert!(body["fingerprint"].as_str().unwrap().starts_with("sha256:"));
    let (status, body) = app
        .post(
            "/api/v1/template/postgresql-default/render",
            json!({ "values": { "user": "u", "host": "h", "port": 1, "database_name": "d", "colour": "red" } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let rules = field_rules(&body);
    assert!(
        rules.contains(&("values.password".into(), "missing".into())),
        "{rules:?}"
    );

    // A body slot that is not declared is refused when the template is saved.
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "broken", "kind": "connection", "body": "mysql://{user}@{host}", "placeholders": ["user"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![("body".to_owned(), "undeclared_placeholder".to_owned())]
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("{host}")
    );
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "Bad Name", "kind": "thing", "body": "" , "placeholders": ["1x"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let rules = field_rules(&body);
    for expected in [
        ("name", "format"),
        ("kind", "one_of"),
        ("body", "required"),
        ("placeholders[0]", "identifier"),
    ] {
        assert!(
            rules.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} not in {rules:?}"
        );
    }
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "new", "kind": "asset", "body": "x", "placeholders": [] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![("name".to_owned(), "reserved".to_owned())]
    );
    let (_, list) = app.get("/api/v1/template").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing else stored");

    // A SQL literal: quotes are doubled, and a backslash (which would escape the closing quote
    // where standard_conforming_strings is off, and in MySQL) is refused, naming the
    // placeholder and never showing the value.
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "grant-sql", "kind": "asset", "format": "sql-literal",
                    "body": "ALTER ROLE x PASSWORD '{password}'", "placeholders": ["password"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/template/grant-sql/render",
            json!({ "values": { "password": "it's" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rendered"], "ALTER ROLE x PASSWORD 'it''s'");
    let (status, body) = app
        .post(
            "/api/v1/template/grant-sql/render",
            json!({ "values": { "password": "s3cret\\'; DROP ROLE y; --" } }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("`password` holds a backslash"), "{text}");
    assert!(!text.contains("s3cret"), "the value is not shown: {text}");

    // Same name twice: 409.
    let (status, _) = app
        .post(
            "/api/v1/template",
            json!({ "name": "postgresql-default", "kind": "connection", "body": "x", "placeholders": [] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // An edit makes a new version; the old one stays readable; an identical edit makes none.
    let edit = json!({
        "body": "postgresql://{user}:{password}@{host}:{port}/{database_name}?sslmode=require",
        "placeholders": ["user", "password", "host", "port", "database_name"],
        "tags": ["default", "secure"],
    });
    let (status, v2) = app
        .call(
            Method::PUT,
            "/api/v1/template/postgresql-default",
            Some(edit.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    let (status, same) = app
        .call(
            Method::PUT,
            "/api/v1/template/postgresql-default",
            Some(edit),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["version"], 2);
    let (_, v1) = app
        .get("/api/v1/template/postgresql-default?version=1")
        .await;
    assert!(!v1["body"].as_str().unwrap().contains("sslmode"));
    assert_eq!(v1["latest_version"], 2);
    let (_, versions) = app
        .get("/api/v1/template/postgresql-default/versions")
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let (_, tagged) = app.get("/api/v1/template?tag=secure").await;
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/v1/template/postgresql-default",
            Some(json!({ "kind": "asset", "body": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_rules(&body).contains(&("kind".into(), "immutable".into())));

    // A viewer reads templates but cannot change them.
    let viewer = app.token_with_role("viewer", Role::PlatformViewer).await;
    let response = app
        .client
        .get(app.url("/api/v1/template"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .client
        .delete(app.url("/api/v1/template/postgresql-default"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (status, _) = app.delete("/api/v1/template/postgresql-default").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/template/postgresql-default").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn provisions_through_the_saga_and_replays_by_key(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let body = option_a("acme-corp", json!({}));
    let response = app
        .request(Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "provision-acme-corp-2026-11-24")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["url"], location);
    assert_eq!(
        accepted["steps"],
        json!([
            "recorder/alpha",
            "recorder/beta",
            "recorder/gamma",
            "recorder/validate"
        ])
    );
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert!(
        matches!(tenant["status"].as_str(), Some("provisioning" | "active")),
        "{tenant}"
    );

    let run = wait_run(&app, &location).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["executions"], 1);
    for id in ["alpha", "beta", "gamma"] {
        let s = step(&run, id);
        assert_eq!(s["state"], "done", "{s}");
        assert_eq!(s["attempts"], 1);
        assert!(s["duration_ms"].as_i64().is_some());
        assert!(
            s["log"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["message"].as_str().unwrap().contains("created")),
            "{s}"
        );
        assert_eq!(double.creations(&format!("acme-corp-{id}")), 1);
    }
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["status"], "active", "{tenant}");
    assert_eq!(tenant["tier"], "professional");

    // Each resource records the template version and input fingerprint that produced it.
    let (_, resources) = app.get("/api/v1/tenant/acme-corp/resources").await;
    let resources = resources.as_array().unwrap();
    assert_eq!(resources.len(), 3);
    let alpha = resources.iter().find(|r| r["step"] == "alpha").unwrap();
    assert_eq!(alpha["template"], "postgresql-default");
    assert_eq!(alpha["template_version"], 1);
    assert!(
        alpha["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The same key and body: the first answer, replayed; nothing new is created.
    let response = app
        .request(Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "provision-acme-corp-2026-11-24")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let replayed: Value = response.json().await.unwrap();
    // The first answer, with the run's status as it is now (the first said `queued`).
    assert_eq!(accepted["status"], "queued");
    assert_eq!(replayed["status"], "succeeded", "{replayed}");
    let mut as_first = replayed.clone();
    as_first["status"] = accepted["status"].clone();
    assert_eq!(as_first, accepted);
    // The key in the body works the same.
    let mut with_field = body.clone();
    with_field["idempotency_key"] = json!("provision-acme-corp-2026-11-24");
    let (status, _) = app.post("/api/v1/tenant/provision", with_field).await;
    // (a different body: the field is part of it)
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Same key, another body: 422 naming the key.
    let mut other = body.clone();
    other["tier"] = json!("enterprise");
    let response = app
        .request(Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "provision-acme-corp-2026-11-24")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        field_rules(&error),
        vec![("idempotency_key".to_owned(), "reused".to_owned())]
    );
    // Without a key, the same slug is taken.
    let (status, _) = app.post("/api/v1/tenant/provision", body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(double.creations("acme-corp-alpha"), 1);

    // Secrets of the request never reach a run, a resource or the database in clear.
    let (_, runs) = app.get("/api/v1/provisioning?tenant=acme-corp").await;
    let text = runs.to_string() + &serde_json::to_string(resources).unwrap();
    assert!(!text.contains("p@ss/word") && !text.contains("p%40ss%2Fword"));
    assert!(!text.contains("s3cret-client"));
    if backend == Backend::Sqlite {
        let bytes = app.sqlite_bytes();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(
            !hay.contains("p%40ss%2Fword"),
            "rendered URI stored in clear"
        );
    }
    double.stop().await;
    app.stop().await;
}

async fn retry_while_running_is_a_conflict_and_concurrent_requests_make_one_run(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    // Two transient failures keep the run going for a while (backoff 50 ms, 100 ms).
    let body = option_a(
        "slowco",
        json!({ "fail": { "step": "alpha", "kind": "transient", "times": 2 } }),
    );
    let send = || {
        app.request(Method::POST, "/api/v1/tenant/provision")
            .header("Idempotency-Key", "slowco-1")
            .json(&body)
            .send()
    };
    let responses = futures_util::future::join_all((0..6).map(|_| send())).await;
    let mut runs = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for response in responses {
        let response = response.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        match status {
            StatusCode::ACCEPTED => {
                accepted += 1;
                runs.insert(value["run"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(value["error"]["code"], "run_in_progress", "{value}");
                runs.insert(
                    value["error"]["details"]["run"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                assert!(
                    value["error"]["details"]["url"]
                        .as_str()
                        .unwrap()
                        .starts_with("/api/v1/provisioning/")
                );
            }
            other => panic!("unexpected {other}: {value}"),
        }
    }
    assert!(accepted >= 1);
    assert_eq!(runs.len(), 1, "exactly one run: {runs:?}");
    let (_, list) = app.get("/api/v1/provisioning?tenant=slowco").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let url = format!("/api/v1/provisioning/{}", runs.iter().next().unwrap());
    let run = wait_run(&app, &url).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let alpha = step(&run, "alpha");
    assert_eq!(alpha["attempts"], 3, "two transient failures, then success");
    assert!(
        alpha["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("busy")),
        "{alpha}"
    );
    assert_eq!(double.creations("slowco-alpha"), 1);
    // After the run, a retry replays.
    let response = send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    double.stop().await;
    app.stop().await;
}

async fn a_permanent_failure_compensates_in_reverse(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let run = provision(
        &app,
        option_a(
            "refused",
            json!({
                "steps": ["alpha", "beta", "gamma", "delta"],
                "fail": { "step": "gamma", "kind": "permanent" },
                "undo_follow_up": "alpha",
            }),
        ),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("duplicate name"),
        "{run}"
    );
    assert_eq!(step(&run, "alpha")["state"], "compensated");
    assert_eq!(
        step(&run, "alpha")["manual_follow_up"],
        "archive the audit trail of refused-alpha by hand"
    );
    assert_eq!(
        run["manual_follow_ups"],
        json!(["recorder / alpha: archive the audit trail of refused-alpha by hand"])
    );
    assert_eq!(step(&run, "beta")["state"], "compensated");
    assert_eq!(step(&run, "gamma")["state"], "failed");
    assert_eq!(step(&run, "gamma")["attempts"], 1, "permanent: no retry");
    assert_eq!(step(&run, "delta")["state"], "pending", "never started");
    assert!(double.names().is_empty(), "{:?}", double.names());
    assert_eq!(double.creations("refused-alpha"), 1);
    let (_, tenant) = app.get("/api/v1/tenant/refused").await;
    assert_eq!(tenant["status"], "failed");
    assert!(
        tenant["status_reason"]
            .as_str()
            .unwrap()
            .contains("duplicate name"),
        "{tenant}"
    );
    let (_, resources) = app.get("/api/v1/tenant/refused/resources").await;
    assert_eq!(resources, json!([]));
    let (_, metrics) = {
        let response = app.client.get(app.url("/metrics")).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert!(
        metrics.contains(
            "tenantry_provisioning_step_failures_total{kind=\"permanent\",plugin=\"recorder\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "tenantry_provisioning_duration_seconds_count{kind=\"provision\",outcome=\"failed\"} 1"
    ));
    assert!(
        metrics.contains(
            "tenantry_provisioning_runs_ended_total{kind=\"provision\",outcome=\"failed\"} 1"
        ),
        "{metrics}"
    );
    // The process and its connection pool.
    for series in [
        "tenantry_db_pool_connections{state=\"in_use\"}",
        "tenantry_db_pool_max_connections",
        "tenantry_db_pool_waiting",
        "tenantry_db_pool_waits_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(series), "{series} missing: {metrics}");
    }
    double.stop().await;
    app.stop().await;
}

async fn a_backend_that_stays_down_is_retried_then_compensated(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;

    // The whole backend is down: the first step is tried max_attempts times, then the run fails
    // with nothing to undo.
    double.set_down(true);
    let run = provision(&app, option_a("downco", json!({}))).await;
    assert_eq!(run["status"], "failed", "{run}");
    let alpha = step(&run, "alpha");
    assert_eq!(alpha["state"], "failed");
    assert_eq!(alpha["attempts"], 3, "max_attempts");
    assert!(alpha["error"].as_str().unwrap().contains("503"), "{alpha}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{run}"
    );
    assert!(double.names().is_empty());
    double.set_down(false);

    // The part of the backend that holds the second resource is down: the first resource is
    // created, the second retried until the attempts run out, then the first is undone.
    double.set_down_for(Some("partco-beta"));
    let run = provision(&app, option_a("partco", json!({}))).await;
    assert_eq!(run["status"], "failed", "{run}");
    let beta = step(&run, "beta");
    assert_eq!(beta["state"], "failed");
    assert_eq!(beta["attempts"], 3);
    let alpha = step(&run, "alpha");
    assert_eq!(alpha["state"], "compensated");
    // A compensated step's times are its compensation's, after beta gave up, not the span
    // since alpha was applied (which counts beta's retries).
    assert!(
        alpha["started_at"].as_str().unwrap() >= beta["finished_at"].as_str().unwrap(),
        "{run}"
    );
    assert!(
        alpha["duration_ms"].as_i64().unwrap() < beta["duration_ms"].as_i64().unwrap(),
        "{run}"
    );
    assert_eq!(step(&run, "gamma")["state"], "pending");
    assert_eq!(double.creations("partco-alpha"), 1);
    assert!(!double.exists("partco-alpha"));
    let (_, tenant) = app.get("/api/v1/tenant/partco").await;
    assert_eq!(tenant["status"], "failed");

    // The way forward: once the backend is back, a retry provisions the failed tenant again
    // from the request it was provisioned with, and it becomes active. Its slug stays its own
    // meanwhile; a tenant that is not failed cannot be retried.
    let (status, body) = app
        .post("/api/v1/tenant/provision", option_a("partco", json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    double.set_down_for(None);
    let (status, accepted) = app
        .post("/api/v1/tenant/partco/provision/retry", json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["steps"],
        json!([
            "recorder/alpha",
            "recorder/beta",
            "recorder/gamma",
            "recorder/validate"
        ])
    );
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "provision");
    assert!(double.exists("partco-alpha") && double.exists("partco-beta"));
    let (_, tenant) = app.get("/api/v1/tenant/partco").await;
    assert_eq!(tenant["status"], "active", "{tenant}");
    let (status, body) = app
        .post("/api/v1/tenant/partco/provision/retry", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it is active, not failed"),
        "{body}"
    );
    let (_, audit) = app.get("/api/v1/audit?tenant=partco").await;
    assert!(
        audit.to_string().contains("tenant.provision_retry"),
        "{audit}"
    );
    double.stop().await;
    app.stop().await;
}

async fn bad_requests_change_nothing(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let mut missing = option_a("nothing", json!({}));
    missing["connection_template"]["placeholders"]
        .as_object_mut()
        .unwrap()
        .remove("password");
    missing["connection_template"]["placeholders"]["colour"] = json!("red");
    let (status, body) = app.post("/api/v1/tenant/provision", missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        field_rules(&body).contains(&(
            "connection_template.placeholders.password".into(),
            "missing".into()
        )),
        "{body}"
    );
    let mut bad = option_a("Not A Slug", json!({}));
    bad["backends"] = json!({ "nope": {}, "template-renderer": {} });
    bad["tier"] = json!("platinum");
    let (status, body) = app.post("/api/v1/tenant/provision", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let rules = field_rules(&body);
    for expected in [("tenant.slug", "charset"), ("tier", "one_of")] {
        assert!(
            rules.iter().any(|r| r.0 == expected.0),
            "{expected:?} not in {rules:?}"
        );
    }
    let mut bad = option_a("fine-slug", json!({}));
    bad["backends"] = json!({ "nope": {}, "template-renderer": {} });
    let (status, body) = app.post("/api/v1/tenant/provision", bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let rules = field_rules(&body);
    assert!(rules.contains(&("backends.nope".into(), "enabled_provisioner".into())));
    assert!(rules.contains(&(
        "backends.template-renderer".into(),
        "enabled_provisioner".into()
    )));
    let mut unknown = option_a("fine-slug", json!({}));
    unknown["connection_template"]["template_name"] = json!("no-such-template");
    let (status, body) = app.post("/api/v1/tenant/provision", unknown).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        field_rules(&body).contains(&("connection_template.template_name".into(), "exists".into()))
    );
    let refused = option_a("fine-slug", json!({ "steps": ["refuse-plan"] }));
    let (status, body) = app.post("/api/v1/tenant/provision", refused).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(field_rules(&body).contains(&("backends.recorder".into(), "plan".into())));
    let mut path = option_a("fine-slug", json!({}));
    path["assets"] = json!({ "bundle_path": "/etc/passwd" });
    let (status, body) = app.post("/api/v1/tenant/provision", path).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(field_rules(&body).contains(&("assets.bundle_path".into(), "not_accepted".into())));
    let response = app
        .request(Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", "a key with spaces")
        .json(&option_a("fine-slug", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing was stored: no tenant, no run, nothing in the backend.
    let (_, list) = app.get("/api/v1/tenant?limit=200").await;
    let slugs: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["admin"]);
    let (_, runs) = app.get("/api/v1/provisioning").await;
    assert_eq!(runs, json!([]));
    assert!(double.names().is_empty());
    double.stop().await;
    app.stop().await;
}

async fn option_b_uses_the_tenant_database_and_bundle(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    let body = json!({
        "tenant": {
            "slug": "direct-co",
            "name": "Direct Co",
            "db_sqlalchemy_uri": "postgresql://direct:pw@db.example.com:5432/direct",
            "default_schema": "direct_schema",
        },
        "database": { "database_name": "Direct Co Database", "expose_in_sqllab": true, "allow_dml": false },
        "assets": { "bundle_base64": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==", "overwrite": true },
        "trial_days": 14,
        "backends": ["recorder"],
        "idempotency_key": "direct-co-1",
    });
    let run = provision(&app, body).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (_, tenant) = app.get("/api/v1/tenant/direct-co").await;
    assert_eq!(
        tenant["status"], "trial",
        "trial_days makes a trial: {tenant}"
    );
    assert!(tenant["trial_ends_at"].as_str().is_some());
    let (_, resources) = app.get("/api/v1/tenant/direct-co/resources").await;
    assert!(
        resources[0]["template"].is_null(),
        "no template: {resources}"
    );
    assert_eq!(double.creations("direct-co-alpha"), 1);

    // The database moves; the connection drifts. A repair with the current inputs takes the
    // URI the registry holds now, not the one of the provisioning request.
    let (status, body) = app
        .patch(
            "/api/v1/tenant/direct-co",
            json!({ "db_uri": "postgresql://direct:pw@db2.example.com:5432/direct" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    double.forget("direct-co-alpha");
    let (status, repaired) = app
        .post(
            "/api/v1/tenant/direct-co/reconcile?templates=current",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repaired}");
    assert!(repaired["steps"][0]["template"].is_null(), "{repaired}");
    let run = wait_run(&app, repaired["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let tenant = tenantry::tenants::get(&app.ctx, "direct-co").await.unwrap();
    let mut conn = app.ctx.db.conn().await.unwrap();
    let rows = tenantry::store::provisioning::resources(&mut conn, &tenant.id)
        .await
        .unwrap();
    let alpha = rows.iter().find(|r| r.step_id == "alpha").unwrap();
    let input = app
        .ctx
        .keyring
        .open(
            &alpha.input,
            &tenantry::provisioning::resource_context(&tenant.id, "recorder", "alpha"),
        )
        .unwrap();
    assert!(input.contains("db2.example.com"), "the new URI: {input}");
    double.stop().await;
    app.stop().await;
}

async fn lifecycle_changes_reach_the_backends_and_purge_undoes_everything(backend: Backend) {
    let (app, double) = provisioned(backend, "lifeco").await;

    // Drift: a resource removed behind tenantry's back.
    let (_, report) = app.get("/api/v1/tenant/lifeco/drift").await;
    assert_eq!(report["drift"], json!([]), "{report}");
    double.forget("lifeco-beta");
    let (_, report) = app.get("/api/v1/tenant/lifeco/drift").await;
    assert_eq!(
        report["drift"],
        json!([{ "plugin": "recorder", "resource": "resource lifeco-beta", "problem": "missing" }])
    );

    // Soft deprovisioning (`PATCH is_active`) reaches the backends too.
    for (active, change) in [(false, "suspend"), (true, "reactivate")] {
        let (status, body) = app
            .patch("/api/v1/tenant/lifeco", json!({ "is_active": active }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, runs) = app.get("/api/v1/provisioning?tenant=lifeco&limit=1").await;
        assert_eq!(runs[0]["kind"], change, "{runs}");
        let finished = wait_run(&app, runs[0]["url"].as_str().unwrap()).await;
        assert_eq!(finished["status"], "succeeded", "{finished}");
    }
    for (action, change) in [
        ("suspend", "suspend"),
        ("reactivate", "reactivate"),
        ("cancel", "cancel"),
    ] {
        let (status, body) = app
            .post(
                &format!("/api/v1/tenant/lifeco/{action}"),
                json!({ "reason": format!("test {action}") }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, runs) = app.get("/api/v1/provisioning?tenant=lifeco&limit=1").await;
        let latest = &runs[0];
        assert_eq!(latest["kind"], change, "{runs}");
        let finished = wait_run(&app, latest["url"].as_str().unwrap()).await;
        assert_eq!(finished["status"], "succeeded", "{finished}");
        assert_eq!(finished["steps"][0]["action"], "transition");
    }
    let changes: Vec<Value> = double
        .events()
        .iter()
        .map(|e| e["change"].clone())
        .collect();
    assert_eq!(
        changes,
        vec![
            json!("suspend"),
            json!("reactivate"),
            json!("suspend"),
            json!("reactivate"),
            json!("cancel")
        ]
    );
    assert_eq!(double.events()[2]["reason"], "test suspend");

    let (status, purged) = app
        .delete("/api/v1/tenant/lifeco?hard=true&force=true&reason=gone")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, runs) = app.get("/api/v1/provisioning?limit=1").await;
    // The answer names the purge run that undoes the tenant in its backends.
    assert_eq!(purged["url"], runs[0]["url"], "{purged}");
    assert_eq!(purged["run"], runs[0]["id"], "{purged}");
    let purge = wait_run(&app, runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(purge["kind"], "purge");
    assert_eq!(purge["status"], "succeeded", "{purge}");
    // The tenant is gone, its runs are not: found by the slug they were made for.
    let (status, _) = app.get("/api/v1/tenant/lifeco").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, history) = app.get("/api/v1/provisioning?tenant=lifeco").await;
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history[0]["kind"], "purge", "{history}");
    let actions: Vec<(String, String)> = purge["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["action"].as_str().unwrap().to_owned(),
                s["step"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("compensate".to_owned(), "gamma".to_owned()),
            ("compensate".to_owned(), "beta".to_owned()),
            ("compensate".to_owned(), "alpha".to_owned()),
            ("transition".to_owned(), "lifecycle-purge".to_owned()),
        ]
    );
    assert!(double.names().is_empty(), "{:?}", double.names());
    assert_eq!(double.events().last().unwrap()["change"], "purge");
    double.stop().await;
    app.stop().await;
}

async fn a_server_that_lost_its_lease_stops_touching_the_run(backend: Backend) {
    let (app, double) = with_recorder_and(backend, |c| {
        c.provisioning.max_attempts = 1000;
        c.provisioning.backoff_base_ms = 100;
        c.provisioning.backoff_max_ms = 100;
    })
    .await;
    postgres_template(&app).await;
    let (status, accepted) = app
        .post(
            "/api/v1/tenant/provision",
            option_a(
                "stolen",
                json!({ "fail": { "step": "alpha", "kind": "transient", "times": 100000 } }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let url = accepted["url"].as_str().unwrap().to_owned();
    let attempts = || async {
        let (_, run) = app.get(&url).await;
        step(&run, "alpha")["attempts"].as_i64().unwrap()
    };
    let started = Instant::now();
    while attempts().await < 3 {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another server takes the run (as if this one had been too slow to renew its lease).
    {
        let mut conn = app.ctx.db.begin().await.unwrap();
        let run_id = accepted["run"].as_str().unwrap().to_owned();
        tenantry::with_conn!(conn, |c| {
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query(format!(
                    "UPDATE provisioning_runs SET lease_owner = 'another-server', \
                     lease_expires_at = '2999-01-01 00:00:00' WHERE id = '{run_id}'"
                )),
                c,
            )
            .await
        })
        .unwrap();
        conn.commit().await.unwrap();
    }
    let at_steal = attempts().await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let later = attempts().await;
    assert!(
        later <= at_steal + 1,
        "at most the attempt in flight is journaled: {at_steal} then {later}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(attempts().await, later, "nothing more is written");
    let (_, run) = app.get(&url).await;
    assert_eq!(run["executed_by"], "another-server");
    assert_eq!(run["status"], "running");
    double.stop().await;
    app.stop().await;
}

backend_tests!(
    a_server_that_lost_its_lease_stops_touching_the_run,
    templates_are_versioned_and_validated,
    an_installation_renders_its_templates_through_a_renderer_of_its_own,
    provisions_through_the_saga_and_replays_by_key,
    retry_while_running_is_a_conflict_and_concurrent_requests_make_one_run,
    a_permanent_failure_compensates_in_reverse,
    a_backend_that_stays_down_is_retried_then_compensated,
    bad_requests_change_nothing,
    option_b_uses_the_tenant_database_and_bundle,
    lifecycle_changes_reach_the_backends_and_purge_undoes_everything,
    a_run_whose_backend_lost_what_it_created_fails_validation_and_is_compensated,
    backend_health_shows_drift_and_reconcile_re_applies_exactly_what_drifted,
    a_repair_renders_the_current_template_version_when_asked,
    an_import_whose_backend_fails_is_taken_back_whole,
    an_import_re_applies_resources_in_plan_order,
    a_key_rotation_reseals_every_sealed_value_of_every_table,
    a_tenants_runs_go_one_at_a_time_in_the_order_they_were_queued,
);

async fn a_run_whose_backend_lost_what_it_created_fails_validation_and_is_compensated(
    backend: Backend,
) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    // The backend answers the creation of beta and keeps nothing of it.
    double.set_loses(Some("lossy-beta"));
    let run = provision(&app, option_a("lossy", json!({}))).await;
    assert_eq!(run["status"], "failed", "{run}");
    let validate = step(&run, "validate");
    assert_eq!(validate["action"], "validate", "{validate}");
    assert_eq!(validate["state"], "failed", "{validate}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("recorder does not hold what this run created: resource lossy-beta: missing"),
        "{run}"
    );
    for name in ["alpha", "beta", "gamma"] {
        assert_eq!(step(&run, name)["state"], "compensated", "{run}");
    }
    assert!(double.names().is_empty(), "{:?}", double.names());
    let (_, tenant) = app.get("/api/v1/tenant/lossy").await;
    assert_eq!(tenant["status"], "failed", "not succeeded: {tenant}");
    double.stop().await;
    app.stop().await;
}

async fn backend_health_shows_drift_and_reconcile_re_applies_exactly_what_drifted(
    backend: Backend,
) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let run = provision(&app, option_a("mended", json!({}))).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "validate")["state"], "done", "{run}");
    let (status, health) = app.get("/api/v1/tenant/mended/health/backends").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    let recorder = &health["backends"][0];
    assert_eq!(recorder["plugin"], "recorder");
    assert_eq!(recorder["resources"], 3, "{recorder}");
    assert!(recorder["observed_at"].is_string() && recorder["duration_ms"].is_i64());

    // Gone behind the plugin's back: drift, traced to its step.
    double.forget("mended-beta");
    let (_, health) = app.get("/api/v1/tenant/mended/health/backends").await;
    assert_eq!(health["status"], "drifted", "{health}");
    assert_eq!(
        health["backends"][0]["drift"],
        json!([{ "plugin": "recorder", "resource": "resource mended-beta", "problem": "missing" }])
    );
    let (status, plan) = app
        .post("/api/v1/tenant/mended/reconcile?dry_run=true", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["changes"], true);
    let planned: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["beta"], "{plan}");
    assert!(
        plan.get("run").is_none(),
        "a dry run queues nothing: {plan}"
    );
    assert!(!double.exists("mended-beta"), "the dry run changed nothing");

    // A viewer may look, not repair.
    let viewer = app
        .token_with_role("viewer", tenantry::auth::Role::PlatformViewer)
        .await;
    let response = app
        .client
        .post(app.url("/api/v1/tenant/mended/reconcile"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (status, repaired) = app.post("/api/v1/tenant/mended/reconcile", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repaired}");
    let run = wait_run(&app, repaired["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["kind"], "apply");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["beta"], "exactly what drifted: {run}");
    assert!(double.exists("mended-beta"));
    assert_eq!(double.creations("mended-alpha"), 1, "the rest untouched");
    let (_, health) = app.get("/api/v1/tenant/mended/health/backends").await;
    assert_eq!(health["status"], "healthy", "{health}");
    // Nothing drifted: nothing is queued.
    let (status, plan) = app.post("/api/v1/tenant/mended/reconcile", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["changes"], false, "{plan}");
    let (_, audit) = app.get("/api/v1/audit?action=tenant.reconcile").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    // A backend that cannot be reached is said so.
    double.set_down(true);
    let (_, health) = app.get("/api/v1/tenant/mended/health/backends").await;
    assert_eq!(health["status"], "unreachable", "{health}");
    assert!(health["backends"][0]["error"].is_string(), "{health}");
    double.stop().await;
    app.stop().await;
}

async fn a_repair_renders_the_current_template_version_when_asked(backend: Backend) {
    let (app, double) = provisioned(backend, "renewed").await;
    // The template gets a second version after the tenant was made from the first.
    let (status, v2) = app
        .call(
            Method::PUT,
            "/api/v1/template/postgresql-default",
            Some(json!({
                "body": "postgresql://{user}:{password}@{host}:{port}/{database_name}?sslmode=require",
                "placeholders": ["user", "password", "host", "port", "database_name"],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    double.forget("renewed-alpha");

    // By default the drifted step is planned with the version it was applied with.
    let (status, plan) = app
        .post("/api/v1/tenant/renewed/reconcile?dry_run=true", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["templates"], "recorded");
    assert_eq!(
        plan["steps"][0]["template"],
        json!({ "name": "postgresql-default", "recorded_version": 1, "version": 1 }),
        "{plan}"
    );
    // Asked for the current one, with the values it was provisioned with.
    let (status, plan) = app
        .post(
            "/api/v1/tenant/renewed/reconcile?dry_run=true&templates=current",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["templates"], "current");
    let planned: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["alpha"], "only what drifted: {plan}");
    assert_eq!(
        plan["steps"][0]["template"],
        json!({ "name": "postgresql-default", "recorded_version": 1, "version": 2 }),
        "{plan}"
    );
    assert!(!double.exists("renewed-alpha"), "a dry run changes nothing");
    let (status, repaired) = app
        .post(
            "/api/v1/tenant/renewed/reconcile?templates=current",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repaired}");
    let run = wait_run(&app, repaired["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(double.exists("renewed-alpha"));
    let (_, resources) = app.get("/api/v1/tenant/renewed/resources").await;
    let alpha = resource(&resources, "alpha");
    assert_eq!(alpha["template_version"], 2, "{alpha}");
    let beta = resource(&resources, "beta");
    assert_eq!(double.creations("renewed-beta"), 1, "untouched: {beta}");

    // A tenant whose request was not recorded (an import, an earlier version) is told so.
    {
        use diesel_async::RunQueryDsl;
        let mut conn = app.ctx.db.conn().await.unwrap();
        tenantry::with_conn!(conn, |c| diesel::sql_query("DELETE FROM tenant_requests")
            .execute(c)
            .await)
        .unwrap();
    }
    double.forget("renewed-gamma");
    let (status, body) = app
        .post(
            "/api/v1/tenant/renewed/reconcile?dry_run=true&templates=current",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no recorded provisioning request")),
        "{body}"
    );
    let secret = body.to_string();
    assert!(
        !secret.contains("p@ss") && !secret.contains("p%40ss"),
        "{secret}"
    );
    double.stop().await;
    app.stop().await;
}

/// Tenant `slug`'s bundle, taken before the tenant is canceled, deleted for good and purged
/// from the recorder double.
async fn moved_out(app: &TestApp, double: &RecorderBackend, slug: &str) -> Vec<u8> {
    let bundle = app
        .request(Method::GET, &format!("/api/v1/tenant/{slug}/bundle"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/{slug}/cancel"),
            json!({ "reason": "moving" }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let response = app
        .request(
            Method::DELETE,
            &format!("/api/v1/tenant/{slug}?hard=true&force=true&reason=moving"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let started = Instant::now();
    while !double.names().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bundle
}

/// An import re-applies a tenant's resources in the order they were planned, not in the order
/// they were last applied: a repair re-applies an early step late.
async fn an_import_re_applies_resources_in_plan_order(backend: Backend) {
    let (app, double) = provisioned(backend, "order").await;
    let planned = |run: &Value| -> Vec<String> {
        run["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["action"] == "apply")
            .map(|s| {
                format!(
                    "{}/{}",
                    s["plugin"].as_str().unwrap(),
                    s["step"].as_str().unwrap()
                )
            })
            .filter(|s| !s.ends_with("/validate"))
            .collect()
    };
    let (_, runs) = app.get("/api/v1/provisioning?tenant=order").await;
    let provision_run = runs
        .as_array()
        .and_then(|runs| runs.iter().find(|r| r["kind"] == "provision"))
        .cloned()
        .unwrap_or_else(|| panic!("the provision run in {runs}"));
    let (_, provision_run) = app
        .get(&format!(
            "/api/v1/provisioning/{}",
            provision_run["id"].as_str().unwrap()
        ))
        .await;
    let expected = planned(&provision_run);
    assert!(expected.len() >= 3, "{provision_run}");
    // What a repair of the first resource leaves: it was applied last.
    let sql = "UPDATE tenant_resources SET applied_at = '2099-01-01 00:00:00' \
               WHERE step_id = (SELECT step_id FROM tenant_resources WHERE seq = \
               (SELECT min(seq) FROM tenant_resources))";
    tenantry::with_conn!(app.ctx.db.conn().await.unwrap(), |c| {
        use diesel_async::SimpleAsyncConnection as _;
        c.batch_execute(sql).await.unwrap()
    });
    let bundle = moved_out(&app, &double, "order").await;
    let response = app
        .request(Method::POST, "/api/v1/tenant/bundle")
        .header("Content-Type", "application/x-tar")
        .body(bundle)
        .send()
        .await
        .unwrap();
    let (status, outcome) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    let (_, import_run) = app
        .get(&format!(
            "/api/v1/provisioning/{}",
            outcome["run"].as_str().unwrap()
        ))
        .await;
    assert_eq!(planned(&import_run), expected, "{import_run}");
    app.stop().await;
}

async fn an_import_whose_backend_fails_is_taken_back_whole(backend: Backend) {
    let (app, double) = provisioned(backend, "moved").await;
    let bundle = moved_out(&app, &double, "moved").await;

    // The backend takes the first two resources back and refuses the third: the import is
    // taken back, the two undone, and the registry holds nothing of the tenant.
    double.set_down_for(Some("moved-gamma"));
    let import = |bytes: Vec<u8>| {
        app.request(Method::POST, "/api/v1/tenant/bundle")
            .header("Content-Type", "application/x-tar")
            .body(bytes)
            .send()
    };
    let (status, outcome) = common::into_json(import(bundle.clone()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{outcome}");
    assert_eq!(outcome["ok"], false, "{outcome}");
    assert_eq!(outcome["run_status"], "failed", "{outcome}");
    assert_eq!(
        outcome["rolled_back_by"]["status"], "succeeded",
        "{outcome}"
    );
    assert_eq!(
        double.creations("moved-alpha"),
        2,
        "made again by the import, then undone"
    );
    assert!(
        double.names().is_empty(),
        "undone in the backend: {:?}",
        double.names()
    );
    let (status, _) = app.get("/api/v1/tenant/moved").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "nothing left in the registry"
    );
    let (_, resources) = app.get("/api/v1/audit?action=tenant.import.rollback").await;
    assert_eq!(
        resources["items"].as_array().unwrap().len(),
        1,
        "{resources}"
    );

    // With the backend whole again, the same bundle imports, equal.
    double.set_down_for(None);
    let (status, outcome) = common::into_json(import(bundle).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome}");
    assert_eq!(outcome["ok"], true, "{outcome}");
    assert!(outcome.get("rolled_back_by").is_none(), "{outcome}");
    assert_eq!(double.names().len(), 3, "{:?}", double.names());
    // What it was provisioned with came along: it can be repaired with the current templates.
    double.forget("moved-beta");
    let (status, plan) = app
        .post(
            "/api/v1/tenant/moved/reconcile?dry_run=true&templates=current",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["steps"][0]["step"], "beta", "{plan}");
    double.stop().await;
    app.stop().await;
}

#[derive(diesel::QueryableByName)]
struct TextColumn {
    #[diesel(sql_type = diesel::sql_types::Text)]
    table_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    column_name: String,
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Every `table.column` of the database holding a value that starts with `prefix`.
async fn columns_holding(app: &TestApp, prefix: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = app.ctx.db.conn().await.unwrap();
    let columns: Vec<TextColumn> = tenantry::with_conn!(
        conn,
        postgres | c | {
            diesel::sql_query(
                "SELECT table_name::text AS table_name, column_name::text AS column_name \
                 FROM information_schema.columns WHERE table_schema = current_schema() \
                 AND data_type = 'text'",
            )
            .load::<TextColumn>(c)
            .await
        },
        sqlite | c | {
            diesel::sql_query(
                "SELECT m.name AS table_name, p.name AS column_name FROM sqlite_master m \
                 JOIN pragma_table_info(m.name) p WHERE m.type = 'table'",
            )
            .load::<TextColumn>(c)
            .await
        }
    )
    .unwrap();
    assert!(columns.len() > 50, "every text column: {}", columns.len());
    let mut holding = Vec::new();
    for col in columns {
        let sql = format!(
            "SELECT count(*) AS n FROM \"{}\" WHERE CAST(\"{}\" AS TEXT) LIKE '{prefix}%'",
            col.table_name, col.column_name
        );
        let found = tenantry::with_conn!(conn, |c| diesel::sql_query(&sql)
            .get_result::<Count>(c)
            .await)
        .unwrap();
        if found.n > 0 {
            holding.push(format!("{}.{}", col.table_name, col.column_name));
        }
    }
    holding.sort();
    holding
}

async fn a_key_rotation_reseals_every_sealed_value_of_every_table(backend: Backend) {
    let (app, double) = provisioned(backend, "sealed-co").await;
    let (status, hook) = app
        .post(
            "/api/v1/webhooks",
            json!({ "url": "http://127.0.0.1:9/hook", "events": ["alert.raised"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let old_id = app.ctx.keyring.primary_id().to_owned();
    let old = format!("tsk1:{old_id}:");
    let before = columns_holding(&app, &old).await;
    for column in [
        "plugin_grants.sealed_value",
        "provisioning_steps.input",
        "tenant_requests.request",
        "tenant_resources.input",
        "tenants.client_secret",
        "webhooks.secret",
    ] {
        assert!(
            before.contains(&column.to_owned()),
            "{column} in {before:?}"
        );
    }

    let new_key = tenantry::secrets::MasterKey::generate();
    let resealed = tenantry::key_rotation::reseal_all(&app.ctx, &Actor::system(), &new_key)
        .await
        .unwrap();
    assert!(resealed >= 10, "{resealed}");
    let left = columns_holding(&app, &old).await;
    assert!(left.is_empty(), "still sealed under the old key: {left:?}");

    // With the new key alone, what the backends need opens: the resources (health), the
    // recorded request (a repair with the current templates).
    let mut ctx = app.ctx.clone();
    ctx.keyring = std::sync::Arc::new(tenantry::secrets::Keyring::new(new_key, Vec::new()));
    let tenant = tenantry::tenants::get(&ctx, "sealed-co").await.unwrap();
    let health = tenantry::provisioning::backend_health(&ctx, &tenant)
        .await
        .unwrap();
    assert_eq!(health.status, "healthy", "{health:?}");
    double.forget("sealed-co-alpha");
    let plan = tenantry::provisioning::reconcile_plan(
        &ctx,
        &tenant,
        tenantry::provisioning::TemplateVersions::Current,
    )
    .await
    .unwrap();
    assert_eq!(plan.steps.len(), 1, "{plan:?}");
    double.stop().await;
    app.stop().await;
}

async fn a_tenants_runs_go_one_at_a_time_in_the_order_they_were_queued(backend: Backend) {
    let (app, double) = provisioned(backend, "ordered").await;
    // The backend is down: the suspension's run retries while the reactivation is queued
    // behind it (the server has four workers, so nothing but the order holds it back).
    double.set_down(true);
    for action in ["suspend", "reactivate"] {
        let (status, body) = app
            .post(
                &format!("/api/v1/tenant/ordered/{action}"),
                json!({ "reason": "billing" }),
            )
            .await;
        assert!(status.is_success(), "{action}: {body}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    double.set_down(false);
    let started = Instant::now();
    let runs = loop {
        let (_, runs) = app.get("/api/v1/provisioning?tenant=ordered").await;
        let runs = runs.as_array().unwrap().clone();
        if runs.len() == 3 && runs.iter().all(|r| r["finished_at"].is_string()) {
            break runs;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let at = |run: &Value, field: &str| -> chrono::DateTime<chrono::Utc> {
        run[field].as_str().unwrap().parse().unwrap()
    };
    // Newest first: the reactivation, then the suspension.
    let (reactivation, suspension) = (&runs[0], &runs[1]);
    assert!(
        at(reactivation, "started_at") >= at(suspension, "finished_at"),
        "the reactivation started before the suspension ended: {suspension} {reactivation}"
    );
    let events = double.events();
    let changes: Vec<&str> = events
        .iter()
        .map(|e| e["change"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        changes.last(),
        Some(&"reactivate"),
        "the backend heard the reactivation last: {changes:?}"
    );
    double.stop().await;
    app.stop().await;
}
