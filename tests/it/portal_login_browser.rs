//! The tenant logins of `oidc_login.rs`, walked in a real headless Chromium (Debian's
//! `chromium` through `chromedriver`) against the real OpenID provider (npm `oidc-provider`,
//! `tests/oidc`): two tenants' users log in through their own providers and sign out again;
//! every tampered answer ends on the tenant's login page with the reason and no session; a
//! replayed callback and a suspended tenant are refused; a tenant admin makes an API key and
//! signs a user out on the tenant site. A screenshot of each step lands in
//! `target/screenshots/login-<backend>/<test>/`.
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/chromedriver`, Node.js and `tests/oidc/node_modules`:
//! `scripts/install-test-deps` installs them. Without them a test fails (it never skips).
//!
//! The browser is never trusted to say when a page is there: before an action that leaves a
//! page, the page is marked (`window.__left`), and the test polls until a fully loaded page
//! without the mark is on screen — the provider's, or the tenant's.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use fantoccini::elements::Element;
use futures_util::FutureExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

use crate::common::Backend;
use crate::common::browser::{ChromeDriver, STEP_TIMEOUT, Ui, screenshot_root};
use crate::common::login::{Browser, LoginWorld, tampered_cases};
use tenantry::config::Config;

/// The browser walk of one test; a hung browser or provider fails the test instead of stalling
/// it.
const TEST_TIMEOUT: Duration = Duration::from_secs(50);
/// Starting the browsers, the provider and the server.
const SETUP_TIMEOUT: Duration = Duration::from_secs(40);

backend_tests!(
    users_of_two_tenants_log_in_through_their_own_providers_in_a_browser,
    tampered_logins_are_refused_with_a_clear_page_in_a_browser,
    a_tenant_admin_creates_a_key_and_signs_a_user_out_in_a_browser,
    after_login_the_browser_stays_on_this_server_whatever_next_says,
);

// ---------------------------------------------------------------------------------------------
// The scene: browsers, the provider, the server

/// One test's browsers (each a chromedriver of its own, so each has its own profile and
/// cookies) and the login world they use.
struct Scene {
    world: LoginWorld,
    uis: Vec<Ui>,
    drivers: Vec<ChromeDriver>,
}

impl Scene {
    async fn open(
        backend: Backend,
        test: &str,
        browsers: usize,
        adjust: impl FnOnce(&mut Config),
    ) -> Scene {
        let setup = async {
            let shots = screenshot_root()
                .join(match backend {
                    Backend::Sqlite => "login-sqlite",
                    Backend::Postgres => "login-postgres",
                })
                .join(test);
            let _ = std::fs::remove_dir_all(&shots);
            std::fs::create_dir_all(&shots)
                .unwrap_or_else(|e| panic!("creating {}: {e}", shots.display()));
            let mut drivers = Vec::new();
            for n in 0..browsers {
                let log_dir: PathBuf = if n == 0 {
                    shots.clone()
                } else {
                    shots.join(format!("browser-{}", n + 1))
                };
                std::fs::create_dir_all(&log_dir).expect("chromedriver log dir");
                drivers.push(ChromeDriver::start(&log_dir).await);
            }
            let world = LoginWorld::start_with(backend, adjust).await;
            let mut uis = Vec::new();
            for driver in &drivers {
                uis.push(Ui {
                    client: driver.connect().await,
                    base: world.app.base.clone(),
                    shots: shots.clone(),
                });
            }
            Scene {
                world,
                uis,
                drivers,
            }
        };
        tokio::time::timeout(SETUP_TIMEOUT, setup)
            .await
            .unwrap_or_else(|_| {
                panic!("the browsers, provider and server did not start within {SETUP_TIMEOUT:?}")
            })
    }

    fn ui(&self) -> &Ui {
        &self.uis[0]
    }

    /// Runs `walk` within [`TEST_TIMEOUT`], closes everything (also when the walk failed), then
    /// fails the test if the walk did.
    async fn run(self, walk: impl AsyncFnOnce(&Scene)) {
        let started = Instant::now();
        let outcome = AssertUnwindSafe(tokio::time::timeout(TEST_TIMEOUT, walk(&self)))
            .catch_unwind()
            .await;
        eprintln!(
            "the browser walk took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let timed_out = matches!(outcome, Ok(Err(_)));
        if timed_out {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                AssertUnwindSafe(self.ui().shot("zz-timeout")).catch_unwind(),
            )
            .await;
        }
        self.close().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!(
                "the browser walk did not finish within {TEST_TIMEOUT:?} (see zz-timeout.png)"
            ),
            // The walk's own panic, already reported.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    async fn close(self) {
        for ui in self.uis {
            let _ = tokio::time::timeout(Duration::from_secs(5), ui.client.close()).await;
        }
        // Ends chromedriver and every browser process it started.
        drop(self.drivers);
        self.world.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Pages, polled

/// What the browser shows, read in one script.
#[derive(Debug, Default)]
struct Seen {
    url: Option<Url>,
    /// `document.readyState == "complete"`.
    ready: bool,
    /// The page an action was taken on is still there.
    stale: bool,
    /// A Content-Security-Policy violation on that page since the action.
    blocked: Option<String>,
    title: String,
    /// The provider's login page (`#sign-in`) / its logout confirmation (`#sign-out`).
    sign_in: bool,
    sign_out: bool,
    /// The HTTP status the document came with (after redirects).
    status: Option<u64>,
}

