//! Quotas and reported usage through the API, against SQLite and PostgreSQL, with the real
//! `tier-quota` policy plugin deciding the limits.

use crate::common;

use crate::common::{Backend, TestApp, field_rules};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    the_catalogue_lists_the_built_in_and_the_configured_metrics,
    quotas_show_the_tier_default_the_override_and_the_limit_in_effect,
    overrides_are_audited_with_old_and_new_values_and_bad_ones_change_nothing,
    a_reported_event_is_counted_once_per_id,
    an_increment_past_a_hard_limit_is_refused_with_its_whole_batch,
    a_soft_quota_counts_past_its_limit,
    bad_events_are_422_naming_each_field_and_change_nothing,
    a_gauge_keeps_its_latest_measurement,
    check_answers_without_counting,
    reports_are_for_the_platform_and_other_tenants_are_not_found,
    the_same_id_sent_at_once_is_counted_once,
    a_suspended_tenants_usage_is_not_counted,
    a_tenants_api_calls_are_metered_and_limited_per_minute,
    another_policy_decides_for_one_tenant_or_a_tier_and_a_failing_one_leaves_the_last_decision,
    a_wasi_built_policy_that_prints_sleeps_or_panics_answers_or_fails_as_a_policy,
    a_temporary_override_falls_back_by_itself_audited_when_set_and_when_it_ends,
    a_counter_is_reset_by_a_platform_admin_with_a_reason_and_audited_with_what_it_held,
    each_tenants_traffic_is_in_its_summary_a_ranking_and_a_bounded_set_of_series,
);

/// The quota of `metric` in a `GET …/quotas` answer.
fn quota<'a>(quotas: &'a Value, metric: &str) -> &'a Value {
    quotas
        .as_array()
        .expect("a list of quotas")
        .iter()
        .find(|q| q["metric"] == metric)
        .unwrap_or_else(|| panic!("no quota of {metric} in {quotas}"))
}

async fn used(app: &TestApp, slug: &str, metric: &str) -> u64 {
    let (status, usage) = app.get(&format!("/api/v1/tenant/{slug}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    quota(&usage["metrics"], metric)["used"]
        .as_u64()
        .expect("used")
}

async fn report(app: &TestApp, slug: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/api/v1/tenant/{slug}/usage"), body)
        .await
}

async fn put_quotas(app: &TestApp, slug: &str, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::PUT,
        &format!("/api/v1/tenant/{slug}/quotas"),
        Some(body),
    )
    .await
}

async fn the_catalogue_lists_the_built_in_and_the_configured_metrics(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| {
        config.quotas.metrics.push(tenantry::config::MetricConfig {
            name: "reports_per_month".into(),
            kind: tenantry::config::MetricKind::Counter,
            window: Some(tenantry::config::Window::Month),
            hard: false,
            description: "Reports rendered".into(),
            max_value: tenantry::config::DEFAULT_MAX_VALUE,
        });
    })
    .await;
    let (status, metrics) = app.get("/api/v1/quotas/metrics").await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    let names: Vec<&str> = metrics
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "agents",
            "users",
            "api_calls_per_minute",
            "api_calls_per_month",
            "storage_gb",
            "llm_tokens_per_day",
            "concurrent_agents",
            "data_retention_days",
            "reports_per_month"
        ]
    );
    let calls = &metrics[2];
    assert_eq!(calls["kind"], "rate");
    assert_eq!(calls["window"], "minute");
    assert_eq!(calls["metered"], true);
    assert_eq!(metrics[0]["kind"], "gauge");
    assert_eq!(metrics[8]["kind"], "counter");
    assert_eq!(metrics[8]["hard"], false);

    // A configured metric is reported and summarised like a built-in one.
    app.create_tenant("acme").await;
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "r-1", "metric": "reports_per_month", "increment": 3 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(used(&app, "acme", "reports_per_month").await, 3);
    app.stop().await;
}

