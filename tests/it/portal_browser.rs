//! The admin portal in a real headless Chromium, driven through WebDriver (Debian's
//! `chromedriver`): log in, create a tenant (first with a bad slug), suspend it with a reason,
//! find the suspension in the audit log. A screenshot of each step lands in
//! `target/screenshots/<backend>/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`: `scripts/install-test-deps` installs
//! them. Without them the test fails (it never skips).

use std::time::Duration;

use crate::common::browser::{ChromeDriver, Ui, fresh_screenshots};
use crate::common::{ADMIN_PASSWORD, Backend, TestApp};
use fantoccini::Locator;
use serde_json::json;

/// The whole walk through the portal; a hung browser fails the test instead of stalling it.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

backend_tests!(admin_logs_in_creates_suspends_a_tenant_and_finds_it_in_the_audit_log);

async fn admin_logs_in_creates_suspends_a_tenant_and_finds_it_in_the_audit_log(backend: Backend) {
    let shots = fresh_screenshots(None, backend);
    let driver = ChromeDriver::start(&shots).await;
    let app = TestApp::spawn(backend).await;
    let ui = Ui {
        client: driver.connect().await,
        base: app.base.clone(),
        shots,
    };
    tokio::time::timeout(TEST_TIMEOUT, walk_through_the_portal(&ui))
        .await
        .unwrap_or_else(|_| panic!("the browser walk did not finish within {TEST_TIMEOUT:?}"));
    let _ = ui.client.close().await;
    app.stop().await;
    drop(driver);
}

