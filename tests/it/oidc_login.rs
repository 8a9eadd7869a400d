//! Tenants' users log in through their own identity providers — two real OpenID providers
//! (npm `oidc-provider`, `tests/oidc`) on loopback, one per tenant — and every way a login can be
//! tampered with is refused with a page that says why, and no session.
//!
//! The browser here is an HTTP client with a cookie jar (`common::web::Browser`), so that a
//! test can stop the round trip anywhere and change it; `portal_login_browser.rs` walks the same
//! logins in headless Chromium.

use crate::common;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::Backend;
use crate::common::login::{Browser, LoginWorld, counter, query, tampered_cases, with_param};

backend_tests!(
    two_tenants_log_in_through_their_own_providers,
    tampered_answers_are_refused_with_a_page_and_no_session,
    replayed_expired_missing_and_foreign_states_are_refused,
    a_code_of_one_tenants_provider_is_refused_at_another_tenants_callback,
    an_unavailable_tenant_cannot_log_in_and_its_sessions_stop,
    logins_keep_working_when_the_provider_rotates_its_keys,
    a_new_client_secret_is_used_at_the_next_login_and_a_rollback_restores_the_old,
    the_claim_mapping_decides_the_role_or_refuses,
    logout_ends_the_session_here_and_at_the_provider,
    a_tenant_admin_manages_keys_and_sessions_on_the_tenant_site,
    login_attempts_are_rate_limited_per_address,
    login_attempts_are_rate_limited_per_tenant,
    sessions_end_after_inactivity_and_at_their_absolute_expiry,
    cookies_are_secure_behind_tls,
    a_new_user_past_the_users_limit_is_refused_and_known_users_still_log_in,
);