async fn quotas_show_the_tier_default_the_override_and_the_limit_in_effect(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await; // tier free
    let (status, quotas) = app.get("/api/v1/tenant/acme/quotas").await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    let agents = quota(&quotas, "agents");
    assert_eq!(agents["default_limit"], 10);
    assert_eq!(agents["override_limit"], Value::Null);
    assert_eq!(agents["limit"], 10);
    assert_eq!(agents["hard"], true);
    assert_eq!(agents["used"], 0);
    assert_eq!(agents["severity"], "ok");
    assert_eq!(quota(&quotas, "api_calls_per_month")["limit"], 100_000);
    assert_eq!(quota(&quotas, "llm_tokens_per_day")["limit"], 10_000);

    let (status, quotas) = put_quotas(
        &app,
        "acme",
        json!({ "agents": 500, "storage_gb": { "limit": 200, "hard": false } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    let agents = quota(&quotas, "agents");
    assert_eq!(
        agents["default_limit"], 10,
        "the tier's default stays shown"
    );
    assert_eq!(agents["override_limit"], 500);
    assert_eq!(agents["limit"], 500);
    let storage = quota(&quotas, "storage_gb");
    assert_eq!(storage["limit"], 200);
    assert_eq!(storage["hard"], false);

    // A change of tier is a change of the defaults; the override stays in force.
    let (status, _) = app
        .patch("/api/v1/tenant/acme", json!({ "tier": "professional" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, quotas) = app.get("/api/v1/tenant/acme/quotas").await;
    assert_eq!(quota(&quotas, "agents")["default_limit"], 1_000);
    assert_eq!(quota(&quotas, "agents")["limit"], 500);
    assert_eq!(quota(&quotas, "users")["limit"], 100);

    // null goes back to the tier's default.
    let (status, quotas) = put_quotas(&app, "acme", json!({ "agents": null })).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    assert_eq!(quota(&quotas, "agents")["override_limit"], Value::Null);
    assert_eq!(quota(&quotas, "agents")["limit"], 1_000);
    app.stop().await;
}

async fn overrides_are_audited_with_old_and_new_values_and_bad_ones_change_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, _) = put_quotas(&app, "acme", json!({ "agents": 50 })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = put_quotas(&app, "acme", json!({ "agents": 70 })).await;
    assert_eq!(status, StatusCode::OK);
    // The same values again change nothing and are not audited.
    let (status, _) = put_quotas(&app, "acme", json!({ "agents": 70 })).await;
    assert_eq!(status, StatusCode::OK);
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=quota.updated")
        .await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    let latest = &items[0]["details"]["changes"][0];
    assert_eq!(latest["metric"], "agents");
    assert_eq!(latest["from"]["limit"], 50);
    assert_eq!(latest["to"]["limit"], 70);
    assert_eq!(latest["to"]["hard"], true);

    for (body, field, rule) in [
        (json!({ "widgets": 5 }), "widgets", "metric"),
        (json!({ "agents": -1 }), "agents", "limit"),
        (json!({ "agents": 1.5 }), "agents", "limit"),
        (json!({ "agents": "many" }), "agents", "type"),
        (
            json!({ "agents": { "limit": 5, "soft": true } }),
            "agents.soft",
            "unknown_field",
        ),
        (
            json!({ "agents": { "hard": "yes" } }),
            "agents.hard",
            "type",
        ),
        (json!({}), "body", "required"),
        (
            json!({ "agents": { "limit": 5, "expires_in_hours": 2 } }),
            "agents.reason",
            "required",
        ),
        (
            json!({ "agents": { "limit": 5, "expires_in_hours": 0, "reason": "x" } }),
            "agents.expires_in_hours",
            "range",
        ),
        (
            json!({ "agents": { "limit": 5, "expires_at": "2001-01-01T00:00:00Z", "reason": "x" } }),
            "agents.expires_at",
            "range",
        ),
        (
            json!({ "agents": { "limit": 5, "expires_at": "tomorrow", "reason": "x" } }),
            "agents.expires_at",
            "format",
        ),
    ] {
        let (status, error) = put_quotas(&app, "acme", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert!(
            field_rules(&error).contains(&(field.to_owned(), rule.to_owned())),
            "{body}: {error}"
        );
    }
    // A refused PUT with one good and one bad metric changes neither.
    let (status, _) = put_quotas(&app, "acme", json!({ "agents": 5, "widgets": 1 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, quotas) = app.get("/api/v1/tenant/acme/quotas").await;
    assert_eq!(quota(&quotas, "agents")["limit"], 70);
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=quota.updated")
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2);

    // Overrides are set by platform administrators only.
    let viewer = app
        .token_with_role("viewer", tenantry::auth::Role::PlatformViewer)
        .await;
    let response = app
        .client
        .put(app.url("/api/v1/tenant/acme/quotas"))
        .bearer_auth(&viewer)
        .json(&json!({ "agents": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    app.stop().await;
}

async fn a_reported_event_is_counted_once_per_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let event = json!({ "id": "evt-1", "metric": "llm_tokens_per_day", "increment": 120 });
    let (status, body) = report(&app, "acme", event.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], 1);
    // The answer carries the new total, so a reporter needs no second call.
    assert_eq!(body["events"][0]["total"], 120, "{body}");
    let (status, body) = report(&app, "acme", event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], 0);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["events"][0]["outcome"], "duplicate");
    assert_eq!(body["events"][0]["total"], 120, "not counted twice: {body}");

    // A batch: a new id, an id seen before, and a new id twice.
    let (status, body) = report(
        &app,
        "acme",
        json!({ "events": [
            { "id": "evt-2", "metric": "llm_tokens_per_day", "increment": 30 },
            { "id": "evt-1", "metric": "llm_tokens_per_day", "increment": 120 },
            { "id": "evt-3", "metric": "llm_tokens_per_day", "increment": 5 },
            { "id": "evt-3", "metric": "llm_tokens_per_day", "increment": 5 },
        ] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], 2);
    assert_eq!(body["duplicates"], 2);
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 155);
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["total"] == 155),
        "{body}"
    );

    // Ids are the tenant's own: another tenant may use the same id.
    app.create_tenant("globex").await;
    let (_, body) = report(
        &app,
        "globex",
        json!({ "id": "evt-1", "metric": "llm_tokens_per_day", "increment": 7 }),
    )
    .await;
    assert_eq!(body["counted"], 1);
    assert_eq!(used(&app, "globex", "llm_tokens_per_day").await, 7);

    // Ids are remembered past the oldest timestamp a report may carry, then forgotten.
    assert!(tenantry::quotas::report::REMEMBER_IDS_DAYS > tenantry::quotas::report::MAX_AGE_DAYS);
    assert_eq!(
        tenantry::quotas::report::forget_old_events(&app.ctx)
            .await
            .unwrap(),
        0,
        "today's ids are kept"
    );
    let later = tenantry::clock::now() + chrono::Duration::seconds(1);
    assert!(
        tenantry::quotas::report::forget_events_before(&app.ctx, later)
            .await
            .unwrap()
            >= 1
    );
    let (_, body) = report(
        &app,
        "globex",
        json!({ "id": "evt-1", "metric": "llm_tokens_per_day", "increment": 7 }),
    )
    .await;
    assert_eq!(body["counted"], 1, "a forgotten id counts again");

    // An event of yesterday counts in yesterday's period, not today's.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "evt-old", "metric": "llm_tokens_per_day", "increment": 1000, "timestamp": yesterday }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 155);
    app.stop().await;
}

async fn an_increment_past_a_hard_limit_is_refused_with_its_whole_batch(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await; // free: 10,000 LLM tokens a day
    let (status, _) = report(
        &app,
        "acme",
        json!({ "id": "a", "metric": "llm_tokens_per_day", "increment": 9_000 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = report(
        &app,
        "acme",
        json!({ "events": [
            { "id": "b", "metric": "llm_tokens_per_day", "increment": 500 },
            { "id": "c", "metric": "llm_tokens_per_day", "increment": 600 },
        ] }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"]["code"], "quota_exceeded");
    let details = &error["error"]["details"];
    assert_eq!(details["metric"], "llm_tokens_per_day");
    assert_eq!(details["event"], "c");
    assert_eq!(details["used"], 9_500);
    assert_eq!(details["increment"], 600);
    assert_eq!(details["limit"], 10_000);
    assert_eq!(details["tier"], "free");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing of this report was counted"),
        "{error}"
    );
    assert_eq!(
        used(&app, "acme", "llm_tokens_per_day").await,
        9_000,
        "nothing of the refused batch was counted"
    );
    // Its ids were not kept either: the first event counts when sent alone.
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "b", "metric": "llm_tokens_per_day", "increment": 500 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["counted"], 1);
    // Reaching the limit exactly is admitted; one more is not.
    let (status, _) = report(
        &app,
        "acme",
        json!({ "id": "d", "metric": "llm_tokens_per_day", "increment": 500 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 10_000);
    let (status, _) = report(
        &app,
        "acme",
        json!({ "id": "e", "metric": "llm_tokens_per_day", "increment": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, usage) = app.get("/api/v1/tenant/acme/usage").await;
    let tokens = quota(&usage["metrics"], "llm_tokens_per_day");
    assert_eq!(tokens["severity"], "blocked");
    assert_eq!(usage["at_risk"], true);
    assert_eq!(usage["allowed"], false);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metrics.as_str().unwrap().contains(
            "tenantry_quota_rejections_total{metric=\"llm_tokens_per_day\",tier=\"free\"} 2"
        ),
        "rejections are counted by metric and tier"
    );
    // A higher override admits it.
    let (status, _) = put_quotas(&app, "acme", json!({ "llm_tokens_per_day": 20_000 })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = report(
        &app,
        "acme",
        json!({ "id": "e", "metric": "llm_tokens_per_day", "increment": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

async fn a_soft_quota_counts_past_its_limit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, _) = put_quotas(
        &app,
        "acme",
        json!({ "llm_tokens_per_day": { "limit": 100, "hard": false } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "a", "metric": "llm_tokens_per_day", "increment": 150 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, usage) = app.get("/api/v1/tenant/acme/usage").await;
    let tokens = quota(&usage["metrics"], "llm_tokens_per_day");
    assert_eq!(tokens["used"], 150);
    assert_eq!(tokens["severity"], "blocked");
    assert_eq!(tokens["hard"], false);
    assert_eq!(usage["allowed"], true, "a soft quota blocks nothing");
    // Counters are overflow-checked: an increment that would wrap is refused, nothing counted.
    let big = 9_000_000_000_000_000_000i64;
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "big-1", "metric": "llm_tokens_per_day", "increment": big }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, error) = report(
        &app,
        "acme",
        json!({ "events": [
            { "id": "small", "metric": "llm_tokens_per_day", "increment": 1 },
            { "id": "big-2", "metric": "llm_tokens_per_day", "increment": big },
        ] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(
        field_rules(&error),
        [("events[1].increment".to_owned(), "overflow".to_owned())]
    );
    assert_eq!(
        used(&app, "acme", "llm_tokens_per_day").await,
        150 + big as u64
    );
    app.stop().await;
}

async fn bad_events_are_422_naming_each_field_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let old = (chrono::Utc::now() - chrono::Duration::days(36)).to_rfc3339();
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let good = json!({ "id": "ok", "metric": "llm_tokens_per_day", "increment": 1 });
    let cases = [
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": -5 }),
            "increment",
            "minimum",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 0 }),
            "increment",
            "minimum",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 9_223_372_036_854_775_808u64 }),
            "increment",
            "type",
        ),
        (
            json!({ "id": "x", "metric": "widgets", "increment": 1 }),
            "metric",
            "metric",
        ),
        (
            json!({ "id": "x", "metric": "api_calls_per_minute", "increment": 1 }),
            "metric",
            "metered",
        ),
        (
            json!({ "id": "x", "metric": "users", "value": 3 }),
            "metric",
            "metered",
        ),
        (
            json!({ "id": "x", "metric": "agents", "increment": 1 }),
            "value",
            "required",
        ),
        (
            json!({ "id": "x", "metric": "agents", "value": -1 }),
            "value",
            "minimum",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "value": 1 }),
            "increment",
            "required",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 1, "value": 1 }),
            "value",
            "exclusive",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 1, "timestamp": old }),
            "timestamp",
            "window",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 1, "timestamp": ahead }),
            "timestamp",
            "window",
        ),
        (
            json!({ "id": "", "metric": "llm_tokens_per_day", "increment": 1 }),
            "id",
            "length",
        ),
        (
            json!({ "id": "x".repeat(201), "metric": "llm_tokens_per_day", "increment": 1 }),
            "id",
            "length",
        ),
        (
            json!({ "metric": "llm_tokens_per_day", "increment": 1 }),
            "id",
            "required",
        ),
        (
            json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 1, "extra": 1 }),
            "extra",
            "unknown_field",
        ),
    ];
    for (event, field, rule) in cases {
        // Alone, the field is named as it is; in a batch, with its place.
        let (status, error) = report(&app, "acme", event.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{event}: {error}");
        assert!(
            field_rules(&error).contains(&(field.to_owned(), rule.to_owned())),
            "{event}: {error}"
        );
        let (status, error) = report(&app, "acme", json!({ "events": [good, event] })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(
            field_rules(&error).contains(&(format!("events[1].{field}"), rule.to_owned())),
            "batch: {error}"
        );
    }
    let (status, error) = report(&app, "acme", json!({ "events": [] })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&error),
        [("events".to_owned(), "min_items".to_owned())]
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({ "id": format!("e{i}"), "metric": "llm_tokens_per_day", "increment": 1 }))
        .collect();
    let (status, error) = report(&app, "acme", json!({ "events": many })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&error),
        [("events".to_owned(), "max_items".to_owned())]
    );
    let (status, _) = report(&app, "missing", good.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        used(&app, "acme", "llm_tokens_per_day").await,
        0,
        "nothing was counted"
    );
    // And the good event's id was not kept: it counts now.
    let (_, body) = report(&app, "acme", good).await;
    assert_eq!(body["counted"], 1);
    app.stop().await;
}