async fn walk_through_the_portal(ui: &Ui) {
    // 1. The login form.
    ui.goto("/tenants").await;
    ui.wait_for_text("h1", "Log in to tenantry").await;
    assert!(
        ui.path().await.starts_with("/login?next="),
        "a page behind the login sends to the form"
    );
    ui.shot("01-login").await;
    ui.fill("#username", "admin").await;
    ui.fill("#password", ADMIN_PASSWORD).await;
    ui.click("form[action='/login'] button[type=submit]").await;
    ui.wait_for_text("h1", "Tenants").await;
    assert_eq!(
        ui.path().await,
        "/tenants",
        "back to the page first asked for"
    );
    assert!(
        ui.text(".whoami").await.contains("admin"),
        "the top bar shows who is logged in"
    );
    ui.shot("02-tenants").await;

    // 2. The "New tenant" form, first with a bad slug.
    ui.click("a.button.primary[href='/tenants/new']").await;
    ui.wait_for_text("h1", "New tenant").await;
    ui.shot("03-new-tenant").await;
    ui.fill("#f-slug", "Bad_Slug").await;
    ui.fill("#f-name", "Acme Corporation").await;
    ui.find("#f-tier")
        .await
        .select_by_value("professional")
        .await
        .expect("choosing the tier");
    ui.fill("#f-contact_name", "Jo Doe").await;
    ui.fill("#f-contact_email", "jo@acme.example").await;
    ui.fill("#f-oauth_issuer", "https://acme.okta.com/oauth2/default")
        .await;
    ui.fill("#f-client_id", "0oa1abc2def3").await;
    ui.fill("#f-client_secret", "cs-browser-secret").await;
    ui.click("form.form button[type=submit]").await;
    ui.wait_for_text("[role=alert]", "Please correct the fields marked below.")
        .await;
    let error = ui.find("#e-slug").await;
    assert!(
        error.is_displayed().await.unwrap(),
        "the slug error is visible"
    );
    assert_eq!(
        error.text().await.unwrap(),
        "Slug may contain only lowercase letters a-z, digits 0-9 and hyphens"
    );
    // Next to the field: in the slug's own .field block, right under its input.
    let placement = ui
        .script(
            "const input = document.getElementById('f-slug');
             const field = input.closest('.field');
             const error = field.querySelector('.error');
             const i = input.getBoundingClientRect(), e = error ? error.getBoundingClientRect() : null;
             return { error: error && error.id, marked: field.classList.contains('has-error'),
                      describedby: input.getAttribute('aria-describedby'), value: input.value,
                      gap: e ? e.top - i.bottom : null, color: error ? getComputedStyle(error).color : null };",
        )
        .await;
    assert_eq!(placement["error"], "e-slug", "{placement}");
    assert_eq!(placement["marked"], true, "{placement}");
    assert_eq!(placement["describedby"], "e-slug", "{placement}");
    assert_eq!(
        placement["value"], "Bad_Slug",
        "what was typed is kept: {placement}"
    );
    let gap = placement["gap"].as_f64().unwrap();
    assert!(
        (0.0..20.0).contains(&gap),
        "the error sits right under the input: {placement}"
    );
    assert_eq!(
        placement["color"], "rgb(180, 35, 24)",
        "the error is in the danger colour: {placement}"
    );
    assert_eq!(
        ui.find("#f-name")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("Acme Corporation")
    );
    assert_eq!(
        ui.find("#f-client_secret")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(""),
        "secrets are not sent back"
    );
    assert!(
        ui.find_xpath("//div[contains(@class,'field')][.//input[@id='f-name']]")
            .await
            .attr("class")
            .await
            .unwrap()
            .unwrap()
            == "field",
        "only the bad field is marked"
    );
    ui.shot("04-bad-slug").await;

    // 3. Corrected: the tenant is created and its page opens.
    ui.fill("#f-slug", "acme-corp").await;
    ui.fill("#f-client_secret", "cs-browser-secret").await;
    ui.click("form.form button[type=submit]").await;
    ui.wait_for_text("[role=status]", "Tenant acme-corp created.")
        .await;
    assert_eq!(ui.path().await, "/tenants/acme-corp");
    assert!(
        ui.text("h1")
            .await
            .starts_with("Acme Corporation acme-corp")
    );
    assert_eq!(ui.text("h1 .badge").await, "active");
    assert!(
        !ui.client
            .source()
            .await
            .unwrap()
            .contains("cs-browser-secret"),
        "the secret is not on the page"
    );
    ui.shot("05-created").await;

    // 4. Suspend, with a reason: the button opens a small form that needs one.
    let reason = ui.find("#reason-suspend").await;
    assert!(
        !reason.is_displayed().await.unwrap(),
        "the form stays folded until asked for"
    );
    ui.find_xpath(
        "//details[contains(@class,'action')]/summary[starts-with(normalize-space(.), 'Suspend')]",
    )
    .await
    .click()
    .await
    .expect("opening the suspend form");
    assert!(
        reason.is_displayed().await.unwrap(),
        "the reason field shows"
    );
    let submit = "details[open] form[action='/tenants/acme-corp/lifecycle'] button[type=submit]";
    ui.click(submit).await;
    let refused = ui
        .script("return document.getElementById('reason-suspend').validity.valueMissing")
        .await;
    assert_eq!(refused, true, "the browser asks for the reason first");
    assert_eq!(
        ui.text("h1 .badge").await,
        "active",
        "nothing was sent without a reason"
    );
    ui.fill("#reason-suspend", "Payment failed in March").await;
    ui.shot("06-suspend-form").await;
    ui.click(submit).await;
    ui.wait_for_text("[role=status]", "Tenant acme-corp is now suspended.")
        .await;
    assert_eq!(ui.text("h1 .badge").await, "suspended");
    let row = ui
        .find_xpath("//h3[normalize-space(.)='Status history']/following-sibling::table[1]//tr[td[normalize-space(.)='Payment failed in March']]")
        .await;
    let row = row.text().await.unwrap();
    assert!(
        row.contains("active") && row.contains("suspended") && row.contains("admin"),
        "history row: {row}"
    );
    let facts = ui
        .find_xpath("//dt[.='Status']/following-sibling::dd[1]")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        facts.contains("suspended — Payment failed in March"),
        "{facts}"
    );
    ui.shot("07-suspended").await;

    // 5. The audit log, filtered by the tenant.
    ui.click(".mainnav a[href='/audit']").await;
    ui.wait_for_text("h1", "Audit log").await;
    ui.fill("#tenant", "acme-corp").await;
    ui.click("form.filters button[type=submit]").await;
    ui.wait_for_text("form.filters", "Clear").await;
    assert!(
        ui.path().await.contains("tenant=acme-corp"),
        "{}",
        ui.path().await
    );
    let tenants = ui
        .script("return [...document.querySelectorAll('table tbody tr td:nth-child(5)')].map(td => td.textContent.trim())")
        .await;
    let tenants: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        !tenants.is_empty() && tenants.iter().all(|t| *t == "acme-corp"),
        "only acme-corp's records: {tenants:?}"
    );
    let suspend = ui
        .find_xpath("//table//tbody/tr[td/code[normalize-space(.)='tenant.suspend']]")
        .await;
    let suspend = suspend.text().await.unwrap();
    assert!(
        suspend.contains("admin") && suspend.contains("Payment failed in March"),
        "audit row: {suspend}"
    );
    ui.find_xpath("//table//tbody/tr[td/code[normalize-space(.)='tenant.create']]")
        .await;
    ui.shot("08-audit").await;

    // 6. A page that does not exist, and the dashboard.
    ui.goto("/tenants/no-such-tenant").await;
    ui.wait_for_text("h1", "Not found").await;
    assert!(ui.text("main").await.contains("no-such-tenant"));
    assert!(
        ui.text(".whoami").await.contains("admin"),
        "still logged in, with the menu"
    );
    ui.shot("09-not-found").await;
    ui.click(".mainnav a[href='/']").await;
    ui.wait_for_text("h1", "Dashboard").await;
    let suspended = ui
        .find_xpath(
            "//h2[.='Tenants by status']/following-sibling::table//tr[.//span[.='suspended']]/td[2]",
        )
        .await;
    assert_eq!(
        suspended.text().await.unwrap(),
        "1",
        "the dashboard counts the suspended tenant"
    );
    ui.find_xpath("//table//tr[td/code[.='tenant.suspend']]")
        .await;
    ui.shot("10-dashboard").await;

    // 7. Log out.
    ui.click(".whoami button[type=submit]").await;
    ui.wait_for_text("[role=status]", "You are logged out.")
        .await;
    ui.shot("11-logged-out").await;
    ui.goto("/").await;
    ui.wait_for_text("h1", "Log in to tenantry").await;
}

