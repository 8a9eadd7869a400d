//! The tenant registry API, against SQLite and PostgreSQL.

use crate::common;

use crate::common::{Backend, TestApp, field_rules};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    create_returns_the_tenant_with_secrets_only_as_fingerprints,
    create_accepts_the_seed_request_shape,
    slug_rules_are_422_naming_the_rule_and_store_nothing,
    duplicate_slug_is_409_and_stores_nothing,
    malformed_json_is_400_and_unknown_field_is_422,
    a_body_that_is_not_an_object_is_422_and_an_integral_float_is_an_integer,
    an_undeclared_method_is_405_naming_the_allowed_ones,
    every_error_has_details_as_an_object,
    body_over_the_limit_is_413,
    list_paginates_with_a_cursor_and_filters_by_status_tier_and_search,
    a_search_that_matches_many_tenants_or_a_few_among_many_finds_them_in_slug_order,
    list_with_a_bad_filter_is_422,
    patch_changes_fields_and_rotating_the_secret_keeps_the_previous_for_rollback,
    patch_is_active_false_suspends_and_true_reactivates,
    lifecycle_follows_the_state_machine_and_keeps_history,
    illegal_transition_is_409_naming_the_current_state,
    lifecycle_needs_a_reason,
    purge_waits_for_the_retention_period_unless_forced,
    purge_after_retention_removes_the_tenant,
    platform_tenant_exists_and_cannot_be_suspended,
    unknown_tenant_is_404,
    export_then_purge_then_import_restores_the_tenant,
    import_refuses_a_bundle_sealed_with_a_key_the_server_lacks,
    tenant_database_health_reports_the_round_trip,
    tenant_health_is_public_and_unavailable_when_suspended,
    a_tenant_is_found_by_its_id_in_the_api_the_search_and_the_audit_log,
);

async fn create_returns_the_tenant_with_secrets_only_as_fingerprints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({
                "slug": "acme-corp",
                "name": "Acme Corporation",
                "tier": "enterprise",
                "trial_days": 14,
                "contact": { "name": "Jo Doe", "email": "jo@acme.example" },
                "metadata": { "industry": "Manufacturing" },
                "oauth_issuer": "https://acme.okta.com/oauth2/default",
                "client_id": "0oa1abc2def3ghi4jkl",
                "client_secret": "secret-123",
                "scopes": "openid,profile,email",
                "db_uri": "postgresql://user:pa%40ss@host:5432/acme_db",
                "default_schema": "acme_schema"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["slug"], "acme-corp");
    assert_eq!(body["status"], "trial");
    assert_eq!(body["is_active"], true);
    assert_eq!(body["tier"], "enterprise");
    assert!(body["trial_ends_at"].is_string());
    assert_eq!(body["contact"]["email"], "jo@acme.example");
    assert_eq!(body["metadata"]["industry"], "Manufacturing");
    assert_eq!(body["scopes"], json!(["openid", "profile", "email"]));
    assert_eq!(body["client_secret"]["set"], true);
    assert_eq!(
        body["client_secret"]["fingerprint"].as_str().unwrap().len(),
        8
    );
    assert_eq!(body["db_uri"]["set"], true);
    let text = body.to_string();
    assert!(!text.contains("secret-123"), "secret leaked: {text}");
    assert!(!text.contains("pa%40ss"), "db password leaked: {text}");

    let (status, shown) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["client_secret"], body["client_secret"]);
    assert!(!shown.to_string().contains("secret-123"));
    app.stop().await;
}

