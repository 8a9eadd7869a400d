//! The one error of page handlers. A handler returns [`PageResult`] and uses `?` on what it
//! calls; an error becomes the error page of where it happened — a tenant's site, or the portal
//! — with who is logged in (the [`error_pages`] middleware renders it, from the session the
//! handler's extractor left in the request).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError};

use super::portal::session::PortalSession;
use super::site::TenantSession;
use crate::error::AppError;

/// An error a page handler stops with.
#[derive(Debug)]
pub struct PageError(pub AppError);

/// What a page handler answers.
pub type PageResult = Result<HttpResponse, PageError>;

impl From<AppError> for PageError {
    fn from(err: AppError) -> Self {
        PageError(err)
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    /// The page without anyone's menu; [`error_pages`] replaces it with the full one.
    fn error_response(&self) -> HttpResponse {
        super::error_page(super::tera(), None, &self.0)
    }
}

/// Middleware: a [`PageError`] answered by a handler is shown as the error page of the place it
/// happened in, with the session of whoever is logged in there.
pub async fn error_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let response = next.call(req).await?;
    let Some(err) = response
        .response()
        .error()
        .and_then(|e| e.as_error::<PageError>())
    else {
        return Ok(response.map_into_left_body());
    };
    let page = page_of(response.request(), &err.0);
    Ok(response.into_response(page).map_into_right_body())
}

fn page_of(req: &HttpRequest, err: &AppError) -> HttpResponse {
    let extensions = req.extensions();
    if let Some(ts) = extensions.get::<TenantSession>() {
        return super::site::error(ts, err);
    }
    super::error_page(super::tera(), extensions.get::<PortalSession>(), err)
}