impl Seen {
    /// The page is on `origin` (`http://127.0.0.1:PORT`).
    fn on(&self, origin: &str) -> bool {
        self.url
            .as_ref()
            .is_some_and(|u| u.origin().ascii_serialization() == origin.trim_end_matches('/'))
    }

    fn path(&self) -> String {
        self.url
            .as_ref()
            .map(|u| u.path().to_owned())
            .unwrap_or_default()
    }
}

const SEEN: &str = "const nav = performance.getEntriesByType('navigation')[0];
return { href: location.href, ready: document.readyState === 'complete',
         stale: window.__left === true, blocked: window.__blocked || null,
         title: document.title,
         signIn: !!document.getElementById('sign-in'),
         signOut: !!document.getElementById('sign-out'),
         status: nav && nav.responseStatus ? nav.responseStatus : null };";

/// Marks the page (see [`arrive`]) and notes any Content-Security-Policy violation from now on
/// (a navigation the page's policy forbids never happens: the page just stays).
const MARK: &str = "window.__left = true; window.__blocked = null;
if (!window.__watching) {
  window.__watching = true;
  document.addEventListener('securitypolicyviolation', e => {
    window.__blocked = `${e.effectiveDirective} of \"${e.originalPolicy}\" blocked ${e.blockedURI}`;
  });
}
return true";

/// What is on screen; `None` while no document answers (between two pages).
async fn seen(ui: &Ui) -> Option<Seen> {
    let v: Value = ui.client.execute(SEEN, vec![]).await.ok()?;
    Some(Seen {
        url: v["href"].as_str().and_then(|h| Url::parse(h).ok()),
        ready: v["ready"] == true,
        stale: v["stale"] == true,
        blocked: v["blocked"].as_str().map(str::to_owned),
        title: v["title"].as_str().unwrap_or_default().to_owned(),
        sign_in: v["signIn"] == true,
        sign_out: v["signOut"] == true,
        status: v["status"].as_u64(),
    })
}