/// Templates and provisioning in the browser: create a connection template, open the
/// provisioning form, choose the template, leave a placeholder empty (its error shows next to
/// it), fix it, and follow the run page (it refreshes itself) until every step is `done`; the
/// tenant's page then shows its resources and no drift. Screenshots land in
/// `target/screenshots/provisioning/<backend>/`.
mod provisioning_walk {
    use super::*;
    use crate::common::recorder::RecorderBackend;
    use tenantry::audit::Actor;
    use tenantry::plugin_registry::{self as registry, Capability};

    backend_tests!(admin_creates_a_template_and_provisions_a_tenant_through_the_form);

    /// A server with the `recorder` plugin installed and granted its recording test double (as
    /// in tests/it/provisioning.rs).
    async fn with_recorder(backend: Backend) -> (TestApp, RecorderBackend) {
        let app = TestApp::spawn_with(backend, |c| {
            c.provisioning.backoff_base_ms = 50;
            c.provisioning.backoff_max_ms = 200;
            c.provisioning.max_attempts = 3;
            c.provisioning.poll_interval_ms = 100;
        })
        .await;
        let double = RecorderBackend::start().await;
        let actor = Actor::system();
        let path = format!(
            "{}/recorder.wasm",
            tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
        );
        let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        registry::install(&app.ctx, &actor, wasm)
            .await
            .expect("recorder installs");
        let host = double.url.trim_start_matches("http://").to_owned();
        registry::grant(&app.ctx, &actor, "recorder", Capability::Host(host))
            .await
            .expect("host granted");
        registry::grant(
            &app.ctx,
            &actor,
            "recorder",
            Capability::Secret {
                name: "recorder-url".into(),
                value: double.url.clone(),
            },
        )
        .await
        .expect("secret granted");
        (app, double)
    }

    async fn admin_creates_a_template_and_provisions_a_tenant_through_the_form(backend: Backend) {
        let shots = fresh_screenshots(Some("provisioning"), backend);
        let driver = ChromeDriver::start(&shots).await;
        let (app, double) = with_recorder(backend).await;
        let ui = Ui {
            client: driver.connect().await,
            base: app.base.clone(),
            shots,
        };
        tokio::time::timeout(TEST_TIMEOUT, provision_walk(&ui))
            .await
            .unwrap_or_else(|_| panic!("the browser walk did not finish within {TEST_TIMEOUT:?}"));
        for step in ["alpha", "beta", "gamma"] {
            assert_eq!(double.creations(&format!("globex-{step}")), 1, "{step}");
        }
        let _ = ui.client.close().await;
        app.stop().await;
        double.stop().await;
        drop(driver);
    }