async fn a_new_user_past_the_users_limit_is_refused_and_known_users_still_log_in(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let (status, body) = world
        .app
        .call(
            reqwest::Method::PUT,
            "/api/v1/tenant/alpha/quotas",
            Some(json!({ "users": 1 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = Browser::new();
    let home = alice.login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    // The organisation's usage is on its home page, for its members too.
    assert!(home.has(r#"id="usage-users""#), "{}", home.body);
    let row = home
        .body
        .split(r#"id="usage-users""#)
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap();
    assert!(row.contains(">1<") && row.contains("100 %"), "{row}");
    assert!(
        home.text().contains("is close to a limit"),
        "at 100 % of users"
    );

    let carol = Browser::new();
    let page = carol.login(&base, "alpha", "carol").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(
        page.text()
            .contains("Alpha Corp has reached its limit of 1 users"),
        "{}",
        page.body
    );
    assert!(carol.cookie(&base, "tenantry_tenant_alpha").is_none());

    // A user who signed in before still can.
    let again = Browser::new();
    let home = again.login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    let (_, usage) = world.app.get("/api/v1/tenant/alpha/usage").await;
    let users = usage["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "users")
        .unwrap();
    assert_eq!(users["used"], 1);
    assert_eq!(users["limit"], 1);
    // The organisation's alerts are on its home page too: its users at their limit.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let page = again.get(&format!("{base}/t/alpha/")).await;
        let alerts = page
            .body
            .split(r#"id="alerts""#)
            .nth(1)
            .unwrap_or_default()
            .split("</section>")
            .next()
            .unwrap_or_default()
            .to_owned();
        if alerts.contains("users at blocked") {
            assert!(alerts.contains("1 of its 1 users"), "{alerts}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{alerts}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Raised, carol gets in and is counted.
    world
        .app
        .call(
            reqwest::Method::PUT,
            "/api/v1/tenant/alpha/quotas",
            Some(json!({ "users": null })),
        )
        .await;
    let page = carol.login(&base, "alpha", "carol").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (_, usage) = world.app.get("/api/v1/tenant/alpha/usage").await;
    let users = usage["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "users")
        .unwrap();
    assert_eq!(users["used"], 2);
    world.stop().await;
}

/// The audit actions recorded for tenant `slug`, newest first.
async fn audit_actions(world: &LoginWorld, slug: &str) -> Vec<String> {
    let (status, body) = world
        .app
        .get(&format!("/api/v1/audit?tenant={slug}&limit=100"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect()
}

async fn two_tenants_log_in_through_their_own_providers(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();

    // alpha: its login page, then its own provider.
    let alice = Browser::new();
    let page = alice.get(&format!("{base}/t/alpha/login")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Sign in to Alpha Corp"), "{}", page.body);
    assert!(page.body.contains(r#"id="continue""#), "{}", page.body);
    let authorize = alice.start(&base, "alpha").await;
    assert!(
        authorize
            .as_str()
            .starts_with(&world.op.issuer("alpha").await),
        "alpha's login goes to alpha's issuer: {authorize}"
    );
    let sent = query(&authorize);
    assert_eq!(sent["code_challenge_method"], "S256");
    assert_eq!(sent["client_id"], "tenantry-alpha");
    assert_eq!(sent["redirect_uri"], format!("{base}/t/alpha/callback"));
    assert!(
        sent["state"].len() >= 32 && sent["nonce"].len() >= 32,
        "{sent:?}"
    );
    let scopes: Vec<&str> = sent["scope"].split(' ').collect();
    for scope in ["openid", "profile", "email", "groups"] {
        assert!(scopes.contains(&scope), "{scopes:?}");
    }
    let callback = alice.at_provider(&authorize, "alice").await;
    assert!(
        callback
            .as_str()
            .starts_with(&format!("{base}/t/alpha/callback?")),
        "{callback}"
    );
    let home = alice.follow(callback.as_str()).await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert_eq!(home.url.path(), "/t/alpha/");
    assert!(home.body.contains("Alice Admin"), "{}", home.body);
    assert!(home.body.contains("alice@alpha.example"), "{}", home.body);
    assert!(
        home.body
            .contains(r#"<dd id="user-role">tenant-admin</dd>"#),
        "{}",
        home.body
    );
    // A tenant admin sees the tenant's keys, sessions and SSO settings.
    for section in [r#"id="api-keys""#, r#"id="sessions""#, r#"id="sso""#] {
        assert!(home.body.contains(section), "{section}: {}", home.body);
    }

    // bravo, in another browser, through bravo's provider: a member.
    let bob = Browser::new();
    let home = bob.login(&base, "bravo", "bob").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert!(home.body.contains("Bob Bravo"), "{}", home.body);
    assert!(home.body.contains(r#"<dd id="user-role">member</dd>"#));
    assert!(!home.body.contains(r#"id="api-keys""#), "{}", home.body);
    let bravo_auth = world.op.last_authorization("bravo").await;
    assert_eq!(bravo_auth["client_id"], "tenantry-bravo");

    // Each tenant has exactly its own user's session.
    let alpha_sessions = world.sessions("alpha").await;
    let bravo_sessions = world.sessions("bravo").await;
    assert_eq!(alpha_sessions.len(), 1, "{alpha_sessions:?}");
    assert_eq!(bravo_sessions.len(), 1);
    assert_eq!(alpha_sessions[0]["email"], "alice@alpha.example");
    assert_eq!(alpha_sessions[0]["role"], "tenant-admin");
    assert_eq!(alpha_sessions[0]["auth_method"], "oidc");
    assert_eq!(bravo_sessions[0]["email"], "bob@bravo.example");

    // After login the tenant comes from the session: alice's session opens nothing of bravo's.
    let page = alice.get(&format!("{base}/t/bravo/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(
        page.location.unwrap().path(),
        "/t/bravo/login",
        "another tenant's page asks for a login"
    );
    // Her session cookie authenticates the API for alpha only.
    let cookie = alice
        .cookie(&base, "tenantry_tenant_alpha")
        .expect("a session cookie");
    // (Each tenant's session has a cookie of its own: alpha's is not even sent as bravo's.)
    for (path, name, expected) in [
        (
            "/api/v1/tenant/alpha",
            "tenantry_tenant_alpha",
            StatusCode::OK,
        ),
        (
            "/api/v1/tenant/bravo",
            "tenantry_tenant_alpha",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/api/v1/tenant",
            "tenantry_tenant_alpha",
            StatusCode::UNAUTHORIZED,
        ),
        // Alpha's session under bravo's cookie name is still alpha's: nothing of bravo.
        (
            "/api/v1/tenant/bravo",
            "tenantry_tenant_bravo",
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/tenant/bravo/sessions",
            "tenantry_tenant_bravo",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let response = world
            .app
            .client
            .get(world.app.url(path))
            .header("cookie", format!("{name}={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            expected,
            "{path} with alice's cookie as {name}"
        );
    }
    let page = world
        .app
        .client
        .get(world.app.url("/t/bravo/"))
        .header("cookie", format!("tenantry_tenant_bravo={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::SEE_OTHER,
        "bravo's pages ask for a login"
    );
    // The cookie is HttpOnly and SameSite=Lax.
    let again = Browser::new();
    let authorize = again.start(&base, "alpha").await;
    let callback = again.at_provider(&authorize, "alice").await;
    let response = again.http.get(callback.as_str()).send().await.unwrap();
    let set_cookie: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session_cookie = set_cookie
        .iter()
        .find(|c| c.starts_with("tenantry_tenant_alpha="))
        .expect("the session cookie");
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(session_cookie.contains("SameSite=Lax"), "{session_cookie}");

    // One browser in two tenants at once: a login at bravo leaves the one at alpha alone.
    let both = Browser::new();
    both.login(&base, "alpha", "alice").await;
    both.login(&base, "bravo", "bob").await;
    assert_eq!(
        both.follow(&format!("{base}/t/alpha/")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        both.follow(&format!("{base}/t/bravo/")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        world.sessions("alpha").await.len(),
        3,
        "alice's first, the cookie-flags check's, this browser's"
    );

    assert!(
        audit_actions(&world, "alpha")
            .await
            .contains(&"tenant.login".to_owned())
    );
    assert!(
        audit_actions(&world, "bravo")
            .await
            .contains(&"tenant.login".to_owned())
    );
    assert_eq!(
        counter(
            &world.app,
            "tenantry_auth_attempts_total",
            &[("tenant", "alpha"), ("method", "oidc")]
        )
        .await,
        3.0,
        "three logins at alpha"
    );
    world.stop().await;
}

async fn tampered_answers_are_refused_with_a_page_and_no_session(backend: Backend) {
    // Discovery is fetched on every login here, so that a changed discovery document is seen.
    let world = LoginWorld::start_with(backend, |c| c.auth.discovery_cache_seconds = 0).await;
    let base = world.app.base.clone();
    let now = chrono::Utc::now().timestamp();
    for (case, misbehaviour, reason) in tampered_cases(now) {
        world.op.misbehave("alpha", misbehaviour.clone()).await;
        let user = Browser::new();
        let start = user.get(&format!("{base}/t/alpha/login/oauth")).await;
        let page = if start.status == StatusCode::SEE_OTHER {
            let callback = user
                .at_provider(start.location.as_ref().unwrap(), "alice")
                .await;
            user.get(callback.as_str()).await
        } else {
            start
        };
        assert!(
            page.status.is_client_error() || page.status.is_server_error(),
            "{case}: refused, not {} ({})",
            page.status,
            page.body
        );
        assert_eq!(
            page.reason().as_deref(),
            Some(reason),
            "{case}: the page names the reason: {}",
            page.body
        );
        assert!(
            page.body.contains("Sign in to Alpha Corp") && page.body.contains("flash-error"),
            "{case}: a login page with the error: {}",
            page.body
        );
        assert!(
            user.cookie(&base, "tenantry_tenant_alpha").is_none(),
            "{case}: no session cookie"
        );
        assert!(
            world.sessions("alpha").await.is_empty(),
            "{case}: no session created"
        );
        assert!(
            counter(
                &world.app,
                "tenantry_auth_failures_total",
                &[("tenant", "alpha"), ("method", "oidc"), ("reason", reason)]
            )
            .await
                >= 1.0,
            "{case}: counted as a failure"
        );
        world.op.behave("alpha").await;
    }
    // With the provider behaving again, the same user logs in.
    let home = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert_eq!(world.sessions("alpha").await.len(), 1);
    assert_eq!(
        audit_actions(&world, "alpha")
            .await
            .iter()
            .filter(|a| *a == "tenant.login")
            .count(),
        1,
        "only the good login is audited"
    );
    world.stop().await;
}

async fn replayed_expired_missing_and_foreign_states_are_refused(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();

    // A callback URL works once.
    let user = Browser::new();
    let authorize = user.start(&base, "alpha").await;
    let callback = user.at_provider(&authorize, "alice").await;
    let first = user.get(callback.as_str()).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let replay = Browser::new();
    // (The replaying browser has the attacker's own binding cookie, or none at all.)
    let again = replay.get(callback.as_str()).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        again.reason().as_deref(),
        Some("state_unknown"),
        "{}",
        again.body
    );
    let same_browser = user.get(callback.as_str()).await;
    assert_eq!(same_browser.reason().as_deref(), Some("state_unknown"));
    assert_eq!(world.sessions("alpha").await.len(), 1);

    // A login attempt finished in another browser than the one that started it.
    let starter = Browser::new();
    let authorize = starter.start(&base, "alpha").await;
    let callback = starter.at_provider(&authorize, "alice").await;
    let other = Browser::new();
    let page = other.get(callback.as_str()).await;
    assert_eq!(
        page.reason().as_deref(),
        Some("browser_mismatch"),
        "{}",
        page.body
    );
    // ...and the attempt is spent: the starting browser cannot use it either.
    let page = starter.get(callback.as_str()).await;
    assert_eq!(page.reason().as_deref(), Some("state_unknown"));

    // A response without state, and one with a state nobody issued.
    let user = Browser::new();
    let authorize = user.start(&base, "alpha").await;
    let callback = user.at_provider(&authorize, "alice").await;
    let page = user
        .get(with_param(&callback, "state", None).as_str())
        .await;
    assert_eq!(
        page.reason().as_deref(),
        Some("state_missing"),
        "{}",
        page.body
    );
    let page = user
        .get(with_param(&callback, "state", Some("forged-state-value")).as_str())
        .await;
    assert_eq!(page.reason().as_deref(), Some("state_unknown"));

    // An attempt that expired (its lifetime passed while the user was at the provider).
    let user = Browser::new();
    let authorize = user.start(&base, "alpha").await;
    let callback = user.at_provider(&authorize, "alice").await;
    {
        use diesel_async::RunQueryDsl as _;
        let mut conn = world.app.ctx.db.conn().await.expect("connection");
        let past = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(1);
        tenantry::with_conn!(conn, |c| diesel::sql_query(
            "UPDATE login_attempts SET expires_at = $1"
        )
        .bind::<diesel::sql_types::Timestamp, _>(past)
        .execute(c)
        .await)
        .expect("expire the attempt");
    }
    let page = user.get(callback.as_str()).await;
    assert_eq!(
        page.reason().as_deref(),
        Some("state_expired"),
        "{}",
        page.body
    );
    assert_eq!(
        world.sessions("alpha").await.len(),
        1,
        "none of these made a session"
    );
    world.stop().await;
}

async fn a_code_of_one_tenants_provider_is_refused_at_another_tenants_callback(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let user = Browser::new();
    // The browser starts at bravo (its state is bravo's)...
    let bravo_authorize = user.start(&base, "bravo").await;
    let bravo_state = query(&bravo_authorize)["state"].clone();
    // ...and an attacker's code from alpha's provider arrives at bravo's callback.
    let alpha_authorize = user.start(&base, "alpha").await;
    let alpha_callback = user.at_provider(&alpha_authorize, "alice").await;
    let alpha_answer = query(&alpha_callback);
    let bravo_tokens_before = world.op.token_requests("bravo").await["count"].clone();
    let alpha_tokens_before = world.op.token_requests("alpha").await["count"].clone();

    let mixed = format!(
        "{base}/t/bravo/callback?code={}&state={}&iss={}",
        alpha_answer["code"],
        bravo_state,
        url::form_urlencoded::byte_serialize(alpha_answer["iss"].as_bytes()).collect::<String>()
    );
    let page = user.get(&mixed).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        page.reason().as_deref(),
        Some("issuer_mismatch"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Sign in to Bravo Corp"));
    // Without the iss parameter (a provider that sends none), bravo's provider advertises it:
    // refused as well.
    let bravo_authorize = user.start(&base, "bravo").await;
    let bravo_state = query(&bravo_authorize)["state"].clone();
    let page = user
        .get(&format!(
            "{base}/t/bravo/callback?code={}&state={bravo_state}",
            alpha_answer["code"]
        ))
        .await;
    assert_eq!(
        page.reason().as_deref(),
        Some("issuer_missing"),
        "{}",
        page.body
    );
    // alpha's whole answer (its own state) at bravo's callback: the attempt is alpha's.
    let page = user
        .get(&alpha_callback.as_str().replace("/t/alpha/", "/t/bravo/"))
        .await;
    assert_eq!(
        page.reason().as_deref(),
        Some("tenant_mismatch"),
        "{}",
        page.body
    );
    // The code never reached any token endpoint.
    assert_eq!(
        world.op.token_requests("bravo").await["count"],
        bravo_tokens_before
    );
    assert_eq!(
        world.op.token_requests("alpha").await["count"],
        alpha_tokens_before
    );
    assert!(world.sessions("alpha").await.is_empty());
    assert!(world.sessions("bravo").await.is_empty());
    world.stop().await;
}

async fn an_unavailable_tenant_cannot_log_in_and_its_sessions_stop(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let user = Browser::new();
    let home = user.login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK);
    let cookie = user.cookie(&base, "tenantry_tenant_alpha").unwrap();

    let (status, body) = world
        .app
        .post("/api/v1/tenant/alpha/suspend", json!({"reason": "unpaid"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for path in ["/t/alpha/login", "/t/alpha/login/oauth", "/t/alpha/"] {
        let page = user.get(&format!("{base}{path}")).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.body);
        assert!(
            page.body.contains("Alpha Corp is suspended"),
            "{path}: {}",
            page.body
        );
    }
    let response = world
        .app
        .client
        .get(world.app.url("/api/v1/tenant/alpha"))
        .header("cookie", format!("tenantry_tenant_alpha={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The callback of a login started before the suspension is refused too.
    let (status, _) = world
        .app
        .post("/api/v1/tenant/alpha/reactivate", json!({"reason": "paid"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let late = Browser::new();
    let authorize = late.start(&base, "alpha").await;
    let callback = late.at_provider(&authorize, "alice").await;
    world
        .app
        .post("/api/v1/tenant/alpha/suspend", json!({"reason": "again"}))
        .await;
    let page = late.get(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(late.cookie(&base, "tenantry_tenant_alpha").is_none());

    // Canceled and unknown tenants.
    world
        .app
        .post("/api/v1/tenant/bravo/cancel", json!({"reason": "left"}))
        .await;
    let page = user.get(&format!("{base}/t/bravo/login")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("Bravo Corp has been canceled"),
        "{}",
        page.body
    );
    let page = user.get(&format!("{base}/t/nobody/login")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(
        page.body.contains("There is no organisation “nobody” here"),
        "{}",
        page.body
    );
    world.stop().await;
}

async fn logins_keep_working_when_the_provider_rotates_its_keys(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let first = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    // The server now holds alpha's keys in its cache; the provider signs with a new key.
    let jwks = world.op.rotate_keys("alpha").await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let after_rotation = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(
        after_rotation.status,
        StatusCode::OK,
        "a new kid makes the server fetch the keys again: {}",
        after_rotation.body
    );
    // A key set of one key without kid, tokens without kid.
    let jwks = world.op.single_key_without_kid("alpha").await;
    assert!(jwks["keys"][0].get("kid").is_none(), "{jwks}");
    let without_kid = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(without_kid.status, StatusCode::OK, "{}", without_kid.body);
    assert_eq!(world.sessions("alpha").await.len(), 3);
    world.stop().await;
}

async fn a_new_client_secret_is_used_at_the_next_login_and_a_rollback_restores_the_old(
    backend: Backend,
) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    // A secret rotation done wrong: the new secret is not the provider's.
    let (status, body) = world
        .app
        .patch(
            "/api/v1/tenant/alpha",
            json!({"client_secret": "not-what-the-provider-has"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = Browser::new();
    let authorize = user.start(&base, "alpha").await;
    let callback = user.at_provider(&authorize, "alice").await;
    let page = user.get(callback.as_str()).await;
    assert_eq!(
        page.reason().as_deref(),
        Some("token_rejected"),
        "{}",
        page.body
    );
    assert!(page.body.contains("client ID or secret"), "{}", page.body);
    assert!(!page.body.contains("not-what-the-provider-has"));
    assert_eq!(
        world.op.token_requests("alpha").await["last"]["authenticated"],
        false,
        "the token request used the new secret"
    );
    // Rollback: the previous secret is back and the next login works.
    let (status, _) = world
        .app
        .post("/api/v1/tenant/alpha/client-secret/rollback", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let home = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert_eq!(
        world.op.token_requests("alpha").await["last"]["authenticated"],
        true
    );

    // The rotation done right: the provider first, then the tenant (through its SSO settings).
    world
        .op
        .set_client(
            "alpha",
            "tenantry-alpha",
            json!({
                "client_secret": "rotated-secret",
                "redirect_uris": [format!("{base}/t/alpha/callback")],
                "post_logout_redirect_uris": [format!("{base}/t/alpha/logged-out")],
            }),
        )
        .await;
    let (status, body) = world
        .app
        .patch(
            "/api/v1/tenant/alpha/sso",
            json!({"client_secret": "rotated-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("rotated-secret"), "{body}");
    assert_eq!(body["client_secret_previous"]["set"], true);
    let home = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    world.stop().await;
}

async fn the_claim_mapping_decides_the_role_or_refuses(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let carol = Browser::new().login(&base, "alpha", "carol").await;
    assert!(
        carol.body.contains(r#"<dd id="user-role">member</dd>"#),
        "{}",
        carol.body
    );
    // Only mapped users may log in from now on; staff are members, admins admins.
    let (status, body) = world
        .app
        .patch(
            "/api/v1/tenant/alpha/sso",
            json!({"role_mapping": {"claim": "groups", "values": {"alpha-admins": "tenant-admin"}, "default_role": "none"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user = Browser::new();
    let authorize = user.start(&base, "alpha").await;
    let callback = user.at_provider(&authorize, "carol").await;
    let page = user.get(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(page.reason().as_deref(), Some("no_role"), "{}", page.body);
    assert!(
        page.body.contains("has no access to Alpha Corp"),
        "{}",
        page.body
    );
    let alice = Browser::new().login(&base, "alpha", "alice").await;
    assert!(
        alice
            .body
            .contains(r#"<dd id="user-role">tenant-admin</dd>"#)
    );
    // A mapping to a platform role is refused, naming the field, and changes nothing.
    let (status, body) = world
        .app
        .patch(
            "/api/v1/tenant/alpha/sso",
            json!({"role_mapping": {"claim": "groups", "values": {"staff": "platform-admin"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        common::field_rules(&body),
        vec![("role_mapping.values.staff".to_owned(), "one_of".to_owned())]
    );
    let (_, tenant) = world.app.get("/api/v1/tenant/alpha").await;
    assert_eq!(tenant["role_mapping"]["default_role"], "none");
    world.stop().await;
}

async fn logout_ends_the_session_here_and_at_the_provider(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let user = Browser::new();
    let home = user.login(&base, "alpha", "alice").await;
    let cookie = user.cookie(&base, "tenantry_tenant_alpha").unwrap();
    // A browser follows a form's redirects only to origins the `form-action` of the form's page
    // allows: the pages of alice's session allow her provider.
    let page = user
        .http
        .get(format!("{base}/t/alpha/"))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let response = user
        .http
        .post(format!("{base}/t/alpha/logout"))
        .form(&[("csrf", home.csrf())])
        .send()
        .await
        .unwrap();
    assert!(
        csp.contains(&format!(
            "form-action 'self' {}",
            world.op.issuer("alpha").await
        )),
        "{csp}"
    );
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let end_session =
        url::Url::parse(response.headers()["location"].to_str().unwrap()).expect("to the provider");
    assert!(
        end_session
            .as_str()
            .starts_with(&world.op.issuer("alpha").await),
        "RP-initiated logout at alpha's provider: {end_session}"
    );
    let params = query(&end_session);
    assert!(params.contains_key("id_token_hint"), "{params:?}");
    assert_eq!(
        params["post_logout_redirect_uri"],
        format!("{base}/t/alpha/logged-out")
    );
    assert!(
        world.sessions("alpha").await.is_empty(),
        "the session is gone"
    );
    let response = world
        .app
        .client
        .get(world.app.url("/t/alpha/"))
        .header("cookie", format!("tenantry_tenant_alpha={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the old cookie opens nothing"
    );
    // The provider's logout page, its form, and back to the tenant.
    let page = user.get(end_session.as_str()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let xsrf = {
        let marker = r#"name="xsrf" value=""#;
        let start = page.body.find(marker).expect("the xsrf field") + marker.len();
        page.body[start..start + page.body[start..].find('"').unwrap()].to_owned()
    };
    let action = {
        let marker = r#"action=""#;
        let start = page.body.find(marker).expect("the form action") + marker.len();
        let action = &page.body[start..start + page.body[start..].find('"').unwrap()];
        end_session.join(action).unwrap()
    };
    let confirmed = user
        .post(action.as_str(), &[("xsrf", &xsrf), ("logout", "yes")])
        .await;
    let back = confirmed.location.expect("back to the tenant");
    assert_eq!(back.as_str(), format!("{base}/t/alpha/logged-out"));
    let page = user.follow(back.as_str()).await;
    assert!(page.body.contains("You are signed out."), "{}", page.body);
    assert_eq!(
        world.op.last_end_session("alpha").await["id_token_hint"],
        json!(params["id_token_hint"]),
        "the provider got the session's id_token as the hint"
    );
    assert!(
        audit_actions(&world, "alpha")
            .await
            .contains(&"tenant.logout".to_owned())
    );
    world.stop().await;
}

async fn a_tenant_admin_manages_keys_and_sessions_on_the_tenant_site(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let admin = Browser::new();
    let home = admin.login(&base, "alpha", "alice").await;
    let other = Browser::new();
    other.login(&base, "alpha", "carol").await;
    assert_eq!(world.sessions("alpha").await.len(), 2);

    // A key, shown once.
    let made = admin
        .post(
            &format!("{base}/t/alpha/api-keys"),
            &[("csrf", &home.csrf()), ("name", "etl"), ("role", "member")],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let token_start = made.body.find("tny_").expect("the key is shown");
    let token: String = made.body[token_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let response = world
        .app
        .client
        .get(world.app.url("/api/v1/tenant/alpha"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the new key works");
    let home = admin.follow(&format!("{base}/t/alpha/")).await;
    assert!(home.body.contains("etl"), "the key is listed");
    assert!(!home.body.contains(&token), "but never shown again");

    // Sign carol out.
    let carol = world
        .sessions("alpha")
        .await
        .into_iter()
        .find(|s| s["email"] == "carol@alpha.example")
        .unwrap();
    let handle = carol["handle"].as_str().unwrap();
    assert!(home.body.contains(handle), "her session is on the page");
    let done = admin
        .post(
            &format!("{base}/t/alpha/sessions/{handle}/revoke"),
            &[("csrf", &home.csrf())],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let sessions = world.sessions("alpha").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["email"], "alice@alpha.example");
    let page = other.get(&format!("{base}/t/alpha/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "carol is signed out");
    assert!(
        audit_actions(&world, "alpha")
            .await
            .contains(&"tenant.session_revoke".to_owned())
    );

    // A member may do none of it; a form without the session's CSRF token neither.
    let member = Browser::new();
    let member_home = member.login(&base, "alpha", "carol").await;
    let refused = member
        .post(
            &format!("{base}/t/alpha/api-keys"),
            &[("csrf", &member_home.csrf()), ("name", "sneaky")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    let refused = admin
        .post(
            &format!("{base}/t/alpha/api-keys"),
            &[("csrf", "forged"), ("name", "x")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let (_, keys) = world.app.get("/api/v1/tenant/alpha/api-keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    world.stop().await;
}

async fn login_attempts_are_rate_limited_per_address(backend: Backend) {
    let world = LoginWorld::start_with(backend, |c| {
        c.auth.logins_per_address_per_minute = 3;
    })
    .await;
    let base = world.app.base.clone();
    let user = Browser::new();
    for _ in 0..3 {
        user.start(&base, "alpha").await;
    }
    let page = user.get(&format!("{base}/t/alpha/login/oauth")).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert_eq!(page.reason().as_deref(), Some("rate_limited"));
    assert!(
        page.body.contains("Too many sign-in attempts"),
        "{}",
        page.body
    );
    world.stop().await;
}

async fn login_attempts_are_rate_limited_per_tenant(backend: Backend) {
    let world = LoginWorld::start_with(backend, |c| {
        c.auth.logins_per_address_per_minute = 1000;
        c.auth.logins_per_tenant_per_minute = 2;
    })
    .await;
    let base = world.app.base.clone();
    for _ in 0..2 {
        Browser::new().start(&base, "alpha").await;
    }
    let page = Browser::new()
        .get(&format!("{base}/t/alpha/login/oauth"))
        .await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    // Another tenant's users are not held up by alpha's.
    let home = Browser::new().login(&base, "bravo", "bob").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    world.stop().await;
}

/// Moves a time column of every session of the test's database.
async fn age_sessions(world: &LoginWorld, column: &str, minutes_ago: i64) {
    use diesel_async::RunQueryDsl as _;
    let mut conn = world.app.ctx.db.conn().await.expect("connection");
    let at = chrono::Utc::now().naive_utc() - chrono::Duration::minutes(minutes_ago);
    let statement = format!("UPDATE sessions SET {column} = $1");
    tenantry::with_conn!(conn, |c| diesel::sql_query(&statement)
        .bind::<diesel::sql_types::Timestamp, _>(at)
        .execute(c)
        .await)
    .expect("age the sessions");
    // The server's own memory of the sessions' activity ages with them.
    world
        .app
        .ctx
        .caches
        .forget(&tenantry::store::changes::Change::Everything);
}

async fn sessions_end_after_inactivity_and_at_their_absolute_expiry(backend: Backend) {
    let world = LoginWorld::start_with(backend, |c| {
        c.session_idle_minutes = 30;
        c.session_absolute_hours = 8;
    })
    .await;
    let base = world.app.base.clone();
    let user = Browser::new();
    user.login(&base, "alpha", "alice").await;
    // Used 10 minutes ago: still signed in (and its last use moves on).
    age_sessions(&world, "last_seen_at", 10).await;
    assert_eq!(
        user.get(&format!("{base}/t/alpha/")).await.status,
        StatusCode::OK
    );
    // Idle for 31 minutes: signed out.
    age_sessions(&world, "last_seen_at", 31).await;
    let page = user.get(&format!("{base}/t/alpha/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "idle too long");
    assert!(
        world.sessions("alpha").await.is_empty(),
        "not listed as live"
    );
    // Active, but past its absolute end: signed out too.
    let user = Browser::new();
    user.login(&base, "alpha", "alice").await;
    age_sessions(&world, "expires_at", 1).await;
    let page = user.get(&format!("{base}/t/alpha/")).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "past its absolute expiry"
    );
    world.stop().await;
}

async fn cookies_are_secure_behind_tls(backend: Backend) {
    let world = LoginWorld::start_with(backend, |c| {
        c.public_url = Some("https://tenantry.example".into());
    })
    .await;
    let response = world
        .app
        .client
        .get(world.app.url("/t/alpha/login/oauth"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tenantry_login="))
        .expect("the login cookie");
    for flag in ["Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.contains(flag), "{flag}: {cookie}");
    }
    let authorize = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        query(&authorize)["redirect_uri"],
        "https://tenantry.example/t/alpha/callback",
        "the redirect URI is at the public address"
    );
    world.stop().await;
}
