//! The portal's templates, provisioning form, runs and the tenant page's backends over plain HTTP
//! (cookies, forms, CSRF tokens, 303 redirects, no JavaScript), against SQLite and PostgreSQL,
//! with the `recorder` test plugin provisioning into its recording test double.

use std::time::{Duration, Instant};

use crate::common::recorder::RecorderBackend;
use crate::common::web::{Browser, Page};
use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;
use tenantry::audit::Actor;
use tenantry::auth::{Principal, Role};
use tenantry::plugin_registry::{self as registry, Capability};

backend_tests!(
    templates_are_listed_filtered_created_versioned_previewed_and_deleted,
    template_form_errors_show_next_to_their_fields_and_store_nothing,
    a_viewer_reads_every_page_but_cannot_change_anything,
    forms_without_or_with_a_wrong_csrf_token_are_refused,
    provisioning_form_errors_show_next_to_their_inputs_without_secrets_and_store_nothing,
    provisioning_through_the_form_reaches_done_and_the_tenant_page_shows_resources_and_drift,
    a_failed_run_shows_its_error_compensation_and_manual_follow_ups_never_as_done,
);

/// A portal session of a platform viewer (read-only).
async fn viewer(app: &TestApp) -> Browser {
    let principal = Principal {
        name: "token:dashboards".into(),
        role: Role::PlatformViewer,
        tenant: None,
        key: None,
    };
    Browser::with_session(app, &principal).await
}