    async fn provision_walk(ui: &Ui) {
        // 1. Log in, open the templates.
        ui.goto("/templates").await;
        ui.wait_for_text("h1", "Log in to tenantry").await;
        ui.fill("#username", "admin").await;
        ui.fill("#password", ADMIN_PASSWORD).await;
        ui.click("form[action='/login'] button[type=submit]").await;
        ui.wait_for_text("h1", "Templates").await;
        assert_eq!(ui.path().await, "/templates");
        ui.shot("p01-templates-empty").await;

        // 2. A connection template.
        ui.click("a.button.primary[href='/templates/new']").await;
        ui.wait_for_text("h1", "New template").await;
        ui.fill("#f-name", "postgresql-default").await;
        ui.find("#f-kind")
            .await
            .select_by_value("connection")
            .await
            .expect("choosing the kind");
        ui.fill("#f-description", "PostgreSQL on the shared cluster")
            .await;
        ui.fill(
            "#f-placeholders",
            "user, password, host, port, database_name",
        )
        .await;
        ui.fill(
            "#f-body",
            "postgresql://{user}:{password}@{host}:{port}/{database_name}",
        )
        .await;
        ui.fill("#f-tags", "default").await;
        ui.shot("p02-new-template").await;
        ui.click("form.form button[type=submit]").await;
        ui.wait_for_text("[role=status]", "Template postgresql-default created")
            .await;
        assert_eq!(ui.path().await, "/templates/postgresql-default");
        assert_eq!(
            ui.text("#template-body").await,
            "postgresql://{user}:{password}@{host}:{port}/{database_name}"
        );
        ui.shot("p03-template").await;

        // 3. The provisioning form; choosing the template re-renders it with its placeholders.
        ui.click(".mainnav a[href='/runs']").await;
        ui.wait_for_text("h1", "Runs").await;
        ui.click("a.button.primary[href='/provision']").await;
        ui.wait_for_text("h1", "Provision a tenant").await;
        assert!(
            ui.client.find(Locator::Css("#f-ph_user")).await.is_err(),
            "no placeholder inputs before a template is chosen"
        );
        ui.find("#f-template")
            .await
            .select_by_value("postgresql-default")
            .await
            .expect("choosing the template");
        ui.click("#choose-template").await;
        ui.wait_for_text("form[method=post] h3", "Connection from postgresql-default")
            .await;
        assert_eq!(ui.path().await, "/provision?template=postgresql-default");
        assert_eq!(
            ui.find("#f-ph_password")
                .await
                .attr("type")
                .await
                .unwrap()
                .as_deref(),
            Some("password")
        );
        ui.fill("#f-slug", "globex").await;
        ui.fill("#f-name", "Globex Corporation").await;
        ui.find("#f-tier")
            .await
            .select_by_value("enterprise")
            .await
            .expect("choosing the tier");
        ui.fill("#f-contact_email", "ops@globex.example").await;
        ui.fill("#f-oauth_issuer", "https://globex.okta.com/oauth2/default")
            .await;
        ui.fill("#f-client_id", "0oa-globex").await;
        ui.fill("#f-client_secret", "cs-globex-browser").await;
        ui.fill("#f-default_schema", "globex").await;
        ui.fill("#f-ph_user", "globex_user").await;
        ui.fill("#f-ph_password", "pw-globex-browser").await;
        // The host is forgotten.
        ui.fill("#f-ph_port", "5432").await;
        ui.fill("#f-ph_database_name", "globex_db").await;
        assert!(
            ui.find("#f-backend_recorder")
                .await
                .is_selected()
                .await
                .unwrap(),
            "the enabled backend is checked"
        );
        ui.shot("p04-provision-form").await;
        ui.click("form[action='/provision'][method=post] button[type=submit]")
            .await;
        ui.wait_for_text("[role=alert]", "Nothing was provisioned.")
            .await;
        let error = ui.find("#e-ph_host").await;
        assert!(error.is_displayed().await.unwrap());
        assert_eq!(
            error.text().await.unwrap(),
            "template `postgresql-default` needs a value for `host`"
        );
        let placement = ui
            .script(
                "const input = document.getElementById('f-ph_host');
                 const field = input.closest('.field');
                 const error = field.querySelector('.error');
                 const i = input.getBoundingClientRect(), e = error.getBoundingClientRect();
                 return { error: error.id, marked: field.classList.contains('has-error'),
                          describedby: input.getAttribute('aria-describedby'),
                          gap: e.top - i.bottom, color: getComputedStyle(error).color,
                          password: document.getElementById('f-ph_password').value,
                          secret: document.getElementById('f-client_secret').value,
                          user: document.getElementById('f-ph_user').value,
                          slug: document.getElementById('f-slug').value };",
            )
            .await;
        assert_eq!(placement["error"], "e-ph_host", "{placement}");
        assert_eq!(placement["marked"], true, "{placement}");
        assert_eq!(placement["describedby"], "e-ph_host", "{placement}");
        let gap = placement["gap"].as_f64().unwrap();
        assert!(
            (0.0..20.0).contains(&gap),
            "right under the input: {placement}"
        );
        assert_eq!(placement["color"], "rgb(180, 35, 24)", "{placement}");
        assert_eq!(placement["password"], "", "secrets are not sent back");
        assert_eq!(placement["secret"], "", "secrets are not sent back");
        assert_eq!(placement["user"], "globex_user", "the rest is kept");
        assert_eq!(placement["slug"], "globex", "the rest is kept");
        let source = ui.client.source().await.unwrap();
        assert!(!source.contains("pw-globex-browser") && !source.contains("cs-globex-browser"));
        ui.shot("p05-placeholder-error").await;

        // 4. Fixed: the run page opens and refreshes itself until every step is done.
        ui.fill("#f-ph_host", "db.globex.example").await;
        ui.fill("#f-ph_password", "pw-globex-browser").await;
        ui.fill("#f-client_secret", "cs-globex-browser").await;
        ui.click("form[action='/provision'][method=post] button[type=submit]")
            .await;
        ui.wait_for_text("h1", "Provision of globex").await;
        assert!(ui.path().await.starts_with("/runs/"), "{}", ui.path().await);
        ui.shot("p06-run-started").await;
        ui.wait_for_text("#run-status", "succeeded").await;
        let states = ui
            .script("return [...document.querySelectorAll('.timeline .stephead .badge')].map(b => b.textContent.trim())")
            .await;
        assert_eq!(
            states,
            json!(["done", "done", "done", "done"]),
            "three steps and the validation: {states}"
        );
        let refresh = ui
            .script("return document.querySelectorAll('meta[http-equiv=refresh]').length")
            .await;
        assert_eq!(refresh, 0, "a finished run stops refreshing");
        ui.click("#step-0 details.output summary").await;
        ui.click("#step-0 details.log summary").await;
        assert!(
            ui.text("#step-0 .loglines")
                .await
                .contains("created globex-alpha"),
            "the plugin's log lines"
        );
        ui.shot("p07-run-done").await;

        // 5. The tenant's page: resources, and no drift.
        ui.click(".pagehead h1 a[href='/tenants/globex']").await;
        ui.wait_for_text("h1", "Globex Corporation").await;
        let resources = ui
            .script("return [...document.querySelectorAll('table.resources tbody tr')].map(r => r.textContent.replace(/\\s+/g, ' ').trim())")
            .await;
        let resources = resources.as_array().unwrap();
        assert_eq!(resources.len(), 3, "{resources:?}");
        assert!(
            resources
                .iter()
                .all(|r| r.as_str().unwrap().contains("recorder")),
            "{resources:?}"
        );
        assert!(
            resources[0]
                .as_str()
                .unwrap()
                .contains("postgresql-default@1"),
            "the resource made from the template names it: {resources:?}"
        );
        ui.shot("p08-tenant-backends").await;
        ui.click("#check-drift").await;
        ui.wait_for_text("#drift", "no drift").await;
        assert!(ui.path().await.contains("drift=1"));
        ui.shot("p09-no-drift").await;
    }
}
