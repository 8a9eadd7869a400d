//! The admin portal: server-rendered tera pages that work without JavaScript, with every asset
//! served by this server. Sessions live in the database; every form carries a CSRF token bound
//! to the session (the login form: a double-submit cookie). POST handlers end with a flash
//! message and a 303 redirect.

mod date_filter;
pub mod error;
pub mod form;
mod keys;
mod portal;
pub mod site;
mod sso;

use actix_web::http::StatusCode;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse, web};
use serde::Serialize;
use tera::Tera;

pub use portal::session::{self, PortalSession, SESSION_COOKIE, tenant_session_cookie};
use portal::{
    alerts, audit, catalog as templates, pages, plugins, provisioning, tenant_actions,
    tenant_import, tenants, tokens,
};
use site::{home, login as site_login};

use crate::error::AppError;

/// Templates and static assets are compiled into the binary: the server runs from any directory.
const TEMPLATES: &[(&str, &str)] = &[
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

/// The parsed templates, shared by every worker (parsed on first use; start-up checks them).
pub fn tera() -> &'static Tera {
    static TERA: std::sync::OnceLock<Tera> = std::sync::OnceLock::new();
    TERA.get_or_init(|| templates().expect("portal templates are checked at start"))
}

/// Parses the portal's templates.
pub fn templates() -> anyhow::Result<Tera> {
    let mut tera = Tera::default();
    tera.register_filter("date", date_filter::date);
    tera.add_raw_templates(TEMPLATES.to_vec())
        .map_err(|e| anyhow::anyhow!("portal templates: {e:?}"))?;
    tera.autoescape_on(vec![".html"]);
    Ok(tera)
}