/// The HTML of the `.field` block holding the element with id `input_id`.
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

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A server with the recorder plugin installed and granted its test double (as in
/// tests/it/provisioning.rs), with fast retries.
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
    registry::install(&app.ctx, &actor, wasm("recorder"))
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

const PG_BODY: &str = "postgresql://{user}:{password}@{host}:{port}/{database_name}";

/// The connection template the provisioning tests use, made through the API.
async fn postgres_template(app: &TestApp) {
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({
                "name": "postgresql-default",
                "kind": "connection",
                "body": PG_BODY,
                "placeholders": ["user", "password", "host", "port", "database_name"],
                "tags": ["default"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn template_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/api/v1/template").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("templates").len()
}

async fn run_count(app: &TestApp) -> usize {
    let (status, body) = app.get("/api/v1/provisioning").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("runs").len()
}

async fn tenant_exists(app: &TestApp, slug: &str) -> bool {
    app.get(&format!("/api/v1/tenant/{slug}")).await.0 == StatusCode::OK
}

async fn templates_are_listed_filtered_created_versioned_previewed_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;

    // Create through the form.
    let created = browser
        .submit(
            "/templates/new",
            "/templates",
            &[
                ("name", "postgresql-default"),
                ("kind", "connection"),
                ("format", ""),
                ("description", "The usual PostgreSQL"),
                ("placeholders", "user, password, host"),
                ("body", "postgresql://{user}:{password}@{host}/db"),
                ("tags", "default, eu"),
            ],
        )
        .await;
    let detail = browser.see_other(&created).await;
    detail.assert_status(StatusCode::OK);
    assert!(
        detail.has("Template postgresql-default created (version 1)."),
        "{}",
        detail.html
    );
    assert!(detail.has("postgresql://{user}:{password}@{host}/db"));
    assert!(
        detail.has("<code>uri</code>"),
        "the connection default format"
    );
    let (status, api) = app.get("/api/v1/template/postgresql-default").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api["placeholders"], json!(["user", "password", "host"]));
    assert_eq!(api["tags"], json!(["default", "eu"]));

    // An asset template, through the API; the list filters by kind and tag.
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({ "name": "starter-dashboards", "kind": "asset", "body": "dash {tenant_slug}",
                    "placeholders": ["tenant_slug"], "tags": ["default", "enterprise"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let list = browser.get("/templates").await;
    list.assert_status(StatusCode::OK);
    assert!(list.has("href=\"/templates/postgresql-default\""));
    assert!(list.has("href=\"/templates/starter-dashboards\""));
    assert!(list.has("<option value=\"enterprise\">enterprise</option>"));
    let assets = browser.get("/templates?kind=asset").await;
    assert!(assets.has("href=\"/templates/starter-dashboards\""));
    assert!(!assets.has("href=\"/templates/postgresql-default\""));
    let eu = browser.get("/templates?tag=eu").await;
    assert!(eu.has("href=\"/templates/postgresql-default\""));
    assert!(!eu.has("href=\"/templates/starter-dashboards\""));

    // A new version through the edit form, which starts from the newest.
    let edit = browser.get("/templates/postgresql-default/edit").await;
    edit.assert_status(StatusCode::OK);
    assert!(edit.has("value=\"user, password, host\""), "{}", edit.html);
    let saved = browser
        .submit(
            "/templates/postgresql-default/edit",
            "/templates/postgresql-default/edit",
            &[
                ("format", "uri"),
                ("description", "The usual PostgreSQL"),
                ("placeholders", "user, password, host, port"),
                ("body", "postgresql://{user}:{password}@{host}:{port}/db"),
                ("tags", "default, eu"),
            ],
        )
        .await;
    let detail = browser.see_other(&saved).await;
    assert!(
        detail.has("Template postgresql-default saved as version 2."),
        "{}",
        detail.html
    );
    assert!(detail.has("{host}:{port}/db"));
    assert!(detail.has("href=\"/templates/postgresql-default?version=1\""));
    // Saving the same again makes no version.
    let same = browser
        .submit(
            "/templates/postgresql-default/edit",
            "/templates/postgresql-default/edit",
            &[
                ("format", "uri"),
                ("description", "The usual PostgreSQL"),
                ("placeholders", "user, password, host, port"),
                ("body", "postgresql://{user}:{password}@{host}:{port}/db"),
                ("tags", "default, eu"),
            ],
        )
        .await;
    let detail = browser.see_other(&same).await;
    assert!(detail.has("Nothing changed: version 2"), "{}", detail.html);
    let v1 = browser.get("/templates/postgresql-default?version=1").await;
    v1.assert_status(StatusCode::OK);
    assert!(v1.has("This is an older version."));
    assert!(v1.has("postgresql://{user}:{password}@{host}/db"));

    // The render preview: the text, or the missing value next to its input.
    let rendered = browser
        .submit(
            "/templates/postgresql-default",
            "/templates/postgresql-default/render",
            &[
                ("version", "2"),
                ("v_user", "acme"),
                ("v_password", "p@ss/word"),
                ("v_host", "db.example.com"),
                ("v_port", "5432"),
            ],
        )
        .await;
    rendered.assert_status(StatusCode::OK);
    assert!(
        rendered.has("postgresql://acme:p%40ss%2Fword@db.example.com:5432/db"),
        "{}",
        rendered.html
    );
    assert!(rendered.has("Fingerprint <code>sha256:"));
    let missing = browser
        .submit(
            "/templates/postgresql-default",
            "/templates/postgresql-default/render",
            &[
                ("version", "2"),
                ("v_user", "acme"),
                ("v_password", "typed-secret"),
                ("v_host", ""),
                ("v_port", "5432"),
            ],
        )
        .await;
    missing.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let host = field_block(&missing.html, "f-v_host");
    assert!(host.contains("has-error"), "{host}");
    assert!(
        host.contains("needs a value for `host`"),
        "the error is next to the host input: {host}"
    );
    assert!(!field_block(&missing.html, "f-v_user").contains("has-error"));
    assert!(field_block(&missing.html, "f-v_user").contains("value=\"acme\""));
    assert!(
        !missing.has("typed-secret"),
        "a secret placeholder is not sent back"
    );

    // Delete: the name must be typed to confirm.
    let refused = browser
        .submit(
            "/templates/postgresql-default",
            "/templates/postgresql-default/delete",
            &[("confirm", "postgres")],
        )
        .await;
    let page = browser.see_other(&refused).await;
    assert!(page.has("nothing was deleted"), "{}", page.html);
    assert_eq!(template_count(&app).await, 2);
    let deleted = browser
        .submit(
            "/templates/postgresql-default",
            "/templates/postgresql-default/delete",
            &[("confirm", "postgresql-default")],
        )
        .await;
    assert_eq!(deleted.redirect.as_deref(), Some("/templates"));
    let list = browser.see_other(&deleted).await;
    assert!(list.has("Template postgresql-default and its versions were deleted."));
    assert!(!list.has("href=\"/templates/postgresql-default\""));
    assert_eq!(template_count(&app).await, 1);
    let gone = browser.get("/templates/postgresql-default").await;
    gone.assert_status(StatusCode::NOT_FOUND);
    app.stop().await;
}

async fn template_form_errors_show_next_to_their_fields_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let browser = Browser::admin(&app).await;

    // An undeclared slot: the error is on the body; what was typed is kept.
    let page = browser
        .submit(
            "/templates/new",
            "/templates",
            &[
                ("name", "pg"),
                ("kind", "connection"),
                ("placeholders", "user"),
                ("body", "postgresql://{user}:{password}@h/db"),
                ("tags", "default"),
            ],
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("Please correct the fields marked below."));
    let body = field_block(&page.html, "f-body");
    assert!(body.contains("has-error"), "{body}");
    assert!(
        body.contains("uses `{password}`, which is not in `placeholders`"),
        "{body}"
    );
    assert!(
        body.contains("postgresql://{user}:{password}@h/db"),
        "{body}"
    );
    assert!(!field_block(&page.html, "f-name").contains("has-error"));
    assert!(field_block(&page.html, "f-name").contains("value=\"pg\""));

    // Bad name, bad placeholder and bad tag, each on its field.
    let page = browser
        .submit(
            "/templates/new",
            "/templates",
            &[
                ("name", "Bad Name"),
                ("kind", "asset"),
                ("placeholders", "ok, 1bad"),
                ("body", "x"),
                ("tags", "Default"),
            ],
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_block(&page.html, "f-name").contains("has-error"));
    let placeholders = field_block(&page.html, "f-placeholders");
    assert!(placeholders.contains("`1bad`:"), "{placeholders}");
    let tags = field_block(&page.html, "f-tags");
    assert!(tags.contains("`Default`:"), "{tags}");
    assert!(
        page.has("<option value=\"asset\" selected>"),
        "the kind chosen is kept"
    );
    assert_eq!(template_count(&app).await, 0);

    // A taken name is an error on the name.
    postgres_template(&app).await;
    let page = browser
        .submit(
            "/templates/new",
            "/templates",
            &[
                ("name", "postgresql-default"),
                ("kind", "connection"),
                ("body", "sqlite://x"),
            ],
        )
        .await;
    page.assert_status(StatusCode::CONFLICT);
    assert!(field_block(&page.html, "f-name").contains("is already the name of another template"));

    // A new version with an undeclared slot: error on the body, no version made.
    let page = browser
        .submit(
            "/templates/postgresql-default/edit",
            "/templates/postgresql-default/edit",
            &[
                ("format", "uri"),
                ("placeholders", "user"),
                ("body", "postgresql://{user}@{nohost}/db"),
            ],
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_block(&page.html, "f-body").contains("uses `{nohost}`"));
    let (_, api) = app.get("/api/v1/template/postgresql-default").await;
    assert_eq!(api["latest_version"], 1);
    app.stop().await;
}

async fn a_viewer_reads_every_page_but_cannot_change_anything(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let admin = Browser::admin(&app).await;
    let run_url = provision_through_form(&admin, "acme-corp", "p@ss").await;
    wait_until_finished(&admin, &run_url).await;

    let viewer = viewer(&app).await;
    for path in [
        "/templates",
        "/templates/postgresql-default",
        "/templates/postgresql-default?version=1",
        "/provision",
        "/provision?template=postgresql-default",
        "/runs",
        "/runs?status=succeeded&tenant=acme-corp",
        run_url.as_str(),
        "/tenants/acme-corp",
        "/tenants/acme-corp?drift=1",
    ] {
        let page = viewer.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}:\n{}", page.html);
        assert!(page.has("platform-viewer"), "{path}");
    }
    let detail = viewer.get("/templates/postgresql-default").await;
    assert!(!detail.has("/templates/postgresql-default/edit"));
    assert!(!detail.has("/templates/postgresql-default/delete"));
    assert!(detail.has("Only administrators can render templates."));
    assert!(
        !viewer
            .get("/templates")
            .await
            .has("href=\"/templates/new\"")
    );

    let form = viewer.get("/provision?template=postgresql-default").await;
    assert!(form.has("Only administrators can provision tenants"));
    assert!(form.has("class=\"primary\" disabled>Provision tenant</button>"));
    let tenant = viewer.get("/tenants/acme-corp").await;
    assert!(tenant.has("<h2>Backends</h2>") && tenant.has("postgresql-default@1"));
    assert!(!tenant.has("/tenants/acme-corp/edit") && !tenant.has("/tenants/acme-corp/lifecycle"));
    assert!(tenant.has("Only administrators can change the tenant's status."));
    let csrf = viewer.get("/templates").await.csrf();
    let attempts: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "/templates",
            vec![("name", "x-tpl"), ("kind", "asset"), ("body", "x")],
        ),
        (
            "/templates/postgresql-default/edit",
            vec![("body", "sqlite://x"), ("placeholders", "")],
        ),
        (
            "/templates/postgresql-default/render",
            vec![("v_user", "u")],
        ),
        (
            "/templates/postgresql-default/delete",
            vec![("confirm", "postgresql-default")],
        ),
        (
            "/provision",
            vec![
                ("slug", "viewer-co"),
                ("name", "Viewer Co"),
                ("backend", "recorder"),
            ],
        ),
        ("/tenants/acme-corp/lifecycle", vec![("action", "suspend")]),
    ];
    for (action, fields) in attempts {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend(fields);
        let page = viewer.post(action, &form).await;
        assert_eq!(
            page.status,
            StatusCode::FORBIDDEN,
            "{action}:\n{}",
            page.html
        );
        assert!(page.has("which may only read"), "{action}");
    }
    assert_eq!(template_count(&app).await, 1);
    let (_, api) = app.get("/api/v1/template/postgresql-default").await;
    assert_eq!(api["latest_version"], 1);
    assert!(!tenant_exists(&app, "viewer-co").await);
    assert_eq!(run_count(&app).await, 1);
    app.stop().await;
    double.stop().await;
}

async fn forms_without_or_with_a_wrong_csrf_token_are_refused(backend: Backend) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let browser = Browser::admin(&app).await;
    for csrf in [None, Some("forged-token")] {
        let with = |fields: &[(&'static str, &'static str)]| {
            let mut form = fields.to_vec();
            if let Some(token) = csrf {
                form.push(("csrf", token));
            }
            form
        };
        let attempts: [(&str, Vec<(&str, &str)>); 5] = [
            (
                "/templates",
                with(&[("name", "x-tpl"), ("kind", "asset"), ("body", "x")]),
            ),
            (
                "/templates/postgresql-default/edit",
                with(&[("body", "sqlite://x")]),
            ),
            (
                "/templates/postgresql-default/render",
                with(&[("v_user", "u")]),
            ),
            (
                "/templates/postgresql-default/delete",
                with(&[("confirm", "postgresql-default")]),
            ),
            (
                "/provision",
                with(&[
                    ("slug", "forged-co"),
                    ("name", "Forged Co"),
                    ("template", "postgresql-default"),
                    ("ph_user", "u"),
                    ("ph_password", "p"),
                    ("ph_host", "h"),
                    ("ph_port", "1"),
                    ("ph_database_name", "d"),
                    ("backend", "recorder"),
                ]),
            ),
        ];
        for (action, form) in attempts {
            let page = browser.post(action, &form).await;
            assert_eq!(
                page.status,
                StatusCode::FORBIDDEN,
                "{action}:\n{}",
                page.html
            );
            assert!(page.has("CSRF check failed"), "{action}");
        }
    }
    assert_eq!(template_count(&app).await, 1);
    let (_, api) = app.get("/api/v1/template/postgresql-default").await;
    assert_eq!(api["latest_version"], 1);
    assert!(!tenant_exists(&app, "forged-co").await);
    assert_eq!(run_count(&app).await, 0);
    assert!(double.names().is_empty());
    app.stop().await;
    double.stop().await;
}

