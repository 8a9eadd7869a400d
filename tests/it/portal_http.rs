//! The admin portal over plain HTTP, as a browser without JavaScript uses it: cookies, forms,
//! CSRF tokens and 303 redirects, against SQLite and PostgreSQL.

use crate::common;

use crate::common::web::{Browser, hidden_value};
use crate::common::{ADMIN_PASSWORD, Backend, TestApp};
use reqwest::StatusCode;
use reqwest::header::LOCATION;

backend_tests!(
    pages_without_a_session_redirect_to_login,
    wrong_password_is_401_with_an_error_and_starts_no_session,
    login_sets_an_http_only_same_site_lax_session_cookie_and_returns_to_the_page_asked_for,
    forms_without_or_with_a_wrong_csrf_token_are_403_and_change_nothing,
    create_with_a_bad_slug_is_422_with_the_error_next_to_the_field_and_stores_nothing,
    create_redirects_to_the_detail_page_of_the_new_tenant,
    lifecycle_action_with_a_reason_changes_the_status_shown_on_the_detail_page,
    logout_ends_the_session_and_the_old_cookie_no_longer_works,
    pages_load_every_asset_from_this_server,
    secrets_typed_into_the_form_never_appear_in_a_page,
    export_downloads_the_bundle_and_import_restores_a_purged_tenant,
    bad_query_parameters_and_unknown_pages_answer_with_a_page_keeping_the_menu,
    rolling_back_the_client_secret_and_checking_the_database_from_the_detail_page,
    plugins_page_shows_world_wit_version_capabilities_and_calls,
    a_plugins_configuration_is_set_from_the_plugins_page,
    api_keys_are_made_shown_once_rotated_and_revoked_from_the_tenant_page,
    the_jobs_page_shows_each_jobs_schedule_and_last_run,
);

/// The pages behind the login, with `{slug}` for an existing tenant.
const PAGES: &[&str] = &[
    "/",
    "/tenants",
    "/tenants/new",
    "/tenants/{slug}",
    "/tenants/{slug}/edit",
    "/audit",
    "/jobs",
    "/plugins",
];

/// The HTML of the `.field` block holding the input with id `input_id`.
fn field_block<'a>(html: &'a str, input_id: &str) -> &'a str {
    let at = html
        .find(&format!("id=\"{input_id}\""))
        .unwrap_or_else(|| panic!("no #{input_id} on the page:\n{html}"));
    let start = html[..at]
        .rfind("<div class=\"field")
        .expect("the input sits in a .field");
    let end = html[at..].find("</div>").expect("the .field ends") + at;
    &html[start..end]
}

fn cookie_value(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
}

/// The status badge in the detail page's heading.
fn heading_status(html: &str) -> String {
    let h1 = &html[html.find("<h1>").expect("a heading")..];
    let h1 = &h1[..h1.find("</h1>").unwrap()];
    let badge = &h1[h1
        .find("class=\"badge status-")
        .expect("a status badge in the heading")..];
    let text = &badge[badge.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_owned()
}

async fn tenant_exists(app: &TestApp, slug: &str) -> bool {
    let (status, body) = app.get(&format!("/api/v1/tenant/{slug}")).await;
    assert!(
        matches!(status, StatusCode::OK | StatusCode::NOT_FOUND),
        "{status}: {body}"
    );
    status == StatusCode::OK
}

async fn tenant_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/api/v1/tenant?limit=200").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().expect("items").len()
}

async fn pages_without_a_session_redirect_to_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme-corp").await;
    let browser = Browser::at(&app);
    for path in PAGES {
        let path = path.replace("{slug}", "acme-corp");
        let page = browser.get(&path).await;
        page.assert_status(StatusCode::SEE_OTHER);
        let location = page.redirect.as_deref().unwrap();
        let expected_next: String = url::form_urlencoded::byte_serialize(path.as_bytes()).collect();
        assert_eq!(location, format!("/login?next={expected_next}"), "{path}");
    }
    // A form posted without a session changes nothing either.
    let page = browser
        .post(
            "/tenants/acme-corp/lifecycle",
            &[("csrf", "x"), ("action", "suspend"), ("reason", "r")],
        )
        .await;
    page.assert_status(StatusCode::SEE_OTHER);
    assert!(page.redirect.unwrap().starts_with("/login?next="));
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["status"], "active");

    let login = browser.see_other(&browser.get("/tenants").await).await;
    login.assert_status(StatusCode::OK);
    assert!(login.body.contains("Log in to tenantry"), "{}", login.body);
    app.stop().await;
}

