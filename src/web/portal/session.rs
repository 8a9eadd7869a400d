//! The portal's session extractor, CSRF check and cookies.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;

pub use crate::http::{SESSION_COOKIE, tenant_session_cookie};
use crate::web::Flash;
use crate::web::error::PageError;
use crate::web::form::{CsrfForm, FormSession, NoFields};

use crate::audit::Actor;
use crate::auth::{self, Session};
use crate::context::Context;
use crate::error::AppError;
use crate::http::actor_for;
pub const LOGIN_CSRF_COOKIE: &str = "tenantry_login_csrf";
pub const FLASH_COOKIE: &str = "tenantry_flash";

/// A logged-in portal user. Pages that take it redirect to `/login` when there is none. The
/// extractor also leaves it in the request, for the error page (see `web::error`).
#[derive(Clone)]
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
            PortalRejection::App(err) => crate::web::error_page(crate::web::tera(), None, err),
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
            let portal = PortalSession {
                session,
                actor,
                flash: read_flash(&req),
            };
            req.extensions_mut().insert(portal.clone());
            Ok(portal)
        });
        Box::pin(async move {
            task.await.map_err(|e| {
                PortalRejection::App(AppError::internal(anyhow::anyhow!("session task: {e}")))
            })?
        })
    }
}

impl PortalSession {
    /// Renders a portal page for this session: who is logged in, the CSRF token and the flash
    /// message it carries.
    pub fn page(&self, template: &str, context: tera::Context) -> Result<HttpResponse, AppError> {
        crate::web::render(
            crate::web::tera(),
            template,
            Some(self),
            self.flash.clone(),
            context,
        )
    }

    /// Renders a form page. Nothing refused: a 200 with this session's flash. A refused
    /// submission: the refusal's status (422 for broken rules) and a flash that points at the
    /// fields the page marks (`marked`) or, where it marks none, says what was wrong; `outcome`
    /// goes first where the page says what did not happen ("Nothing was provisioned.").
    pub fn form_page(
        &self,
        template: &str,
        mut context: tera::Context,
        refused: Option<&AppError>,
        marked: bool,
        outcome: Option<&str>,
    ) -> Result<HttpResponse, AppError> {
        let Some(err) = refused else {
            return self.page(template, context);
        };
        let status = match err {
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            err => err.status_code(),
        };
        let message = if marked {
            "Please correct the fields marked below.".to_string()
        } else {
            err.to_string()
        };
        let message = match outcome {
            Some(outcome) => format!("{outcome} {message}"),
            None => message,
        };
        crate::web::render_status(
            crate::web::tera(),
            template,
            status,
            Some(self),
            Some(Flash::error(message)),
            &mut context,
        )
    }

    /// Refuses a user who is not a platform administrator (a viewer changes nothing).
    pub fn require_admin(&self) -> Result<(), PageError> {
        Ok(self.session.principal.require_admin()?)
    }
}

impl FormSession for PortalSession {
    fn csrf_token(&self) -> &str {
        &self.session.csrf_token
    }
}

/// A form of the portal, from the logged-in user it was shown to.
pub type PortalForm<T = NoFields> = CsrfForm<PortalSession, T>;

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