async fn create_accepts_the_seed_request_shape(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The request shape of the onboarding scripts: `db_sqlalchemy_uri` and comma-separated scopes.
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({
                "slug": "globex",
                "name": "Globex",
                "oauth_issuer": "https://globex.okta.com/oauth2/default",
                "client_id": "abc",
                "client_secret": "xyz",
                "scopes": "openid,profile,email",
                "db_sqlalchemy_uri": "postgresql://user:pass@host:5432/globex",
                "default_schema": "globex"
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["db_uri"]["set"], true);
    assert_eq!(body["tier"], "free");
    app.stop().await;
}

async fn tenant_count(app: &TestApp) -> usize {
    let (_, body) = app.get("/api/v1/tenant?limit=200").await;
    body["items"].as_array().unwrap().len()
}

async fn slug_rules_are_422_naming_the_rule_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = tenant_count(&app).await;
    let cases = [
        ("ab", "length"),
        (&"a".repeat(64) as &str, "length"),
        ("Acme", "charset"),
        ("acme_corp", "charset"),
        ("-acme", "hyphen_edge"),
        ("acme-", "hyphen_edge"),
        ("admin", "reserved"),
        ("www", "reserved"),
    ];
    for (slug, rule) in cases {
        let (status, body) = app
            .post("/api/v1/tenant", json!({ "slug": slug, "name": "X" }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{slug}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert!(
            field_rules(&body).contains(&("slug".to_owned(), rule.to_owned())),
            "{slug} should break {rule}: {body}"
        );
    }
    // Several broken fields are reported together.
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "ok-slug", "name": " ", "tier": "gold", "trial_days": 999,
                    "contact": { "email": "not-an-email" }, "scopes": "profile",
                    "oauth_issuer": "http://idp.example.com", "default_schema": "1bad" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let rules = field_rules(&body);
    for expected in [
        ("name", "required"),
        ("tier", "one_of"),
        ("trial_days", "range"),
        ("contact.email", "email"),
        ("scopes", "openid"),
        ("oauth_issuer", "https"),
        ("default_schema", "identifier"),
    ] {
        assert!(
            rules.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing in {body}"
        );
    }
    assert_eq!(tenant_count(&app).await, before, "nothing stored");
    app.stop().await;
}

async fn duplicate_slug_is_409_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, body) = app
        .post("/api/v1/tenant", json!({ "slug": "acme", "name": "Other" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "slug_taken");
    assert!(body["error"]["message"].as_str().unwrap().contains("acme"));
    let (_, shown) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(
        shown["name"], "Tenant acme",
        "the first tenant is unchanged"
    );
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=tenant.create")
        .await;
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        1,
        "no audit record for the refused create"
    );
    app.stop().await;
}

async fn malformed_json_is_400_and_unknown_field_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = tenant_count(&app).await;
    let response = app
        .request(Method::POST, "/api/v1/tenant")
        .header("content-type", "application/json")
        .body(r#"{"slug": "acme", "name": "#)
        .send()
        .await
        .unwrap();
    let (status, body) = common::into_json(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "A", "colour": "red" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("colour".to_owned(), "unknown_field".to_owned())]
    );
    // Every unknown field at once, at any depth, then what else is wrong.
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({
                "slug": "acme", "colour": "red", "max_agents": 5,
                "contact": {"emial": "ops@acme.example", "name": "Ops"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut rules = field_rules(&body);
    rules.sort();
    assert_eq!(
        rules,
        [
            ("colour".to_owned(), "unknown_field".to_owned()),
            ("contact.emial".to_owned(), "unknown_field".to_owned()),
            ("max_agents".to_owned(), "unknown_field".to_owned()),
            ("name".to_owned(), "required".to_owned()),
        ],
        "{body}"
    );
    // Where a runbook's shape is close, the error says where to look.
    let message_of = |body: &Value, field: &str| -> String {
        body["error"]["details"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == field)
            .map(|f| f["message"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {field} in {body}"))
    };
    assert!(
        message_of(&body, "max_agents").contains("drop `max_` and set `agents`"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "A", "tier": "ENTERPRISE", "environment": "prod" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message_of(&body, "environment").contains("`metadata`"),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "A", "tier": "ENTERPRISE" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        message_of(&body, "tier").contains("tiers are lowercase: use `enterprise`"),
        "{body}"
    );

    let (status, body) = app
        .post("/api/v1/tenant", json!({ "slug": "acme", "name": 5 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_rules(&body)[0].0, "name");

    let (status, body) = app.post("/api/v1/tenant", json!({ "name": "A" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("slug".to_owned(), "required".to_owned())]
    );

    let response = app
        .request(Method::POST, "/api/v1/tenant")
        .header("content-type", "text/plain")
        .body(r#"{"slug": "acme", "name": "A"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(tenant_count(&app).await, before);

    // A lifecycle POST without a body (`curl -X POST …/suspend`) is told what it lacks and how
    // to send it, not which Content-Type it did not send.
    let created = app.create_tenant("acme").await;
    let response = app
        .request(Method::POST, "/api/v1/tenant/acme/suspend")
        .send()
        .await
        .unwrap();
    let (status, body) = common::into_json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![("reason".to_owned(), "required".to_owned())]
    );
    let message = body["error"]["details"]["fields"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("no body") && message.contains("Content-Type: application/json"),
        "{message}"
    );
    let (_, tenant) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(tenant["status"], created["status"], "nothing changed");
    app.stop().await;
}

/// serde reads a struct from an array of its fields; the API takes objects only. A number like
/// `30.0` is the integer 30 (as JSON Schema has it).
async fn a_body_that_is_not_an_object_is_422_and_an_integral_float_is_an_integer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = tenant_count(&app).await;
    for body in [json!(["acme", "Acme"]), json!("acme"), json!(null)] {
        let (status, error) = app.post("/api/v1/tenant", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(
            field_rules(&error),
            vec![("body".to_owned(), "type".to_owned())]
        );
    }
    assert_eq!(tenant_count(&app).await, before);
    let (status, tenant) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "trial_days": 30.0 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert_eq!(tenant["status"], "trial");
    let (status, error) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "globex", "name": "Globex", "trial_days": 2.5 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(field_rules(&error)[0].0, "trial_days");
    app.stop().await;
}

/// A documented path asked with a method it does not have: 405 with `Allow` (the most specific
/// path's methods), not 404.
async fn an_undeclared_method_is_405_naming_the_allowed_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path, allowed) in [
        (Method::PUT, "/api/v1/tenant", "GET, POST"),
        (Method::TRACE, "/metrics", "GET"),
        (Method::OPTIONS, "/api/v1/tenant/import", "POST"),
        (Method::PUT, "/api/v1/tenant/acme", "GET, DELETE, PATCH"),
    ] {
        let response = app.request(method.clone(), path).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(response.headers()["allow"], allowed, "{method} {path}");
        let (_, body) = common::into_json(response).await;
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
    let (status, _) = app.get("/api/v1/nothing-here").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an undocumented path stays 404"
    );
    app.stop().await;
}

/// Clients parse `details` as an object: it is one on every error, empty when there is nothing
/// more to say.
async fn every_error_has_details_as_an_object(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .client
        .get(app.url("/api/v1/tenant"))
        .send()
        .await
        .unwrap();
    let (status, body) = common::into_json(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["details"], json!({}), "{body}");
    let (status, body) = app
        .post("/api/v1/tenant/nope/suspend", json!({ "reason": "x" }))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"]["details"].is_object(), "{body}");
    app.stop().await;
}

async fn body_over_the_limit_is_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let huge = json!({ "slug": "big", "name": "x".repeat(300 * 1024) });
    let (status, body) = app.post("/api/v1/tenant", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (status, _) = app.get("/api/v1/tenant/big").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn list_paginates_with_a_cursor_and_filters_by_status_tier_and_search(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "starter" } else { "enterprise" };
        let (status, body) = app
            .post("/api/v1/tenant", json!({ "slug": format!("shop-{i}"), "name": format!("Shop number {i}"), "tier": tier }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.post(
        "/api/v1/tenant/shop-3/suspend",
        json!({ "reason": "payment failure" }),
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get(&format!("/api/v1/tenant?q=shop&limit=3&cursor={cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|t| t["slug"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..7).map(|i| format!("shop-{i}")).collect::<Vec<_>>()
    );

    let (_, page) = app.get("/api/v1/tenant?status=suspended").await;
    let slugs: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, vec!["shop-3"]);

    let (_, page) = app.get("/api/v1/tenant?tier=starter&q=shop").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);

    let (_, page) = app.get("/api/v1/tenant?q=NUMBER%205").await;
    let slugs: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        vec!["shop-5"],
        "search is case-insensitive on the name"
    );

    let (_, page) = app.get("/api/v1/tenant?q=%25").await;
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        0,
        "LIKE wildcards in the search match literally"
    );

    // The search index follows renames and removals, and takes any text.
    let search = |q: &'static str| {
        let app = &app;
        async move {
            let (status, page) = app.get(&format!("/api/v1/tenant?q={q}")).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["slug"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let (status, body) = app
        .patch(
            "/api/v1/tenant/shop-6",
            json!({ "name": "Bäckerei \"Zur Linde\"" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(search("number%206").await, Vec::<String>::new());
    assert_eq!(search("zur%20linde").await, vec!["shop-6"]);
    assert_eq!(
        search("%22Zur").await,
        vec!["shop-6"],
        "a quote is searched for"
    );
    assert_eq!(search("p-6").await, vec!["shop-6"]);
    assert_eq!(search("-6").await, vec!["shop-6"], "two characters");
    app.delete("/api/v1/tenant/shop-6").await;
    let (status, body) = app
        .delete("/api/v1/tenant/shop-6?hard=true&force=true&reason=test")
        .await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(search("linde").await, Vec::<String>::new());
    assert_eq!(search("shop").await.len(), 6);
    app.stop().await;
}

/// The trigram index narrows a search to its few matches; one that matches more than it hands
/// out (a thousand) reads tenants in slug order instead. Either way the page is the same.
async fn a_search_that_matches_many_tenants_or_a_few_among_many_finds_them_in_slug_order(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let actor = tenantry::audit::Actor::system();
    for i in 0..1_050 {
        let name = if i % 500 == 7 {
            format!("Rare Orchid {i}")
        } else {
            format!("Common shop {i}")
        };
        let request = common::new_tenant(&format!("t-{i:04}"), &name);
        tenantry::tenants::create(&app.ctx, &actor, &request)
            .await
            .expect("create");
    }
    let slugs = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = app.get("/api/v1/tenant?q=orchid").await;
    assert_eq!(slugs(&page), vec!["t-0007", "t-0507", "t-1007"]);
    // 1,047 matches: more than the index hands out.
    let (_, page) = app.get("/api/v1/tenant?q=common%20SHOP&limit=5").await;
    assert_eq!(
        slugs(&page),
        vec!["t-0000", "t-0001", "t-0002", "t-0003", "t-0004"]
    );
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app
        .get(&format!(
            "/api/v1/tenant?q=common%20shop&limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(slugs(&page), vec!["t-0005", "t-0006", "t-0008"]);
    let (_, page) = app.get("/api/v1/tenant?q=shop%201049").await;
    assert_eq!(slugs(&page), vec!["t-1049"]);
    app.stop().await;
}

async fn list_with_a_bad_filter_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app.get("/api/v1/tenant?status=sleeping").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("status".to_owned(), "one_of".to_owned())]
    );
    let (status, body) = app.get("/api/v1/tenant?q=ab%00c&cursor=%01").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![
            ("q".to_owned(), "text".to_owned()),
            ("cursor".to_owned(), "text".to_owned())
        ]
    );
    let long = "x".repeat(201);
    let (status, body) = app.get(&format!("/api/v1/tenant?q={long}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app.get("/api/v1/tenant?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_rules(&body)[0].0, "limit");
    let (status, body) = app.get("/api/v1/tenant?limit=many").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    app.stop().await;
}

async fn patch_changes_fields_and_rotating_the_secret_keeps_the_previous_for_rollback(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (_, created) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "oauth_issuer": "https://idp.example.com",
                    "client_id": "cid", "client_secret": "old-secret-123" }),
        )
        .await;
    let old_fp = created["client_secret"]["fingerprint"].clone();

    let (status, body) = app
        .patch("/api/v1/tenant/acme", json!({ "name": "Acme Inc", "tier": "professional", "client_secret": "new-secret-456" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Acme Inc");
    assert_eq!(body["tier"], "professional");
    assert_ne!(body["client_secret"]["fingerprint"], old_fp);
    assert_eq!(body["client_secret_previous"]["fingerprint"], old_fp);
    assert_eq!(body["version"], 2);
    let new_fp = body["client_secret"]["fingerprint"].clone();

    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=tenant.update")
        .await;
    let details = &audit["items"][0]["details"];
    assert_eq!(details["client_secret"]["rotated"], true);
    assert!(!audit.to_string().contains("new-secret-456"));

    let (status, body) = app
        .post("/api/v1/tenant/acme/client-secret/rollback", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["client_secret"]["fingerprint"], old_fp);
    assert_eq!(body["client_secret_previous"]["fingerprint"], new_fp);

    // The sealed value really is the old secret again.
    let tenant =
        tenantry::store::tenants::find_by_slug(&mut app.ctx.db.conn().await.unwrap(), "acme")
            .await
            .unwrap()
            .unwrap();
    let opened = app
        .ctx
        .keyring
        .open(
            tenant.client_secret.as_deref().unwrap(),
            &tenantry::tenants::secret_context(&tenant.id, "client_secret"),
        )
        .unwrap();
    assert_eq!(opened, "old-secret-123");

    // A bad value changes nothing.
    let (status, body) = app
        .patch(
            "/api/v1/tenant/acme",
            json!({ "name": "Renamed", "tier": "platinum" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("tier".to_owned(), "one_of".to_owned())]
    );
    let (_, shown) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(shown["name"], "Acme Inc");

    // null clears a clearable field; client_id without issuer is refused.
    let (status, body) = app
        .patch("/api/v1/tenant/acme", json!({ "oauth_issuer": null }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_rules(&body)[0].0, "oauth_issuer");
    app.stop().await;
}

async fn patch_is_active_false_suspends_and_true_reactivates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, body) = app
        .patch("/api/v1/tenant/acme", json!({ "is_active": false }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suspended");
    assert_eq!(body["is_active"], false);
    let (status, body) = app
        .patch(
            "/api/v1/tenant/acme",
            json!({ "is_active": true, "reason": "paid" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(body["status_reason"], "paid");
    let (_, history) = app.get("/api/v1/tenant/acme/history").await;
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["active", "suspended", "active"]);
    app.stop().await;
}

async fn lifecycle_follows_the_state_machine_and_keeps_history(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let steps = [
        ("suspend", "suspended"),
        ("reactivate", "active"),
        ("cancel", "canceled"),
        ("restore", "active"),
    ];
    for (action, expected) in steps {
        let (status, body) = app
            .post(
                &format!("/api/v1/tenant/acme/{action}"),
                json!({ "reason": format!("test {action}") }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{action}: {body}");
        assert_eq!(body["status"], expected);
    }
    let (status, body) = app
        .delete("/api/v1/tenant/acme?reason=customer%20left")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "deleted");
    assert!(body["retention_ends_at"].is_string());
    let (_, body) = app
        .post(
            "/api/v1/tenant/acme/restore",
            json!({ "reason": "came back" }),
        )
        .await;
    assert_eq!(body["status"], "active");

    let (_, history) = app.get("/api/v1/tenant/acme/history").await;
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 7);
    assert_eq!(history[0]["reason"], "came back");
    assert_eq!(history[0]["from"], "deleted");
    assert_eq!(history[1]["reason"], "customer left");
    assert!(history.iter().all(|h| h["actor"] == "token:test"));

    let (_, audit) = app.get("/api/v1/audit?tenant=acme&action=tenant.").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "tenant.restore",
            "tenant.delete",
            "tenant.restore",
            "tenant.cancel",
            "tenant.reactivate",
            "tenant.suspend",
            "tenant.create"
        ]
    );
    app.stop().await;
}

async fn illegal_transition_is_409_naming_the_current_state(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, body) = app
        .post("/api/v1/tenant/acme/reactivate", json!({ "reason": "x" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "illegal_transition");
    assert_eq!(body["error"]["details"]["current_status"], "active");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("it is active")
    );
    let (status, body) = app
        .post("/api/v1/tenant/acme/restore", json!({ "reason": "x" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, history) = app.get("/api/v1/tenant/acme/history").await;
    assert_eq!(
        history.as_array().unwrap().len(),
        1,
        "refused transitions leave no history"
    );
    app.stop().await;
}

async fn lifecycle_needs_a_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, body) = app
        .post("/api/v1/tenant/acme/suspend", json!({ "reason": "  " }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("reason".to_owned(), "required".to_owned())]
    );
    let (status, body) = app.post("/api/v1/tenant/acme/suspend", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("reason".to_owned(), "required".to_owned())]
    );
    let (_, tenant) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(tenant["status"], "active");
    app.stop().await;
}

async fn purge_waits_for_the_retention_period_unless_forced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, body) = app.delete("/api/v1/tenant/acme?hard=true").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an active tenant is not purged: {body}"
    );
    assert_eq!(body["error"]["details"]["current_status"], "active");

    app.post(
        "/api/v1/tenant/acme/cancel",
        json!({ "reason": "contract ended" }),
    )
    .await;
    let (status, body) = app.delete("/api/v1/tenant/acme?hard=true").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "retention_period");
    assert!(body["error"]["details"]["retention_ends_at"].is_string());

    let (status, _) = app
        .delete("/api/v1/tenant/acme?hard=true&force=true&reason=gdpr%20request")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, audit) = app
        .get("/api/v1/audit?tenant=acme&action=tenant.purge")
        .await;
    let record = &audit["items"][0];
    assert_eq!(record["details"]["forced"], true);
    assert_eq!(record["details"]["reason"], "gdpr request");
    // The slug is free again.
    app.create_tenant("acme").await;
    app.stop().await;
}

async fn purge_after_retention_removes_the_tenant(backend: Backend) {
    let app = TestApp::spawn_with(backend, |config| config.retention_days = 0).await;
    app.create_tenant("acme").await;
    app.delete("/api/v1/tenant/acme").await;
    let (status, body) = app.delete("/api/v1/tenant/acme?hard=true").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn platform_tenant_exists_and_cannot_be_suspended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, admin) = app.get("/api/v1/tenant/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(admin["name"], "Platform Administration");
    assert_eq!(admin["status"], "active");
    let (status, body) = app
        .post("/api/v1/tenant/admin/suspend", json!({ "reason": "oops" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "platform_tenant");
    app.stop().await;
}

async fn unknown_tenant_is_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (method, path, body) in [
        (Method::GET, "/api/v1/tenant/nope", None),
        (
            Method::PATCH,
            "/api/v1/tenant/nope",
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            "/api/v1/tenant/nope/suspend",
            Some(json!({ "reason": "x" })),
        ),
        (Method::DELETE, "/api/v1/tenant/nope", None),
    ] {
        let (status, body): (StatusCode, Value) = app.call(method.clone(), path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    app.stop().await;
}

async fn export_then_purge_then_import_restores_the_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, created) = app
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "oauth_issuer": "https://idp.example.com", "client_id": "c",
                    "client_secret": "s3cret-value", "db_uri": "postgresql://u:p@h/db", "trial_days": 7 }),
        )
        .await;
    app.post("/api/v1/tenant/acme/suspend", json!({ "reason": "unpaid" }))
        .await;
    let (status, bundle) = app.get("/api/v1/tenant/acme/export").await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    assert_eq!(bundle["format"], "tenantry.tenant-bundle/v1");
    assert!(
        !bundle.to_string().contains("s3cret-value"),
        "secrets stay sealed in the bundle"
    );
    assert_eq!(bundle["status_history"].as_array().unwrap().len(), 2);

    let (status, body) = app.post("/api/v1/tenant/import", bundle.clone()).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the tenant still exists: {body}"
    );

    app.delete("/api/v1/tenant/acme?reason=leaving").await;
    let (status, _) = app.delete("/api/v1/tenant/acme?hard=true&force=true").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, restored) = app.post("/api/v1/tenant/import", bundle).await;
    assert_eq!(status, StatusCode::CREATED, "{restored}");
    assert_eq!(restored["id"], created["id"]);
    assert_eq!(restored["status"], "suspended");
    assert_eq!(
        restored["client_secret"]["fingerprint"],
        created["client_secret"]["fingerprint"]
    );
    let (_, history) = app.get("/api/v1/tenant/acme/history").await;
    let reasons: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, vec!["unpaid", "created"]);
    // Its lifecycle goes on from there, and its secret still opens.
    let (status, _) = app
        .post(
            "/api/v1/tenant/acme/reactivate",
            json!({ "reason": "paid" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let row = tenantry::store::tenants::find_by_slug(&mut app.ctx.db.conn().await.unwrap(), "acme")
        .await
        .unwrap()
        .unwrap();
    let secret = app
        .ctx
        .keyring
        .open(
            row.client_secret.as_deref().unwrap(),
            &tenantry::tenants::secret_context(&row.id, "client_secret"),
        )
        .unwrap();
    assert_eq!(secret, "s3cret-value");
    let (_, audit) = app.get("/api/v1/audit?tenant=acme&limit=3").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["tenant.reactivate", "tenant.import", "tenant.purge"]
    );
    app.stop().await;
}

async fn import_refuses_a_bundle_sealed_with_a_key_the_server_lacks(backend: Backend) {
    let source = TestApp::spawn(backend).await;
    source
        .post(
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "oauth_issuer": "https://idp.example.com", "client_id": "c",
                    "client_secret": "s3cret-value" }),
        )
        .await;
    let (_, bundle) = source.get("/api/v1/tenant/acme/export").await;
    source.stop().await;

    let target = TestApp::spawn(backend).await;
    let (status, body) = target.post("/api/v1/tenant/import", bundle.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![("tenant.client_secret".to_owned(), "sealed_key".to_owned())]
    );
    let mut wrong = bundle;
    wrong["format"] = json!("something/v9");
    wrong["tenant"]["client_secret"] = Value::Null;
    wrong["tenant"]["slug"] = json!("Not A Slug");
    let (status, body) = target.post("/api/v1/tenant/import", wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let rules = field_rules(&body);
    assert!(
        rules.contains(&("format".to_owned(), "one_of".to_owned())),
        "{body}"
    );
    assert!(
        rules.contains(&("tenant.slug".to_owned(), "charset".to_owned())),
        "{body}"
    );
    let (status, _) = target.get("/api/v1/tenant/acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing imported");
    target.stop().await;
}

async fn tenant_database_health_reports_the_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let reachable = common::postgres_admin_url().replace("postgres://", "postgresql+psycopg2://");
    for (slug, uri) in [
        ("good", Some(reachable.as_str())),
        ("down", Some("postgresql://u:topsecret@127.0.0.1:1/db")),
        ("none", None),
    ] {
        let mut body = json!({ "slug": slug, "name": slug });
        if let Some(uri) = uri {
            body["db_uri"] = json!(uri);
        }
        let (status, _) = app.post("/api/v1/tenant", body).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, good) = app.get("/api/v1/tenant/good/health/database").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(good["status"], "connected", "{good}");
    assert!(good["response_time_ms"].as_f64().unwrap() > 0.0);
    let (_, down) = app.get("/api/v1/tenant/down/health/database").await;
    assert_eq!(down["status"], "unreachable", "{down}");
    assert!(!down.to_string().contains("topsecret"));
    let (_, none) = app.get("/api/v1/tenant/none/health/database").await;
    assert_eq!(none["status"], "not_configured");
    app.stop().await;
}

async fn tenant_health_is_public_and_unavailable_when_suspended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.post(
        "/api/v1/tenant",
        json!({ "slug": "acme", "name": "Acme", "db_uri": "postgresql://u:p@h/db" }),
    )
    .await;
    let response = app
        .client
        .get(app.url("/t/acme/health"))
        .send()
        .await
        .unwrap();
    let (status, body) = common::into_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "status": "healthy", "tenant": "acme", "tenant_status": "active",
                             "database": "configured", "oauth": "not_configured" })
    );
    app.post("/api/v1/tenant/acme/suspend", json!({ "reason": "unpaid" }))
        .await;
    let (status, body) = common::into_json(
        app.client
            .get(app.url("/t/acme/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["tenant_status"], "suspended");
    let (status, _) = common::into_json(
        app.client
            .get(app.url("/t/nobody/health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// Audit records, webhooks and runs name tenants by id: an operator pastes the id anywhere a
/// tenant is named, and a tenant's own admins read its audit log.
async fn a_tenant_is_found_by_its_id_in_the_api_the_search_and_the_audit_log(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let id = acme["id"].as_str().unwrap().to_owned();

    let (status, found) = app.get(&format!("/api/v1/tenant/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["slug"], "acme");
    let (status, suspended) = app
        .post(
            &format!("/api/v1/tenant/{id}/suspend"),
            json!({"reason": "found by id"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{suspended}");
    assert_eq!(suspended["status"], "suspended");
    let (_, history) = app.get(&format!("/api/v1/tenant/{id}/history")).await;
    assert_eq!(history[0]["reason"], "found by id", "{history}");

    // The search finds the whole id; an id no tenant has finds nothing and is a 404.
    let (_, page) = app.get(&format!("/api/v1/tenant?q={id}")).await;
    let slugs: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme"], "{page}");
    let unknown = "0193a7c2-5b1e-7c4d-9f00-1234567890ab";
    let (_, page) = app.get(&format!("/api/v1/tenant?q={unknown}")).await;
    assert_eq!(page["items"], json!([]), "{page}");
    let (status, _) = app.get(&format!("/api/v1/tenant/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The audit log by id: the same records as by slug, none of another tenant's.
    let (_, by_id) = app.get(&format!("/api/v1/audit?tenant={id}")).await;
    let (_, by_slug) = app.get("/api/v1/audit?tenant=acme").await;
    let actions = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["tenant"].as_str().unwrap(),
                    r["action"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert!(!actions(&by_id).is_empty());
    assert_eq!(actions(&by_id), actions(&by_slug));
    assert!(
        actions(&by_id).contains(&"acme tenant.suspend".to_string()),
        "{by_id}"
    );

    // A slug shaped like an id is refused: ids and slugs share the tenant's addresses.
    let (status, body) = app
        .post("/api/v1/tenant", json!({"slug": unknown, "name": "Shaped"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        common::field_rules(&body),
        vec![("slug".to_owned(), "not_an_id".to_owned())]
    );

    // A tenant's admin key reads its own tenant's audit log, by its key alone or naming it;
    // another tenant's is not found; a member key may not read it.
    app.post(
        &format!("/api/v1/tenant/{id}/reactivate"),
        json!({"reason": "back"}),
    )
    .await;
    let (_, key) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({"name": "ops", "role": "tenant-admin"}),
        )
        .await;
    let token = key["token"].as_str().unwrap().to_owned();
    let (_, member) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({"name": "app", "role": "member"}),
        )
        .await;
    let member = member["token"].as_str().unwrap().to_owned();
    let read = |token: String, query: &'static str| {
        let request = app
            .client
            .get(app.url(&format!("/api/v1/audit{query}")))
            .bearer_auth(token);
        async move { common::into_json(request.send().await.unwrap()).await }
    };
    let (status, own) = read(token.clone(), "").await;
    assert_eq!(status, StatusCode::OK, "{own}");
    let tenants: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant"].as_str().unwrap())
        .collect();
    assert!(
        !tenants.is_empty() && tenants.iter().all(|t| *t == "acme"),
        "{own}"
    );
    let (status, named) = read(token.clone(), "?tenant=acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(named["items"], own["items"]);
    let (status, _) = read(token.clone(), "?tenant=globex").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = read(member, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}
