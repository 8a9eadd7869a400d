//! The one CSRF check of every page form: [`CsrfForm`] extracts the session a form belongs to
//! and the form's fields, and refuses (403, nothing done) a form whose `csrf` field is not that
//! session's token — a form that expired, or came from another site.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::PageError;
use crate::auth;
use crate::error::AppError;

/// A session a page form can belong to: the portal's or a tenant's site's.
pub trait FormSession: FromRequest + Sized + 'static {
    /// The CSRF token of the session, which its pages put in every form.
    fn csrf_token(&self) -> &str;
}

/// A form sent by the logged-in user it was shown to: the session and the form's fields.
pub struct CsrfForm<S, T> {
    pub session: S,
    pub fields: T,
}

/// A form with no fields but its CSRF token.
#[derive(Debug, Default, Deserialize)]
pub struct NoFields {}

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

impl<S, T> FromRequest for CsrfForm<S, T>
where
    S: FormSession,
    S::Error: Into<actix_web::Error>,
    T: DeserializeOwned + 'static,
{
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = S::from_request(req, &mut Payload::None);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let session = session.await.map_err(Into::into)?;
            let body = body.await?;
            let token: Token = serde_urlencoded::from_bytes(&body).unwrap_or(Token {
                csrf: String::new(),
            });
            check_csrf(&session, &token.csrf)?;
            let fields = serde_urlencoded::from_bytes(&body).map_err(|err| {
                PageError(AppError::BadRequest(format!(
                    "the form is malformed: {err}"
                )))
            })?;
            Ok(CsrfForm { session, fields })
        })
    }
}

/// Whether `submitted` is the CSRF token of `session`'s pages; a 403 page when it is not.
pub fn check_csrf(session: &impl FormSession, submitted: &str) -> Result<(), PageError> {
    if auth::csrf_matches(session.csrf_token(), submitted) {
        return Ok(());
    }
    Err(PageError(AppError::forbidden(
        "the form expired or did not come from this site (CSRF check failed); reload the page and try again",
    )))
}

/// A filter field as given: trimmed, and none when empty.
pub fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}
