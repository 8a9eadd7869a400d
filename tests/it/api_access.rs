//! Authentication and roles on every API route, the OpenAPI document, health and metrics.

use crate::common;

use crate::common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::auth::Role;

backend_tests!(
    every_api_route_needs_a_token_except_health_and_metrics,
    a_viewer_token_reads_but_every_change_is_403,
    revoked_and_unknown_tokens_are_401,
    every_documented_route_is_served,
    ready_reports_the_database_round_trip,
    metrics_count_tenants_by_status_and_tier_and_requests_by_route,
    audit_api_filters_by_tenant_action_actor_and_time_and_paginates,
    audit_records_carry_actor_source_and_request_id,
);

/// Every (method, path) of the OpenAPI document, with `{…}` filled in.
async fn documented_routes(app: &TestApp) -> Vec<(Method, String)> {
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_some() {
                let concrete = path
                    .replace("{slug}", "acme")
                    .replace("{id}", "nothing")
                    .replace("{name}", "tier-quota")
                    .replace("{kind}", "host")
                    .replace("{capability}", "nothing")
                    .replace("{prefix}", "abcd1234")
                    .replace("{metric}", "agents");
                routes.push((
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    concrete,
                ));
            }
        }
    }
    assert!(routes.len() >= 15, "the document lists the API: {routes:?}");
    routes
}

const PUBLIC: &[&str] = &[
    "/health",
    "/health/ready",
    "/metrics",
    "/t/acme/health",
    // A client generator fetches the document without credentials.
    "/api/v1/openapi.json",
];

async fn every_api_route_needs_a_token_except_health_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    for (method, path) in documented_routes(&app).await {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if PUBLIC.contains(&path.as_str()) {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{method} {path} is public"
            );
        } else {
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} without a token"
            );
            let (_, body) = common::into_json(response).await;
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    app.stop().await;
}

async fn a_viewer_token_reads_but_every_change_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    // `{name}` stands for `tier-quota` in every path: a template of that name makes the template
    // routes resolve too.
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "tier-quota", "kind": "asset", "body": "{x}", "placeholders": ["x"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let viewer = app
        .token_with_role("dashboards", Role::PlatformViewer)
        .await;
    for (method, path) in documented_routes(&app).await {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&viewer)
            .json(&json!({ "reason": "x", "name": "x" }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let (_, body): (StatusCode, Value) = common::into_json(response).await;
        // Tokens, exports and bundles (which carry sealed secrets) are for administrators only.
        // API keys' metadata is for administrators only, like the platform's tokens.
        let reads_tenant_data = method == Method::GET
            && !path.starts_with("/api/v1/admin/")
            && !path.ends_with("/export")
            && !path.ends_with("/bundle")
            && !path.ends_with("/api-keys")
            && !path.starts_with("/api/v1/api-keys/")
            // Webhook endpoints too: a URL can be a secret of its own.
            && !path.starts_with("/api/v1/webhooks");
        if method == Method::POST && path.ends_with("/quotas/check") {
            // A question that changes nothing: a viewer may ask it (the walk's body is not one).
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path}: {body}"
            );
        } else if reads_tenant_data && path == "/api/v1/provisioning/nothing" {
            // No run exists: the viewer gets past authorisation to a 404.
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        } else if reads_tenant_data {
            assert_eq!(
                status,
                StatusCode::OK,
                "{method} {path} is readable by a viewer: {body}"
            );
        } else {
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} is refused to a viewer: {body}"
            );
            assert_eq!(body["error"]["code"], "forbidden");
        }
    }
    let (_, tenant) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(tenant["version"], 1, "nothing changed");
    app.stop().await;
}