/// The provisioning form's fields for `slug` with the postgres template's placeholders.
fn provision_fields<'a>(slug: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("template", "postgresql-default"),
        ("template_version", "1"),
        ("slug", slug),
        ("name", "Acme Corporation"),
        ("tier", "professional"),
        ("trial_days", ""),
        ("contact_email", "ops@acme.example"),
        ("oauth_issuer", "https://idp.example.com/oauth2/default"),
        ("client_id", "client-1"),
        ("client_secret", "s3cret-client-value"),
        ("default_schema", "acme_schema"),
        ("database_name", ""),
        ("ph_user", "acme_user"),
        ("ph_password", password),
        ("ph_host", "db.example.com"),
        ("ph_port", "5432"),
        ("ph_database_name", "acme_db"),
        ("backend", "recorder"),
        ("idempotency_key", ""),
    ]
}

/// Submits the provisioning form; returns the run page's path.
async fn provision_through_form(browser: &Browser, slug: &str, password: &str) -> String {
    let answer = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &provision_fields(slug, password),
        )
        .await;
    answer.assert_status(StatusCode::SEE_OTHER);
    let location = answer.redirect.expect("a Location");
    assert!(location.starts_with("/runs/"), "{location}");
    location
}

/// Reloads the run page until the run has finished; returns the last page.
async fn wait_until_finished(browser: &Browser, path: &str) -> Page {
    let started = Instant::now();
    loop {
        let page = browser.get(path).await;
        page.assert_status(StatusCode::OK);
        if !page.has("http-equiv=\"refresh\"") {
            return page;
        }
        assert!(
            page.has("Refreshing every 2 s"),
            "an open run says it refreshes"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not finish:\n{}",
            page.html
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn provisioning_form_errors_show_next_to_their_inputs_without_secrets_and_store_nothing(
    backend: Backend,
) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let browser = Browser::admin(&app).await;

    // Without a template: the database URI input; with one, an input per placeholder.
    let plain = browser.get("/provision").await;
    plain.assert_status(StatusCode::OK);
    assert!(plain.has("id=\"f-db_uri\""));
    assert!(!plain.has("id=\"f-ph_user\""));
    assert!(
        plain.has("id=\"f-backend_recorder\" name=\"backend\" value=\"recorder\" checked"),
        "enabled provisioners are offered, checked: {}",
        plain.html
    );
    let chosen = browser.get("/provision?template=postgresql-default").await;
    chosen.assert_status(StatusCode::OK);
    for p in ["user", "password", "host", "port", "database_name"] {
        assert!(chosen.has(&format!("id=\"f-ph_{p}\"")), "{p}");
    }
    assert!(field_block(&chosen.html, "f-ph_password").contains("type=\"password\""));
    assert!(!chosen.has("id=\"f-db_uri\""));
    let unknown = browser.get("/provision?template=no-such").await;
    unknown.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_block(&unknown.html, "f-template").contains("no template named `no-such`"));

    // A bad slug: its error is on the slug; the secrets typed are not sent back.
    let mut fields = provision_fields("Bad_Slug", "typed-pass-word");
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.has("Nothing was provisioned."));
    let slug = field_block(&page.html, "f-slug");
    assert!(
        slug.contains("has-error") && slug.contains("id=\"e-slug\""),
        "{slug}"
    );
    assert!(slug.contains("value=\"Bad_Slug\""));
    assert!(field_block(&page.html, "f-name").contains("value=\"Acme Corporation\""));
    assert!(field_block(&page.html, "f-ph_host").contains("value=\"db.example.com\""));
    for secret in ["typed-pass-word", "s3cret-client-value"] {
        assert!(!page.has(secret), "{secret} is not echoed");
    }
    assert!(field_block(&page.html, "f-ph_password").contains("value=\"\""));
    assert!(field_block(&page.html, "f-client_secret").contains("value=\"\""));

    // A placeholder left empty: `connection_template.placeholders.host` is on the host input.
    fields = provision_fields("acme-corp", "typed-pass-word");
    for f in fields.iter_mut() {
        if f.0 == "ph_host" {
            f.1 = "";
        }
    }
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    let host = field_block(&page.html, "f-ph_host");
    assert!(host.contains("has-error"), "{host}");
    assert!(
        host.contains("<p class=\"error\" id=\"e-ph_host\">template `postgresql-default` needs a value for `host`</p>"),
        "{host}"
    );
    assert!(!field_block(&page.html, "f-ph_user").contains("has-error"));
    assert!(!field_block(&page.html, "f-slug").contains("has-error"));
    assert!(!page.has("typed-pass-word"));

    // A backend that is not an enabled provisioner: the error is at the backends.
    fields = provision_fields("acme-corp", "pw");
    fields.push(("backend", "no-such-backend"));
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.has(
            "<p class=\"error\" id=\"e-backends\">`no-such-backend` is not an installed plugin</p>"
        ),
        "{}",
        page.html
    );
    assert!(
        page.has("id=\"f-backend_recorder\" name=\"backend\" value=\"recorder\" checked"),
        "the backends checked are kept"
    );

    // A bad trial length and an unknown asset tag.
    fields = provision_fields("acme-corp", "pw");
    for f in fields.iter_mut() {
        if f.0 == "trial_days" {
            f.1 = "soon";
        }
    }
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(field_block(&page.html, "f-trial_days").contains("must be a whole number of days"));
    fields = provision_fields("acme-corp", "pw");
    fields.push(("tag", "no-such-tag"));
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    page.assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.has("<p class=\"error\" id=\"e-tags\">no asset template carries any of the tags no-such-tag</p>"),
        "{}",
        page.html
    );

    assert!(!tenant_exists(&app, "acme-corp").await);
    assert_eq!(run_count(&app).await, 0);
    assert!(double.names().is_empty());

    // A slug taken by another tenant is an error on the slug.
    app.create_tenant("taken-co").await;
    let page = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &provision_fields("taken-co", "pw"),
        )
        .await;
    assert!(
        field_block(&page.html, "f-slug").contains("has-error"),
        "{}",
        page.html
    );
    assert_eq!(run_count(&app).await, 0);
    app.stop().await;
    double.stop().await;
}

