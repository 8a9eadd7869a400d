//! What the JSON API and the web pages share about HTTP, below both: who is calling
//! ([`auth`]: the authentication middleware and the caller extractors), the JSON body extractor
//! ([`body`]), the session cookies' names, the origin a request was made to, and the answer to a
//! malformed query string.
//!
//! It knows the services (it authenticates through `auth`), never the API's routes or the pages.

pub mod auth;
pub mod body;
pub mod envelope;
pub mod head;
pub mod strict;
pub mod tenant_id;

use actix_web::HttpRequest;

pub use auth::{ApiAdmin, ApiCaller, TenantAdminCaller, TenantReader, actor_for, authenticate};
pub use body::ApiJson;

use crate::error::{AppError, FieldError};

pub const SESSION_COOKIE: &str = "tenantry_session";
/// The cookie of a session of tenant `slug`'s user: one per tenant, so that a browser may be in
/// the admin portal and in several tenants at once (on one host, with `/t/<slug>/` addresses).
pub fn tenant_session_cookie(slug: &str) -> String {
    format!("tenantry_tenant_{slug}")
}

/// `scheme://host[:port]` of the request, as the client addressed it (through a trusted proxy,
/// as the proxy says: see `client`).
pub fn request_origin(req: &HttpRequest) -> String {
    crate::client::Client::of(req).origin()
}

/// Maps a malformed query string to a 400 that names the parameter.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    let message = err.to_string();
    let field = message
        .split('`')
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| "query".into());
    AppError::Validation(vec![FieldError::new(field, "query", message)]).into()
}