async fn wrong_password_is_401_with_an_error_and_starts_no_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::at(&app);
    let page = browser.submit_login("admin", "not the password").await;
    page.assert_status(StatusCode::UNAUTHORIZED);
    assert!(
        page.body.contains("Wrong user name or password."),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\">"),
        "the form is shown again"
    );
    assert!(
        page.set_cookie("tenantry_session").is_none(),
        "{:?}",
        page.set_cookies
    );
    // Still logged out.
    let dashboard = browser.get("/").await;
    dashboard.assert_status(StatusCode::SEE_OTHER);
    assert!(dashboard.redirect.unwrap().starts_with("/login"));

    // An unknown user gets the same answer.
    let page = browser.submit_login("mallory", ADMIN_PASSWORD).await;
    page.assert_status(StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Wrong user name or password."));
    assert!(page.set_cookie("tenantry_session").is_none());
    app.stop().await;
}

async fn login_sets_an_http_only_same_site_lax_session_cookie_and_returns_to_the_page_asked_for(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::at(&app);
    let asked = browser.get("/audit").await;
    let login_form = browser.see_other(&asked).await;
    assert_eq!(
        hidden_value(&login_form.body, "next").as_deref(),
        Some("/audit")
    );

    let answer = browser
        .post(
            "/login",
            &[
                ("csrf", &login_form.csrf()),
                ("next", "/audit"),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    answer.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(answer.redirect.as_deref(), Some("/audit"));
    let cookie = answer
        .set_cookie("tenantry_session")
        .expect("a session cookie");
    let attributes: Vec<String> = cookie
        .split(';')
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(attributes.contains(&"httponly".to_owned()), "{cookie}");
    assert!(attributes.contains(&"samesite=lax".to_owned()), "{cookie}");
    assert!(attributes.contains(&"path=/".to_owned()), "{cookie}");
    assert!(cookie_value(cookie).len() >= 32, "{cookie}");

    let audit = browser.see_other(&answer).await;
    audit.assert_status(StatusCode::OK);
    assert!(audit.body.contains("<h1>Audit log</h1>"));
    assert!(audit.body.contains("admin.login"), "the login is audited");
    assert!(
        audit.body.contains("Log out"),
        "the page shows who is logged in"
    );

    // A `next` to another site is not followed.
    let other = Browser::at(&app);
    let form = other.get("/login?next=//evil.example/").await;
    let answer = other
        .post(
            "/login",
            &[
                ("csrf", &form.csrf()),
                ("next", "//evil.example/"),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(answer.redirect.as_deref(), Some("/"));
    app.stop().await;
}

async fn forms_without_or_with_a_wrong_csrf_token_are_403_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme-corp").await;
    let browser = Browser::admin(&app).await;
    let before = tenant_count(&app).await;

    for csrf in [None, Some("forged-token")] {
        let with_csrf = |fields: &[(&'static str, &'static str)]| {
            let mut form: Vec<(&str, &str)> = fields.to_vec();
            if let Some(token) = csrf {
                form.push(("csrf", token));
            }
            form
        };
        let created = browser
            .post(
                "/tenants",
                &with_csrf(&[
                    ("slug", "forged-co"),
                    ("name", "Forged Co"),
                    ("tier", "free"),
                ]),
            )
            .await;
        created.assert_status(StatusCode::FORBIDDEN);
        assert!(
            created.body.contains("CSRF check failed"),
            "{}",
            created.body
        );

        let edited = browser
            .post(
                "/tenants/acme-corp/edit",
                &with_csrf(&[("name", "Renamed"), ("tier", "free"), ("scopes", "openid")]),
            )
            .await;
        edited.assert_status(StatusCode::FORBIDDEN);

        let suspended = browser
            .post(
                "/tenants/acme-corp/lifecycle",
                &with_csrf(&[("action", "suspend"), ("reason", "forged")]),
            )
            .await;
        suspended.assert_status(StatusCode::FORBIDDEN);
        assert!(
            suspended.body.contains("CSRF check failed"),
            "{}",
            suspended.body
        );

        let logout = browser.post("/logout", &with_csrf(&[])).await;
        logout.assert_status(StatusCode::FORBIDDEN);

        // A login form posted from elsewhere (no token of the login page's cookie) is refused too.
        let login = Browser::at(&app)
            .post(
                "/login",
                &with_csrf(&[("username", "admin"), ("password", ADMIN_PASSWORD)]),
            )
            .await;
        login.assert_status(StatusCode::FORBIDDEN);
        assert!(login.set_cookie("tenantry_session").is_none());
    }

    assert!(!tenant_exists(&app, "forged-co").await);
    assert_eq!(tenant_count(&app).await, before);
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["status"], "active");
    assert_eq!(tenant["name"], "Tenant acme-corp");
    // The session survived the forged logouts.
    let detail = browser.get("/tenants/acme-corp").await;
    detail.assert_status(StatusCode::OK);
    assert_eq!(heading_status(&detail.body), "active");
    app.stop().await;
}

async fn create_with_a_bad_slug_is_422_with_the_error_next_to_the_field_and_stores_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;
    let before = tenant_count(&app).await;
    let page = browser
        .submit(
            "/tenants/new",
            "/tenants",
            &[
                ("slug", "Bad_Slug"),
                ("name", "Acme Corporation"),
                ("tier", "professional"),
                ("scopes", "openid"),
            ],
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.body
            .contains("Please correct the fields marked below."),
        "{}",
        page.body
    );
    let slug_field = field_block(&page.body, "f-slug");
    assert!(slug_field.contains("has-error"), "{slug_field}");
    assert!(slug_field.contains("aria-invalid=\"true\""), "{slug_field}");
    assert!(
        slug_field.contains("<p class=\"error\" id=\"e-slug\">Slug may contain only lowercase letters a-z, digits 0-9 and hyphens</p>"),
        "{slug_field}"
    );
    assert!(
        slug_field.contains("value=\"Bad_Slug\""),
        "what was typed is kept: {slug_field}"
    );
    let name_field = field_block(&page.body, "f-name");
    assert!(
        name_field.contains("value=\"Acme Corporation\""),
        "{name_field}"
    );
    assert!(
        !name_field.contains("has-error"),
        "only the bad field is marked: {name_field}"
    );
    assert!(
        page.body
            .contains("<option value=\"professional\" selected>"),
        "the tier chosen is kept"
    );

    assert_eq!(tenant_count(&app).await, before);
    let list = browser.get("/tenants").await;
    assert!(!list.body.contains("Acme Corporation"), "{}", list.body);
    app.stop().await;
}

async fn create_redirects_to_the_detail_page_of_the_new_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;
    let answer = browser
        .submit(
            "/tenants/new",
            "/tenants",
            &[
                ("slug", "acme-corp"),
                ("name", "Acme Corporation"),
                ("tier", "enterprise"),
                ("trial_days", ""),
                ("contact_name", "Jo Doe"),
                ("contact_email", "jo@acme.example"),
                ("scopes", "openid,profile,email"),
                ("metadata", "{\"region\": \"eu\"}"),
            ],
        )
        .await;
    answer.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(answer.redirect.as_deref(), Some("/tenants/acme-corp"));

    let detail = browser.see_other(&answer).await;
    detail.assert_status(StatusCode::OK);
    assert!(
        detail.body.contains("Tenant acme-corp created."),
        "the flash message: {}",
        detail.body
    );
    assert!(
        detail
            .body
            .contains("<h1>Acme Corporation <small class=\"muted\">acme-corp</small>")
    );
    assert_eq!(heading_status(&detail.body), "active");
    assert!(detail.body.contains("<dt>Tier</dt><dd>enterprise</dd>"));
    assert!(detail.body.contains("Jo Doe &lt;jo@acme.example&gt;"));
    assert!(
        detail.body.contains("&quot;region&quot;: &quot;eu&quot;"),
        "metadata shown"
    );
    // The flash is shown once.
    let again = browser.get("/tenants/acme-corp").await;
    assert!(!again.body.contains("Tenant acme-corp created."));

    let list = browser.get("/tenants").await;
    assert!(
        list.body
            .contains("<a href=\"/tenants/acme-corp\">acme-corp</a>"),
        "{}",
        list.body
    );
    app.stop().await;
}