/// Adds the portal's routes to an actix `App`.
pub fn mount<T>(app: actix_web::App<T>) -> actix_web::App<T>
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Error = actix_web::Error,
            InitError = (),
        >,
{
    app.route("/static/app.css", web::get().to(stylesheet))
        .route("/favicon.svg", web::get().to(favicon))
        .route("/login", web::get().to(pages::login_form))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/", web::get().to(pages::dashboard))
        .route("/tenants", web::get().to(tenants::list))
        .route("/tenants", web::post().to(tenants::create))
        .route("/tenants/new", web::get().to(tenants::new_form))
        .route("/tenants/import", web::get().to(tenant_import::import_form))
        .route("/tenants/import", web::post().to(tenant_import::import))
        .route("/tenants/{slug}", web::get().to(tenants::detail))
        .route("/tenants/{slug}/edit", web::get().to(tenants::edit_form))
        .route("/tenants/{slug}/edit", web::post().to(tenants::update))
        .route(
            "/tenants/{slug}/lifecycle",
            web::post().to(tenant_actions::lifecycle),
        )
        .route(
            "/tenants/{slug}/purge",
            web::post().to(tenant_actions::purge),
        )
        .route(
            "/tenants/{slug}/bundle",
            web::post().to(tenant_actions::bundle),
        )
        .route(
            "/tenants/{slug}/reconcile",
            web::post().to(tenant_actions::reconcile),
        )
        .route(
            "/tenants/{slug}/provision/retry",
            web::post().to(tenant_actions::retry_provision),
        )
        .route(
            "/tenants/{slug}/api-keys",
            web::post().to(tenant_actions::create_key),
        )
        .route(
            "/tenants/{slug}/api-keys/{id}/revoke",
            web::post().to(tenant_actions::revoke_key),
        )
        .route(
            "/tenants/{slug}/api-keys/{id}/rotate",
            web::post().to(tenant_actions::rotate_key),
        )
        .route(
            "/tenants/{slug}/export",
            web::post().to(tenant_actions::export),
        )
        .route(
            "/tenants/{slug}/client-secret/rollback",
            web::post().to(tenant_actions::rollback_secret),
        )
        .route(
            "/tenants/{slug}/health/database",
            web::post().to(tenant_actions::check_database),
        )
        .route("/templates", web::get().to(templates::list))
        .route("/templates", web::post().to(templates::create))
        .route("/templates/new", web::get().to(templates::new_form))
        .route("/templates/{name}", web::get().to(templates::detail))
        .route(
            "/templates/{name}/edit",
            web::get().to(templates::edit_form),
        )
        .route("/templates/{name}/edit", web::post().to(templates::update))
        .route(
            "/templates/{name}/render",
            web::post().to(templates::render_preview),
        )
        .route(
            "/templates/{name}/delete",
            web::post().to(templates::delete),
        )
        .route("/provision", web::get().to(provisioning::form))
        .route("/provision", web::post().to(provisioning::submit))
        .route("/runs", web::get().to(provisioning::runs))
        .route("/runs/{id}", web::get().to(provisioning::run))
        .route("/audit", web::get().to(audit::list))
        .route("/jobs", web::get().to(portal::jobs::list))
        .route("/alerts", web::get().to(alerts::list))
        .route(
            "/tenants/{slug}/quotas",
            web::post().to(alerts::save_quotas),
        )
        .route("/plugins", web::get().to(plugins::list))
        .route("/plugins/{name}/config", web::post().to(plugins::configure))
        .route("/tokens", web::get().to(tokens::list))
        .route("/tokens", web::post().to(tokens::create))
        .route("/tokens/{id}/revoke", web::post().to(tokens::revoke))
        .route("/tokens/{id}/rotate", web::post().to(tokens::rotate))
        .route("/tenants/{slug}/sso", web::get().to(sso::admin_form))
        .route("/tenants/{slug}/sso", web::post().to(sso::admin_submit))
        .route(
            "/tenants/{slug}/sso/setup-links",
            web::post().to(sso::create_link),
        )
        .route(
            "/tenants/{slug}/sso/setup-links/{id}/revoke",
            web::post().to(sso::revoke_link),
        )
        .route(
            "/tenants/{slug}/sessions/{handle}/revoke",
            web::post().to(sso::revoke_session),
        )
        .route(
            "/tenants/{slug}/health/oauth",
            web::post().to(sso::check_oauth),
        )
        // A tenant's own site (also at `<slug>.<base_domain>/…`, see `site`).
        .route("/t/{slug}", web::get().to(home::home_redirect))
        .route("/t/{slug}/", web::get().to(home::home))
        .route("/t/{slug}/login", web::get().to(site_login::login))
        .route("/t/{slug}/login/oauth", web::get().to(site_login::start))
        .route("/t/{slug}/callback", web::get().to(site_login::callback))
        .route("/t/{slug}/logout", web::post().to(site_login::logout))
        .route(
            "/t/{slug}/logged-out",
            web::get().to(site_login::logged_out),
        )
        .route(
            "/t/{slug}/sessions/{handle}/revoke",
            web::post().to(home::revoke_session),
        )
        .route("/t/{slug}/api-keys", web::post().to(home::create_key))
        .route(
            "/t/{slug}/api-keys/{id}/revoke",
            web::post().to(home::revoke_key),
        )
        .route(
            "/t/{slug}/api-keys/{id}/rotate",
            web::post().to(home::rotate_key),
        )
        .route("/t/{slug}/settings/sso", web::get().to(home::sso_form))
        .route("/t/{slug}/settings/sso", web::post().to(home::sso_submit))
        .route("/t/{slug}/setup/{token}", web::get().to(home::setup_form))
        .route(
            "/t/{slug}/setup/{token}",
            web::post().to(home::setup_submit),
        )
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(STYLESHEET)
}

async fn favicon() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(FAVICON)
}

/// The Content-Security-Policy of every page (set as a default header): everything from this
/// server only. A page of a session from an identity provider also lets its forms lead to that
/// provider (`form_target`): logout goes on to the provider's end-session endpoint, and browsers
/// check the redirects after a form against the `form-action` of the page that sent it.
pub fn content_security_policy(form_target: Option<&str>) -> String {
    let extra = form_target
        .and_then(|url| url::Url::parse(url).ok())
        .map(|url| format!(" {}", url.origin().ascii_serialization()))
        .unwrap_or_default();
    format!(
        "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'{extra}; frame-ancestors 'none'"
    )
}

/// Renders a page with the common context (who is logged in, CSRF token, flash message).
pub fn render(
    tera: &Tera,
    template: &str,
    session: Option<&PortalSession>,
    flash: Option<Flash>,
    mut context: tera::Context,
) -> Result<HttpResponse, AppError> {
    render_status(tera, template, StatusCode::OK, session, flash, &mut context)
}