/// Waits until a fully loaded page that no action was taken on yet satisfies `wanted`.
async fn arrive(ui: &Ui, what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = None;
    loop {
        if let Some(page) = seen(ui).await {
            if page.ready && !page.stale && wanted(&page) {
                return page;
            }
            if page.stale
                && let Some(blocked) = &page.blocked
            {
                ui.shot("zz-failure").await;
                panic!(
                    "never reached {what}: the browser stayed on {:?}, its Content-Security-Policy \
                     forbids going on ({blocked}; see zz-failure.png)",
                    page.url.as_ref().map(Url::as_str)
                );
            }
            last = Some(page);
        }
        if Instant::now() > deadline {
            ui.shot("zz-failure").await;
            panic!("never reached {what}; the browser shows {last:?} (see zz-failure.png)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A page of the tenantry server has loaded (after the action that left the previous one).
async fn arrive_home_site(ui: &Ui, what: &str) -> Seen {
    let base = ui.base.clone();
    arrive(ui, what, |p| p.on(&base)).await
}

/// Marks the page on screen, so that [`arrive`] waits for the next one.
async fn mark_left(ui: &Ui) {
    ui.script(MARK).await;
}

/// Clicks `element`, which leaves the page.
async fn leave_by_element(ui: &Ui, element: Element, what: &str) {
    mark_left(ui).await;
    element
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {what}: {e}"));
}

/// Clicks `css`, which leaves the page.
async fn leave_by(ui: &Ui, css: &str) {
    let element = ui.find(css).await;
    leave_by_element(ui, element, &format!("`{css}`")).await;
}

/// Opens `url`, a page of the server given whole (e.g. a callback URL), and waits for it.
async fn open_url(ui: &Ui, url: &str) -> Seen {
    mark_left(ui).await;
    ui.client
        .goto(url)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"));
    arrive_home_site(ui, url).await
}

/// Opens a page of the server and waits for it.
async fn open(ui: &Ui, path: &str) -> Seen {
    open_url(ui, &format!("{}{path}", ui.base)).await
}

/// Whether `css` matches nothing on the page.
async fn absent(ui: &Ui, css: &str) -> bool {
    ui.client
        .find_all(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("looking for `{css}`: {e}"))
        .is_empty()
}

/// Whether the browser holds a tenant session cookie (`tenantry_tenant_<slug>`) for the server (it is HttpOnly: asked
/// through WebDriver, not the page).
async fn has_session_cookie(ui: &Ui) -> bool {
    ui.client
        .get_all_cookies()
        .await
        .expect("the browser's cookies")
        .iter()
        .any(|c| c.name().starts_with("tenantry_tenant_") && !c.value().is_empty())
}

/// Where a login ended, and whether the provider asked who signs in.
struct Landing {
    page: Seen,
    asked: bool,
}

/// From tenant `slug`'s login page on screen: clicks `#continue`; at the provider (issuer
/// `issuer`) signs in as `user` if its login page comes — a provider that still has a session
/// of this browser sends it straight back — and returns the tenant's page the browser lands
/// on. The provider's login page is saved as `provider_shot`, if given.
async fn log_in(
    ui: &Ui,
    issuer: &str,
    slug: &str,
    user: &str,
    provider_shot: Option<&str>,
) -> Landing {
    let base = ui.base.clone();
    leave_by(ui, "#continue").await;
    let mut asked = false;
    for _ in 0..3 {
        let page = arrive(
            ui,
            &format!("{slug}'s provider's login page or the tenant's site"),
            |p| p.on(&base) || (p.on(issuer) && p.sign_in),
        )
        .await;
        if page.on(&base) {
            return Landing { page, asked };
        }
        assert_eq!(
            page.title,
            format!("Sign in to {slug}"),
            "the provider's login page names the issuer ({:?})",
            page.url
        );
        asked = true;
        if let Some(name) = provider_shot {
            ui.shot(name).await;
        }
        ui.fill("#login", user).await;
        leave_by(ui, "#sign-in").await;
    }
    ui.shot("zz-failure").await;
    panic!("{slug}'s provider asked three times who signs in (see zz-failure.png)")
}

/// A whole login at tenant `slug` as `user`, from its login page to its home page.
async fn log_in_home(ui: &Ui, issuer: &str, slug: &str, user: &str) -> Landing {
    open(ui, &format!("/t/{slug}/login")).await;
    let landing = log_in(ui, issuer, slug, user, None).await;
    assert_eq!(
        landing.page.path(),
        format!("/t/{slug}/"),
        "{user} lands on {slug}'s home page: {:?}",
        landing.page
    );
    landing
}

// ---------------------------------------------------------------------------------------------
// 1. Two tenants, two providers, two users; logout

async fn users_of_two_tenants_log_in_through_their_own_providers_in_a_browser(backend: Backend) {
    Scene::open(backend, "two-tenants", 2, |_| {})
        .await
        .run(async |scene: &Scene| two_tenants_walk(scene).await)
        .await;
}

async fn two_tenants_walk(scene: &Scene) {
    let world = &scene.world;
    // Alice and Bob each in a browser of their own.
    let (alice, bob) = (&scene.uis[0], &scene.uis[1]);
    let alpha_issuer = world.op.issuer("alpha").await;
    let bravo_issuer = world.op.issuer("bravo").await;

    // alpha: its login page, then its own provider's, then its home page.
    let page = open(alice, "/t/alpha/login").await;
    assert_eq!(page.status, Some(200));
    alice.wait_for_text("h1", "Sign in to Alpha Corp").await;
    assert!(
        alice
            .text("#continue")
            .await
            .contains("Continue with your organisation"),
        "the login page offers the organisation's sign-in"
    );
    alice.shot("01-alpha-login").await;
    let landing = log_in(
        alice,
        &alpha_issuer,
        "alpha",
        "alice",
        Some("02-alpha-provider"),
    )
    .await;
    assert!(
        landing.asked,
        "a fresh browser signs in at alpha's provider"
    );
    assert_eq!(landing.page.path(), "/t/alpha/", "{:?}", landing.page);
    let sent = world.op.last_authorization("alpha").await;
    assert_eq!(sent["client_id"], "tenantry-alpha", "{sent}");
    assert_eq!(
        sent["redirect_uri"],
        format!("{}/t/alpha/callback", world.app.base)
    );
    alice.wait_for_text("#user-name", "Alice Admin").await;
    assert_eq!(alice.text("#user-email").await, "alice@alpha.example");
    assert_eq!(alice.text("#user-role").await, "tenant-admin");
    assert!(
        alice.text("#whoami").await.contains("Alice Admin"),
        "the header shows who is signed in"
    );
    for section in ["#sso", "#sessions", "#api-keys"] {
        assert!(
            alice.find(section).await.is_displayed().await.unwrap(),
            "a tenant admin sees {section}"
        );
    }
    alice.shot("03-alpha-home").await;

    // bravo, in Bob's browser, through bravo's provider: a member.
    let page = open(bob, "/t/bravo/login").await;
    assert_eq!(page.status, Some(200));
    bob.wait_for_text("h1", "Sign in to Bravo Corp").await;
    bob.shot("04-bravo-login").await;
    let landing = log_in(
        bob,
        &bravo_issuer,
        "bravo",
        "bob",
        Some("05-bravo-provider"),
    )
    .await;
    assert!(
        landing.asked,
        "a fresh browser signs in at bravo's provider"
    );
    assert_eq!(landing.page.path(), "/t/bravo/", "{:?}", landing.page);
    assert_eq!(
        world.op.last_authorization("bravo").await["client_id"],
        "tenantry-bravo"
    );
    bob.wait_for_text("#user-name", "Bob Bravo").await;
    assert_eq!(bob.text("#user-email").await, "bob@bravo.example");
    assert_eq!(bob.text("#user-role").await, "member");
    for section in ["#api-keys", "#sessions", "#sso"] {
        assert!(absent(bob, section).await, "a member sees no {section}");
    }
    bob.shot("06-bravo-home").await;

    // Each tenant has exactly its own user's session.
    let alpha_sessions = world.sessions("alpha").await;
    let bravo_sessions = world.sessions("bravo").await;
    assert_eq!(alpha_sessions.len(), 1, "{alpha_sessions:?}");
    assert_eq!(bravo_sessions.len(), 1, "{bravo_sessions:?}");
    assert_eq!(alpha_sessions[0]["email"], "alice@alpha.example");
    assert_eq!(alpha_sessions[0]["role"], "tenant-admin");
    assert_eq!(alpha_sessions[0]["auth_method"], "oidc");
    assert_eq!(bravo_sessions[0]["email"], "bob@bravo.example");
    assert_eq!(bravo_sessions[0]["role"], "member");

    // Alice's session opens nothing of bravo's: its pages ask for a login.
    let page = open(alice, "/t/bravo/").await;
    assert_eq!(page.path(), "/t/bravo/login", "{page:?}");
    alice.wait_for_text("h1", "Sign in to Bravo Corp").await;
    open(alice, "/t/alpha/").await;
    alice.wait_for_text("#user-name", "Alice Admin").await;

    // Sign out of alpha: the session ends here, then at alpha's provider, then back. (The
    // logout form's answer is a redirect to another origin, the provider's end-session
    // endpoint: the page's Content-Security-Policy must let the form go there.)
    leave_by(alice, "#logout").await;
    let page = arrive(alice, "alpha's provider's sign-out page", |p| {
        p.on(&alpha_issuer) && p.sign_out
    })
    .await;
    assert_eq!(page.title, "Sign out of alpha", "{page:?}");
    assert!(
        world.sessions("alpha").await.is_empty(),
        "the session ended before the provider was asked"
    );
    alice.shot("07-alpha-provider-sign-out").await;
    leave_by(alice, "#sign-out").await;
    let page = arrive_home_site(alice, "alpha's site after signing out").await;
    assert_eq!(page.path(), "/t/alpha/logged-out", "{page:?}");
    alice
        .wait_for_text("[role=status]", "You are signed out.")
        .await;
    alice.wait_for_text("h1", "Sign in to Alpha Corp").await;
    assert!(absent(alice, "#logout").await, "nobody is signed in");
    assert!(!has_session_cookie(alice).await, "the cookie is gone");
    alice.shot("08-alpha-signed-out").await;
    assert!(world.sessions("alpha").await.is_empty());
    assert_eq!(
        world.sessions("bravo").await.len(),
        1,
        "bravo's session is not touched"
    );
    assert!(
        world.op.last_end_session("alpha").await["id_token_hint"].is_string(),
        "the provider got the session's id_token as the hint"
    );
    // The home page asks for a login again.
    let page = open(alice, "/t/alpha/").await;
    assert_eq!(page.path(), "/t/alpha/login", "{page:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. Tampered logins, a replayed callback, a suspended tenant

/// `HS256 keyed with the public key` → `hs256-keyed-with-the-public-key`.
fn file_name(case: &str) -> String {
    case.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

async fn tampered_logins_are_refused_with_a_clear_page_in_a_browser(backend: Backend) {
    // Discovery is fetched on every login here, so that a changed discovery document is seen.
    Scene::open(backend, "tampered", 1, |c| {
        c.auth.discovery_cache_seconds = 0
    })
    .await
    .run(async |scene: &Scene| tampered_walk(scene).await)
    .await;
}

async fn tampered_walk(scene: &Scene) {
    let world = &scene.world;
    let ui = scene.ui();
    let base = world.app.base.clone();
    let alpha_issuer = world.op.issuer("alpha").await;
    let bravo_issuer = world.op.issuer("bravo").await;
    let now = chrono::Utc::now().timestamp();

    // Each case starts where the last one ended — alpha's login page, with the error and its
    // "Continue" link to try again.
    open(ui, "/t/alpha/login").await;
    for (n, (case, misbehaviour, reason)) in tampered_cases(now).into_iter().enumerate() {
        world.op.misbehave("alpha", misbehaviour).await;
        ui.wait_for_text("h1", "Sign in to Alpha Corp").await;
        let provider_shot = (n == 0).then_some("00-alpha-provider");
        let landing = log_in(ui, &alpha_issuer, "alpha", "alice", provider_shot).await;
        let page = landing.page;
        assert!(
            page.path().starts_with("/t/alpha/"),
            "{case}: back on alpha's site: {page:?}"
        );
        assert!(
            page.status.is_some_and(|s| s >= 400),
            "{case}: refused, not {:?}",
            page.status
        );
        ui.wait_for_text("h1", "Sign in to Alpha Corp").await;
        let error = ui.find("#login-error").await;
        assert!(
            error.is_displayed().await.unwrap(),
            "{case}: the error is shown"
        );
        assert_eq!(
            ui.text("#login-error-reason").await,
            reason,
            "{case}: the page names the reason"
        );
        assert!(
            ui.find("#continue").await.is_displayed().await.unwrap(),
            "{case}: the page offers to try again"
        );
        assert!(absent(ui, "#logout").await, "{case}: nobody is signed in");
        assert!(
            !has_session_cookie(ui).await,
            "{case}: no session cookie in the browser"
        );
        assert!(
            world.sessions("alpha").await.is_empty(),
            "{case}: no session created"
        );
        ui.shot(&format!("{:02}-{}", n + 1, file_name(case))).await;
        world.op.behave("alpha").await;
    }

    // With the provider behaving again, alice logs in; the callback URL works once.
    let landing = log_in_home(ui, &alpha_issuer, "alpha", "alice").await;
    assert_eq!(landing.page.status, Some(200));
    ui.wait_for_text("#user-name", "Alice Admin").await;
    ui.shot("20-logged-in").await;
    assert_eq!(world.sessions("alpha").await.len(), 1);
    let callback = world.op.last_authorization_response("alpha").await["location"]
        .as_str()
        .expect("the provider's last redirect back")
        .to_owned();
    assert!(
        callback.starts_with(&format!("{base}/t/alpha/callback?")),
        "{callback}"
    );
    let page = open_url(ui, &callback).await;
    assert_eq!(page.status, Some(400), "{page:?}");
    ui.wait_for_text("h1", "Sign in to Alpha Corp").await;
    ui.wait_for_text("#login-error-reason", "state_unknown")
        .await;
    assert_eq!(ui.text("#login-error-reason").await, "state_unknown");
    assert_eq!(
        world.sessions("alpha").await.len(),
        1,
        "a replayed callback makes no session"
    );
    ui.shot("21-replayed-callback").await;

    // bravo is suspended while a login is at its provider: the way back is refused.
    open(ui, "/t/bravo/login").await;
    ui.wait_for_text("h1", "Sign in to Bravo Corp").await;
    leave_by(ui, "#continue").await;
    arrive(ui, "bravo's provider's login page", |p| {
        p.on(&bravo_issuer) && p.sign_in
    })
    .await;
    let (status, body) = world
        .app
        .post("/api/v1/tenant/bravo/suspend", json!({"reason": "unpaid"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ui.fill("#login", "bob").await;
    leave_by(ui, "#sign-in").await;
    let page = arrive_home_site(ui, "bravo's callback").await;
    assert_eq!(page.path(), "/t/bravo/callback", "{page:?}");
    assert_eq!(page.status, Some(403), "{page:?}");
    ui.wait_for_text("#message", "Bravo Corp is suspended")
        .await;
    assert!(absent(ui, "#continue").await, "no way to log in");
    ui.shot("22-suspended-callback").await;
    // And a login started now is refused at once.
    let page = open(ui, "/t/bravo/login").await;
    assert_eq!(page.status, Some(403), "{page:?}");
    ui.wait_for_text("#message", "Bravo Corp is suspended")
        .await;
    assert!(absent(ui, "#continue").await, "no way to log in");
    ui.shot("23-suspended-login").await;
    let page = open(ui, "/t/bravo/login/oauth").await;
    assert_eq!(page.status, Some(403), "{page:?}");
    assert!(page.on(&base), "not sent to the provider: {page:?}");
    ui.wait_for_text("#message", "Bravo Corp is suspended")
        .await;
    assert!(
        world.sessions("bravo").await.is_empty(),
        "no session for bravo"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A tenant admin's key and a user's session

async fn a_tenant_admin_creates_a_key_and_signs_a_user_out_in_a_browser(backend: Backend) {
    Scene::open(backend, "admin", 1, |_| {})
        .await
        .run(async |scene: &Scene| admin_walk(scene).await)
        .await;
}

async fn admin_walk(scene: &Scene) {
    let world = &scene.world;
    let ui = scene.ui();
    let base = world.app.base.clone();
    let alpha_issuer = world.op.issuer("alpha").await;

    log_in_home(ui, &alpha_issuer, "alpha", "alice").await;
    ui.wait_for_text("#user-role", "tenant-admin").await;
    ui.shot("01-alpha-home").await;

    // A key, through the "New API key…" form.
    let summary = ui.find("#api-keys details summary.button").await;
    assert_eq!(summary.text().await.unwrap(), "New API key…");
    assert!(
        !ui.find("#key-name").await.is_displayed().await.unwrap(),
        "the form stays folded until asked for"
    );
    summary.click().await.expect("opening the key form");
    assert!(ui.find("#key-name").await.is_displayed().await.unwrap());
    ui.fill("#key-name", "etl").await;
    ui.find("#key-role")
        .await
        .select_by_value("member")
        .await
        .expect("choosing the role");
    ui.shot("02-new-key-form").await;
    let create = ui
        .find_xpath("//section[@id='api-keys']//details//button[normalize-space(.)='Create key']")
        .await;
    leave_by_element(ui, create, "“Create key”").await;
    let page = arrive_home_site(ui, "the new key's page").await;
    assert_eq!(page.path(), "/t/alpha/api-keys", "{page:?}");
    assert_eq!(page.status, Some(200), "{page:?}");
    let token = ui
        .wait_for_text("#new-key", "tny_")
        .await
        .text()
        .await
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        token.starts_with("tny_") && !token.contains(char::is_whitespace),
        "{token}"
    );
    ui.shot("03-key-shown").await;

    // The key works against the API, for alpha.
    let response = world
        .app
        .client
        .get(world.app.url("/api/v1/tenant/alpha"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the new key works");
    let tenant: Value = response.json().await.unwrap();
    assert_eq!(tenant["slug"], "alpha", "{tenant}");

    // Back on the home page it is listed, never shown again.
    leave_by(ui, "a[href='/t/alpha/#api-keys']").await;
    let page = arrive_home_site(ui, "alpha's home page").await;
    assert_eq!(page.path(), "/t/alpha/", "{page:?}");
    let row = ui
        .find_xpath("//section[@id='api-keys']//tbody/tr[td[1][normalize-space(.)='etl']]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        row.contains("member") && row.contains("live"),
        "key row: {row}"
    );
    assert!(
        !ui.client.source().await.unwrap().contains(&token),
        "the key is not shown again"
    );
    ui.shot("04-key-listed").await;

    // Carol logs in elsewhere; her session shows on alice's page.
    let carol = Browser::new();
    let carol_home = carol.login(&base, "alpha", "carol").await;
    assert_eq!(carol_home.status, StatusCode::OK, "{}", carol_home.body);
    let carol_session = world
        .sessions("alpha")
        .await
        .into_iter()
        .find(|s| s["email"] == "carol@alpha.example")
        .expect("carol's session");
    let handle = carol_session["handle"].as_str().unwrap().to_owned();
    mark_left(ui).await;
    ui.client.refresh().await.expect("reloading the page");
    arrive_home_site(ui, "alpha's home page, reloaded").await;
    let carol_row = "//section[@id='sessions']//tbody/tr[td[contains(., 'carol@alpha.example')]]";
    let row = ui.find_xpath(carol_row).await;
    let text = row.text().await.unwrap();
    assert!(
        text.contains("Carol Member") && text.contains("member"),
        "carol's row: {text}"
    );
    let own = ui
        .find_xpath("//section[@id='sessions']//tbody/tr[td[contains(., 'alice@alpha.example')]]")
        .await
        .text()
        .await
        .unwrap();
    assert!(own.contains("this session"), "alice's own row: {own}");
    let form = row
        .find(Locator::Css("form"))
        .await
        .expect("the row's form");
    assert_eq!(
        form.attr("action").await.unwrap().as_deref(),
        Some(format!("/t/alpha/sessions/{handle}/revoke").as_str())
    );
    ui.shot("05-sessions").await;

    // Sign her out.
    let sign_out = row
        .find(Locator::XPath(".//button[normalize-space(.)='Sign out']"))
        .await
        .expect("the row's “Sign out” button");
    leave_by_element(ui, sign_out, "carol's “Sign out”").await;
    let page = arrive_home_site(ui, "alpha's home page after signing carol out").await;
    assert_eq!(page.path(), "/t/alpha/", "{page:?}");
    ui.wait_for_text("[role=status]", "The user is signed out.")
        .await;
    let sessions = world.sessions("alpha").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["email"], "alice@alpha.example");
    assert!(
        ui.client
            .find_all(Locator::XPath(carol_row))
            .await
            .unwrap()
            .is_empty(),
        "her session is no longer listed"
    );
    assert!(
        ui.text("#whoami").await.contains("Alice Admin"),
        "alice is still signed in"
    );
    let page = carol.get(&format!("{base}/t/alpha/")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "carol is signed out");
    ui.shot("06-carol-signed-out").await;
}

// ---------------------------------------------------------------------------------------------
// 4. `next` never leaves the server

async fn after_login_the_browser_stays_on_this_server_whatever_next_says(backend: Backend) {
    Scene::open(backend, "next", 1, |_| {})
        .await
        .run(async |scene: &Scene| next_walk(scene).await)
        .await;
}

/// `next` values that browsers read as another host (a tab, a newline or a backslash after the
/// leading slash: Chromium goes to `http://evil.example/` for `/<TAB>/evil.example`) end on
/// the tenant's home page, in Chromium itself; a path of the site is followed.
async fn next_walk(scene: &Scene) {
    let world = &scene.world;
    let ui = scene.ui();
    let base = world.app.base.clone();
    let issuer = world.op.issuer("alpha").await;
    for (n, next) in ["/%09/evil.example", "/%5Cevil.example", "/%0a/evil.example"]
        .into_iter()
        .enumerate()
    {
        let page = open(ui, &format!("/t/alpha/login?next={next}")).await;
        assert_eq!(page.status, Some(200), "{next}");
        let landing = log_in(ui, &issuer, "alpha", "alice", None).await;
        assert!(landing.page.on(&base), "{next}: {:?}", landing.page.url);
        assert_eq!(
            landing.page.path(),
            "/t/alpha/",
            "{next}: {:?}",
            landing.page
        );
        assert!(
            has_session_cookie(ui).await,
            "{next}: the session was delivered"
        );
        ui.shot(&format!("{n:02}-after-next")).await;
        // The next round starts without this server's session (the provider's stays).
        ui.client
            .delete_all_cookies()
            .await
            .expect("the server's cookies deleted");
    }
    // A path of the tenant's site is where the user goes.
    open(ui, "/t/alpha/login?next=/t/alpha/settings/sso").await;
    let landing = log_in(ui, &issuer, "alpha", "alice", None).await;
    assert_eq!(
        landing.page.path(),
        "/t/alpha/settings/sso",
        "{:?}",
        landing.page
    );
}