async fn a_gauge_keeps_its_latest_measurement(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let now = chrono::Utc::now();
    let (status, body) = report(
        &app,
        "acme",
        json!({ "id": "g1", "metric": "agents", "value": 8, "timestamp": now.to_rfc3339() }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = report(
        &app,
        "acme",
        json!({ "id": "g0", "metric": "agents", "value": 3, "timestamp": (now - chrono::Duration::hours(1)).to_rfc3339() }),
    )
    .await;
    assert_eq!(
        body["stale"], 1,
        "an older measurement does not overwrite: {body}"
    );
    assert_eq!(used(&app, "acme", "agents").await, 8);
    // A gauge past its limit is recorded as reported (free: 10 agents).
    let (status, _) = report(
        &app,
        "acme",
        json!({ "id": "g2", "metric": "agents", "value": 12 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, usage) = app.get("/api/v1/tenant/acme/usage").await;
    let agents = quota(&usage["metrics"], "agents");
    assert_eq!(agents["used"], 12);
    assert_eq!(agents["severity"], "blocked");
    assert_eq!(agents["percent"], 120.0);

    // One batch of gauges and counters of two periods, in the report's order: a value measured
    // before the one held is stale, also when the later one came earlier in the same batch.
    let yesterday = (now - chrono::Duration::days(1)).to_rfc3339();
    let (status, body) = report(
        &app,
        "acme",
        json!({ "events": [
            { "id": "g3", "metric": "agents", "value": 20, "timestamp": (now - chrono::Duration::hours(2)).to_rfc3339() },
            { "id": "t1", "metric": "llm_tokens_per_day", "increment": 40 },
            { "id": "g4", "metric": "agents", "value": 9, "timestamp": (now + chrono::Duration::minutes(2)).to_rfc3339() },
            { "id": "t2", "metric": "llm_tokens_per_day", "increment": 7, "timestamp": yesterday },
            { "id": "g5", "metric": "agents", "value": 4, "timestamp": (now + chrono::Duration::minutes(1)).to_rfc3339() },
            { "id": "t3", "metric": "llm_tokens_per_day", "increment": 2 },
        ] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let outcomes: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["stale", "counted", "counted", "counted", "stale", "counted"],
        "{body}"
    );
    assert_eq!(
        (body["counted"].clone(), body["stale"].clone()),
        (json!(4), json!(2))
    );
    assert_eq!(used(&app, "acme", "agents").await, 9);
    assert_eq!(
        used(&app, "acme", "llm_tokens_per_day").await,
        42,
        "yesterday's tokens count in yesterday's period"
    );
    app.stop().await;
}

async fn check_answers_without_counting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await; // free: 10 agents
    report(
        &app,
        "acme",
        json!({ "id": "g", "metric": "agents", "value": 9 }),
    )
    .await;
    let (status, answer) = app
        .post(
            "/api/v1/tenant/acme/quotas/check",
            json!({ "metric": "agents" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["allowed"], true);
    assert_eq!(answer["used"], 9);
    assert_eq!(answer["remaining"], 1);
    assert_eq!(answer["severity"], "blocked", "at 100 % after the use");
    let (_, answer) = app
        .post(
            "/api/v1/tenant/acme/quotas/check",
            json!({ "metric": "agents", "increment": 2 }),
        )
        .await;
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["limit"], 10);
    assert_eq!(
        used(&app, "acme", "agents").await,
        9,
        "a check counts nothing"
    );
    // A read-only token may ask.
    let viewer = app
        .token_with_role("viewer", tenantry::auth::Role::PlatformViewer)
        .await;
    let response = app
        .client
        .post(app.url("/api/v1/tenant/acme/quotas/check"))
        .bearer_auth(&viewer)
        .json(&json!({ "metric": "agents" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, error) = app
        .post(
            "/api/v1/tenant/acme/quotas/check",
            json!({ "metric": "agents", "increment": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&error),
        [("increment".to_owned(), "minimum".to_owned())]
    );
    let (status, error) = app
        .post(
            "/api/v1/tenant/acme/quotas/check",
            json!({ "metric": "widgets" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&error),
        [("metric".to_owned(), "metric".to_owned())]
    );
    app.stop().await;
}

async fn reports_are_for_the_platform_and_other_tenants_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let (status, key) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "app", "role": "tenant-admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let token = key["token"].as_str().unwrap();
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { common::into_json(request.send().await.unwrap()).await }
    };
    let event = json!({ "id": "x", "metric": "agents", "value": 1 });
    let (status, _) = send(
        Method::POST,
        "/api/v1/tenant/acme/usage",
        Some(event.clone()),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a tenant does not report its own usage"
    );
    let (status, _) = send(Method::GET, "/api/v1/tenant/acme/usage", None).await;
    assert_eq!(status, StatusCode::OK, "but reads it");
    let (status, _) = send(Method::GET, "/api/v1/tenant/acme/quotas", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        Method::PUT,
        "/api/v1/tenant/acme/quotas",
        Some(json!({ "agents": 99 })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nor sets its own limits");
    for path in [
        "/api/v1/tenant/globex/usage",
        "/api/v1/tenant/globex/quotas",
    ] {
        let (status, _) = send(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = send(
        Method::POST,
        "/api/v1/tenant/globex/quotas/check",
        Some(json!({ "metric": "agents" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(used(&app, "acme", "agents").await, 0);
    app.stop().await;
}

async fn the_same_id_sent_at_once_is_counted_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let sends = (0..8).map(|_| {
        report(
            &app,
            "acme",
            json!({ "id": "same", "metric": "llm_tokens_per_day", "increment": 10 }),
        )
    });
    let answers = futures_util::future::join_all(sends).await;
    let counted: u64 = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            body["counted"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, 1, "{answers:?}");
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 10);
    app.stop().await;
}

async fn a_suspended_tenants_usage_is_not_counted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, _) = app
        .post("/api/v1/tenant/acme/suspend", json!({ "reason": "unpaid" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, error) = report(
        &app,
        "acme",
        json!({ "id": "x", "metric": "llm_tokens_per_day", "increment": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("suspended")
    );
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 0);
    app.stop().await;
}

async fn a_tenants_api_calls_are_metered_and_limited_per_minute(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.quotas.flush_interval_ms = 200).await;
    app.create_tenant("acme").await;
    let (status, _) = put_quotas(&app, "acme", json!({ "api_calls_per_minute": 5 })).await;
    assert_eq!(status, StatusCode::OK);
    let (status, key) = app
        .post("/api/v1/tenant/acme/api-keys", json!({ "name": "app" }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let token = key["token"].as_str().unwrap().to_owned();
    // Stay inside one minute: the budget is per calendar minute.
    let second = chrono::Timelike::second(&chrono::Utc::now());
    if second > 45 {
        tokio::time::sleep(std::time::Duration::from_secs(u64::from(61 - second))).await;
    }
    let get = || {
        app.client
            .get(app.url("/api/v1/tenant/acme"))
            .bearer_auth(&token)
            .send()
    };
    for remaining in (0..5).rev() {
        let response = get().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        assert_eq!(
            header("ratelimit-policy"),
            "\"api_calls_per_minute\";q=5;w=60"
        );
        assert!(
            header("ratelimit").starts_with(&format!("\"api_calls_per_minute\";r={remaining};t=")),
            "{}",
            header("ratelimit")
        );
    }
    let response = get().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"api_calls_per_minute\";r=0;"),
    );
    let (_, body) = common::into_json(response).await;
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant acme may make 5 API calls a minute"),
        "{body}"
    );
    // Every refusal is counted by its reason, and a tenant refused this much is alerted on.
    for _ in 0..19 {
        assert_eq!(get().await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tenantry_refusals_total{reason=\"tenant_budget\"} 20"),
        "{metrics}"
    );
    assert!(metrics.contains("tenantry_refusals_total{reason=\"key_limit\"} 0"));
    let mut throttled = Value::Null;
    for _ in 0..50 {
        let (_, alerts) = app.get("/api/v1/alerts?tenant=acme&kind=throttled").await;
        if alerts["items"].as_array().is_some_and(|a| !a.is_empty()) {
            throttled = alerts["items"][0].clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(throttled["kind"], "throttled", "{throttled}");
    assert_eq!(throttled["severity"], "warning", "{throttled}");
    assert!(
        throttled["message"]
            .as_str()
            .unwrap()
            .contains("80.0 % of acme's API requests were refused at its API-call budget"),
        "{throttled}"
    );
    // The admitted calls reach the database within the flush interval; the refused one is not
    // counted. A platform token's calls are not the tenant's.
    let mut month = 0;
    for _ in 0..50 {
        month = used(&app, "acme", "api_calls_per_month").await;
        if month == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(month, 5);
    assert_eq!(used(&app, "acme", "api_calls_per_minute").await, 5);
    let (_, usage) = app.get("/api/v1/tenant/acme/usage").await;
    assert_eq!(usage["api_calls_today"], 5);
    assert_eq!(usage["api_calls_this_month"], 5);
    let last_active: chrono::DateTime<chrono::Utc> =
        usage["last_active"].as_str().unwrap().parse().unwrap();
    assert!(chrono::Utc::now() - last_active < chrono::Duration::minutes(1));
    app.stop().await;
}

async fn tenant_quota(app: &TestApp, slug: &str, metric: &str) -> Value {
    let (status, quotas) = app.get(&format!("/api/v1/tenant/{slug}/quotas")).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    quota(&quotas, metric).clone()
}

/// Whether `/metrics` counts a failure of the `flat-quota` policy.
async fn flat_quota_failures_counted(app: &TestApp) -> bool {
    let (_, metrics) = app.get("/metrics").await;
    metrics
        .as_str()
        .unwrap()
        .contains("tenantry_quota_policy_failures_total{policy=\"flat-quota\"}")
}

async fn choose_policy(app: &TestApp, path: &str, policy: Value) -> (StatusCode, Value) {
    app.call(Method::PUT, path, Some(json!({ "policy": policy })))
        .await
}

async fn another_policy_decides_for_one_tenant_or_a_tier_and_a_failing_one_leaves_the_last_decision(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // A third party's policy, built with the test plugins: every limit is 3.
    app.install_test_plugin("flat_quota").await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    assert_eq!(tenant_quota(&app, "acme", "agents").await["limit"], 10);

    let (status, chosen) = choose_policy(
        &app,
        "/api/v1/tenant/acme/quota-policy",
        json!("flat-quota"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{chosen}");
    assert_eq!(
        chosen,
        json!({ "policy": "flat-quota", "chosen_for": "tenant" })
    );
    assert_eq!(
        tenant_quota(&app, "acme", "agents").await["limit"],
        3,
        "decided by the new policy"
    );
    assert_eq!(
        tenant_quota(&app, "globex", "agents").await["limit"],
        10,
        "others keep theirs"
    );
    let (_, policy) = app.get("/api/v1/tenant/globex/quota-policy").await;
    assert_eq!(
        policy,
        json!({ "policy": "tier-quota", "chosen_for": "default" })
    );

    // A tier's choice, for its tenants without one of their own.
    let (status, choices) =
        choose_policy(&app, "/api/v1/quotas/policies/starter", json!("flat-quota")).await;
    assert_eq!(status, StatusCode::OK, "{choices}");
    assert_eq!(choices["tiers"]["starter"], "flat-quota");
    let (status, _) = app
        .patch("/api/v1/tenant/globex", json!({ "tier": "starter" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant_quota(&app, "globex", "agents").await["limit"], 3);
    let (_, policy) = app.get("/api/v1/tenant/globex/quota-policy").await;
    assert_eq!(policy["chosen_for"], "tier");

    // Back to the default.
    let (status, _) = choose_policy(&app, "/api/v1/tenant/acme/quota-policy", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant_quota(&app, "acme", "agents").await["limit"], 10);
    let (_, audit) = app.get("/api/v1/audit?action=quota.policy_chosen").await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 3, "{audit}");

    // Only installed, enabled quota policies.
    for (policy, rule) in [
        ("template-renderer", "world"),
        ("nothing-here", "installed"),
    ] {
        let (status, error) =
            choose_policy(&app, "/api/v1/tenant/acme/quota-policy", json!(policy)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(
            field_rules(&error),
            [("policy".to_owned(), rule.to_owned())]
        );
    }
    let (status, _) =
        choose_policy(&app, "/api/v1/quotas/policies/gold", json!("flat-quota")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A policy that loops: stopped at its deadline; the last decision stays in force.
    app.create_tenant("loop-co").await;
    assert_eq!(tenant_quota(&app, "loop-co", "agents").await["limit"], 10);
    let (status, _) = choose_policy(
        &app,
        "/api/v1/tenant/loop-co/quota-policy",
        json!("flat-quota"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    report(
        &app,
        "loop-co",
        json!({ "id": "a", "metric": "agents", "value": 2 }),
    )
    .await;
    let agents = tenant_quota(&app, "loop-co", "agents").await;
    assert_eq!(agents["limit"], 10, "the last good decision: {agents}");
    assert!(
        flat_quota_failures_counted(&app).await,
        "the failure is counted"
    );
    // With a failure and (below) a rejection counted, the shipped rules name only what is
    // exported.
    report(
        &app,
        "acme",
        json!({ "id": "x1", "metric": "llm_tokens_per_day", "increment": 20_000 }),
    )
    .await;
    let (_, metrics) = app.get("/metrics").await;
    let named =
        common::assert_rules_name_exported("tenantry-quota-alerts.yml", metrics.as_str().unwrap());
    assert_eq!(named, 3);
    app.stop().await;
}

/// A quota policy built the scaffold's default way (`wasm32-wasip2`) that prints a line or
/// sleeps is answered (those WASI calls block on the runtime, so such a policy never runs on a
/// thread of it); one that panics is a counted policy failure under `on_policy_failure`, never
/// a 500 with the host's internals.
async fn a_wasi_built_policy_that_prints_sleeps_or_panics_answers_or_fails_as_a_policy(
    backend: Backend,
) {
    for fail_mode in [
        tenantry::config::FailMode::Open,
        tenantry::config::FailMode::Closed,
    ] {
        let app = TestApp::spawn_with(backend, |c| c.quotas.on_policy_failure = fail_mode).await;
        app.install_test_plugin("flat_quota").await;
        for slug in ["print-co", "sleep-20", "panic-co"] {
            app.create_tenant(slug).await;
            let (status, chosen) = choose_policy(
                &app,
                &format!("/api/v1/tenant/{slug}/quota-policy"),
                json!("flat-quota"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{chosen}");
        }
        for slug in ["print-co", "sleep-20"] {
            for path in ["quotas", "usage"] {
                let (status, body) = app.get(&format!("/api/v1/tenant/{slug}/{path}")).await;
                assert_eq!(status, StatusCode::OK, "{slug} {path}: {body}");
            }
            assert_eq!(
                tenant_quota(&app, slug, "agents").await["limit"],
                3,
                "decided by the policy"
            );
            let (status, body) = app
                .post(
                    &format!("/api/v1/tenant/{slug}/quotas/check"),
                    json!({ "metric": "agents", "increment": 1 }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        // The panic: no decision was ever kept for this tenant.
        let (status, body) = app.get("/api/v1/tenant/panic-co/usage").await;
        let text = body.to_string();
        assert!(
            !text.contains("panicked") && !text.contains("runtime"),
            "no internals: {text}"
        );
        match fail_mode {
            tenantry::config::FailMode::Open => {
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(
                    tenant_quota(&app, "panic-co", "agents").await["limit"],
                    Value::Null,
                    "open: nothing is limited"
                );
            }
            tenantry::config::FailMode::Closed => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
                assert!(text.contains("is failing"), "{text}");
            }
        }
        assert!(
            flat_quota_failures_counted(&app).await,
            "the failure is counted"
        );
        app.stop().await;
    }
}

/// "Raise quota temporarily; log it": an override with a reason and an end, in force until then,
/// gone by itself at its end (before any sweep), and audited when set and when it ended.
async fn a_temporary_override_falls_back_by_itself_audited_when_set_and_when_it_ends(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (_, before) = app.get("/api/v1/tenant/acme/quotas").await;
    let default = quota(&before, "agents")["limit"].clone();
    let ends = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, views) = put_quotas(
        &app,
        "acme",
        json!({ "agents": {
            "limit": 900,
            "expires_at": ends.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "reason": "launch week",
        } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{views}");
    let agents = quota(&views, "agents");
    assert_eq!(agents["limit"], 900, "{agents}");
    assert_eq!(agents["override_reason"], "launch week");
    assert!(agents["override_expires_at"].is_string(), "{agents}");
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=quota.updated")
        .await;
    let set = &audit["items"][0]["details"]["changes"][0]["to"];
    assert_eq!(set["reason"], "launch week", "{audit}");
    assert!(set["expires_at"].is_string(), "{audit}");

    // Past its end it no longer applies, swept or not.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let (_, after) = app.get("/api/v1/tenant/acme/quotas").await;
    let agents = quota(&after, "agents");
    assert_eq!(agents["limit"], default, "{agents}");
    assert_eq!(agents["override_limit"], Value::Null, "{agents}");
    // The sweep removes it, audited as its end.
    let actor = tenantry::audit::Actor {
        name: "job:housekeeping".into(),
        source_ip: None,
        request_id: None,
    };
    assert_eq!(
        tenantry::quotas::overrides::end_expired(&app.ctx, &actor)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        tenantry::quotas::overrides::end_expired(&app.ctx, &actor)
            .await
            .unwrap(),
        0
    );
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=quota.override_expired")
        .await;
    let ended = &audit["items"][0];
    assert_eq!(ended["actor"], "job:housekeeping", "{audit}");
    assert_eq!(ended["details"]["metric"], "agents");
    assert_eq!(ended["details"]["limit"], 900);
    assert_eq!(ended["details"]["reason"], "launch week");
    app.stop().await;
}

/// "Manually reset if needed": a counter back to zero, by a platform admin, with a reason,
/// audited with what it held; a gauge cannot be reset, and nobody else may.
async fn a_counter_is_reset_by_a_platform_admin_with_a_reason_and_audited_with_what_it_held(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    report(
        &app,
        "acme",
        json!({ "id": "e1", "metric": "llm_tokens_per_day", "increment": 120 }),
    )
    .await;
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 120);
    let (status, reset) = app
        .post(
            "/api/v1/tenant/acme/usage/llm_tokens_per_day/reset",
            json!({ "reason": "runaway agent, refunded" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    assert_eq!(reset["from"], 120);
    assert_eq!(reset["to"], 0);
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 0);
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=quota.usage_reset")
        .await;
    let record = &audit["items"][0]["details"];
    assert_eq!(record["from"], 120, "{audit}");
    assert_eq!(record["reason"], "runaway agent, refunded");
    assert_eq!(record["metric"], "llm_tokens_per_day");
    // Counting goes on from zero.
    let (_, body) = report(
        &app,
        "acme",
        json!({ "id": "e2", "metric": "llm_tokens_per_day", "increment": 5 }),
    )
    .await;
    assert_eq!(body["events"][0]["total"], 5, "{body}");

    for (path, body, field, rule) in [
        (
            "/api/v1/tenant/acme/usage/llm_tokens_per_day/reset",
            json!({}),
            "reason",
            "required",
        ),
        (
            "/api/v1/tenant/acme/usage/llm_tokens_per_day/reset",
            json!({ "reason": " " }),
            "reason",
            "length",
        ),
        (
            "/api/v1/tenant/acme/usage/storage_gb/reset",
            json!({ "reason": "x" }),
            "metric",
            "gauge",
        ),
    ] {
        let (status, error) = app.post(path, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {error}"
        );
        assert!(
            field_rules(&error).contains(&(field.to_owned(), rule.to_owned())),
            "{path} {body}: {error}"
        );
    }
    let (status, _) = app
        .post(
            "/api/v1/tenant/acme/usage/widgets/reset",
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such metric");
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 5);
    // A viewer may not reset, nor may the tenant's own admins.
    let viewer = app
        .token_with_role("viewer", tenantry::auth::Role::PlatformViewer)
        .await;
    let (_, key) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "ops", "role": "tenant-admin" }),
        )
        .await;
    for token in [viewer, key["token"].as_str().unwrap().to_owned()] {
        let response = app
            .client
            .post(app.url("/api/v1/tenant/acme/usage/llm_tokens_per_day/reset"))
            .bearer_auth(token)
            .json(&json!({ "reason": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(used(&app, "acme", "llm_tokens_per_day").await, 5);
    app.stop().await;
}

/// The operators' "find heavy tenants": each tenant's API traffic, every server's, in its usage
/// summary and in a ranking; `/metrics` shows per-tenant series only for the busiest few.
async fn each_tenants_traffic_is_in_its_summary_a_ranking_and_a_bounded_set_of_series(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |config| {
        config.alerts.per_tenant_series = 1;
        // Written by the test, not by the flusher in the middle of it.
        config.quotas.flush_interval_ms = 3_600_000;
    })
    .await;
    let mut tokens = Vec::new();
    for slug in ["acme", "globex"] {
        app.create_tenant(slug).await;
        let (_, key) = app
            .post(
                &format!("/api/v1/tenant/{slug}/api-keys"),
                json!({ "name": "app" }),
            )
            .await;
        tokens.push((slug, key["token"].as_str().unwrap().to_owned()));
    }
    for (slug, token) in &tokens {
        let calls = if *slug == "acme" { 12 } else { 3 };
        for _ in 0..calls {
            let response = app
                .client
                .get(app.url(&format!("/api/v1/tenant/{slug}")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    }
    tenantry::quotas::traffic::flush(&app.ctx).await.unwrap();

    let (_, usage) = app.get("/api/v1/tenant/acme/usage").await;
    let traffic = &usage["traffic"];
    assert_eq!(traffic["requests"], 12, "{usage}");
    assert_eq!(traffic["errors"], 0);
    assert_eq!(traffic["window_minutes"], 60);
    assert!(traffic["p95_ms"].as_f64().unwrap() > 0.0, "{traffic}");

    let (status, ranked) = app.get("/api/v1/usage/heaviest?window_minutes=5").await;
    assert_eq!(status, StatusCode::OK, "{ranked}");
    let order: Vec<(&str, u64)> = ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["tenant"].as_str().unwrap(),
                v["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(order, [("acme", 12), ("globex", 3)]);
    let (status, body) = app.get("/api/v1/usage/heaviest?window_minutes=90").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Per-tenant series for the busiest one only (alerts.per_tenant_series = 1).
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tenantry_tenant_requests_per_minute{tenant=\"acme\"} 2.4"),
        "{metrics}"
    );
    for series in [
        "tenantry_tenant_requests_per_minute{tenant=\"globex\"}",
        "tenantry_tenant_error_ratio{tenant=\"globex\"}",
        "tenantry_tenant_request_p95_seconds{tenant=\"globex\"}",
    ] {
        assert!(!metrics.contains(series), "{series}: {metrics}");
    }
    app.stop().await;
}