async fn lifecycle_action_with_a_reason_changes_the_status_shown_on_the_detail_page(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme-corp").await;
    let browser = Browser::admin(&app).await;
    let detail = browser.get("/tenants/acme-corp").await;
    assert_eq!(heading_status(&detail.body), "active");
    // Its usage, with each metric's limit.
    let (status, _) = app
        .post(
            "/api/v1/tenant/acme-corp/usage",
            serde_json::json!({ "id": "e", "metric": "llm_tokens_per_day", "increment": 8_500 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let detail = browser.get("/tenants/acme-corp").await;
    let row = detail
        .body
        .split(r#"id="usage-llm_tokens_per_day""#)
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no usage row: {}", detail.body));
    assert!(row.contains(">8500<") && row.contains(">10000"), "{row}");
    assert!(
        row.contains("severity-warning") && row.contains("85 %"),
        "{row}"
    );
    assert!(
        detail.body.contains("name=\"action\" value=\"suspend\""),
        "the page offers to suspend"
    );
    assert!(
        !detail.body.contains("name=\"action\" value=\"reactivate\""),
        "but not to reactivate"
    );

    // Without a reason: refused with a message, nothing changes.
    let answer = browser
        .post(
            "/tenants/acme-corp/lifecycle",
            &[
                ("csrf", &detail.csrf()),
                ("action", "suspend"),
                ("reason", "  "),
            ],
        )
        .await;
    let page = browser.see_other(&answer).await;
    assert!(
        page.body
            .contains("Please give a reason to suspend the tenant"),
        "{}",
        page.body
    );
    assert_eq!(heading_status(&page.body), "active");

    let answer = browser
        .post(
            "/tenants/acme-corp/lifecycle",
            &[
                ("csrf", &detail.csrf()),
                ("action", "suspend"),
                ("reason", "Payment failed in March"),
            ],
        )
        .await;
    assert_eq!(answer.redirect.as_deref(), Some("/tenants/acme-corp"));
    let page = browser.see_other(&answer).await;
    page.assert_status(StatusCode::OK);
    assert!(
        page.body.contains("Tenant acme-corp is now suspended."),
        "{}",
        page.body
    );
    assert_eq!(heading_status(&page.body), "suspended");
    assert!(
        page.body
            .contains("suspended</span> — Payment failed in March"),
        "the reason next to the status"
    );
    let history = &page.body[page.body.find("<h3>Status history</h3>").expect("history")..];
    assert!(
        history.contains("<td>Payment failed in March</td><td>admin</td>"),
        "{history}"
    );
    assert!(
        page.body.contains("name=\"action\" value=\"reactivate\""),
        "now it can be reactivated"
    );
    assert!(!page.body.contains("name=\"action\" value=\"suspend\""));
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["status"], "suspended");

    // An action the state machine does not allow is refused with a message.
    let answer = browser
        .post(
            "/tenants/acme-corp/lifecycle",
            &[
                ("csrf", &detail.csrf()),
                ("action", "suspend"),
                ("reason", "again"),
            ],
        )
        .await;
    let page = browser.see_other(&answer).await;
    assert!(page.body.contains("flash flash-error"), "{}", page.body);
    assert_eq!(heading_status(&page.body), "suspended");
    app.stop().await;
}

async fn logout_ends_the_session_and_the_old_cookie_no_longer_works(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::at(&app);
    let answer = browser.submit_login("admin", ADMIN_PASSWORD).await;
    let session = cookie_value(
        answer
            .set_cookie("tenantry_session")
            .expect("session cookie"),
    )
    .to_owned();

    // The bare cookie is all it takes while the session lives...
    let replay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let with_old_cookie = || {
        replay
            .get(app.url("/tenants"))
            .header("Cookie", format!("tenantry_session={session}"))
            .send()
    };
    assert_eq!(with_old_cookie().await.unwrap().status(), StatusCode::OK);

    let csrf = browser.csrf("/").await;
    let answer = browser.post("/logout", &[("csrf", &csrf)]).await;
    answer.assert_status(StatusCode::SEE_OTHER);
    assert_eq!(answer.redirect.as_deref(), Some("/login"));
    let cleared = answer
        .set_cookie("tenantry_session")
        .expect("the cookie is cleared");
    assert_eq!(cookie_value(cleared), "", "{cleared}");
    let login = browser.see_other(&answer).await;
    assert!(login.body.contains("You are logged out."), "{}", login.body);

    // ...and nothing once it has ended.
    let response = with_old_cookie().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/login?next=%2Ftenants");
    let page = browser.get("/").await;
    page.assert_status(StatusCode::SEE_OTHER);
    app.stop().await;
}

/// The `src`/`href` of every `<link>`, `<script>` and `<img>` of `html`.
fn asset_references(html: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let lower = html.to_ascii_lowercase();
    for tag in ["<link", "<script", "<img"] {
        let mut from = 0;
        while let Some(at) = lower[from..].find(tag) {
            let start = from + at;
            let end = start + lower[start..].find('>').expect("tag ends");
            let element = &html[start..end];
            for attribute in ["src=\"", "href=\""] {
                if let Some(a) = element.find(attribute) {
                    let value = &element[a + attribute.len()..];
                    refs.push(value[..value.find('"').unwrap()].to_owned());
                }
            }
            from = end;
        }
    }
    refs
}

async fn pages_load_every_asset_from_this_server(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme-corp").await;
    let anonymous = Browser::at(&app);
    let browser = Browser::admin(&app).await;
    let mut pages = vec![
        ("/login".to_owned(), anonymous.get("/login").await),
        (
            "/no-such-page".to_owned(),
            browser.get("/no-such-page").await,
        ),
    ];
    for path in PAGES {
        let path = path.replace("{slug}", "acme-corp");
        pages.push((path.clone(), browser.get(&path).await));
    }
    let mut assets = std::collections::BTreeSet::new();
    for (path, page) in &pages {
        let refs = asset_references(&page.body);
        assert!(
            refs.contains(&"/static/app.css".to_owned()),
            "{path}: {refs:?}"
        );
        for r in refs {
            assert!(
                r.starts_with('/') && !r.starts_with("//") && !r.contains("://"),
                "{path} loads `{r}` from another host"
            );
            assets.insert(r);
        }
        assert!(
            !page.body.contains("<script"),
            "{path}: the portal works without JavaScript"
        );
    }
    assert_eq!(
        assets.into_iter().collect::<Vec<_>>(),
        vec!["/favicon.svg".to_owned(), "/static/app.css".to_owned()]
    );

    let css = anonymous.get("/static/app.css").await;
    css.assert_status(StatusCode::OK);
    assert!(css.body.contains(".topbar"));
    assert!(
        !css.body.contains("@import") && !css.body.contains("url("),
        "the stylesheet loads nothing more"
    );
    let icon = anonymous.get("/favicon.svg").await;
    icon.assert_status(StatusCode::OK);
    assert!(icon.body.starts_with("<svg"), "{}", icon.body);
    app.stop().await;
}

async fn secrets_typed_into_the_form_never_appear_in_a_page(backend: Backend) {
    const CLIENT_SECRET: &str = "cs-7d1f0c9e-very-secret";
    const DB_PASSWORD: &str = "hunter2-db-pass";
    let db_uri = format!("postgresql://acme_app:{DB_PASSWORD}@db.internal:5432/acme");
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;
    let fields = |slug: &'static str| {
        vec![
            ("slug", slug),
            ("name", "Acme Corporation"),
            ("tier", "professional"),
            ("oauth_issuer", "https://acme.okta.com/oauth2/default"),
            ("client_id", "0oa1abc2def3"),
            ("client_secret", CLIENT_SECRET),
            ("scopes", "openid,profile,email"),
            ("default_schema", "acme"),
        ]
    };
    let leaks = |html: &str| {
        html.contains(CLIENT_SECRET) || html.contains(DB_PASSWORD) || html.contains("acme_app:")
    };

    // A form sent back with an error does not echo the secrets.
    let mut bad = fields("Bad_Slug");
    bad.push(("db_uri", &db_uri));
    let page = browser.submit("/tenants/new", "/tenants", &bad).await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!leaks(&page.body), "{}", page.body);

    let mut good = fields("acme-corp");
    good.push(("db_uri", &db_uri));
    let answer = browser.submit("/tenants/new", "/tenants", &good).await;
    answer.assert_status(StatusCode::SEE_OTHER);
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["client_secret"]["set"], true);
    assert_eq!(tenant["db_uri"]["set"], true);
    let fingerprint = tenant["client_secret"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();

    let detail = browser.see_other(&answer).await;
    detail.assert_status(StatusCode::OK);
    assert!(!leaks(&detail.body), "{}", detail.body);
    assert!(
        detail.body.contains(&fingerprint),
        "the detail page shows the fingerprint instead"
    );
    let edit = browser.get("/tenants/acme-corp/edit").await;
    edit.assert_status(StatusCode::OK);
    assert!(!leaks(&edit.body), "{}", edit.body);
    assert!(
        field_block(&edit.body, "f-client_secret").contains("value=\"\""),
        "the secret field is empty"
    );
    assert!(
        field_block(&edit.body, "f-db_uri").contains("value=\"\""),
        "the URI field is empty"
    );
    assert!(
        edit.body
            .contains(&format!("Set (fingerprint {fingerprint})"))
    );

    // Saving the edit form with the secret fields left empty keeps the secrets.
    let answer = browser
        .post(
            "/tenants/acme-corp/edit",
            &[
                ("csrf", &edit.csrf()),
                ("name", "Acme Corp"),
                ("tier", "professional"),
                ("oauth_issuer", "https://acme.okta.com/oauth2/default"),
                ("client_id", "0oa1abc2def3"),
                ("client_secret", ""),
                ("scopes", "openid,profile,email"),
                ("db_uri", ""),
            ],
        )
        .await;
    answer.assert_status(StatusCode::SEE_OTHER);
    let (_, tenant) = app.get("/api/v1/tenant/acme-corp").await;
    assert_eq!(tenant["name"], "Acme Corp");
    assert_eq!(tenant["client_secret"]["fingerprint"], fingerprint.as_str());
    assert_eq!(tenant["db_uri"]["set"], true);

    for path in [
        "/",
        "/tenants",
        "/tenants/acme-corp",
        "/tenants/acme-corp/edit",
        "/audit",
        "/audit?tenant=acme-corp",
    ] {
        let page = browser.get(path).await;
        page.assert_status(StatusCode::OK);
        assert!(!leaks(&page.body), "{path} shows a secret:\n{}", page.body);
    }
    app.stop().await;
}

async fn export_downloads_the_bundle_and_import_restores_a_purged_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;
    browser
        .submit(
            "/tenants/new",
            "/tenants",
            &[
                ("slug", "acme-corp"),
                ("name", "Acme Corporation"),
                ("tier", "starter"),
                ("scopes", "openid"),
            ],
        )
        .await
        .assert_status(StatusCode::SEE_OTHER);
    let detail = browser.get("/tenants/acme-corp").await;
    let csrf = detail.csrf();
    let download = browser
        .post("/tenants/acme-corp/export", &[("csrf", &csrf)])
        .await;
    download.assert_status(StatusCode::OK);
    let bundle: serde_json::Value =
        serde_json::from_str(&download.body).expect("the download is the JSON bundle");
    assert_eq!(bundle["tenant"]["slug"], "acme-corp");
    // The whole tenant as one archive, from the same page.
    assert!(detail.body.contains("id=\"download-bundle\""));
    let archive = browser
        .post("/tenants/acme-corp/bundle", &[("csrf", &csrf)])
        .await;
    archive.assert_status(StatusCode::OK);
    let whole = tenantry::bundles::Bundle::from_tar(archive.body.as_bytes())
        .expect("the download is the tar bundle");
    assert_eq!(whole.manifest.tenant_slug, "acme-corp");
    assert_eq!(whole.manifest.format, "tenantry.tenant-bundle/v2");

    // Purge it, then bring it back by pasting the bundle.
    let (status, _) = app
        .delete("/api/v1/tenant/acme-corp?hard=true&force=true")
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an active tenant is not purged"
    );
    app.delete("/api/v1/tenant/acme-corp").await;
    let (status, _) = app
        .delete("/api/v1/tenant/acme-corp?hard=true&force=true")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!tenant_exists(&app, "acme-corp").await);

    let form = browser.get("/tenants/import").await;
    form.assert_status(StatusCode::OK);
    let refused = browser
        .post(
            "/tenants/import",
            &[("csrf", &form.csrf()), ("bundle", "{ not json")],
        )
        .await;
    refused.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("The bundle was not imported."));
    assert!(!tenant_exists(&app, "acme-corp").await);

    let answer = browser
        .post(
            "/tenants/import",
            &[("csrf", &form.csrf()), ("bundle", &download.body)],
        )
        .await;
    answer.assert_status(StatusCode::SEE_OTHER);
    let restored = browser.see_other(&answer).await;
    // A JSON bundle restores the record only, and the page says so.
    assert!(
        restored
            .body
            .contains("Tenant acme-corp restored (active): a JSON bundle carries the tenant&#x27;s registry record and status history only: nothing was restored in its backends"),
        "{}",
        restored.body
    );
    assert_eq!(heading_status(&restored.body), "active");

    // The archive the page downloads is uploaded as a file: tried first, then imported whole.
    app.delete("/api/v1/tenant/acme-corp").await;
    let (status, _) = app
        .delete("/api/v1/tenant/acme-corp?hard=true&force=true")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let upload = |csrf: &str, dry_run: bool| {
        let file = reqwest::multipart::Part::bytes(archive.body.as_bytes().to_vec())
            .file_name("acme-corp.tar")
            .mime_str("application/x-tar")
            .unwrap();
        let mut form = reqwest::multipart::Form::new()
            .text("csrf", csrf.to_owned())
            .part("file", file);
        if dry_run {
            form = form.text("dry_run", "1");
        }
        form
    };
    let form = browser.get("/tenants/import").await;
    assert!(
        form.body.contains("enctype=\"multipart/form-data\""),
        "{}",
        form.body
    );
    let forged = browser
        .post_multipart("/tenants/import", upload("not-the-token", false))
        .await;
    forged.assert_status(StatusCode::FORBIDDEN);
    assert!(!tenant_exists(&app, "acme-corp").await);
    let tried = browser
        .post_multipart("/tenants/import", upload(&form.csrf(), true))
        .await;
    tried.assert_status(StatusCode::OK);
    assert!(
        tried
            .body
            .contains("Would restore tenant acme-corp (active")
            && tried.body.contains("+ 1 tenant"),
        "{}",
        tried.body
    );
    assert!(
        !tenant_exists(&app, "acme-corp").await,
        "a dry run writes nothing"
    );
    let imported = browser
        .post_multipart("/tenants/import", upload(&form.csrf(), false))
        .await;
    imported.assert_status(StatusCode::SEE_OTHER);
    let page = browser.see_other(&imported).await;
    assert!(
        page.body.contains(
            "Tenant acme-corp imported (active): every backend restored, and equal to its bundle."
        ),
        "{}",
        page.body
    );
    assert!(tenant_exists(&app, "acme-corp").await);
    // The same archive again: refused, and the page says why.
    let again = browser
        .post_multipart("/tenants/import", upload(&form.csrf(), false))
        .await;
    again.assert_status(StatusCode::CONFLICT);
    assert!(again.body.contains("already exists"), "{}", again.body);
    app.stop().await;
}

