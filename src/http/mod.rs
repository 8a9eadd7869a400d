//! What the JSON API and the web pages share about HTTP, below both: who is calling ([`auth`]:
//! the authentication middleware and the `ApiCaller` and `ApiAdmin` extractors), the tenant a
//! route names ([`tenant_path`]: access, span and tenant in one extractor), the JSON body
//! extractor ([`body`], reading through [`strict`]), the bounds on a request's head and body
//! time ([`envelope`]), `HEAD` as `GET` ([`head`]), a tenant's id served as its slug
//! ([`tenant_id`]), the session cookies' names, the origin a request was made to, and the answer
//! to a malformed query string.
//!
//! It knows the services (it authenticates through `auth`). Of the routes it knows only where a
//! tenant is named: [`TENANT_API_PREFIX`] (whose session cookie authenticates an API request,
//! and whose id is read as a slug) and the portal's `/tenants/` — never a route's handler.

pub mod auth;
pub mod body;
pub mod envelope;
pub mod head;
pub mod strict;
pub mod tenant_id;
pub mod tenant_path;

use actix_web::HttpRequest;

pub use auth::{ApiAdmin, ApiCaller, actor_for, authenticate};
pub use body::ApiJson;
pub use tenant_path::TenantPath;

use crate::error::{AppError, FieldError};

pub const SESSION_COOKIE: &str = "tenantry_session";

/// Where the API's routes of one tenant start: `/api/v1/tenant/{slug}/…`.
pub const TENANT_API_PREFIX: &str = "/api/v1/tenant/";
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
