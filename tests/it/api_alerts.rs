//! Alerts and webhooks through the API, against SQLite and PostgreSQL: quota alerts decided by
//! the real `tier-quota` policy, raised once per line and resolved with hysteresis; a failing
//! policy's alert; error-rate and response-time alerts from a tenant's traffic; signed webhook
//! deliveries to a local receiver, retried after it fails.

use crate::common;

use std::time::Duration;

use crate::common::webhooks::Receiver;
use crate::common::{Backend, TestApp, field_rules, run_sql};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    quota_alerts_are_raised_once_per_line_and_resolve_with_hysteresis,
    webhooks_are_signed_and_retried_until_the_endpoint_answers,
    a_webhook_that_never_answers_is_given_up_and_can_be_retried,
    bad_webhooks_and_alert_queries_are_422_naming_the_field_and_change_nothing,
    a_failing_policy_raises_its_alert,
    error_rate_and_latency_alerts_come_from_the_tenants_own_requests,
    a_tenant_sees_its_own_alerts_and_metrics_stay_bounded,
    an_alert_held_open_keeps_saying_why_it_is_open_and_at_risk_ends_with_its_condition,
    an_alert_whose_stored_kind_this_version_does_not_know_is_an_error_not_a_quota_alert,
);

/// Alerts fire within a second of a change in these tests (no minimum open time).
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |config| {
        config.alerts.min_open_seconds = 0;
        config.alerts.webhooks.retry_base_ms = 200;
    })
    .await
}