async fn bad_query_parameters_and_unknown_pages_answer_with_a_page_keeping_the_menu(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;
    let bad = browser.get("/audit?before=yesterday").await;
    bad.assert_status(StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("<!doctype html>"),
        "an HTML page, not JSON: {}",
        bad.body
    );
    assert!(bad.body.contains("invalid parameter"), "{}", bad.body);
    let missing = browser.get("/no/such/page").await;
    missing.assert_status(StatusCode::NOT_FOUND);
    assert!(
        missing.body.contains("href=\"/audit\""),
        "the menu is there for a logged-in user: {}",
        missing.body
    );
    app.stop().await;
}

async fn rolling_back_the_client_secret_and_checking_the_database_from_the_detail_page(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (_, created) = app
        .post(
            "/api/v1/tenant",
            serde_json::json!({ "slug": "acme", "name": "Acme", "oauth_issuer": "https://idp.example.com",
                                "client_id": "c", "client_secret": "first-secret",
                                "db_uri": common::postgres_admin_url() }),
        )
        .await;
    let first = created["client_secret"]["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    app.patch(
        "/api/v1/tenant/acme",
        serde_json::json!({ "client_secret": "second-secret" }),
    )
    .await;
    let browser = Browser::admin(&app).await;
    let detail = browser.get("/tenants/acme").await;
    assert!(detail.body.contains("Roll back client secret"));
    let answer = browser
        .post(
            "/tenants/acme/client-secret/rollback",
            &[("csrf", &detail.csrf())],
        )
        .await;
    let after = browser.see_other(&answer).await;
    assert!(
        after
            .body
            .contains(&format!("The client secret of acme is back to {first}.")),
        "{}",
        after.body
    );
    let (_, tenant) = app.get("/api/v1/tenant/acme").await;
    assert_eq!(tenant["client_secret"]["fingerprint"], first.as_str());

    let answer = browser
        .post("/tenants/acme/health/database", &[("csrf", &after.csrf())])
        .await;
    let checked = browser.see_other(&answer).await;
    assert!(
        checked.body.contains("Database connected in"),
        "{}",
        checked.body
    );
    app.stop().await;
}

