//! The portal's session extractor, CSRF check and cookies.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;

use super::Flash;
pub use crate::http::{SESSION_COOKIE, tenant_session_cookie};

use crate::audit::Actor;
use crate::auth::{self, Session};
use crate::context::Context;
use crate::error::AppError;
use crate::http::actor_for;
pub const LOGIN_CSRF_COOKIE: &str = "tenantry_login_csrf";
pub const FLASH_COOKIE: &str = "tenantry_flash";

/// A logged-in portal user. Pages that take it redirect to `/login` when there is none.
pub struct PortalSession {
    pub session: Session,
    pub actor: Actor,
    pub flash: Option<Flash>,
}

/// Why a portal request was turned away.
#[derive(Debug, thiserror::Error)]
pub enum PortalRejection {
    #[error("login required")]
    LoginRequired { next: String },
    #[error(transparent)]
    App(#[from] AppError),
}

impl ResponseError for PortalRejection {
    fn status_code(&self) -> StatusCode {
        match self {
            PortalRejection::LoginRequired { .. } => StatusCode::SEE_OTHER,
            PortalRejection::App(err) => err.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            PortalRejection::LoginRequired { next } => {
                let location = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                HttpResponse::SeeOther()
                    .insert_header(("Location", location))
                    .finish()
            }
            PortalRejection::App(err) => super::error_page(super::tera(), None, err),
        }
    }
}

impl FromRequest for PortalSession {
    type Error = PortalRejection;
    type Future = LocalBoxFuture<'static, Result<Self, PortalRejection>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        // A task of its own, like the API's caller extractor: never cancelled mid-query.
        let task = actix_web::rt::spawn(async move {
            let ctx = req
                .app_data::<web::Data<Context>>()
                .ok_or_else(|| AppError::internal(anyhow::anyhow!("context missing")))?
                .clone();
            let next = req
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string());
            let cookie = req
                .cookie(SESSION_COOKIE)
                .ok_or(PortalRejection::LoginRequired { next: next.clone() })?;
            let session = auth::load_session(&ctx, cookie.value(), auth::SessionKind::Platform)
                .await?
                .ok_or(PortalRejection::LoginRequired { next })?;
            let actor = actor_for(&req, &session.principal.name);
            Ok(PortalSession {
                session,
                actor,
                flash: read_flash(&req),
            })
        });
        Box::pin(async move {
            task.await.map_err(|e| {
                PortalRejection::App(AppError::internal(anyhow::anyhow!("session task: {e}")))
            })?
        })
    }
}

impl PortalSession {
    /// Accepts a form that changes something: its CSRF token must be this session's and the
    /// user an administrator; otherwise the error page to answer with.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the page to answer with, built once per refused request"
    )]
    pub fn accept_admin_form(&self, submitted_csrf: &str) -> Result<(), actix_web::HttpResponse> {
        self.check_csrf(submitted_csrf)
            .and_then(|()| self.session.principal.require_admin())
            .map_err(|err| super::error_page(super::tera(), Some(self), &err))
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), AppError> {
        if auth::csrf_matches(&self.session.csrf_token, submitted) {
            Ok(())
        } else {
            Err(AppError::forbidden(
                "the form expired or did not come from this site (CSRF check failed); reload the page and try again",
            ))
        }
    }
}

pub fn read_flash(req: &HttpRequest) -> Option<Flash> {
    let cookie = req.cookie(FLASH_COOKIE)?;
    serde_json::from_str(&percent_decode(cookie.value())).ok()
}

fn percent_decode(value: &str) -> String {
    url::form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub fn flash_cookie(flash: &Flash) -> Cookie<'static> {
    let value: String = url::form_urlencoded::byte_serialize(
        serde_json::to_string(flash).unwrap_or_default().as_bytes(),
    )
    .collect();
    Cookie::build(FLASH_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(CookieDuration::seconds(60))
        .finish()
}

pub fn clear_flash_cookie() -> Cookie<'static> {
    let mut cookie = Cookie::build(FLASH_COOKIE, "").path("/").finish();
    cookie.make_removal();
    cookie
}

pub fn session_cookie(value: &str, secure: bool) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value.to_owned())
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .finish()
}

pub fn clear_session_cookie() -> Cookie<'static> {
    let mut cookie = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    cookie.make_removal();
    cookie
}

pub fn login_csrf_cookie(value: &str, secure: bool) -> Cookie<'static> {
    Cookie::build(LOGIN_CSRF_COOKIE, value.to_owned())
        .path("/login")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(CookieDuration::hours(1))
        .finish()
}
