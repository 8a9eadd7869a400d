//! The admin portal's single sign-on pages over HTTP (no JavaScript needed): a tenant's SSO
//! settings with "test connection" against a real OpenID provider, setup links, its users'
//! sessions, the identity-provider check, and the platform's API tokens page.

use reqwest::StatusCode;

use crate::common::login::{Browser, LoginWorld, Page};
use crate::common::{ADMIN_PASSWORD, Backend};

backend_tests!(
    an_admin_tests_and_saves_a_tenants_sso_settings_in_the_portal,
    an_admin_hands_out_a_setup_link_and_signs_users_out_in_the_portal,
    platform_tokens_are_made_rotated_and_revoked_in_the_portal,
);

async fn portal_admin(base: &str) -> Browser {
    let admin = Browser::new();
    let login = admin.get(&format!("{base}/login")).await;
    let done = admin
        .post(
            &format!("{base}/login"),
            &[
                ("csrf", &login.csrf()),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    admin
}

fn sso_form<'a>(csrf: &'a str, action: &'a str, issuer: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("action", action),
        ("oauth_issuer", issuer),
        ("client_id", "tenantry-alpha"),
        ("client_secret", ""),
        ("scopes", "openid profile email groups"),
        ("role_claim", "groups"),
        ("role_values", "alpha-admins = tenant-admin\nstaff = member"),
        ("default_role", "none"),
    ]
}