pub fn render_status(
    tera: &Tera,
    template: &str,
    status: StatusCode,
    session: Option<&PortalSession>,
    flash: Option<Flash>,
    context: &mut tera::Context,
) -> Result<HttpResponse, AppError> {
    if let Some(session) = session {
        context.insert("user", &session.session.principal.name);
        context.insert("role", session.session.principal.role.as_str());
        context.insert("csrf", &session.session.csrf_token);
        // Pages offer the forms that change things to administrators only (the handlers refuse
        // everyone else anyway).
        context.insert(
            "is_admin",
            &(session.session.principal.role == crate::auth::Role::PlatformAdmin),
        );
    }
    context.insert("flash", &flash);
    context.insert("version", env!("CARGO_PKG_VERSION"));
    // base.html compares `nav` for the logged-in menu: pages without one (error pages) would
    // otherwise fail to render.
    if !context.contains_key("nav") {
        context.insert("nav", "");
    }
    let html = tera
        .render(template, context)
        .map_err(|e| AppError::internal(anyhow::anyhow!("rendering {template}: {e:?}")))?;
    let issuer = session.and_then(|s| s.session.user.as_ref().map(|u| u.issuer.as_str()));
    Ok(html_response(status, html, issuer, flash.is_some()))
}

/// A rendered page as the answer: never cached, its forms allowed to lead to the session's
/// identity provider (`issuer`, see [`content_security_policy`]), the shown flash consumed.
pub fn html_response(
    status: StatusCode,
    html: String,
    issuer: Option<&str>,
    flash_shown: bool,
) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"));
    if let Some(issuer) = issuer {
        response.insert_header((
            "Content-Security-Policy",
            content_security_policy(Some(issuer)),
        ));
    }
    if flash_shown {
        response.cookie(session::clear_flash_cookie());
    }
    response.body(html)
}

/// What a page says of an error: its message, or — for an internal error, logged here once — a
/// sentence that gives nothing away.
pub fn error_message(err: &AppError) -> String {
    if let AppError::Internal(inner) = err {
        tracing::error!("internal error: {inner:#}");
        "Something went wrong on our side. The error was logged.".to_owned()
    } else {
        err.to_string()
    }
}

/// A one-time message shown on the next page (after a redirect).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Flash {
    /// `success` or `error`.
    pub kind: String,
    pub message: String,
}

impl Flash {
    pub fn success(message: impl Into<String>) -> Self {
        Self {
            kind: "success".into(),
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            kind: "error".into(),
            message: message.into(),
        }
    }
}

/// 303 See Other to `location`, with a flash message for the next page.
pub fn redirect_with(location: &str, flash: Flash) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .cookie(session::flash_cookie(&flash))
        .finish()
}

/// A refusal the user can correct (a broken rule, a conflict) goes back to `location` with the
/// reason; anything else is an error page.
pub fn back_or_error(location: &str, err: AppError) -> error::PageResult {
    match err {
        AppError::Validation(_) | AppError::Conflict { .. } => {
            Ok(redirect_with(location, Flash::error(err.to_string())))
        }
        err => Err(err.into()),
    }
}

/// An error as a portal page.
pub fn error_page(tera: &Tera, session: Option<&PortalSession>, err: &AppError) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut context = tera::Context::new();
    context.insert("status", &err.status_code().as_u16());
    context.insert("message", &error_message(err));
    render_status(
        tera,
        "error.html",
        err.status_code(),
        session,
        None,
        &mut context,
    )
    .unwrap_or_else(|_| HttpResponse::InternalServerError().body("internal error"))
}

/// Unrouted paths: JSON under `/api/`, a page elsewhere.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let err = AppError::not_found("page", req.path());
    if req.path().starts_with("/api/") {
        use actix_web::ResponseError as _;
        return err.error_response();
    }
    // A logged-in user keeps the menu on the 404 page.
    let session = PortalSession::from_request(&req, &mut actix_web::dev::Payload::None)
        .await
        .ok();
    error_page(tera(), session.as_ref(), &err)
}

/// A malformed query string: the API's JSON 422 under `/api/`, an error page elsewhere.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    req: &HttpRequest,
) -> actix_web::Error {
    if req.path().starts_with("/api/") {
        return crate::http::query_error(err, req);
    }
    let page = error_page(
        tera(),
        None,
        &AppError::BadRequest(format!("The address has an invalid parameter: {err}")),
    );
    actix_web::error::InternalError::from_response(err, page).into()
}