async fn provisioning_through_the_form_reaches_done_and_the_tenant_page_shows_resources_and_drift(
    backend: Backend,
) {
    let (app, double) = with_recorder(backend).await;
    postgres_template(&app).await;
    let browser = Browser::admin(&app).await;

    let run_path = provision_through_form(&browser, "acme-corp", "p@ss/word").await;
    let first = browser.get(&run_path).await;
    first.assert_status(StatusCode::OK);
    assert!(first.has("Provisioning of acme-corp queued: 4 steps."));
    let page = wait_until_finished(&browser, &run_path).await;
    assert!(
        page.has("<span class=\"badge run-succeeded\">succeeded</span>"),
        "{}",
        page.html
    );
    assert!(
        !page.has("http-equiv=\"refresh\""),
        "a finished run stops refreshing"
    );
    assert_eq!(
        page.html
            .matches("<span class=\"badge state-done\">done</span>")
            .count(),
        4,
        "{}",
        page.html
    );
    for step in ["alpha", "beta", "gamma"] {
        assert!(page.has(&format!("<code>{step}</code>")), "{step}");
        assert!(
            page.has(&format!("created acme-corp-{step}")),
            "the plugin's log of {step}"
        );
        assert_eq!(double.creations(&format!("acme-corp-{step}")), 1);
    }
    assert!(page.has("<details class=\"output\"><summary>Output</summary><pre>{"));
    assert!(page.has("href=\"/tenants/acme-corp\""));
    assert!(
        !page.has("p@ss/word") && !page.has("p%40ss%2Fword"),
        "no secret on the run page"
    );

    // The runs list, filtered.
    let runs = browser.get("/runs?status=succeeded&tenant=acme-corp").await;
    runs.assert_status(StatusCode::OK);
    assert!(runs.has(&format!("href=\"{run_path}\"")));
    let none = browser.get("/runs?status=failed").await;
    assert!(!none.has(&format!("href=\"{run_path}\"")));
    assert!(none.has("No runs match."));
    let nobody = browser.get("/runs?tenant=nobody").await;
    nobody.assert_status(StatusCode::OK);
    assert!(nobody.has("There is no tenant nobody."));

    // The tenant page: its resources with template and fingerprint, its runs, and no drift.
    let tenant = browser.get("/tenants/acme-corp").await;
    tenant.assert_status(StatusCode::OK);
    assert!(tenant.has("<h2>Backends</h2>"));
    assert!(tenant.has("postgresql-default@1"), "{}", tenant.html);
    assert_eq!(
        tenant
            .html
            .matches("<td><strong>recorder</strong></td>")
            .count(),
        3
    );
    assert!(tenant.has(&format!("href=\"{run_path}\"")));
    assert!(!tenant.has("no drift"), "drift is checked only when asked");
    let checked = browser.get("/tenants/acme-corp?drift=1").await;
    checked.assert_status(StatusCode::OK);
    assert!(
        checked.has("<span class=\"badge ok\">no drift</span>"),
        "{}",
        checked.html
    );

    // A resource removed behind the plugin's back shows as drift; a backend down as an error.
    double.forget("acme-corp-beta");
    let drifted = browser.get("/tenants/acme-corp?drift=1").await;
    assert!(
        drifted.has("<span class=\"badge drifted\">drift</span>"),
        "{}",
        drifted.html
    );
    assert!(drifted.has("<code>beta</code>") || drifted.has("acme-corp-beta"));
    assert!(!drifted.has("no drift"));
    double.set_down(true);
    let down = browser.get("/tenants/acme-corp?drift=1").await;
    down.assert_status(StatusCode::OK);
    assert!(
        down.has("Backends that could not be checked:"),
        "{}",
        down.html
    );
    double.set_down(false);

    // The page shows each backend's health, which step a repair re-applies, and repairs it.
    let drifted = browser.get("/tenants/acme-corp?drift=1").await;
    assert!(
        drifted.has("<tr id=\"health-recorder\"><td>recorder</td><td><span class=\"badge drifted\">drifted</span>"),
        "{}",
        drifted.html
    );
    assert!(
        drifted.has("<code>recorder/beta</code>") && drifted.has("id=\"repair-drift\""),
        "{}",
        drifted.html
    );
    assert!(
        !drifted.has("<code>recorder/alpha</code>"),
        "only what drifted"
    );
    let answer = browser
        .post("/tenants/acme-corp/reconcile", &[("csrf", &drifted.csrf())])
        .await;
    let run_page = browser.see_other(&answer).await;
    assert!(
        run_page.has("Repair of acme-corp queued: 1 step(s) re-applied."),
        "{}",
        run_page.html
    );
    let run_path = answer.redirect.clone().expect("the run's page");
    let done = wait_until_finished(&browser, &run_path).await;
    assert!(done.has("run-succeeded"), "{}", done.html);
    assert!(double.exists("acme-corp-beta"));
    let mended = browser.get("/tenants/acme-corp?drift=1").await;
    assert!(
        mended.has("<span class=\"badge ok\">no drift</span>"),
        "{}",
        mended.html
    );

    // A step made from a template can be repaired with the template's newest version.
    let (status, v2) = app
        .put(
            "/api/v1/template/postgresql-default",
            json!({
                "body": format!("{PG_BODY}?sslmode=require"),
                "placeholders": ["user", "password", "host", "port", "database_name"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v2}");
    double.forget("acme-corp-alpha");
    let drifted = browser.get("/tenants/acme-corp?drift=1").await;
    assert!(
        drifted.has("from template <code>postgresql-default@1</code>")
            && drifted.has("id=\"repair-current-templates\""),
        "{}",
        drifted.html
    );
    let answer = browser
        .post(
            "/tenants/acme-corp/reconcile",
            &[("csrf", &drifted.csrf()), ("templates", "current")],
        )
        .await;
    let run_path = answer.redirect.clone().expect("the run's page");
    let done = wait_until_finished(&browser, &run_path).await;
    assert!(done.has("run-succeeded"), "{}", done.html);
    let (_, resources) = app.get("/api/v1/tenant/acme-corp/resources").await;
    let alpha = resources
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["step"] == "alpha")
        .cloned()
        .unwrap();
    assert_eq!(alpha["template_version"], 2, "{alpha}");

    // The same request with the same idempotency key opens the first run.
    let mut fields = provision_fields("keyed-co", "pw");
    for f in fields.iter_mut() {
        if f.0 == "idempotency_key" {
            f.1 = "portal-keyed-co-1";
        }
        // A database of its own: another tenant's is refused.
        if f.0 == "ph_database_name" {
            f.1 = "keyed_db";
        }
    }
    let first = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    first.assert_status(StatusCode::SEE_OTHER);
    let keyed_run = first.redirect.clone().unwrap();
    wait_until_finished(&browser, &keyed_run).await;
    let again = browser
        .submit(
            "/provision?template=postgresql-default",
            "/provision",
            &fields,
        )
        .await;
    assert_eq!(again.redirect.as_deref(), Some(keyed_run.as_str()));
    let page = browser.see_other(&again).await;
    assert!(
        page.has("This idempotency key was used before"),
        "{}",
        page.html
    );
    assert_eq!(
        run_count(&app).await,
        4,
        "two provisions and the two repairs"
    );
    app.stop().await;
    double.stop().await;
}

async fn a_failed_run_shows_its_error_compensation_and_manual_follow_ups_never_as_done(
    backend: Backend,
) {
    let (app, double) = with_recorder(backend).await;
    // Through the API: the form does not take backend settings, which make the recorder fail.
    let (status, accepted) = app
        .post(
            "/api/v1/tenant/provision",
            json!({
                "tenant": { "slug": "refused", "name": "Refused Co" },
                "backends": { "recorder": {
                    "steps": ["alpha", "beta", "gamma"],
                    "fail": { "step": "gamma", "kind": "permanent" },
                    "undo_follow_up": "alpha",
                } },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let browser = Browser::admin(&app).await;
    let path = format!("/runs/{}", accepted["run"].as_str().unwrap());
    let page = wait_until_finished(&browser, &path).await;
    assert!(
        page.has("<span class=\"badge run-failed\">failed</span>"),
        "{}",
        page.html
    );
    assert!(
        page.has("<p class=\"run-error error\" role=\"alert\">"),
        "the run's error"
    );
    assert!(page.has("<span class=\"badge state-failed\">failed</span>"));
    assert_eq!(
        page.html
            .matches("<span class=\"badge state-compensated\">compensated</span>")
            .count(),
        2,
        "{}",
        page.html
    );
    // The follow-up is highlighted as something to do, never as done.
    let follow_ups = &page.html[page.html.find("id=\"follow-ups\"").unwrap()..];
    let follow_ups = &follow_ups[..follow_ups.find("</div>").unwrap()];
    assert!(
        page.has("<div class=\"card followups\" id=\"follow-ups\">"),
        "highlighted"
    );
    assert!(
        follow_ups.contains(
            "<span class=\"badge manual\">to do</span> recorder / alpha: archive the audit trail of refused-alpha by hand"
        ),
        "{follow_ups}"
    );
    assert!(
        !follow_ups.contains("state-done") && !follow_ups.contains("badge ok"),
        "{follow_ups}"
    );
    assert!(page.has("<span class=\"badge manual\">manual follow-up</span> archive the audit trail of refused-alpha by hand"));
    let failed = browser.get("/runs?status=failed").await;
    assert!(failed.has(&format!("href=\"{path}\"")));
    assert!(failed.has("<span class=\"badge manual\""));
    assert!(double.names().is_empty());

    // The failed tenant's page offers the way forward: a retry, which queues a provision run
    // from the request it was provisioned with (here it fails the same way again).
    let tenant_page = browser.get("/tenants/refused").await;
    assert!(
        tenant_page.has("id=\"retry-provisioning\""),
        "{}",
        tenant_page.html
    );
    let queued = browser
        .submit("/tenants/refused", "/tenants/refused/provision/retry", &[])
        .await;
    queued.assert_status(StatusCode::SEE_OTHER);
    let location = queued
        .location
        .as_ref()
        .expect("to the run's page")
        .path()
        .to_owned();
    assert!(
        location.starts_with("/runs/") && location != path,
        "{location}"
    );
    let again = wait_until_finished(&browser, &location).await;
    assert!(again.has("<span class=\"badge run-failed\">failed</span>"));
    let (_, tenant) = app.get("/api/v1/tenant/refused").await;
    assert_eq!(tenant["status"], "failed", "{tenant}");
    app.stop().await;
    double.stop().await;
}
