//! What an attacker can send a running server, and what the server must not let it do: each test
//! is one way around a promise (a lockout of the right credential, unbounded metric labels, an
//! open redirect, secrets in the access log…), tried against a real server on SQLite and on
//! PostgreSQL, as the other tests run.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, hold_writes, run_sql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_routes_never_tokens_and_cannot_be_forged() {
    access_log_names_routes_never_tokens_and_cannot_be_forged().await
}

backend_tests!(
    anonymous_requests_do_not_grow_the_metric_labels,
    behind_a_trusted_proxy_each_client_has_its_own_failure_budget_and_address,
    forwarding_headers_from_anyone_else_change_nothing,
    after_login_only_paths_on_this_server_are_followed,
    the_platform_tenant_has_no_setup_links,
    password_guesses_are_limited_and_checks_are_capped,
    a_provider_test_cannot_reach_inside_the_network,
    a_heads_size_and_a_bodys_time_are_bounded,
    metrics_can_be_kept_to_the_scraper_and_readiness_says_no_why,
    an_unknown_stored_role_is_an_error_never_a_default,
    callbacks_with_states_no_login_holds_write_nothing_and_are_limited,
);

/// The text of `/metrics`.
async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Any method and any tenant slug a client makes up stays out of the labels: each distinct label
/// value is a series kept for ever, so an anonymous client could otherwise grow every scrape
/// without bound.
async fn anonymous_requests_do_not_grow_the_metric_labels(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let made_up = Method::from_bytes(b"XMADEUPMETHOD").unwrap();
    for path in ["/health", "/api/v1/tenant", "/no/such/page"] {
        let response = app
            .client
            .request(made_up.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    let response = app
        .client
        .get(app.url("/t/no-such-tenant-xq7/callback?state=s&code=c"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let text = metrics(&app).await;
    assert!(
        !text.contains("XMADEUPMETHOD"),
        "a made-up method is a label"
    );
    assert!(
        !text.contains("no-such-tenant-xq7"),
        "a made-up slug is a label"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("tenantry_http_requests_total") && l.contains("method=\"other\"")
        ),
        "made-up methods count as `other`"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("tenantry_auth_failures_total")
                && l.contains("tenant=\"unknown\"")
                && l.contains("tenant_unavailable")),
        "a callback for no tenant counts as `unknown`"
    );
}

/// A tenant key (`role`) of `slug`.
async fn tenant_key(app: &TestApp, slug: &str, role: &str) -> String {
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/{slug}/api-keys"),
            json!({ "name": format!("{slug}-{role}"), "role": role }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// GET `path` with `token`, as forwarded by a proxy for `client`.
async fn get_as(app: &TestApp, path: &str, token: &str, client: &str) -> StatusCode {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .header("X-Forwarded-For", client)
        .send()
        .await
        .unwrap()
        .status()
}

/// Behind a proxy, every connection comes from the proxy. With the proxy trusted, the client it
/// names is the one whose failures are counted, and the one the audit log records; and one
/// client's failures never refuse another client, nor the right key of anyone.
async fn behind_a_trusted_proxy_each_client_has_its_own_failure_budget_and_address(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1/32".into(), "::1".into()];
        c.auth.key_failures_per_address_per_minute = 3;
    })
    .await;
    app.create_tenant("acme").await;
    let good = tenant_key(&app, "acme", "member").await;
    let wrong = format!("tny_zzzzzzzz_{}", "x".repeat(32));
    let path = "/api/v1/tenant/acme";
    // The attacker at 198.51.100.7 spends its budget…
    for _ in 0..3 {
        assert_eq!(
            get_as(&app, path, &wrong, "198.51.100.7").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get_as(&app, path, &wrong, "198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // …its own, not its neighbours': another client through the same proxy is counted apart.
    assert_eq!(
        get_as(&app, path, &wrong, "203.0.113.5").await,
        StatusCode::UNAUTHORIZED
    );
    // A client that puts a made-up address first cannot pass for someone else: the proxy
    // appends the real one, and that is the one counted.
    assert_eq!(
        get_as(&app, path, &wrong, "203.0.113.99, 198.51.100.7").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The right key works from anywhere, the blocked client included.
    assert_eq!(
        get_as(&app, path, &good, "198.51.100.7").await,
        StatusCode::OK
    );
    assert_eq!(
        get_as(&app, "/api/v1/tenant", &app.token, "198.51.100.7").await,
        StatusCode::OK
    );

    // The audit log records the client, not the proxy.
    let response = app
        .request(Method::POST, "/api/v1/tenant")
        .header("X-Forwarded-For", "192.0.2.44")
        .json(&json!({ "slug": "globex", "name": "Globex" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, page) = app.get("/api/v1/audit?tenant=globex").await;
    assert_eq!(page["items"][0]["action"], "tenant.create");
    assert_eq!(page["items"][0]["source_ip"], "192.0.2.44");

    // The scheme and host the proxy reports are the ones links are made of.
    let response = app
        .request(Method::POST, "/api/v1/tenant/acme/sso/setup-links")
        .header("X-Forwarded-For", "192.0.2.44")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "login.example.com")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let link: Value = response.json().await.unwrap();
    assert!(
        link["url"]
            .as_str()
            .unwrap()
            .starts_with("https://login.example.com/"),
        "{link}"
    );
    app.stop().await;
}

/// Without `trusted_proxies`, the forwarding headers are anyone's to send, and change nothing:
/// not the address counted or audited, not the links the server writes, not the cookies.
async fn forwarding_headers_from_anyone_else_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.key_failures_per_address_per_minute = 3;
    })
    .await;
    app.create_tenant("acme").await;
    let wrong = format!("tny_zzzzzzzz_{}", "x".repeat(32));
    let path = "/api/v1/tenant/acme";
    // A different made-up address each time does not get a fresh budget each time.
    for n in 0..3 {
        assert_eq!(
            get_as(&app, path, &wrong, &format!("198.51.100.{n}")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        get_as(&app, path, &wrong, "198.51.100.200").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let response = app
        .request(Method::POST, "/api/v1/tenant/acme/sso/setup-links")
        .header("X-Forwarded-For", "192.0.2.44")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "for=192.0.2.45;proto=https;host=evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let link: Value = response.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&app.base),
        "the link is on the server's own address: {url}"
    );
    let (_, page) = app.get("/api/v1/audit?tenant=acme").await;
    let created = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "tenant.sso_setup_link_create")
        .unwrap_or_else(|| panic!("{page}"))
        .clone();
    assert_eq!(created["source_ip"], "127.0.0.1", "{created}");

    // The tenant site's cookies are `Secure` only when the request really came over TLS.
    let response = app
        .client
        .get(app.url("/t/acme/login/oauth"))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    for cookie in response.headers().get_all("set-cookie") {
        let cookie = cookie.to_str().unwrap();
        assert!(!cookie.contains("Secure"), "{cookie}");
    }
    app.stop().await;
}

/// `next` after a login is followed only to a path of this server: a tab, a newline or a
/// backslash (which browsers drop or read as `/`) never leads elsewhere, and never breaks the
/// answer after the session is made.
async fn after_login_only_paths_on_this_server_are_followed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (next, expected) in [
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("/\r/evil.example", "/"),
        ("/\0/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/ /evil.example", "/"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/tenants?status=active", "/tenants?status=active"),
    ] {
        let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let browser = crate::common::web::Browser::at(&app);
        let form = browser.get(&format!("/login?next={encoded}")).await;
        form.assert_status(StatusCode::OK);
        assert_eq!(form.hidden("next").as_deref(), Some(expected), "{next:?}");
        // The form as an attacker would post it, with `next` as they chose it.
        let done = browser
            .post(
                "/login",
                &[
                    ("username", "admin"),
                    ("password", crate::common::ADMIN_PASSWORD),
                    ("csrf", &form.csrf()),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "{next:?}: {}",
            done.body
        );
        assert_eq!(done.redirect.as_deref(), Some(expected), "{next:?}");
    }
    app.stop().await;
}

/// Whoever sets up the platform tenant's SSO chooses who logs in as a platform admin: no setup
/// link is made for it, and one made by an earlier version cannot be used.
async fn the_platform_tenant_has_no_setup_links(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, body) = app
        .post("/api/v1/tenant/admin/sso/setup-links", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.to_string().contains("no setup links"), "{body}");

    // A link for it left by an earlier version.
    let admin = tenantry::tenants::get(&app.ctx, "admin").await.unwrap();
    let token = format!("tsl_{}", "a".repeat(40));
    let now = tenantry::clock::now();
    let row = tenantry::store::models::SetupLinkRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: admin.id.clone(),
        token_hash: {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(token.as_bytes()))
        },
        created_by: "token:test".into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(24),
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    {
        let mut conn = app.ctx.db.conn().await.unwrap();
        tenantry::store::logins::insert_link(&mut conn, &row)
            .await
            .unwrap();
    }
    let page = app
        .client
        .get(app.url(&format!("/t/admin/setup/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let used = app
        .client
        .post(app.url(&format!("/t/admin/setup/{token}")))
        .form(&[
            ("action", "save"),
            ("oauth_issuer", "https://attacker.example"),
            ("client_id", "mine"),
            ("client_secret", "mine-mine-mine"),
            ("default_role", "platform-admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), StatusCode::FORBIDDEN);
    let after = tenantry::tenants::get(&app.ctx, "admin").await.unwrap();
    assert_eq!(after.oauth_issuer, admin.oauth_issuer, "nothing changed");
    app.stop().await;
}

/// The server's log, as whoever reads logs sees it: the access log names the matched route, so
/// a setup link's token, an OAuth code or state in a path or query never reaches it, and text a
/// client chose (a user name typed into the login form) cannot start a line of its own.
async fn access_log_names_routes_never_tokens_and_cannot_be_forged() {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TENANTRY_DATA_DIR", dir.path())
            .env("TENANTRY_LOG_FORMAT", "text")
            .env("TENANTRY_LOG_LEVEL", "info")
            .env(
                "TENANTRY_BOOTSTRAP_ADMIN_PASSWORD",
                crate::common::ADMIN_PASSWORD,
            )
            .current_dir(dir.path())
            .args(args);
        cmd
    };
    let out = run(&[
        "admin", "token", "create", "--name", "logs", "--output", "json",
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let token: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    // A plugin whose log line would start a line of its own.
    let probe = format!(
        "{}/probe.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    assert!(
        run(&["plugin", "install", &probe])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(
        run(&["plugin", "enable", "probe"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let mut child = run(&["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let base = first
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let created = client
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({ "slug": "acme", "name": "Acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let link: Value = client
        .post(format!("{base}/api/v1/tenant/acme/sso/setup-links"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    let link_token = url.rsplit('/').next().unwrap().to_owned();
    assert!(link_token.starts_with("tsl_"), "{url}");
    let page = client.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    client
        .get(format!(
            "{base}/t/acme/callback?code=code-SECRET-1&state=state-SECRET-2"
        ))
        .send()
        .await
        .unwrap();
    // A user name with a line of its own in it, through the real login form.
    let browser = crate::common::web::Browser::new();
    let form = browser.get(&format!("{base}/login")).await;
    let refused = browser
        .post(
            &format!("{base}/login"),
            &[
                (
                    "username",
                    "nobody\nFORGED LINE tenantry::audit: admin logged in",
                ),
                ("password", "wrong-wrong-wrong"),
                ("csrf", &form.csrf()),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    let planned = client
        .post(format!("{base}/api/v1/tenant/provision"))
        .bearer_auth(&token)
        .json(&json!({
            "tenant": { "slug": "logged", "name": "Logged" },
            "backends": { "probe": {
                "do": "log",
                "message": "fine\nFORGED LINE from a plugin \u{1b}[31mred",
            } },
        }))
        .send()
        .await
        .unwrap();
    assert!(
        planned.status().is_success(),
        "{}",
        planned.text().await.unwrap()
    );

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    child.wait().unwrap();
    assert!(
        stderr.contains("/t/{slug}/setup/{token}"),
        "the route is logged: {stderr}"
    );
    for secret in [
        link_token.as_str(),
        "code-SECRET-1",
        "state-SECRET-2",
        token.as_str(),
    ] {
        assert!(
            !stderr.contains(secret),
            "`{secret}` reached the log: {stderr}"
        );
    }
    assert!(
        !stderr.lines().any(|l| l.starts_with("FORGED LINE")),
        "a client's or a plugin's text started a log line: {stderr}"
    );
    assert!(
        stderr.contains("fine\\nFORGED LINE from a plugin \\u{1b}[31mred"),
        "the plugin's line is logged, escaped: {stderr}"
    );
    assert!(
        !stderr.contains("nobody") && stderr.contains("(not a user)"),
        "a name that is no user's (perhaps a password in the wrong box) is not logged: {stderr}"
    );
}

/// Posts the portal's login form with `password`, from `client` (through a trusted proxy).
async fn password_login(app: &TestApp, password: &str, client: &str) -> reqwest::Response {
    let browser = crate::common::web::Browser::at(app);
    let form = browser.get("/login").await;
    let csrf = form.csrf();
    let cookie = browser
        .cookie("/login", "tenantry_login_csrf")
        .unwrap_or_default();
    app.client
        .post(app.url("/login"))
        .header("X-Forwarded-For", client)
        .header("Cookie", format!("tenantry_login_csrf={cookie}"))
        .form(&[
            ("username", "admin"),
            ("password", password),
            ("csrf", &csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
}

/// Every password try costs an argon2 hash (19 MiB, tens of milliseconds): guesses are limited
/// per address and per user name (refused without a check once spent), and the checks running
/// at once are capped, so a flood of guesses can neither go on nor take the server's memory.
async fn password_guesses_are_limited_and_checks_are_capped(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.password_failures_per_address_per_minute = 5;
        c.auth.password_failures_per_user_per_minute = 8;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            password_login(&app, "wrong-wrong-wrong", "198.51.100.7")
                .await
                .status(),
        );
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // Spent: even the right password from that address waits.
    let refused = password_login(&app, crate::common::ADMIN_PASSWORD, "198.51.100.7").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    // Another address is not that one…
    let other = password_login(&app, crate::common::ADMIN_PASSWORD, "203.0.113.5").await;
    assert_eq!(
        other.status(),
        StatusCode::SEE_OTHER,
        "the right password from elsewhere"
    );
    // …but guesses at one user name from many addresses meet the name's own budget.
    let mut statuses = Vec::new();
    for n in 0..4 {
        statuses.push(
            password_login(&app, "wrong-wrong-wrong", &format!("192.0.2.{n}"))
                .await
                .status(),
        );
    }
    assert_eq!(statuses[..2], [StatusCode::UNAUTHORIZED; 2], "{statuses:?}");
    assert!(
        statuses[2..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    app.stop().await;

    // One check at a time: a crowd of logins is answered 503 beyond what waits a second,
    // never queued without end.
    let app = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.auth.password_failures_per_address_per_minute = 1000;
        c.auth.password_failures_per_user_per_minute = 1000;
        c.auth.max_concurrent_password_checks = 1;
    })
    .await;
    // Enough that one at a time cannot fit in a second even on a fast machine (a check takes
    // some 10-20 ms here; 48 once did fit).
    let tries = (0..160).map(|n| {
        let app = &app;
        async move {
            password_login(
                app,
                "wrong-wrong-wrong",
                &format!("10.1.{}.{}", n / 200, n % 200),
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(tries).await;
    assert!(
        statuses.iter().all(|s| matches!(
            *s,
            StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE
        )),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "160 checks at once, one at a time, do not all fit in a second: {statuses:?}"
    );
    app.stop().await;
}

/// A tenant admin names the identity provider, so a "test connection" would otherwise make the
/// server fetch from anywhere and report reachability, timing and errors: a port scanner of the
/// inside of its network. Internal addresses are refused before any connection (loopback only
/// with the development setting), a name that resolves to one too, and the report quotes no
/// answer; tests spend the tenant's and the address's login budgets.
async fn a_provider_test_cannot_reach_inside_the_network(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.allow_loopback_providers = false;
        c.auth.logins_per_address_per_minute = 8;
    })
    .await;
    app.create_tenant("acme").await;
    let port = url::Url::parse(&app.base).unwrap().port().unwrap();
    for issuer in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        format!("https://[::1]:{port}"),
        "https://169.254.169.254".to_owned(),
        "https://10.1.2.3:8443".to_owned(),
    ] {
        let (status, report) = app
            .post(
                "/api/v1/tenant/acme/sso/test",
                json!({ "oauth_issuer": issuer }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{issuer}: {report}");
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["discovery"]["reachable"], false, "{report}");
        let detail = report["discovery"]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("internal address"), "{issuer}: {report}");
    }
    // Past the budget: refused with 429, nothing fetched.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, _) = app
            .post(
                "/api/v1/tenant/acme/sso/test",
                json!({ "oauth_issuer": "https://169.254.169.254" }),
            )
            .await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    app.stop().await;
}

/// A request head larger than any route needs is refused before anything else reads it, and a
/// body that trickles in (a byte every half second) is cut off at its deadline instead of
/// holding the connection for as long as the client likes.
async fn a_heads_size_and_a_bodys_time_are_bounded(backend: Backend) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = TestApp::spawn_with(backend, |c| c.body_timeout_seconds = 2).await;
    let long_query = format!("/health?{}", "q".repeat(9 * 1024));
    let response = app.client.get(app.url(&long_query)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::URI_TOO_LONG);
    let response = app
        .client
        .get(app.url("/health"))
        .header("X-Padding", "p".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );

    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let body = json!({ "slug": "slowloris", "name": "Slow" }).to_string();
    let head = format!(
        "POST /api/v1/tenant HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.token,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        for byte in body.as_bytes() {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    };
    // The answer comes at the deadline, long before the body would have.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), trickle).await;
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer, not a connection held open")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let (status, _) = app.get("/api/v1/tenant/slowloris").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was created");
    app.stop().await;
}

/// `/metrics` names tenants: with `metrics_token` only the scraper that presents it reads it.
/// `/health/ready` is public, and says whether the server can serve, never why (an address or a
/// dependency's error text would tell an outsider about the inside).
async fn metrics_can_be_kept_to_the_scraper_and_readiness_says_no_why(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.metrics_token = Some("scrape-token-0123456789".into());
        c.redis_url = Some("redis://127.0.0.1:1/0".into());
        c.redis_timeout_ms = 100;
    })
    .await;
    let refused = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-token-0123456780")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let scraped = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(
        scraped
            .text()
            .await
            .unwrap()
            .contains("tenantry_http_requests_total")
    );

    let ready = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "fail open stays ready");
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["redis"]["status"], "unreachable", "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1:1") && body["redis"].get("error").is_none(),
        "no address, no error text: {body}"
    );
    app.stop().await;
}

/// A stored role this version does not know (a downgrade, a hand-edited row) is an error
/// wherever the key is used, never `member`: a rotation would otherwise write that default into
/// the new key.
async fn an_unknown_stored_role_is_an_error_never_a_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let (status, created) = app
        .post(
            "/api/v1/tenant/acme/api-keys",
            json!({ "name": "odd", "role": "member" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    run_sql(
        &app,
        &format!("UPDATE api_keys SET role = 'superuser' WHERE id = '{id}'"),
    )
    .await;

    let refused = app
        .client
        .get(app.url("/api/v1/tenant/acme"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "it cannot authenticate"
    );
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/acme/api-keys/{id}/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains("superuser"), "{body}");
    let (status, body) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "shown as what it is not: {body}"
    );
    run_sql(
        &app,
        &format!("UPDATE api_keys SET role = 'member' WHERE id = '{id}'"),
    )
    .await;
    let (status, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(1),
        "no key was made by the rotation: {keys}"
    );
    app.stop().await;
}

/// A login callback carries no credential, so anyone can send one. One whose state no login
/// holds is answered without a write (here while another connection holds what a write would
/// need), and an address that sends more than its budget is refused before the database is
/// looked at.
async fn callbacks_with_states_no_login_holds_write_nothing_and_are_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.callback_failures_per_address_per_minute = 3;
    })
    .await;
    app.create_tenant("acme").await;
    let hold = hold_writes(&app, "login_attempts").await;
    let callback = |state: &str| {
        let url = format!("{}/t/acme/callback?code=c&state={state}", app.base);
        let client = app.client.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(5), client.get(url).send())
                .await
                .expect("answered while another connection holds the database's writes")
                .unwrap()
        }
    };
    for i in 0..3 {
        let response = callback(&format!("forged-{i}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let page = response.text().await.unwrap();
        assert!(page.contains("not valid or was already used"), "{page}");
    }
    let response = callback("forged-again").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    drop(hold);
    app.stop().await;
}
