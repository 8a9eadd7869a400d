//! Tenant API keys and platform tokens: created (shown once), listed, rotated with a grace period,
//! revoked, expired, rate limited — and a tenant's key reaches only its own tenant: every
//! platform-wide route answers 403 and every route of another tenant 403 or 404.

use crate::common;

use crate::common::{Backend, TestApp, field_rules};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Sends a request with `token`.
async fn call(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    common::into_json(request.send().await.unwrap()).await
}

async fn new_key(app: &TestApp, slug: &str, body: Value) -> Value {
    let (status, key) = app
        .post(&format!("/api/v1/tenant/{slug}/api-keys"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key
}

async fn tenant_keys_are_shown_once_rotated_revoked_and_scoped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let admin_key = new_key(
        &app,
        "acme",
        json!({ "name": "ci", "role": "tenant-admin" }),
    )
    .await;
    let token = admin_key["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("tny_"), "{admin_key}");
    assert_eq!(admin_key["role"], "tenant-admin");

    // Listed without its secret.
    let (status, list) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains(&token[13..]),
        "the secret is never listed"
    );
    assert_eq!(list[0]["live"], true);
    assert!(list[0]["last_used_at"].is_null());

    // The key reads its tenant, manages its tenant's keys, and nothing of the platform.
    let (status, tenant) = call(&app, &token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::OK, "{tenant}");
    let (status, _) = call(&app, &token, Method::GET, "/api/v1/tenant", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(
        &app,
        &token,
        Method::POST,
        "/api/v1/tenant",
        Some(json!({ "slug": "evil", "name": "Evil" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant `acme`")
    );
    let (status, member) = call(
        &app,
        &token,
        Method::POST,
        "/api/v1/tenant/acme/api-keys",
        Some(json!({ "name": "dashboards" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["role"], "member");
    let member_token = member["token"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &app,
        &member_token,
        Method::GET,
        "/api/v1/tenant/acme",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        &member_token,
        Method::GET,
        "/api/v1/tenant/acme/api-keys",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a member does not manage keys"
    );
    let (_, list) = app.get("/api/v1/tenant/acme/api-keys").await;
    let ci = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap();
    assert!(ci["last_used_at"].is_string(), "last use recorded: {ci}");

    // Bad input changes nothing.
    let (status, body) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "", "role": "platform-admin", "rate_limit_per_minute": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_rules(&body),
        vec![("role".to_owned(), "one_of".to_owned())]
    );
    let (status, body) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "", "rate_limit_per_minute": 0, "expires_in_days": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let rules = field_rules(&body);
    for field in ["name", "rate_limit_per_minute", "expires_in_days"] {
        assert!(rules.iter().any(|r| r.0 == field), "{field} in {rules:?}");
    }
    let (status, _) = app
        .post("/api/v1/tenant/acme/api-keys", json!({ "name": "ci" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a live key has that name");
    let (_, list) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // Rotation: the new key works at once, the old one through its grace period.
    let id = admin_key["id"].as_str().unwrap();
    let (status, rotated) = app
        .post(
            &format!("/api/v1/tenant/acme/api-keys/{id}/rotate"),
            json!({ "grace_minutes": 10 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    let new_token = rotated["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert_eq!(rotated["name"], "ci");
    for t in [&token, &new_token] {
        let (status, _) = call(&app, t, Method::GET, "/api/v1/tenant/acme", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, list) = app.get("/api/v1/tenant/acme/api-keys").await;
    let old = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(old["replaced_by"], rotated["id"]);
    assert!(
        old["expires_at"].is_string(),
        "the grace period ends: {old}"
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/tenant/acme/api-keys/{id}/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "rotated once");
    // Without a grace period the old key stops at once.
    let new_id = rotated["id"].as_str().unwrap();
    let (status, again) = app
        .post(
            &format!("/api/v1/tenant/acme/api-keys/{new_id}/rotate"),
            json!({ "grace_minutes": 0 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(&app, &new_token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let newest = again["token"].as_str().unwrap().to_owned();

    // Revocation, and a suspended tenant's keys.
    let member_id = member["id"].as_str().unwrap();
    let (status, _) = app
        .delete(&format!("/api/v1/tenant/acme/api-keys/{member_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(
        &app,
        &member_token,
        Method::GET,
        "/api/v1/tenant/acme",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post("/api/v1/tenant/acme/suspend", json!({ "reason": "unpaid" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&app, &newest, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a suspended tenant's keys stop, and say why: {body}"
    );
    assert_eq!(
        body["error"]["message"],
        "tenant acme is suspended: its API keys are refused until it is active again"
    );

    // Every change is audited.
    let (_, audit) = app.get("/api/v1/audit?tenant=acme&limit=200").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in [
        "tenant.api_key_create",
        "tenant.api_key_rotate",
        "tenant.api_key_revoke",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert!(!audit.to_string().contains(&newest[13..]));
    app.stop().await;
}

async fn a_key_is_rate_limited_and_platform_tokens_rotate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let key = new_key(
        &app,
        "acme",
        json!({ "name": "limited", "rate_limit_per_minute": 3 }),
    )
    .await;
    let token = key["token"].as_str().unwrap();
    for _ in 0..3 {
        let (status, _) = call(&app, token, Method::GET, "/api/v1/tenant/acme", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = app
        .client
        .get(app.url("/api/v1/tenant/acme"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other keys are not affected.
    let (status, _) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(status, StatusCode::OK);

    // Platform tokens rotate the same way.
    let (status, created) = app
        .post(
            "/api/v1/admin/tokens",
            json!({ "name": "deploy", "role": "platform-admin" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let old = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    let (status, rotated) = app
        .post(
            &format!("/api/v1/admin/tokens/{id}/rotate"),
            json!({ "grace_minutes": 5 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    for t in [old.as_str(), rotated["token"].as_str().unwrap()] {
        let (status, _) = call(&app, t, Method::GET, "/api/v1/tenant", None).await;
        assert_eq!(status, StatusCode::OK);
    }
    app.stop().await;
}

async fn a_tenant_key_reaches_nothing_of_another_tenant_or_the_platform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let acme = new_key(
        &app,
        "acme",
        json!({ "name": "acme-admin", "role": "tenant-admin" }),
    )
    .await;
    let token = acme["token"].as_str().unwrap().to_owned();
    let globex = new_key(&app, "globex", json!({ "name": "globex-key" })).await;
    let globex_key_id = globex["id"].as_str().unwrap().to_owned();
    let (status, doc) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let public = [
        "/health",
        "/health/ready",
        "/metrics",
        "/t/{slug}/health",
        "/api/v1/openapi.json",
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if public.contains(&path.as_str()) {
            continue;
        }
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let tenant_route = path.contains("{slug}");
            let concrete = path
                .replace("{slug}", "globex")
                .replace("{id}", &globex_key_id)
                .replace("{name}", "tier-quota")
                .replace("{kind}", "host")
                .replace("{capability}", "nothing");
            let (status, body) = call(
                &app,
                &token,
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &concrete,
                Some(json!({ "reason": "x", "name": "x" })),
            )
            .await;
            if tenant_route {
                assert!(
                    status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
                    "{method} {concrete} with acme's key: {status} {body}"
                );
            } else if concrete == "/api/v1/audit" {
                // A tenant's admins read their own tenant's audit log, and nothing else of it.
                assert_eq!(status, StatusCode::OK, "{body}");
                let items = body["items"].as_array().unwrap();
                assert!(
                    items.iter().all(|r| r["tenant"] == "acme"),
                    "acme's key read another's audit records: {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {concrete} (platform-wide) with acme's key: {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "every documented route checked ({checked})");
    // Nothing of globex changed, and its key still works.
    let (_, tenant) = app.get("/api/v1/tenant/globex").await;
    assert_eq!(tenant["version"], 1);
    let (status, _) = call(
        &app,
        globex["token"].as_str().unwrap(),
        Method::GET,
        "/api/v1/tenant/globex",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}

/// The same walk with a tenant admin's *session* of acme (its cookie put under globex's name,
/// with its CSRF token): every route of globex and of the platform refuses it.
async fn a_tenant_session_reaches_nothing_of_another_tenant_or_the_platform(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    let globex = new_key(&app, "globex", json!({ "name": "globex-key" })).await;
    let globex_key_id = globex["id"].as_str().unwrap().to_owned();
    let principal = tenantry::auth::Principal {
        name: "user:acme/admin@acme.example".into(),
        role: tenantry::auth::Role::TenantAdmin,
        tenant: Some(tenantry::auth::TenantScope {
            id: acme["id"].as_str().unwrap().into(),
            slug: "acme".into(),
        }),
        key: None,
    };
    let (cookie, session) = tenantry::auth::start_session(
        &app.ctx,
        &principal,
        &tenantry::audit::Actor::system(),
        None,
        None,
        None,
    )
    .await
    .expect("a session of acme");
    let (_, doc) = app.get("/api/v1/openapi.json").await;
    let public = [
        "/health",
        "/health/ready",
        "/metrics",
        "/t/{slug}/health",
        "/api/v1/openapi.json",
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if public.contains(&path.as_str()) {
            continue;
        }
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{slug}", "globex")
                .replace("{id}", &globex_key_id)
                .replace("{name}", "tier-quota")
                .replace("{kind}", "host")
                .replace("{capability}", "nothing");
            let request = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&concrete),
                )
                .header("x-csrf-token", &session.csrf_token)
                .json(&json!({ "reason": "x", "name": "x" }));
            let request = request.header(
                "cookie",
                format!("tenantry_tenant_acme={cookie}; tenantry_tenant_globex={cookie}"),
            );
            let (status, body) = common::into_json(request.send().await.unwrap()).await;
            // Globex's routes see acme's session and refuse it; platform routes take no
            // tenant's cookie at all.
            let allowed: &[StatusCode] = if path.contains("{slug}") {
                &[StatusCode::FORBIDDEN, StatusCode::NOT_FOUND]
            } else {
                &[StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]
            };
            assert!(
                allowed.contains(&status),
                "{method} {concrete} with acme's session: {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "every documented route checked ({checked})");
    let (_, tenant) = app.get("/api/v1/tenant/globex").await;
    assert_eq!(tenant["version"], 1, "nothing of globex changed");
    let (_, keys) = app.get("/api/v1/tenant/globex/api-keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    // The same session does reach acme.
    let response = app
        .client
        .get(app.url("/api/v1/tenant/acme"))
        .header("cookie", format!("tenantry_tenant_acme={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await;
}

/// Numbers that become a time or a size are bounded: a key's lifetime of 1590868168 days (which
/// overflowed the date and answered 500) is a 422 naming the field, and nothing is made.
async fn a_lifetime_limit_or_grace_out_of_range_is_a_422_that_names_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    for (body, field) in [
        (
            json!({ "name": "x", "expires_in_days": 1590868168u32 }),
            "expires_in_days",
        ),
        (
            json!({ "name": "x", "expires_in_days": 3651 }),
            "expires_in_days",
        ),
        (
            json!({ "name": "x", "rate_limit_per_minute": 1_000_001 }),
            "rate_limit_per_minute",
        ),
    ] {
        let (status, error) = app.post("/api/v1/tenant/acme/api-keys", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert_eq!(
            field_rules(&error),
            vec![(field.to_owned(), "range".to_owned())]
        );
        let (status, error) = app
            .post(
                "/api/v1/admin/tokens",
                json!({ "name": "y", "expires_in_days": 1590868168u32 }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    }
    let (_, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(keys, json!([]), "nothing was made");
    let key = new_key(
        &app,
        "acme",
        json!({ "name": "ok", "expires_in_days": 3650 }),
    )
    .await;
    let (status, error) = app
        .post(
            &format!(
                "/api/v1/tenant/acme/api-keys/{}/rotate",
                key["id"].as_str().unwrap()
            ),
            json!({ "grace_minutes": 10081 }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(
        field_rules(&error),
        vec![("grace_minutes".to_owned(), "range".to_owned())]
    );
    app.stop().await;
}

/// The platform's own tenant has no API keys: a key of it would read its record (its identity
/// provider's settings). Platform tokens are the platform's keys.
async fn the_platform_tenant_has_no_api_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, error) = app
        .post("/api/v1/tenant/admin/api-keys", json!({ "name": "x" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "platform_tenant");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("platform token"),
        "{error}"
    );
    let (_, keys) = app.get("/api/v1/tenant/admin/api-keys").await;
    assert_eq!(keys, json!([]));
    app.stop().await;
}

backend_tests!(
    a_lifetime_limit_or_grace_out_of_range_is_a_422_that_names_it,
    the_platform_tenant_has_no_api_keys,
    tenant_keys_are_shown_once_rotated_revoked_and_scoped,
    a_key_is_rate_limited_and_platform_tokens_rotate,
    a_tenant_key_reaches_nothing_of_another_tenant_or_the_platform,
    a_tenant_session_reaches_nothing_of_another_tenant_or_the_platform,
    a_key_is_found_by_its_prefix_with_its_tenant,
);

/// "Which tenant does this key belong to?": a key by its public prefix, with its tenant; a
/// platform token has none; a whole token in the address is refused and not echoed.
async fn a_key_is_found_by_its_prefix_with_its_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    // A runbook's role names the role it stands for here.
    let (status, body) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "bi", "role": "analyst" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["details"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`analyst` here is `member`"),
        "{body}"
    );
    let key = new_key(&app, "acme", json!({ "name": "etl", "role": "member" })).await;
    let prefix = key["prefix"].as_str().unwrap().to_owned();
    for form in [format!("tny_{prefix}"), prefix.clone()] {
        let (status, found) = app.get(&format!("/api/v1/api-keys/{form}")).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        assert_eq!(found["key"]["name"], "etl");
        assert_eq!(found["key"]["id"], key["id"]);
        assert_eq!(found["tenant"]["slug"], "acme");
        assert_eq!(found["tenant"]["id"], acme["id"]);
        assert!(found["key"].get("token").is_none(), "{found}");
    }
    let (_, tokens) = app.get("/api/v1/admin/tokens").await;
    let platform_prefix = tokens[0]["prefix"].as_str().unwrap();
    let (status, found) = app
        .get(&format!("/api/v1/api-keys/{platform_prefix}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["tenant"], Value::Null, "a platform token: {found}");
    let (status, _) = app.get("/api/v1/api-keys/tny_zzzz9999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let whole = key["token"].as_str().unwrap();
    let (status, body) = app.get(&format!("/api/v1/api-keys/{whole}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        common::field_rules(&body),
        vec![("prefix".to_owned(), "not_a_token".to_owned())]
    );
    assert!(!body.to_string().contains(&whole[13..]), "{body}");
    let (status, _) = app.get("/api/v1/api-keys/not-a-prefix").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A tenant's key may not look keys up.
    let (status, _) = call(
        &app,
        whole,
        Method::GET,
        &format!("/api/v1/api-keys/{prefix}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// The command line manages the same keys (real binary, same database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_command_line() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.create_tenant("acme").await;
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", app.dir.path())
            .env("USER", "operator")
            .env("TENANTRY_DATA_DIR", app.dir.path())
            .env("DATABASE_URL", &app.database.url)
            .env(
                "TENANTRY_MASTER_KEY",
                app.ctx.config.master_key.clone().unwrap(),
            );
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let created: Value = serde_json::from_str(&run(&[
        "--output",
        "json",
        "tenant",
        "api-key",
        "create",
        "acme",
        "--name",
        "etl",
        "--role",
        "tenant-admin",
        "--rate-limit-per-minute",
        "100",
    ]))
    .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, _) = call(&app, &token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::OK);
    // Whose key is this? The whole token pasted (only its prefix is read, never echoed).
    let found = run(&["key", "find", &token]);
    let prefix = created["prefix"].as_str().unwrap();
    assert!(
        found.starts_with(&format!("tny_{prefix} is `etl` of tenant acme (")),
        "{found}"
    );
    assert!(found.contains("role tenant-admin, live"), "{found}");
    assert!(
        !found.contains(&token[13..]),
        "the secret is printed: {found}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let listed = run(&["tenant", "api-key", "list", "acme"]);
    assert!(
        listed.contains("etl") && listed.contains("live"),
        "{listed}"
    );
    assert!(!listed.contains(&token[13..]));
    let rotated = run(&[
        "tenant",
        "api-key",
        "rotate",
        "acme",
        &id,
        "--grace-minutes",
        "0",
    ]);
    let new_token = rotated.lines().next().unwrap().to_owned();
    let (status, _) = call(&app, &token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no grace period");
    let (status, _) = call(&app, &new_token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    let new_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["live"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&["tenant", "api-key", "revoke", "acme", &new_id]);
    let (status, _) = call(&app, &new_token, Method::GET, "/api/v1/tenant/acme", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
