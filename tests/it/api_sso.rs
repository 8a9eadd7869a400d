//! A tenant's single sign-on as a service: its settings (tenant admins and platform admins),
//! "test connection" and the OAuth health check against a real OpenID provider, setup links,
//! the tenant's sessions, session cookies on the API, abuse limits on API keys, platform admins
//! logging in through the `admin` tenant's provider, and tenants at their own host names.

use crate::common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::login::{Browser, LoginWorld, counter, query};
use crate::common::oidc::OidcProviders;
use crate::common::{Backend, TestApp, field_rules};

backend_tests!(
    sso_settings_are_read_and_changed_by_tenant_admins_only,
    test_connection_reports_what_the_provider_offers_and_saves_nothing,
    oauth_health_reports_discovery_and_keys_with_their_times,
    a_setup_link_configures_sso_once_without_an_account,
    tenant_sessions_are_listed_and_ended_through_the_api,
    session_cookies_authenticate_the_api_and_changes_need_the_csrf_header,
    failed_api_keys_are_slowed_per_address_and_per_key_and_the_right_key_always_works,
    platform_admins_log_in_through_the_admin_tenants_provider,
    tenants_are_reached_at_their_own_host_names,
    the_shipped_alert_rules_name_metrics_the_server_exports,
    a_provider_cannot_send_the_server_to_plain_http_addresses_or_flood_it,
);