async fn plugins_page_shows_world_wit_version_capabilities_and_calls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tenant = tenantry::plugin_host::PluginTenant {
        id: "t1".into(),
        slug: "acme".into(),
        name: "Acme".into(),
        tier: tenantry::tenants::Tier::Free,
        status: "active".into(),
    };
    app.ctx
        .plugins
        .evaluate("tier-quota", &tenant, vec![])
        .await
        .expect("called")
        .expect("decided");
    let browser = Browser::admin(&app).await;
    let page = browser.get("/plugins").await;
    page.assert_status(StatusCode::OK);
    for expected in [
        "template-renderer",
        "tier-quota",
        "superset",
        "<code>quota-policy</code>",
        "<code>provisioner</code>",
    ] {
        assert!(
            page.body.contains(expected),
            "{expected} missing:\n{}",
            page.body
        );
    }
    assert!(
        page.body
            .contains("<code>*</code> <span class=\"badge\">not granted</span>"),
        "{}",
        page.body
    );
    let row = page
        .body
        .split("<strong>tier-quota</strong>")
        .nth(1)
        .unwrap();
    let calls = row
        .split("<td class=\"num\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(calls, "1", "the call count of tier-quota");
    app.stop().await;
}

async fn api_keys_are_made_shown_once_rotated_and_revoked_from_the_tenant_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_tenant("acme").await;
    let browser = Browser::admin(&app).await;
    let csrf = browser.csrf("/tenants/acme").await;
    let made = browser
        .post(
            "/tenants/acme/api-keys",
            &[
                ("csrf", &csrf),
                ("name", "etl"),
                ("role", "tenant-admin"),
                ("expires_in_days", ""),
                ("rate_limit_per_minute", "120"),
            ],
        )
        .await;
    made.assert_status(StatusCode::OK);
    let token = made
        .body
        .split("<pre id=\"new-key\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .expect("the key is on the page")
        .to_owned();
    assert!(token.starts_with("tny_"), "{token}");
    // The key works, reaches its tenant only, and is never shown again.
    let (status, _) = common::into_json(
        app.client
            .get(app.url("/api/v1/tenant/acme"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let page = browser.get("/tenants/acme").await;
    page.assert_status(StatusCode::OK);
    assert!(
        page.body.contains("etl") && page.body.contains("120/min"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains(&token[13..]),
        "the secret is not shown again"
    );

    // A bad number is refused with a message, and nothing is made.
    let refused = browser
        .post(
            "/tenants/acme/api-keys",
            &[
                ("csrf", &csrf),
                ("name", "x"),
                ("role", "member"),
                ("expires_in_days", "soon"),
            ],
        )
        .await;
    let shown = browser.see_other(&refused).await;
    assert!(shown.body.contains("expires_in_days"), "{}", shown.body);

    // Rotation shows the new key once; the old one stops at once with no grace period.
    let (_, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    let rotated = browser
        .post(
            &format!("/tenants/acme/api-keys/{id}/rotate"),
            &[("csrf", &csrf), ("grace_minutes", "0")],
        )
        .await;
    rotated.assert_status(StatusCode::OK);
    assert!(rotated.body.contains("new-key"), "{}", rotated.body);
    let (status, _) = common::into_json(
        app.client
            .get(app.url("/api/v1/tenant/acme"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    let live = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["live"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = browser
        .post(
            &format!("/tenants/acme/api-keys/{live}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    let page = browser.see_other(&revoked).await;
    assert!(page.body.contains("revoked"), "{}", page.body);

    // Without the CSRF token nothing happens.
    let forged = browser
        .post(
            "/tenants/acme/api-keys",
            &[("csrf", "forged"), ("name", "evil")],
        )
        .await;
    forged.assert_status(StatusCode::FORBIDDEN);
    let (_, keys) = app.get("/api/v1/tenant/acme/api-keys").await;
    assert!(keys.as_array().unwrap().iter().all(|k| k["name"] != "evil"));
    app.stop().await;
}

/// The plugins page shows a plugin's configuration fields and saves them; a value its field
/// refuses is named and changes nothing; an empty field goes back to its default.
async fn a_plugins_configuration_is_set_from_the_plugins_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.install_test_plugin("provisioner_v2").await;
    let browser = Browser::admin(&app).await;
    let page = browser.get("/plugins").await;
    page.assert_status(StatusCode::OK);
    assert!(
        page.body.contains(r#"name="config.seats""#)
            && page.body.contains(r#"placeholder="3 (default)""#)
            && page.body.contains("Seats each tenant gets."),
        "{}",
        page.body
    );
    let answer = browser
        .post(
            "/plugins/provisioner-v2/config",
            &[
                ("csrf", &page.csrf()),
                ("config.seats", "lots"),
                ("config.plan", "gold"),
            ],
        )
        .await;
    let refused = browser.see_other(&answer).await;
    assert!(
        refused.body.contains("must be an integer"),
        "{}",
        refused.body
    );
    let (_, plugin) = app.get("/api/v1/plugin/provisioner-v2").await;
    assert_eq!(
        plugin["config_set"],
        serde_json::json!([]),
        "nothing changed"
    );

    let answer = browser
        .post(
            "/plugins/provisioner-v2/config",
            &[
                ("csrf", &page.csrf()),
                ("config.seats", "12"),
                ("config.plan", "gold"),
            ],
        )
        .await;
    let saved = browser.see_other(&answer).await;
    assert!(
        saved
            .body
            .contains("The configuration of provisioner-v2 is saved."),
        "{}",
        saved.body
    );
    assert!(saved.body.contains(r#"value="12""#), "{}", saved.body);
    let (_, plugin) = app.get("/api/v1/plugin/provisioner-v2").await;
    assert_eq!(
        plugin["config"],
        serde_json::json!({ "seats": 12, "plan": "gold" })
    );
    let answer = browser
        .post(
            "/plugins/provisioner-v2/config",
            &[
                ("csrf", &page.csrf()),
                ("config.seats", ""),
                ("config.plan", "gold"),
            ],
        )
        .await;
    browser.see_other(&answer).await;
    let (_, plugin) = app.get("/api/v1/plugin/provisioner-v2").await;
    assert_eq!(
        plugin["config"]["seats"], 3,
        "back to its default: {plugin}"
    );
    app.stop().await;
}

async fn the_jobs_page_shows_each_jobs_schedule_and_last_run(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.jobs.housekeeping_interval_seconds = 1).await;
    let browser = Browser::admin(&app).await;
    let started = std::time::Instant::now();
    let page = loop {
        let page = browser.get("/jobs").await;
        page.assert_status(StatusCode::OK);
        if page.body.contains("swept ") {
            break page;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the housekeeping never ran:\n{}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    for expected in [
        "<strong>housekeeping</strong>",
        "<strong>usage-measure</strong>",
        "3600 s",
        "1 s",
        " ms</td>",
    ] {
        assert!(
            page.body.contains(expected),
            "{expected} missing:\n{}",
            page.body
        );
    }
    assert!(
        page.body.contains("aria-current=\"page\">Jobs</a>"),
        "{}",
        page.body
    );

    // A canceled tenant's page says when the retention job purges it.
    app.create_tenant("leaving-co").await;
    let (status, body) = app
        .post(
            "/api/v1/tenant/leaving-co/cancel",
            serde_json::json!({ "reason": "left" }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let page = browser.get("/tenants/leaving-co").await;
    page.assert_status(StatusCode::OK);
    assert!(
        page.body.contains("<dt>Purge scheduled</dt>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("restore it before to keep it"),
        "{}",
        page.body
    );

    // A trial's page says when it ends and what the `trials` job does then, and converts it.
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            serde_json::json!({ "slug": "trying-co", "name": "Trying", "trial_days": 14 }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let page = browser.get("/tenants/trying-co").await;
    assert!(
        page.body.contains("<dt>Trial ends</dt>") && page.body.contains("then it is suspended"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("name=\"action\" value=\"convert\""),
        "{}",
        page.body
    );
    let answer = browser
        .post(
            "/tenants/trying-co/lifecycle",
            &[
                ("csrf", &page.csrf()),
                ("action", "convert"),
                ("reason", "signed"),
            ],
        )
        .await;
    let page = browser.see_other(&answer).await;
    assert_eq!(heading_status(&page.body), "active");
    assert!(page.body.contains("<dt>Trial ended</dt>"), "{}", page.body);
    app.stop().await;
}