async fn report(app: &TestApp, slug: &str, id: &str, metric: &str, value: i64) {
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/{slug}/usage"),
            json!({ "id": id, "metric": metric, "value": value }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Polls `GET /api/v1/alerts?<query>` until `ok` holds of its items (10 s at most).
async fn alerts_until(app: &TestApp, query: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) = app.get(&format!("/api/v1/alerts?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        if ok(&items) {
            return items;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "alerts?{query} never became as expected: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(items: &'a [Value], kind: &str, threshold: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|a| a["kind"] == kind && a["threshold"] == threshold)
}

async fn register(app: &TestApp, url: &str, extra: Value) -> (String, String) {
    let mut body = json!({ "url": url });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    let (status, hook) = app.post("/api/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    (hook["id"].as_str().unwrap().to_owned(), secret)
}

async fn quota_alerts_are_raised_once_per_line_and_resolve_with_hysteresis(backend: Backend) {
    let app = spawn(backend).await;
    let receiver = Receiver::start(0).await;
    let (_, secret) = register(
        &app,
        &receiver.url,
        json!({ "events": ["alert.raised", "alert.resolved"] }),
    )
    .await;
    app.create_tenant("acme").await;
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/tenant/acme/quotas",
            Some(json!({ "agents": 100 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // 80 % of the limit: a warning, once.
    report(&app, "acme", "a1", "agents", 80).await;
    let items = alerts_until(&app, "tenant=acme", |items| {
        find(items, "quota", "warning").is_some()
    })
    .await;
    let warning = find(&items, "quota", "warning").unwrap();
    assert_eq!(warning["subject"], "agents");
    assert_eq!(warning["severity"], "warning");
    assert_eq!(warning["status"], "open");
    assert_eq!(warning["period"], "current", "a gauge's period");
    assert_eq!(warning["value"], 80.0);
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("80 of its 100 agents"),
        "{warning}"
    );
    assert_eq!(
        items.len(),
        1,
        "only the warning line is crossed: {items:#?}"
    );

    // Hovering just under the line does not resolve it (hysteresis: 5 % below 80 is 76).
    report(&app, "acme", "a2", "agents", 78).await;
    let items = alerts_until(&app, "tenant=acme", |items| {
        find(items, "quota", "warning").is_some_and(|a| a["value"] == 78.0)
    })
    .await;
    assert_eq!(items.len(), 1);
    report(&app, "acme", "a3", "agents", 81).await;
    let items = alerts_until(&app, "tenant=acme", |items| {
        find(items, "quota", "warning").is_some_and(|a| a["value"] == 81.0)
    })
    .await;
    assert_eq!(find(&items, "quota", "warning").unwrap()["times_raised"], 1);

    // Past every line: critical, blocked and at risk, each once.
    report(&app, "acme", "a4", "agents", 100).await;
    let items = alerts_until(&app, "tenant=acme", |items| items.len() == 4).await;
    for (kind, threshold, severity) in [
        ("quota", "critical", "critical"),
        ("quota", "blocked", "blocked"),
        ("at_risk", "at_risk", "warning"),
    ] {
        let alert = find(&items, kind, threshold)
            .unwrap_or_else(|| panic!("no {kind}/{threshold} in {items:#?}"));
        assert_eq!(alert["severity"], severity);
    }
    let (_, page) = app.get("/api/v1/alerts?severity=blocked").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // Falling back well below: every line resolves.
    report(&app, "acme", "a5", "agents", 10).await;
    alerts_until(&app, "tenant=acme", |items| items.is_empty()).await;
    let resolved = alerts_until(&app, "tenant=acme&status=resolved", |items| {
        items.len() == 4
    })
    .await;
    assert!(resolved.iter().all(|a| a["resolved_at"].is_string()));

    // Crossed again: the same alert is raised again, counted.
    report(&app, "acme", "a6", "agents", 85).await;
    let items = alerts_until(&app, "tenant=acme", |items| {
        find(items, "quota", "warning").is_some()
    })
    .await;
    assert_eq!(find(&items, "quota", "warning").unwrap()["times_raised"], 2);

    // The endpoint heard every raise and resolution, signed.
    let received = receiver.wait_for(9, Duration::from_secs(10)).await;
    let types: Vec<String> = received
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "alert.raised").count(),
        5,
        "{types:?}"
    );
    assert_eq!(types.iter().filter(|t| *t == "alert.resolved").count(), 4);
    assert!(received.iter().all(|r| r.signed_by(&secret)));
    let first = received[0].json();
    assert_eq!(first["data"]["alert"]["tenant"], "acme");
    assert_eq!(first["data"]["alert"]["threshold"], "warning");
    receiver.stop().await;
    app.stop().await;
}

async fn deliveries_until(app: &TestApp, hook: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, page) = app
            .get(&format!("/api/v1/webhooks/{hook}/deliveries"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(d) = page["items"].as_array().unwrap().first()
            && ok(d)
        {
            return d.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delivery never became as expected: {page:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn webhooks_are_signed_and_retried_until_the_endpoint_answers(backend: Backend) {
    let app = spawn(backend).await;
    // The endpoint is down for the first two attempts.
    let receiver = Receiver::start(2).await;
    let (hook, secret) = register(&app, &receiver.url, json!({ "description": "ops" })).await;

    // The secret is shown once: neither the listing nor the audit has it.
    let (_, hooks) = app.get("/api/v1/webhooks").await;
    assert_eq!(hooks[0]["id"], hook);
    assert_eq!(hooks[0]["url"], receiver.url);
    assert_eq!(hooks[0]["events"], json!([]));
    assert!(!hooks.to_string().contains(&secret));
    let (_, audit) = app.get("/api/v1/audit?action=webhook.created").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    assert!(!audit.to_string().contains(&secret));
    assert!(
        !audit.to_string().contains("/hooks/tenantry"),
        "the audit names the origin, not the path: {audit}"
    );

    let (status, ping) = app
        .call(Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ping}");
    let delivered = deliveries_until(&app, &hook, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"], 3, "{delivered}");
    assert_eq!(delivered["last_status_code"], 204);
    assert_eq!(delivered["event_type"], "webhook.ping");

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.id, delivered["id"], "the same id on every attempt");
        assert!(r.signed_by(&secret), "{r:?}");
        let at: i64 = r.timestamp.parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - at).abs() < 300);
        assert_eq!(r.json()["type"], "webhook.ping");
    }
    assert!(
        !received[0].signed_by("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "another secret does not verify"
    );
    let (_, hook_view) = app.get(&format!("/api/v1/webhooks/{hook}")).await;
    assert_eq!(hook_view["deliveries"]["delivered"], 1);

    // Metrics count the retries and the delivery.
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tenantry_webhook_deliveries_total{result=\"retry\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tenantry_webhook_deliveries_total{result=\"delivered\"} 1"));

    // Removed: audited, and its deliveries with it.
    let (status, _) = app.delete(&format!("/api/v1/webhooks/{hook}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&format!("/api/v1/webhooks/{hook}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = app.get("/api/v1/audit?action=webhook.deleted").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1);
    receiver.stop().await;
    app.stop().await;
}

async fn a_webhook_that_never_answers_is_given_up_and_can_be_retried(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.webhooks.retry_base_ms = 100;
        config.alerts.webhooks.max_attempts = 3;
    })
    .await;
    let receiver = Receiver::start(0).await;
    receiver.inbox.lock().unwrap().always_fail = true;
    let (hook, _) = register(&app, &receiver.url, json!({})).await;
    app.call(Method::POST, &format!("/api/v1/webhooks/{hook}/ping"), None)
        .await;
    let failed = deliveries_until(&app, &hook, |d| d["status"] == "failed").await;
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["last_status_code"], 503);
    assert!(
        failed["last_error"].as_str().unwrap().contains("503"),
        "{failed}"
    );
    assert_eq!(failed["next_attempt_at"], Value::Null);
    assert_eq!(receiver.received().len(), 3, "no attempt past the last");

    // Once the endpoint is back, an operator retries it.
    receiver.inbox.lock().unwrap().always_fail = false;
    let id = failed["id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/webhooks/{hook}/deliveries/{id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let delivered = deliveries_until(&app, &hook, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"], 4);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/webhooks/{hook}/deliveries/msg_nothing/retry"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    receiver.stop().await;
    app.stop().await;
}

async fn bad_webhooks_and_alert_queries_are_422_naming_the_field_and_change_nothing(
    backend: Backend,
) {
    let app = spawn(backend).await;
    for (body, field, rule) in [
        (json!({ "url": "ftp://ops.example.com/h" }), "url", "scheme"),
        (json!({ "url": "/relative" }), "url", "url"),
        (
            json!({ "url": "https://me:pw@ops.example.com/h" }),
            "url",
            "no_credentials",
        ),
        (
            json!({ "url": "https://ops.example.com/h", "events": ["alert.raised", "tenant.created"] }),
            "events[1]",
            "one_of",
        ),
        (
            json!({ "url": "https://ops.example.com/h", "tenant": "nobody" }),
            "tenant",
            "exists",
        ),
    ] {
        let (status, error) = app.post("/api/v1/webhooks", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(
            field_rules(&error)[0],
            (field.to_owned(), rule.to_owned()),
            "{error}"
        );
    }
    let (status, _) = app
        .post(
            "/api/v1/webhooks",
            json!({ "url": "https://x.example/h", "secret": "mine" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    let (_, hooks) = app.get("/api/v1/webhooks").await;
    assert_eq!(hooks, json!([]), "nothing was stored");
    let (_, audit) = app.get("/api/v1/audit?action=webhook.").await;
    assert_eq!(audit["items"], json!([]));

    for (query, field) in [
        ("severity=loud", "severity"),
        ("status=closed", "status"),
        ("kind=weather", "kind"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ] {
        let (status, error) = app.get(&format!("/api/v1/alerts?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {error}");
        assert_eq!(field_rules(&error)[0].0, field);
    }
    let (status, _) = app.get("/api/v1/alerts?tenant=nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/api/v1/webhooks/nothing/deliveries").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.delete("/api/v1/webhooks/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn a_failing_policy_raises_its_alert(backend: Backend) {
    let app = spawn(backend).await;
    app.install_test_plugin("flat_quota").await;
    // Decided once by tier-quota, then handed to a policy that loops for this tenant.
    app.create_tenant("loop-co").await;
    let (_, quotas) = app.get("/api/v1/tenant/loop-co/quotas").await;
    assert!(quotas.is_array());
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/tenant/loop-co/quota-policy",
            Some(json!({ "policy": "flat-quota" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    report(&app, "loop-co", "a", "agents", 2).await;
    let items = alerts_until(&app, "tenant=loop-co&kind=policy_failing", |items| {
        !items.is_empty()
    })
    .await;
    let alert = &items[0];
    assert_eq!(alert["severity"], "critical");
    assert_eq!(alert["subject"], "flat-quota");
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("its last decision stays in force"),
        "{alert}"
    );
    // The last good decision is still in force.
    let (_, quotas) = app.get("/api/v1/tenant/loop-co/quotas").await;
    let agents = quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["metric"] == "agents")
        .unwrap();
    assert_eq!(agents["limit"], 10, "{agents}");

    // Back to a policy that answers: the alert resolves.
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/tenant/loop-co/quota-policy",
            Some(json!({ "policy": null })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    report(&app, "loop-co", "b", "agents", 3).await;
    alerts_until(&app, "tenant=loop-co&kind=policy_failing", |items| {
        items.is_empty()
    })
    .await;
    app.stop().await;
}

async fn error_rate_and_latency_alerts_come_from_the_tenants_own_requests(backend: Backend) {
    let app = spawn(backend).await;
    let tenant = app.create_tenant("acme").await;
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (_, key) = app
        .post("/api/v1/tenant/acme/api-keys", json!({ "name": "app" }))
        .await;
    let token = key["token"].as_str().unwrap().to_owned();

    // The tenant's own requests are what is measured.
    for _ in 0..25 {
        let response = app
            .client
            .get(app.url("/api/v1/tenant/acme"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let window = app
        .ctx
        .alert_signals
        .traffic_of(&tenant_id)
        .expect("traffic measured");
    assert_eq!((window.requests, window.errors), (25, 0));
    // 25 healthy requests under the lines: no alert.
    app.ctx.alert_signals.mark(&tenant_id);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, page) = app.get("/api/v1/alerts?tenant=acme").await;
    assert_eq!(page["items"], json!([]));

    // A bad five minutes, as the server would have counted it: 5xx answers and slow ones.
    for i in 0..75 {
        let status = if i < 6 { 503 } else { 200 };
        let took = if i < 10 { 900 } else { 20 };
        app.ctx
            .alert_signals
            .record_request(&tenant_id, status, Duration::from_millis(took));
    }
    app.ctx.alert_signals.mark(&tenant_id);
    let items = alerts_until(&app, "tenant=acme", |items| items.len() == 3).await;
    // 6 of 100 failed: past both lines (1 %, 5 %).
    let warning = find(&items, "error_rate", "warning").expect("error rate warning");
    assert_eq!(warning["value"], 6.0);
    assert!(find(&items, "error_rate", "critical").is_some());
    // 10 of 100 above 500 ms: the p95 is past 500 ms, not past 2 s.
    let latency = find(&items, "latency", "warning").expect("latency warning");
    let p95 = latency["value"].as_f64().unwrap();
    assert!(p95 > 500.0 && p95 <= 1000.0, "{latency}");
    assert!(find(&items, "latency", "critical").is_none());
    app.stop().await;
}

async fn a_tenant_sees_its_own_alerts_and_metrics_stay_bounded(backend: Backend) {
    // With the shared rate limits on (the machine's Redis), so that their metrics are exported.
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.min_open_seconds = 0;
        config.redis_url = Some(common::redis_url());
        config.redis_prefix = common::redis_prefix();
    })
    .await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    app.call(
        Method::PUT,
        "/api/v1/tenant/acme/quotas",
        Some(json!({ "agents": 10 })),
    )
    .await;
    report(&app, "acme", "a1", "agents", 8).await;
    alerts_until(&app, "tenant=acme", |items| items.len() == 1).await;
    report(&app, "globex", "g1", "agents", 1).await;

    let (_, key) = app
        .post("/api/v1/tenant/acme/api-keys", json!({ "name": "app" }))
        .await;
    let token = key["token"].as_str().unwrap().to_owned();
    let get = |path: &'static str| app.client.get(app.url(path)).bearer_auth(&token).send();
    let (status, page) = common::into_json(get("/api/v1/tenant/acme/alerts").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["tenant"], "acme");
    let (status, _) = common::into_json(get("/api/v1/alerts").await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the platform's list is not a tenant's"
    );
    let (status, _) = common::into_json(get("/api/v1/tenant/globex/alerts").await.unwrap()).await;
    assert!(
        matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{status}"
    );

    // Only tenants at warning or above have a series of their own.
    let (_, metrics) = app.get("/metrics").await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("tenantry_tenant_quota_use_ratio{metric=\"agents\",tenant=\"acme\"} 0.8"),
        "{metrics}"
    );
    assert!(!metrics.contains("tenant=\"globex\""));
    assert!(metrics.contains("tenantry_alerts_open{severity=\"warning\"} 1"));
    assert!(metrics.contains("tenantry_alerts_open{severity=\"blocked\"} 0"));
    let named = common::assert_rules_name_exported("tenantry-alerts.yml", metrics);
    assert_eq!(named, 5);
    let named = common::assert_dashboard_names_exported("tenantry-quotas.json", metrics);
    assert!(named >= 10, "{named}");
    app.stop().await;
}

/// An alert held open for `min_open_seconds` after what it watches fell back keeps the message
/// that says why it is open (never "no longer at risk" on an open alert); at risk — a condition,
/// not a line — ends as soon as it no longer holds, once it may.
async fn an_alert_held_open_keeps_saying_why_it_is_open_and_at_risk_ends_with_its_condition(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.min_open_seconds = 3;
        config.alerts.evaluate_interval_seconds = 1;
    })
    .await;
    app.create_tenant("acme").await;
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/v1/tenant/acme/quotas",
            Some(json!({ "agents": 100 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    report(&app, "acme", "a1", "agents", 100).await;
    let items = alerts_until(&app, "tenant=acme&kind=at_risk", |items| !items.is_empty()).await;
    let raised = items[0]["message"].as_str().unwrap().to_owned();
    assert!(raised.contains("is at risk"), "{raised}");
    // Well below, while held: open, still saying why.
    report(&app, "acme", "a2", "agents", 10).await;
    let items = alerts_until(&app, "tenant=acme&kind=at_risk", |items| {
        items.first().is_some_and(|a| a["value"] != 100.0)
    })
    .await;
    assert_eq!(items[0]["status"], "open");
    assert_eq!(items[0]["message"], raised, "{items:#?}");
    let (_, quota) = app.get("/api/v1/alerts?tenant=acme&kind=quota").await;
    for alert in quota["items"].as_array().unwrap() {
        assert!(
            alert["message"]
                .as_str()
                .unwrap()
                .contains("has used 100 of its 100 agents"),
            "{alert}"
        );
    }
    // Once it may, at risk resolves (its condition is over); nothing open is left.
    alerts_until(&app, "tenant=acme", |items| items.is_empty()).await;
    let (_, resolved) = app
        .get("/api/v1/alerts?tenant=acme&kind=at_risk&status=resolved")
        .await;
    assert!(
        resolved["items"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no longer at risk"),
        "{resolved}"
    );
    app.stop().await;
}

/// A stored alert kind or severity this version does not know (a downgrade, a hand-edited row)
/// is an error that names the word, never shown as a quota warning.
async fn an_alert_whose_stored_kind_this_version_does_not_know_is_an_error_not_a_quota_alert(
    backend: Backend,
) {
    let app = spawn(backend).await;
    app.create_tenant("acme").await;
    app.call(
        Method::PUT,
        "/api/v1/tenant/acme/quotas",
        Some(json!({ "agents": 10 })),
    )
    .await;
    report(&app, "acme", "a1", "agents", 9).await;
    alerts_until(&app, "tenant=acme", |items| items.len() == 1).await;

    run_sql(&app, "UPDATE alerts SET kind = 'disk_full'").await;
    let (status, body) = app.get("/api/v1/alerts?tenant=acme").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "unknown_stored_word", "{body}");
    assert_eq!(body["error"]["details"]["value"], "disk_full", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alert kind `disk_full`"),
        "{body}"
    );

    run_sql(
        &app,
        "UPDATE alerts SET kind = 'quota', severity = 'apocalyptic'",
    )
    .await;
    let (status, body) = app.get("/api/v1/alerts?tenant=acme").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["details"]["value"], "apocalyptic", "{body}");

    run_sql(&app, "UPDATE alerts SET severity = 'warning'").await;
    let (status, body) = app.get("/api/v1/alerts?tenant=acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["kind"], "quota", "{body}");
    app.stop().await;
}
