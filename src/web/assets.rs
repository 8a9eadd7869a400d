//! What the pages are made of, compiled into the binary: the tera templates of every page
//! (`templates/`), the stylesheet and the icon.

use actix_web::HttpResponse;
use tera::Tera;

use super::date_filter;

/// The pages' templates and the static assets are compiled into the binary: the server runs from any directory.
const PAGES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    (
        "tenants/list.html",
        include_str!("../../templates/tenants/list.html"),
    ),
    (
        "tenants/detail.html",
        include_str!("../../templates/tenants/detail.html"),
    ),
    (
        "tenants/key_created.html",
        include_str!("../../templates/tenants/key_created.html"),
    ),
    (
        "tenants/form.html",
        include_str!("../../templates/tenants/form.html"),
    ),
    (
        "tenants/import.html",
        include_str!("../../templates/tenants/import.html"),
    ),
    ("plugins.html", include_str!("../../templates/plugins.html")),
    (
        "templates/list.html",
        include_str!("../../templates/templates/list.html"),
    ),
    (
        "templates/detail.html",
        include_str!("../../templates/templates/detail.html"),
    ),
    (
        "templates/form.html",
        include_str!("../../templates/templates/form.html"),
    ),
    (
        "provisioning/form.html",
        include_str!("../../templates/provisioning/form.html"),
    ),
    (
        "provisioning/run.html",
        include_str!("../../templates/provisioning/run.html"),
    ),
    (
        "provisioning/runs.html",
        include_str!("../../templates/provisioning/runs.html"),
    ),
    ("audit.html", include_str!("../../templates/audit.html")),
    ("jobs.html", include_str!("../../templates/jobs.html")),
    ("alerts.html", include_str!("../../templates/alerts.html")),
    (
        "tenants/quotas.html",
        include_str!("../../templates/tenants/quotas.html"),
    ),
    ("tokens.html", include_str!("../../templates/tokens.html")),
    (
        "token_created.html",
        include_str!("../../templates/token_created.html"),
    ),
    (
        "sso_macros.html",
        include_str!("../../templates/sso_macros.html"),
    ),
    (
        "tenants/sso.html",
        include_str!("../../templates/tenants/sso.html"),
    ),
    (
        "tenants/setup_link.html",
        include_str!("../../templates/tenants/setup_link.html"),
    ),
    (
        "tenant/base.html",
        include_str!("../../templates/tenant/base.html"),
    ),
    (
        "tenant/login.html",
        include_str!("../../templates/tenant/login.html"),
    ),
    (
        "tenant/home.html",
        include_str!("../../templates/tenant/home.html"),
    ),
    (
        "tenant/key_created.html",
        include_str!("../../templates/tenant/key_created.html"),
    ),
    (
        "tenant/sso.html",
        include_str!("../../templates/tenant/sso.html"),
    ),
    (
        "tenant/message.html",
        include_str!("../../templates/tenant/message.html"),
    ),
    ("error.html", include_str!("../../templates/error.html")),
];

const STYLESHEET: &str = include_str!("../../static/app.css");
const FAVICON: &str = include_str!("../../static/favicon.svg");

/// The parsed pages, shared by every worker (parsed on first use; start-up checks them).
pub fn tera() -> &'static Tera {
    static TERA: std::sync::OnceLock<Tera> = std::sync::OnceLock::new();
    TERA.get_or_init(|| load_pages().expect("the pages are checked at start"))
}

/// Parses the pages (the portal's and the tenant sites').
pub fn load_pages() -> anyhow::Result<Tera> {
    let mut tera = Tera::default();
    tera.register_filter("date", date_filter::date);
    tera.add_raw_templates(PAGES.to_vec())
        .map_err(|e| anyhow::anyhow!("pages: {e:?}"))?;
    tera.autoescape_on(vec![".html"]);
    Ok(tera)
}

pub(super) async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(STYLESHEET)
}

pub(super) async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(FAVICON)
}
