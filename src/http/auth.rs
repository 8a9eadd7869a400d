//! actix-web middleware and extractors of who is calling the API, and the request facts every
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
use crate::metrics::Throttle;
use crate::quotas::meter::RequestRefused;

/// An authenticated API caller (`Authorization: Bearer …`); 401 otherwise.
pub struct ApiCaller {
    pub principal: Principal,
    pub actor: Actor,
}

/// The source address and request id of a request, as an audit [`Actor`] named `name`.
pub fn actor_for(req: &HttpRequest, name: &str) -> Actor {
    Actor {
        name: name.to_owned(),
        source_ip: crate::client::Client::of(req).address_text(),
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
        let address = crate::client::of_service_request(&req).address_text();
        let principal = match token {
            Some(token) => match auth::authenticate_key(&ctx, &token, address.as_deref()).await? {
                auth::KeyOutcome::Authenticated(principal) => Some(principal),
                auth::KeyOutcome::Refused => None,
                auth::KeyOutcome::TenantInactive { slug, status } => {
                    return Err(AppError::forbidden(format!(
                            "tenant {slug} is {status}: its API keys are refused until it is active again"
                        ))
                        .into());
                }
                auth::KeyOutcome::Blocked(wait) => {
                    ctx.metrics.refusals.count(Throttle::AbuseBlock);
                    return Err(blocked(wait));
                }
            },
            None => session_principal(&ctx, req.request()).await?,
        };
        let mut budget = None;
        if let Some(principal) = principal {
            match crate::quotas::meter::admit_request(&ctx, &principal).await {
                Ok(admitted) => budget = admitted,
                Err(RequestRefused::KeyLimit { per_minute, wait }) => {
                    ctx.metrics.refusals.count(Throttle::KeyLimit);
                    return Err(AppError::RateLimited {
                        what: format!(
                            "key `{}` allows {per_minute} requests a minute",
                            principal.name
                        ),
                        retry_after_secs: wait.as_secs().max(1),
                    }
                    .into());
                }
                Err(RequestRefused::Calls(refused)) => {
                    ctx.metrics.refusals.count(Throttle::TenantBudget);
                    if let Some(tenant) = &principal.tenant {
                        // The tenant's own view of being throttled (its `throttled` alert).
                        ctx.alert_signals.record_throttled(&tenant.id);
                    }
                    let slug = principal.tenant.as_ref().map_or("", |t| t.slug.as_str());
                    return Err(too_many_calls(slug, &refused));
                }
                Err(RequestRefused::Unavailable(detail)) => {
                    return Err(AppError::Unavailable(detail).into());
                }
            }
            req.extensions_mut().insert(principal);
        }
        let mut response = next.call(req).await?;
        if let Some(budget) = budget
            && let Some(limit) = budget.limit
        {
            rate_limit_headers(
                response.headers_mut(),
                limit,
                budget.remaining,
                budget.reset,
            );
        }
        return Ok(response);
    }
    next.call(req).await
}

/// 429 for a failed key attempt from a blocked address or against a blocked key.
fn blocked(wait: std::time::Duration) -> actix_web::Error {
    AppError::RateLimited {
        what: "too many failed API-key attempts".into(),
        retry_after_secs: wait.as_secs().max(1),
    }
    .into()
}

/// The IETF `RateLimit-Policy` and `RateLimit` headers of the per-minute API budget.
fn rate_limit_headers(
    headers: &mut actix_web::http::header::HeaderMap,
    limit: u64,
    remaining: u64,
    reset: std::time::Duration,
) {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let policy = format!("\"api_calls_per_minute\";q={limit};w=60");
    let state = format!(
        "\"api_calls_per_minute\";r={remaining};t={}",
        reset.as_secs().max(1)
    );
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// 429 for a call past the tenant's API-call limit, with `Retry-After` and the `RateLimit`
/// headers.
fn too_many_calls(slug: &str, refused: &crate::throttle::CallRefused) -> actix_web::Error {
    let per = if refused.metric == "api_calls_per_minute" {
        "a minute"
    } else {
        "a month"
    };
    let err = AppError::RateLimited {
        what: format!(
            "tenant {slug} may make {} API calls {per} ({}); wait, or ask for a higher limit",
            refused.limit, refused.metric
        ),
        retry_after_secs: refused.retry_after.as_secs().max(1),
    };
    let mut response = actix_web::ResponseError::error_response(&err);
    if refused.metric == "api_calls_per_minute" {
        rate_limit_headers(
            response.headers_mut(),
            refused.limit,
            0,
            refused.retry_after,
        );
    }
    actix_web::error::InternalError::from_response(err, response).into()
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
        .strip_prefix(super::TENANT_API_PREFIX)
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
/// read-only one. Decided before the request body is read, so that a refused caller learns
/// nothing from the body's rules. (A route of one tenant takes a `TenantPath` instead.)
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