async fn revoked_and_unknown_tokens_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_with_role("temp", Role::PlatformAdmin).await;
    let ok = app
        .client
        .get(app.url("/api/v1/tenant"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let (status, _) = app.delete("/api/v1/admin/tokens/temp").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let refused = app
        .client
        .get(app.url("/api/v1/tenant"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // Right prefix, wrong secret.
    let forged = format!("{}{}", &token[..13], "A".repeat(32));
    let refused = app
        .client
        .get(app.url("/api/v1/tenant"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = app
        .client
        .get(app.url("/api/v1/tenant"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (_, tokens) = app.get("/api/v1/admin/tokens").await;
    let temp = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "temp")
        .unwrap();
    assert!(temp["revoked_at"].is_string());
    assert!(
        temp.get("token").is_none() && !tokens.to_string().contains(&token[14..]),
        "secrets are never listed"
    );
    app.stop().await;
}

async fn every_documented_route_is_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    for (method, path) in documented_routes(&app).await {
        let (status, body) = app.call(method.clone(), &path, Some(json!({}))).await;
        let unrouted = status == StatusCode::NOT_FOUND
            && matches!(
                body["error"]["details"]["resource"].as_str(),
                Some("route" | "page")
            );
        assert!(
            !unrouted && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not served: {status} {body}"
        );
    }
    app.stop().await;
}

async fn ready_reports_the_database_round_trip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, body) = common::into_json(response).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"]["status"], "connected");
    assert_eq!(
        body["database"]["backend"],
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "postgres"
        }
    );
    assert!(body["database"]["response_time_ms"].as_f64().unwrap() >= 0.0);
    let (_, health) =
        common::into_json(app.client.get(app.url("/health")).send().await.unwrap()).await;
    assert_eq!(health["status"], "healthy");
    app.stop().await;
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn metrics_count_tenants_by_status_and_tier_and_requests_by_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("one").await;
    app.create_tenant("two").await;
    app.post(
        "/api/v1/tenant/two/suspend",
        json!({ "reason": "late payment" }),
    )
    .await;
    app.get("/api/v1/tenant/one").await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(&text, "tenantry_tenants{status=\"active\",tier=\"free\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "tenantry_tenants{status=\"suspended\",tier=\"free\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "tenantry_tenants{status=\"active\",tier=\"enterprise\"}"
        ),
        Some(1.0),
        "the admin tenant"
    );
    assert_eq!(
        metric_value(
            &text,
            "tenantry_http_requests_total{method=\"GET\",route=\"/api/v1/tenant/{slug}\",status=\"200\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains(
        "tenantry_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/tenant\""
    ));
    app.stop().await;
}

async fn audit_api_filters_by_tenant_action_actor_and_time_and_paginates(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let start = chrono::Utc::now();
    for slug in ["alpha", "beta"] {
        app.create_tenant(slug).await;
        app.post(
            &format!("/api/v1/tenant/{slug}/suspend"),
            json!({ "reason": "r" }),
        )
        .await;
    }
    let (_, page) = app.get("/api/v1/audit?tenant=alpha").await;
    let actions: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["tenant.suspend", "tenant.create"]);
    let (_, page) = app.get("/api/v1/audit?action=tenant.suspend").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, page) = app.get("/api/v1/audit?actor=token:test").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let since = urlencode(&start.to_rfc3339());
    let (_, page) = app
        .get(&format!("/api/v1/audit?since={since}&action=tenant."))
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let (_, page) = app
        .get(&format!("/api/v1/audit?until={since}&action=tenant."))
        .await;
    let before_start: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(
        before_start,
        vec!["admin"],
        "only the platform tenant existed before"
    );

    let mut seqs = Vec::new();
    let mut before = String::new();
    loop {
        let (_, page) = app.get(&format!("/api/v1/audit?limit=2{before}")).await;
        seqs.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_i64().unwrap()),
        );
        match page["next_before"].as_i64() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    let mut expected = seqs.clone();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!(seqs, expected, "pages are newest first without repeats");
    assert_eq!(seqs.last(), Some(&1));

    let (_, verify) = app.get("/api/v1/audit/verify").await;
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["records"].as_i64(), seqs.first().copied());
    app.stop().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn audit_records_carry_actor_source_and_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .request(Method::POST, "/api/v1/tenant")
        .json(&json!({ "slug": "acme", "name": "Acme", "client_secret": "hunter2-hunter2", "client_id": "c",
                       "oauth_issuer": "https://idp.example.com" }))
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, page) = app.get("/api/v1/audit?tenant=acme").await;
    let record = &page["items"][0];
    assert_eq!(record["action"], "tenant.create");
    assert_eq!(record["actor"], "token:test");
    assert_eq!(record["source_ip"], "127.0.0.1");
    assert_eq!(record["request_id"], request_id);
    assert_eq!(record["details"]["client_secret_set"], true);
    assert!(
        !page.to_string().contains("hunter2"),
        "no secret in audit details"
    );
    app.stop().await;
}

/// `HEAD` is answered wherever `GET` is (`curl -I`), with the same status and headers and no
/// body on the wire — the API, a tenant's route with a token, and a portal page; an address
/// `GET` does not answer, `HEAD` does not either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_answered_wherever_get_is_with_no_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_tenant("acme").await;
    let host = app.base.trim_start_matches("http://").to_owned();
    let raw = |method: &'static str, path: &'static str, token: Option<String>| {
        let host = host.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            stream
                .write_all(
                    format!(
                        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").expect("a head");
            (head.to_owned(), body.to_owned())
        }
    };
    let token = Some(app.token.clone());
    for (path, token) in [
        ("/health", None),
        ("/api/v1/tenant/acme", token.clone()),
        ("/login", None),
    ] {
        let (get_head, get_body) = raw("GET", path, token.clone()).await;
        let (head, body) = raw("HEAD", path, token.clone()).await;
        let status = |h: &str| h.lines().next().unwrap_or_default().to_owned();
        assert_eq!(status(&head), status(&get_head), "{path}");
        assert!(status(&head).contains(" 200 "), "{path}: {head}");
        assert!(!get_body.is_empty(), "{path}: GET has a body");
        assert_eq!(body, "", "{path}: HEAD sends no body");
        let content_type = |h: &str| {
            h.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-type:"))
                .map(str::to_owned)
        };
        assert_eq!(content_type(&head), content_type(&get_head), "{path}");
    }
    let (head, _) = raw("HEAD", "/api/v1/no-such-route", token.clone()).await;
    let (get_head, _) = raw("GET", "/api/v1/no-such-route", token).await;
    assert_eq!(head.lines().next(), get_head.lines().next());
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    app.stop().await;
}
