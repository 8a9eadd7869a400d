//! Rendering a page: the common context (who is logged in, the CSRF token, the flash message),
//! the security headers every page carries, the error pages and the portal's 404.

use actix_web::http::StatusCode;
use actix_web::{FromRequest as _, HttpRequest, HttpResponse};
use serde::Serialize;
use tera::Tera;

use super::assets::tera;
use super::error;
use super::portal::session::{self, PortalSession};
use crate::error::AppError;

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