async fn an_admin_tests_and_saves_a_tenants_sso_settings_in_the_portal(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let admin = portal_admin(&base).await;
    let issuer = world.op.issuer("alpha").await;

    let detail = admin.follow(&format!("{base}/tenants/alpha")).await;
    assert_eq!(detail.status, StatusCode::OK);
    let text = detail.text();
    assert!(text.contains(r#"id="sso""#), "{text}");
    assert!(text.contains(&format!("{base}/t/alpha/callback")), "{text}");
    assert!(
        text.contains("alpha-admins</code> → tenant-admin"),
        "{text}"
    );

    let form = admin.follow(&format!("{base}/tenants/alpha/sso")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.text().contains(&issuer),
        "the saved issuer is in the form"
    );
    assert!(!form.body.contains("secret-alpha"), "the secret never is");
    let csrf = form.csrf();

    // Test connection: a report, nothing saved.
    let tested = admin
        .post(
            &format!("{base}/tenants/alpha/sso"),
            &sso_form(&csrf, "test", &issuer),
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.body);
    assert!(tested.body.contains("connection works"), "{}", tested.body);
    assert!(tested.body.contains("Nothing was saved."));
    let bad = admin
        .post(
            &format!("{base}/tenants/alpha/sso"),
            &sso_form(&csrf, "test", "http://127.0.0.1:9"),
        )
        .await;
    assert!(bad.body.contains("problems found"), "{}", bad.body);
    let (_, tenant) = world.app.get("/api/v1/tenant/alpha").await;
    assert_eq!(
        tenant["role_mapping"]["default_role"], "member",
        "nothing saved yet"
    );

    // A broken rule: the form again, the field marked, nothing saved.
    let mut broken = sso_form(&csrf, "save", &issuer);
    broken[7] = ("role_values", "staff = platform-admin");
    let refused = admin
        .post(&format!("{base}/tenants/alpha/sso"), &broken)
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .body
            .contains("must be one of: tenant-admin, member"),
        "{}",
        refused.body
    );
    let mut malformed = sso_form(&csrf, "save", &issuer);
    malformed[7] = ("role_values", "staff");
    let refused = admin
        .post(&format!("{base}/tenants/alpha/sso"), &malformed)
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body.contains("line 1 must read"),
        "{}",
        refused.body
    );

    // Saved: the empty secret field kept the secret; the mapping changed.
    let saved = admin
        .post(
            &format!("{base}/tenants/alpha/sso"),
            &sso_form(&csrf, "save", &issuer),
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let (_, tenant) = world.app.get("/api/v1/tenant/alpha").await;
    assert_eq!(tenant["role_mapping"]["default_role"], "none");
    assert_eq!(tenant["role_mapping"]["values"]["staff"], "member");
    assert_eq!(tenant["client_secret"]["set"], true);
    assert_eq!(
        tenant["client_secret_previous"]["set"], false,
        "the secret was not changed"
    );
    let home = Browser::new().login(&base, "alpha", "alice").await;
    assert_eq!(home.status, StatusCode::OK, "{}", home.body);

    // A form without the session's CSRF token changes nothing.
    let forged = admin
        .post(
            &format!("{base}/tenants/alpha/sso"),
            &sso_form("forged", "save", "https://evil.example"),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // The identity-provider check, as a flash on the tenant page.
    let checked = admin
        .post(
            &format!("{base}/tenants/alpha/health/oauth"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(checked.status, StatusCode::SEE_OTHER);
    let page = admin.follow(&format!("{base}/tenants/alpha")).await;
    assert!(
        page.body.contains("OAuth provider: healthy (discovery"),
        "{}",
        page.body
    );
    world.stop().await;
}

async fn an_admin_hands_out_a_setup_link_and_signs_users_out_in_the_portal(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let admin = portal_admin(&base).await;
    let carol = Browser::new();
    carol.login(&base, "alpha", "carol").await;

    let detail = admin.follow(&format!("{base}/tenants/alpha")).await;
    assert!(
        detail.body.contains("carol@alpha.example"),
        "her session is listed"
    );
    let csrf = detail.csrf();
    let made = admin
        .post(
            &format!("{base}/tenants/alpha/sso/setup-links"),
            &[("csrf", &csrf), ("expires_in_hours", "6")],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let text = made.text();
    let start = text
        .find(&format!("{base}/t/alpha/setup/tsl_"))
        .expect("the link, once");
    let link: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '<')
        .collect();
    let page = Browser::new().get(&link).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the link opens the form: {}",
        page.body
    );
    let detail = admin.follow(&format!("{base}/tenants/alpha")).await;
    assert!(detail.body.contains("usable"), "listed: {}", detail.body);
    assert!(!detail.text().contains(&link), "never shown again");
    let (_, links) = world.app.get("/api/v1/tenant/alpha/sso/setup-links").await;
    let id = links[0]["id"].as_str().unwrap().to_owned();
    let revoked = admin
        .post(
            &format!("{base}/tenants/alpha/sso/setup-links/{id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(
        Browser::new().get(&link).await.status,
        StatusCode::FORBIDDEN
    );

    // Sign carol out from the portal.
    let handle = world.sessions("alpha").await[0]["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = admin
        .post(
            &format!("{base}/tenants/alpha/sessions/{handle}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert!(world.sessions("alpha").await.is_empty());
    assert_eq!(
        carol.get(&format!("{base}/t/alpha/")).await.status,
        StatusCode::SEE_OTHER
    );
    world.stop().await;
}

fn shown_token(page: &Page) -> String {
    let start = page.body.find("tny_").expect("a token on the page");
    page.body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

async fn platform_tokens_are_made_rotated_and_revoked_in_the_portal(backend: Backend) {
    let world = LoginWorld::start(backend).await;
    let base = world.app.base.clone();
    let admin = portal_admin(&base).await;
    let page = admin.follow(&format!("{base}/tokens")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Platform API tokens"));
    let csrf = page.csrf();
    let made = admin
        .post(
            &format!("{base}/tokens"),
            &[
                ("csrf", &csrf),
                ("name", "monitoring"),
                ("role", "platform-viewer"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let token = shown_token(&made);
    let check = |token: String| {
        let app = &world.app;
        async move {
            app.client
                .get(app.url("/api/v1/tenant"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(check(token.clone()).await, StatusCode::OK);
    let (_, tokens) = world.app.get("/api/v1/admin/tokens").await;
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "monitoring")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = admin
        .post(
            &format!("{base}/tokens/{id}/rotate"),
            &[("csrf", &csrf), ("grace_minutes", "0")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = shown_token(&rotated);
    assert_ne!(new, token);
    assert_eq!(check(new.clone()).await, StatusCode::OK);
    assert_eq!(
        check(token).await,
        StatusCode::UNAUTHORIZED,
        "no grace: the old one stopped"
    );
    let (_, tokens) = world.app.get("/api/v1/admin/tokens").await;
    let new_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "monitoring" && t["replaced_by"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = admin
        .post(
            &format!("{base}/tokens/{new_id}/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(check(new).await, StatusCode::UNAUTHORIZED);
    let (_, audit) = world.app.get("/api/v1/audit?action=admin.").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in [
        "admin.token_create",
        "admin.token_rotate",
        "admin.token_revoke",
    ] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    world.stop().await;
}