async fn key(app: &TestApp, slug: &str, role: &str) -> String {
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/{slug}/api-keys"),
            json!({"name": format!("{slug}-{role}"), "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn call(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    common::into_json(request.send().await.unwrap()).await
}

async fn sso_settings_are_read_and_changed_by_tenant_admins_only(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let admin = key(app, "alpha", "tenant-admin").await;
    let member = key(app, "alpha", "member").await;
    let viewer = app
        .token_with_role("viewer", tenantry::auth::Role::PlatformViewer)
        .await;

    let (status, sso) = call(
        app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha/sso",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sso}");
    assert_eq!(sso["configured"], true);
    assert_eq!(sso["oauth_issuer"], json!(world.op.issuer("alpha").await));
    assert_eq!(sso["client_secret"]["set"], true);
    assert!(
        !sso.to_string().contains("secret-alpha"),
        "never the secret: {sso}"
    );
    assert_eq!(
        sso["redirect_uris"],
        json!([format!("{}/t/alpha/callback", app.base)])
    );
    assert_eq!(
        sso["post_logout_redirect_uris"],
        json!([format!("{}/t/alpha/logged-out", app.base)])
    );
    assert_eq!(
        sso["role_mapping"]["values"]["alpha-admins"],
        "tenant-admin"
    );

    let (status, _) = call(
        app,
        &viewer,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha/sso",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a platform viewer reads");
    for (token, who) in [(&member, "a member"), (&viewer, "a viewer")] {
        let (status, _) = call(
            app,
            token,
            reqwest::Method::PATCH,
            "/api/v1/tenant/alpha/sso",
            Some(json!({"client_id": "x"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who} may not change SSO");
    }
    let (status, _) = call(
        app,
        &member,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha/sso",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a member does not read SSO settings"
    );
    let (status, _) = call(
        app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/tenant/bravo/sso",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another tenant's SSO does not exist for alpha"
    );

    // Bad input: every broken rule named, nothing changed.
    let (_, before) = app.get("/api/v1/tenant/alpha").await;
    let (status, body) = call(
        app,
        &admin,
        reqwest::Method::PATCH,
        "/api/v1/tenant/alpha/sso",
        Some(json!({"oauth_issuer": "ftp://idp.example", "scopes": "profile email", "role_mapping": {"claim": "", "default_role": "owner"}})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let mut rules = field_rules(&body);
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("oauth_issuer".to_owned(), "https".to_owned()),
            ("role_mapping.claim".to_owned(), "length".to_owned()),
            ("role_mapping.default_role".to_owned(), "one_of".to_owned()),
            ("scopes".to_owned(), "openid".to_owned()),
        ]
    );
    let (_, after) = app.get("/api/v1/tenant/alpha").await;
    assert_eq!(before["version"], after["version"]);
    let (status, body) = call(
        app,
        &admin,
        reqwest::Method::PATCH,
        "/api/v1/tenant/alpha/sso",
        Some(json!({"client_secret": "s", "unknown": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A mapping is an object: a list is refused, not read as the default mapping.
    let (status, body) = call(
        app,
        &admin,
        reqwest::Method::PATCH,
        "/api/v1/tenant/alpha/sso",
        Some(json!({"role_mapping": []})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("role_mapping"), "{body}");
    let (_, after) = app.get("/api/v1/tenant/alpha").await;
    assert_eq!(before["version"], after["version"]);

    // A tenant admin changes the scopes and the mapping; audited as the key.
    let (status, sso) = call(
        app,
        &admin,
        reqwest::Method::PATCH,
        "/api/v1/tenant/alpha/sso",
        Some(json!({"scopes": ["openid", "email", "groups"], "role_mapping": {"values": {"staff": "member", "alpha-admins": "tenant-admin"}, "default_role": "none"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sso}");
    assert_eq!(sso["scopes"], json!(["openid", "email", "groups"]));
    assert_eq!(sso["role_mapping"]["claim"], "groups");
    assert_eq!(sso["role_mapping"]["default_role"], "none");
    let (_, audit) = app
        .get("/api/v1/audit?tenant=alpha&action=tenant.update")
        .await;
    assert_eq!(audit["items"][0]["actor"], "key:alpha/alpha-tenant-admin");
    world.stop().await;
}

async fn test_connection_reports_what_the_provider_offers_and_saves_nothing(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let issuer = world.op.issuer("alpha").await;
    let (status, report) = app.post("/api/v1/tenant/alpha/sso/test", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["issuer"], json!(issuer));
    assert_eq!(report["discovered_issuer"], json!(issuer));
    assert_eq!(report["discovery"]["reachable"], true);
    assert_eq!(report["discovery"]["status"], 200);
    assert!(report["discovery"]["response_time_ms"].as_f64().unwrap() > 0.0);
    assert!(report["jwks"]["response_time_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["key_ids"].as_array().unwrap().len(), 1);
    assert_eq!(report["pkce_s256"], true);
    assert_eq!(report["iss_parameter_supported"], true);
    assert!(report["end_session_endpoint"].is_string());
    assert_eq!(report["problems"], json!([]));

    // A candidate issuer that does not answer, one that names another issuer, and scopes the
    // provider does not offer — reported, and nothing saved.
    let (_, before) = app.get("/api/v1/tenant/alpha").await;
    let (status, report) = app
        .post(
            "/api/v1/tenant/alpha/sso/test",
            json!({"oauth_issuer": "http://127.0.0.1:9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], false);
    assert_eq!(report["discovery"]["reachable"], false);
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("could not be fetched"),
        "{report}"
    );
    world
        .op
        .misbehave(
            "bravo",
            json!({"discovery_issuer": "http://impostor.example"}),
        )
        .await;
    let (_, report) = app
        .post(
            "/api/v1/tenant/alpha/sso/test",
            json!({"oauth_issuer": world.op.issuer("bravo").await, "scopes": "openid made-up-scope"}),
        )
        .await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["discovered_issuer"], "http://impostor.example");
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("Issuer mismatch"),
        "{report}"
    );
    assert_eq!(report["scopes_not_supported"], json!(["made-up-scope"]));
    let (status, body) = app
        .post(
            "/api/v1/tenant/alpha/sso/test",
            json!({"oauth_issuer": "not a url"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_rules(&body)[0].0, "oauth_issuer");
    let (_, after) = app.get("/api/v1/tenant/alpha").await;
    assert_eq!(before["version"], after["version"], "a test saves nothing");
    world.stop().await;
}

async fn oauth_health_reports_discovery_and_keys_with_their_times(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let (status, health) = app.get("/api/v1/tenant/alpha/health/oauth").await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["issuer_accessible"], true);
    assert_eq!(health["keys"], 1);
    assert!(health["discovery"]["response_time_ms"].as_f64().unwrap() > 0.0);
    assert!(health["jwks"]["response_time_ms"].as_f64().unwrap() > 0.0);

    app.create_tenant("plain").await;
    let (_, health) = app.get("/api/v1/tenant/plain/health/oauth").await;
    assert_eq!(health["status"], "not_configured");
    assert_eq!(health["issuer_accessible"], false);

    let (status, _) = app
        .patch(
            "/api/v1/tenant/bravo",
            json!({"oauth_issuer": "http://127.0.0.1:9", "client_id": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, health) = app.get("/api/v1/tenant/bravo/health/oauth").await;
    assert_eq!(health["status"], "unreachable", "{health}");
    assert_eq!(health["issuer_accessible"], false);

    // A tenant's own member key reads its health; another tenant's key gets 404.
    let member = key(app, "alpha", "member").await;
    let (status, _) = call(
        app,
        &member,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha/health/oauth",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        app,
        &member,
        reqwest::Method::GET,
        "/api/v1/tenant/bravo/health/oauth",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    world.stop().await;
}

async fn a_setup_link_configures_sso_once_without_an_account(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let base = app.base.clone();
    app.create_tenant("gamma").await;
    let gamma_admin = key(app, "gamma", "tenant-admin").await;
    let (status, _) = call(
        app,
        &gamma_admin,
        reqwest::Method::POST,
        "/api/v1/tenant/gamma/sso/setup-links",
        Some(json!({})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only platform admins hand out setup links"
    );
    let (status, link) = app
        .post(
            "/api/v1/tenant/gamma/sso/setup-links",
            json!({"expires_in_hours": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("{base}/t/gamma/setup/tsl_")),
        "{url}"
    );
    assert_eq!(link["status"], "usable");
    let (_, links) = app.get("/api/v1/tenant/gamma/sso/setup-links").await;
    assert_eq!(links[0]["id"], link["id"]);
    assert!(
        !links.to_string().contains("tsl_"),
        "the list never shows the token: {links}"
    );
    let (status, body) = app
        .post(
            "/api/v1/tenant/gamma/sso/setup-links",
            json!({"expires_in_hours": 500}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        field_rules(&body),
        vec![("expires_in_hours".to_owned(), "range".to_owned())]
    );

    // The IT administrator opens the link: a form, with the redirect URI to register.
    world
        .register_as(
            "alpha",
            "tenantry-gamma",
            "secret-gamma",
            &format!("{base}/t/gamma"),
        )
        .await;
    let it = Browser::new();
    let page = it.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.text().contains(&format!("{base}/t/gamma/callback")),
        "{}",
        page.body
    );
    let issuer = world.op.issuer("alpha").await;
    let form = |action: &'static str, issuer: String| {
        vec![
            ("action", action.to_owned()),
            ("oauth_issuer", issuer),
            ("client_id", "tenantry-gamma".to_owned()),
            ("client_secret", "secret-gamma".to_owned()),
            ("scopes", "openid profile email groups".to_owned()),
            ("role_claim", "groups".to_owned()),
            ("role_values", "alpha-admins = tenant-admin".to_owned()),
            ("default_role", "member".to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        let it = it.clone();
        let url = url.clone();
        async move {
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            it.post(&url, &pairs).await
        }
    };
    // Test connection: a report, nothing saved.
    let tested = post(form("test", issuer.clone())).await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.body);
    assert!(tested.body.contains("connection works"), "{}", tested.body);
    assert!(
        !tested.body.contains("secret-gamma"),
        "the secret is never echoed"
    );
    let (_, gamma) = app.get("/api/v1/tenant/gamma").await;
    assert!(gamma["oauth_issuer"].is_null());
    // A bad issuer: the form again with the error; the link still works.
    let refused = post(form("save", "http://idp.example".into())).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    assert!(refused.body.contains("must use https"), "{}", refused.body);
    // Saved: the link is used up.
    let saved = post(form("save", issuer.clone())).await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(
        saved.body.contains("this setup link no longer works"),
        "{}",
        saved.body
    );
    let (_, gamma) = app.get("/api/v1/tenant/gamma").await;
    assert_eq!(gamma["oauth_issuer"], json!(issuer));
    assert_eq!(gamma["client_secret"]["set"], true);
    assert_eq!(
        gamma["role_mapping"]["values"]["alpha-admins"],
        "tenant-admin"
    );
    let again = it.get(&url).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(again.body.contains("already used"), "{}", again.body);
    let again = post(form("save", issuer.clone())).await;
    assert_eq!(
        again.status,
        StatusCode::FORBIDDEN,
        "a used link saves nothing"
    );
    let (_, audit) = app.get("/api/v1/audit?tenant=gamma&action=tenant.").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .filter(|a| a.starts_with("tenant.sso_setup_link"))
        .collect();
    assert_eq!(
        actions,
        ["tenant.sso_setup_link_use", "tenant.sso_setup_link_create"]
    );
    // And gamma's users now sign in.
    let home = Browser::new().login(&base, "gamma", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert!(
        home.body
            .contains(r#"<dd id="user-role">tenant-admin</dd>"#)
    );

    // Revoked, expired, unknown and other tenants' links.
    let (_, revoked) = app
        .post("/api/v1/tenant/gamma/sso/setup-links", json!({}))
        .await;
    let (status, _) = app
        .delete(&format!(
            "/api/v1/tenant/gamma/sso/setup-links/{}",
            revoked["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let page = it.get(revoked["url"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("revoked"), "{}", page.body);
    let (_, expiring) = app
        .post(
            "/api/v1/tenant/gamma/sso/setup-links",
            json!({"expires_in_hours": 1}),
        )
        .await;
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = app.ctx.db.conn().await.unwrap();
        let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
        tenantry::with_conn!(conn, |c| diesel::sql_query(
            "UPDATE sso_setup_links SET expires_at = $1 WHERE id = $2"
        )
        .bind::<diesel::sql_types::Timestamp, _>(past)
        .bind::<diesel::sql_types::Text, _>(expiring["id"].as_str().unwrap())
        .execute(c)
        .await)
        .unwrap();
    }
    let page = it.get(expiring["url"].as_str().unwrap()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("expired"), "{}", page.body);
    let page = it.get(&format!("{base}/t/gamma/setup/tsl_nothing")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let (_, fresh) = app
        .post("/api/v1/tenant/gamma/sso/setup-links", json!({}))
        .await;
    let foreign = fresh["url"]
        .as_str()
        .unwrap()
        .replace("/t/gamma/", "/t/alpha/");
    let page = it.get(&foreign).await;
    assert_eq!(
        page.status,
        StatusCode::NOT_FOUND,
        "a link works for its own tenant only"
    );
    world.stop().await;
}

async fn tenant_sessions_are_listed_and_ended_through_the_api(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let base = app.base.clone();
    let alice = Browser::new();
    alice.login(&base, "alpha", "alice").await;
    let carol = Browser::new();
    carol.login(&base, "alpha", "carol").await;
    let admin = key(app, "alpha", "tenant-admin").await;
    let (status, sessions) = call(
        app,
        &admin,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha/sessions",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sessions = sessions.as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    let cookie = carol.cookie(&base, "tenantry_tenant_alpha").unwrap();
    for s in &sessions {
        assert!(s["handle"].as_str().unwrap().len() >= 16);
        assert!(!s.to_string().contains(&cookie), "never the cookie");
        assert!(s["source_ip"].is_string() && s["last_seen_at"].is_string());
    }
    let carols = sessions
        .iter()
        .find(|s| s["email"] == "carol@alpha.example")
        .unwrap();
    let path = format!(
        "/api/v1/tenant/alpha/sessions/{}",
        carols["handle"].as_str().unwrap()
    );
    let bravo_admin = key(app, "bravo", "tenant-admin").await;
    let (status, _) = call(
        app,
        &bravo_admin,
        reqwest::Method::DELETE,
        &path.replace("/alpha/", "/bravo/"),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bravo cannot end alpha's sessions"
    );
    let (status, _) = call(app, &admin, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(app, &admin, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let page = carol.get(&format!("{base}/t/alpha/")).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "carol has to log in again"
    );
    assert_eq!(world.sessions("alpha").await.len(), 1);
    world.stop().await;
}

async fn session_cookies_authenticate_the_api_and_changes_need_the_csrf_header(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let app = &world.app;
    let base = app.base.clone();
    let alice = Browser::new();
    let home = alice.login(&base, "alpha", "alice").await;
    let csrf = home.csrf();
    let cookie = format!(
        "tenantry_tenant_alpha={}",
        alice.cookie(&base, "tenantry_tenant_alpha").unwrap()
    );
    let send = |method: reqwest::Method, path: &str, csrf: Option<&str>| {
        let mut request = app
            .client
            .request(method, app.url(path))
            .header("cookie", &cookie)
            .json(&json!({"name": "from-the-browser"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    let response = send(reqwest::Method::GET, "/api/v1/tenant/alpha/api-keys", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(reqwest::Method::POST, "/api/v1/tenant/alpha/api-keys", None)
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "no CSRF header: refused"
    );
    let response = send(
        reqwest::Method::POST,
        "/api/v1/tenant/alpha/api-keys",
        Some("wrong"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, keys) = app.get("/api/v1/tenant/alpha/api-keys").await;
    assert_eq!(keys, json!([]), "nothing was created");
    let response = send(
        reqwest::Method::POST,
        "/api/v1/tenant/alpha/api-keys",
        Some(&csrf),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // The portal's session too (the bootstrap administrator).
    let admin = Browser::new();
    let login = admin.get(&format!("{base}/login")).await;
    let csrf = login.csrf();
    let done = admin
        .post(
            &format!("{base}/login"),
            &[
                ("csrf", &csrf),
                ("username", "admin"),
                ("password", common::ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let page = admin.get(&format!("{base}/api/v1/tenant")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    world.stop().await;
}

async fn failed_api_keys_are_slowed_per_address_and_per_key_and_the_right_key_always_works(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.key_failures_per_address_per_minute = 3;
        c.auth.key_failures_per_key_per_minute = 1000;
    })
    .await;
    app.create_tenant("alpha").await;
    let good = key(&app, "alpha", "member").await;
    let prefix = good.split('_').nth(1).unwrap().to_owned();
    let wrong = format!("tny_{prefix}_{}", "x".repeat(32));
    for _ in 0..3 {
        let (status, _) = call(
            &app,
            &wrong,
            reqwest::Method::GET,
            "/api/v1/tenant/alpha",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The fourth failure in the minute is refused as too many; so are the failures after it.
    for _ in 0..2 {
        let response = app
            .client
            .get(app.url("/api/v1/tenant/alpha"))
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.headers().contains_key("retry-after"));
    }
    // The right key from the same address works all the while: failures slow guessing down,
    // they do not lock out the owner (behind a proxy, every client shares one address).
    let (status, body) = call(
        &app,
        &good,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the right key is never refused: {body}"
    );
    let (status, body) = call(
        &app,
        &app.token,
        reqwest::Method::GET,
        "/api/v1/tenant",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "nor the platform's token: {body}");
    assert_eq!(
        counter(
            &app,
            "tenantry_auth_failures_total",
            &[
                ("tenant", "alpha"),
                ("method", "api_key"),
                ("reason", "wrong_secret")
            ]
        )
        .await,
        5.0,
        "every failure counted, labelled with the key's tenant"
    );
    app.stop().await;

    // Per key: failures against one key's prefix are slowed; that key itself, and every other
    // key, keep working.
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.key_failures_per_address_per_minute = 1000;
        c.auth.key_failures_per_key_per_minute = 2;
    })
    .await;
    app.create_tenant("alpha").await;
    app.create_tenant("bravo").await;
    let alpha = key(&app, "alpha", "member").await;
    let bravo = key(&app, "bravo", "member").await;
    let prefix = alpha.split('_').nth(1).unwrap().to_owned();
    let wrong = format!("tny_{prefix}_{}", "y".repeat(32));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = call(
            &app,
            &wrong,
            reqwest::Method::GET,
            "/api/v1/tenant/alpha",
            None,
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let (status, _) = call(
        &app,
        &alpha,
        reqwest::Method::GET,
        "/api/v1/tenant/alpha",
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the guessed key itself keeps working"
    );
    let (status, _) = call(
        &app,
        &bravo,
        reqwest::Method::GET,
        "/api/v1/tenant/bravo",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "bravo's keys are not affected");
    // A token with an unknown prefix counts against the address only.
    let (status, _) = call(
        &app,
        &format!("tny_zzzzzzzz_{}", "z".repeat(32)),
        reqwest::Method::GET,
        "/api/v1/tenant",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

async fn platform_admins_log_in_through_the_admin_tenants_provider(backend: Backend) {
    let op = OidcProviders::start(json!({"issuers": [{"name": "platform", "clients": [], "users": [
        {"sub": "ops", "claims": {"email": "ops@platform.example", "name": "Ops", "groups": ["platform-ops"]}},
        {"sub": "auditor", "claims": {"email": "auditor@platform.example", "name": "Auditor", "groups": ["auditors"]}},
        {"sub": "stranger", "claims": {"email": "stranger@platform.example", "name": "Stranger", "groups": []}},
    ]}]}))
    .await;
    let issuer = op.issuer("platform").await;
    let app = TestApp::spawn_with(backend, |c| {
        c.admin_tenant.oauth_issuer = Some(issuer.clone());
        c.admin_tenant.client_id = Some("tenantry-platform".into());
        c.admin_tenant.client_secret = Some("secret-platform".into());
        c.admin_tenant.scopes = "openid,profile,email,groups".into();
        c.admin_tenant.role_mapping = Some(tenantry::roles::RoleMapping {
            claim: "groups".into(),
            values: [
                ("platform-ops".to_owned(), "platform-admin".to_owned()),
                ("auditors".to_owned(), "platform-viewer".to_owned()),
            ]
            .into(),
            default_role: Some("none".into()),
        });
    })
    .await;
    let base = app.base.clone();
    op.set_client(
        "platform",
        "tenantry-platform",
        json!({"client_secret": "secret-platform",
               "redirect_uris": [format!("{base}/t/admin/callback")],
               "post_logout_redirect_uris": [format!("{base}/t/admin/logged-out")]}),
    )
    .await;

    let ops = Browser::new();
    let login = ops.get(&format!("{base}/login?next=%2Ftenants")).await;
    assert!(
        login.body.contains("Continue with Platform Administration"),
        "{}",
        login.body
    );
    assert_eq!(
        ops.get(&format!("{base}/t/admin/login"))
            .await
            .location
            .unwrap()
            .path(),
        "/login"
    );
    let start = ops
        .get(&format!("{base}/t/admin/login/oauth?next=%2Ftenants"))
        .await;
    let callback = ops
        .at_provider(start.location.as_ref().unwrap(), "ops")
        .await;
    let landed = ops.get(callback.as_str()).await;
    assert_eq!(landed.status, StatusCode::SEE_OTHER, "{}", landed.body);
    assert_eq!(landed.location.as_ref().unwrap().path(), "/tenants");
    assert!(
        ops.cookie(&base, "tenantry_session").is_some(),
        "a portal session"
    );
    let page = ops.follow(&format!("{base}/tenants")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("sso:ops@platform.example"),
        "{}",
        page.body
    );
    assert!(page.body.contains("platform-admin"));
    let (_, audit) = app.get("/api/v1/audit?action=admin.login").await;
    assert_eq!(audit["items"][0]["details"]["method"], "oidc");
    assert_eq!(audit["items"][0]["details"]["subject"], "ops");

    // An auditor is a viewer: reads, changes nothing.
    let auditor = Browser::new();
    let start = auditor.get(&format!("{base}/t/admin/login/oauth")).await;
    let callback = auditor
        .at_provider(start.location.as_ref().unwrap(), "auditor")
        .await;
    auditor.follow(callback.as_str()).await;
    let new_form = auditor.follow(&format!("{base}/tenants")).await;
    assert!(
        new_form.body.contains("platform-viewer"),
        "{}",
        new_form.body
    );
    let refused = auditor
        .post(
            &format!("{base}/tenants"),
            &[
                ("csrf", &new_form.csrf()),
                ("slug", "nope"),
                ("name", "Nope"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    // Someone without a mapped group cannot log in at all.
    let stranger = Browser::new();
    let start = stranger.get(&format!("{base}/t/admin/login/oauth")).await;
    let callback = stranger
        .at_provider(start.location.as_ref().unwrap(), "stranger")
        .await;
    let page = stranger.get(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(page.reason().as_deref(), Some("no_role"), "{}", page.body);
    assert!(
        page.body.contains("Log in to tenantry"),
        "the portal's login page: {}",
        page.body
    );

    // Logout ends the session at the platform's provider too — and the portal's pages of an
    // SSO session let their logout form lead there (a browser checks `form-action`).
    let response = ops.http.get(format!("{base}/")).send().await.unwrap();
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {issuer}")),
        "{csp}"
    );
    let dashboard = ops.follow(&format!("{base}/")).await;
    let out = ops
        .post(&format!("{base}/logout"), &[("csrf", &dashboard.csrf())])
        .await;
    let end = out.location.expect("to the provider");
    assert!(end.as_str().starts_with(&issuer), "{end}");
    assert_eq!(
        query(&end)["post_logout_redirect_uri"],
        format!("{base}/t/admin/logged-out")
    );
    assert_eq!(
        ops.get(&format!("{base}/tenants")).await.status,
        StatusCode::SEE_OTHER
    );
    let after = ops.follow(&format!("{base}/t/admin/logged-out")).await;
    assert!(after.body.contains("You are logged out."), "{}", after.body);

    // The bootstrap administrator still logs in with the password (recovery).
    let admin = Browser::new();
    let login = admin.get(&format!("{base}/login")).await;
    let done = admin
        .post(
            &format!("{base}/login"),
            &[
                ("csrf", &login.csrf()),
                ("username", "admin"),
                ("password", common::ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

async fn tenants_are_reached_at_their_own_host_names(backend: Backend) {
    let world =
        LoginWorld::start_with(backend, |c| c.base_domain = Some("tenants.test".into())).await;
    let app = &world.app;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let alpha_site = format!("http://alpha.tenants.test:{port}");
    // The host-style client sees the tenant's own redirect URI, at its own host.
    world
        .op
        .set_client(
            "alpha",
            "tenantry-alpha",
            json!({"client_secret": "secret-alpha",
                   "redirect_uris": [format!("{alpha_site}/callback"), format!("{}/t/alpha/callback", app.base)],
                   "post_logout_redirect_uris": [format!("{alpha_site}/logged-out")]}),
        )
        .await;
    let loopback: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut builder = reqwest::Client::builder();
    for host in [
        "alpha.tenants.test",
        "bravo.tenants.test",
        "nobody.tenants.test",
        "admin.tenants.test",
    ] {
        builder = builder.resolve(host, loopback);
    }
    let user = Browser::with(builder);
    let page = user.get(&format!("{alpha_site}/login")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Sign in to Alpha Corp"));
    assert!(
        page.body
            .contains(r#"href="&#x2F;login&#x2F;oauth?next=%2F""#),
        "links stay on the host: {}",
        page.body
    );
    let start = user.get(&format!("{alpha_site}/login/oauth")).await;
    let authorize = start.location.unwrap();
    assert_eq!(
        query(&authorize)["redirect_uri"],
        format!("{alpha_site}/callback")
    );
    let callback = user.at_provider(&authorize, "alice").await;
    assert!(
        callback
            .as_str()
            .starts_with(&format!("{alpha_site}/callback?")),
        "{callback}"
    );
    let home = user.follow(callback.as_str()).await;
    assert_eq!(home.url.as_str(), format!("{alpha_site}/"));
    assert!(home.body.contains("Alice Admin"), "{}", home.body);
    // The session is alpha's host's: bravo's host asks for a login.
    let page = user
        .get(&format!("http://bravo.tenants.test:{port}/"))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.unwrap().as_str(),
        format!("http://bravo.tenants.test:{port}/login?next=%2F")
    );
    // The tenant's health at its host (what a monitor polls: `https://<slug>.<base_domain>/health`).
    let health = user.get(&format!("{alpha_site}/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&health.body).unwrap()["tenant"],
        "alpha"
    );
    let page = user
        .get(&format!("http://nobody.tenants.test:{port}/login"))
        .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let page = user
        .get(&format!("http://admin.tenants.test:{port}/login"))
        .await;
    assert!(
        page.body.contains("Log in to tenantry"),
        "admin.<domain> is the portal"
    );
    // The SSO settings name both addresses.
    let (_, sso) = app.get("/api/v1/tenant/alpha/sso").await;
    assert_eq!(
        sso["redirect_uris"],
        json!([
            format!("http://alpha.tenants.test:{port}/callback"),
            format!("{}/t/alpha/callback", app.base)
        ])
    );
    world.stop().await;
}

/// `deploy/prometheus/tenantry-auth-alerts.yml` names only metrics (and labels) that the server
/// exports once logins and key attempts happened.
async fn the_shipped_alert_rules_name_metrics_the_server_exports(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    Browser::new().login(&base, "alpha", "alice").await;
    let (status, _) = call(
        &world.app,
        &format!("tny_zzzzzzzz_{}", "z".repeat(32)),
        reqwest::Method::GET,
        "/api/v1/tenant",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let exported = reqwest::get(world.app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let named = common::assert_rules_name_exported("tenantry-auth-alerts.yml", &exported);
    assert!(named >= 4, "the rules name the auth metrics ({named})");
    let named = common::assert_dashboard_names_exported("tenantry-identity.json", &exported);
    assert!(
        named >= 5,
        "the identity dashboard names the auth metrics ({named})"
    );
    world.stop().await;
}

/// A hostile "provider" (a local double: a discovery document no real provider would serve)
/// whose endpoints point at a plain-http address of the network, or whose answer is huge: the
/// server fetches neither, and says why.
async fn a_provider_cannot_send_the_server_to_plain_http_addresses_or_flood_it(backend: Backend) {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let doc = {
        let issuer = issuer.clone();
        move || {
            json!({
                "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": "http://192.0.2.1/jwks",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        }
    };
    let server = HttpServer::new(move || {
        let doc = doc.clone();
        App::new()
            .route(
                "/internal/.well-known/openid-configuration",
                web::get().to(move || {
                    let mut doc = doc();
                    doc["issuer"] = json!(format!("{}/internal", doc["issuer"].as_str().unwrap()));
                    async move { HttpResponse::Ok().json(doc) }
                }),
            )
            .route(
                "/huge/.well-known/openid-configuration",
                web::get().to(|| async { HttpResponse::Ok().body(vec![b' '; 3 * 1024 * 1024]) }),
            )
    })
    .listen(listener)
    .unwrap()
    .workers(1)
    .run();
    let handle = server.handle();
    tokio::spawn(server);

    let app = TestApp::spawn(backend).await;
    app.create_tenant("alpha").await;
    let (_, report) = app
        .post(
            "/api/v1/tenant/alpha/sso/test",
            json!({"oauth_issuer": format!("{issuer}/internal")}),
        )
        .await;
    assert_eq!(report["ok"], false, "{report}");
    assert!(
        report["jwks"].is_null(),
        "the key set was not fetched: {report}"
    );
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("not https: http://192.0.2.1/jwks"),
        "{report}"
    );
    let (_, report) = app
        .post(
            "/api/v1/tenant/alpha/sso/test",
            json!({"oauth_issuer": format!("{issuer}/huge")}),
        )
        .await;
    assert_eq!(report["ok"], false);
    assert!(
        report["discovery"]["detail"]
            .as_str()
            .unwrap()
            .contains("larger than 1024 KiB"),
        "{report}"
    );
    app.stop().await;
    handle.stop(false).await;
}
