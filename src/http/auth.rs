//! actix-web middleware and extractors of who is calling the API: who is calling, and the request facts every
//! audit record carries (source address, request id).
//!
//! Authentication runs as middleware, before any extractor: a request without a valid token is
//! answered 401 before its body is even read, so a malformed body never tells an anonymous
//! caller anything, and the token lookup is never cancelled by a failing sibling extractor.

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use futures_util::future::{Ready, ready};

use crate::audit::Actor;
use crate::auth::{self, Principal, SessionKind};
use crate::context::Context;
use crate::error::AppError;

/// An authenticated API caller (`Authorization: Bearer …`); 401 otherwise.
pub struct ApiCaller {
    pub principal: Principal,
    pub actor: Actor,
}

/// The source address and request id of a request, as an audit [`Actor`] named `name`.
pub fn actor_for(req: &HttpRequest, name: &str) -> Actor {
    Actor {
        name: name.to_owned(),
        source_ip: req.peer_addr().map(|addr| addr.ip().to_string()),
        request_id: req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string()),
    }
}

/// Middleware: resolves the credentials of `/api/` requests into a [`Principal`] kept in the
/// request's extensions, where [`ApiCaller`] finds it. A bearer token comes first; without one,
/// a session cookie (the platform's, then a tenant's) authenticates too, and a request that
/// changes something must then carry the session's CSRF token in `X-CSRF-Token`.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.path().starts_with("/api/")
        && let Some(ctx) = req.app_data::<web::Data<Context>>().cloned()
    {
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned());
        let principal = match token {
            Some(token) => {
                let address = req.peer_addr().map(|a| a.ip().to_string());
                match auth::authenticate_key(&ctx, &token, address.as_deref()).await? {
                    auth::KeyOutcome::Authenticated(principal) => {
                        if let Some((key_id, Some(per_minute))) = &principal.key
                            && let Err(wait) = ctx.key_limits.check(key_id, *per_minute)
                        {
                            return Err(AppError::RateLimited {
                                what: format!(
                                    "key `{}` allows {per_minute} requests a minute",
                                    principal.name
                                ),
                                retry_after_secs: wait.as_secs().max(1),
                            }
                            .into());
                        }
                        Some(principal)
                    }
                    auth::KeyOutcome::Refused => None,
                    auth::KeyOutcome::TenantInactive { slug, status } => {
                        return Err(AppError::forbidden(format!(
                            "tenant {slug} is {status}: its API keys are refused until it is active again"
                        ))
                        .into());
                    }
                    auth::KeyOutcome::Blocked(wait) => {
                        return Err(AppError::RateLimited {
                            what: "too many failed API-key attempts".into(),
                            retry_after_secs: wait.as_secs().max(1),
                        }
                        .into());
                    }
                }
            }
            None => session_principal(&ctx, req.request()).await?,
        };
        if let Some(principal) = principal {
            req.extensions_mut().insert(principal);
        }
    }
    next.call(req).await
}

/// The principal of a session cookie, for an API request without a token.
async fn session_principal(
    ctx: &Context,
    req: &HttpRequest,
) -> Result<Option<Principal>, AppError> {
    // The portal's session, else the session of the tenant the route names.
    let mut candidates = vec![(super::SESSION_COOKIE.to_owned(), SessionKind::Platform)];
    if let Some(slug) = req
        .path()
        .strip_prefix("/api/v1/tenant/")
        .and_then(|rest| rest.split('/').next())
        .filter(|slug| !slug.is_empty())
    {
        candidates.push((super::tenant_session_cookie(slug), SessionKind::Tenant));
    }
    for (name, kind) in candidates {
        let Some(cookie) = req.cookie(&name) else {
            continue;
        };
        let Some(session) = auth::load_session(ctx, cookie.value(), kind).await? else {
            continue;
        };
        let safe = matches!(
            *req.method(),
            actix_web::http::Method::GET
                | actix_web::http::Method::HEAD
                | actix_web::http::Method::OPTIONS
        );
        if !safe {
            let submitted = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !auth::csrf_matches(&session.csrf_token, submitted) {
                return Err(AppError::forbidden(
                    "a request authenticated by a session cookie that changes something needs the \
                     session's CSRF token in the X-CSRF-Token header",
                ));
            }
        }
        return Ok(Some(session.principal));
    }
    Ok(None)
}

impl FromRequest for ApiCaller {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let principal = req.extensions().get::<Principal>().cloned();
        ready(
            principal
                .ok_or(AppError::Unauthorized)
                .map(|principal| ApiCaller {
                    actor: actor_for(req, &principal.name),
                    principal,
                }),
        )
    }
}

/// An API caller allowed to change things (platform-admin); 401 without a token, 403 for a
/// read-only one — decided before the request body is read.
pub struct ApiAdmin(pub ApiCaller);

impl std::ops::Deref for ApiAdmin {
    type Target = ApiCaller;

    fn deref(&self) -> &ApiCaller {
        &self.0
    }
}

impl FromRequest for ApiAdmin {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = ApiCaller::from_request(req, payload).into_inner();
        ready(caller.and_then(|caller| {
            caller.principal.require_admin()?;
            Ok(ApiAdmin(caller))
        }))
    }
}

/// An API caller allowed to administer the tenant of the route's `{slug}` (platform admins, and
/// that tenant's admins); decided before the request body is read, like [`ApiAdmin`].
pub struct TenantAdminCaller(pub ApiCaller);

impl std::ops::Deref for TenantAdminCaller {
    type Target = ApiCaller;

    fn deref(&self) -> &ApiCaller {
        &self.0
    }
}

impl FromRequest for TenantAdminCaller {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = ApiCaller::from_request(req, payload).into_inner();
        let slug = req.match_info().get("slug").unwrap_or_default().to_owned();
        ready(caller.and_then(|caller| {
            caller.principal.require_tenant_admin(&slug)?;
            Ok(TenantAdminCaller(caller))
        }))
    }
}

/// An API caller allowed to read the tenant of the route's `{slug}` (the platform, and that
/// tenant's principals; another tenant's get 404); decided before the request body is read.
pub struct TenantReader(pub ApiCaller);

impl std::ops::Deref for TenantReader {
    type Target = ApiCaller;

    fn deref(&self) -> &ApiCaller {
        &self.0
    }
}

impl FromRequest for TenantReader {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = ApiCaller::from_request(req, payload).into_inner();
        let slug = req.match_info().get("slug").unwrap_or_default().to_owned();
        ready(caller.and_then(|caller| {
            caller.principal.require_tenant_read(&slug)?;
            Ok(TenantReader(caller))
        }))
    }
}
