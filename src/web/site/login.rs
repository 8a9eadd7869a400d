//! A tenant's login: its login page, the round trip to its identity provider (start and
//! callback), and logout — here and, when the provider offers it, at the provider.
//!
//! The platform's own tenant `admin` uses the same round trip; its users get a portal session.

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::{SiteForm, TenantPage, TenantSession, TenantSite, render};
use crate::auth::login::{self, CallbackParams, LOGIN_BROWSER_COOKIE, LoginFailure};
use crate::auth::{self};
use crate::context::Context;
use crate::http::actor_for;
use crate::tenants::ADMIN_SLUG;
use crate::web::error::PageResult;
use crate::web::portal::pages::{LoginError, login_page, safe_next};
use crate::web::portal::session::{
    SESSION_COOKIE, read_flash, session_cookie, tenant_session_cookie,
};
use crate::web::{Flash, redirect_with, tera};

fn cookie(
    name: impl Into<String>,
    value: String,
    secure: bool,
    max_age: Option<i64>,
) -> Cookie<'static> {
    let mut builder = Cookie::build(name.into(), value)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax);
    if let Some(secs) = max_age {
        builder = builder.max_age(CookieDuration::seconds(secs));
    }
    builder.finish()
}

fn removal(name: impl Into<String>) -> Cookie<'static> {
    let mut cookie = Cookie::build(name.into(), "").path("/").finish();
    cookie.make_removal();
    cookie
}

/// `next` if it stays on this tenant's site, else the tenant's home page.
fn next_within(site: &TenantSite, next: Option<&str>) -> String {
    let next = safe_next(next);
    let inside = site.prefix.is_empty()
        || next == site.prefix
        || next.starts_with(&format!("{}/", site.prefix))
        || next.starts_with(&format!("{}?", site.prefix));
    if inside && next != "/" {
        next
    } else {
        site.path("/")
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn tenant_login_page(
    page: &TenantPage,
    next: Option<&str>,
    error: Option<&LoginError>,
    status: StatusCode,
    flash: Option<Flash>,
) -> HttpResponse {
    let next = next_within(&page.site, next);
    let encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let mut context = tera::Context::new();
    context.insert(
        "configured",
        &(page.tenant.oauth_issuer.is_some() && page.tenant.client_id.is_some()),
    );
    context.insert(
        "start_url",
        &format!("{}?next={encoded}", page.site.path("/login/oauth")),
    );
    context.insert("error", &error);
    render("tenant/login.html", page, None, flash, context, status)
}

/// `GET /t/{slug}/login`: the tenant's login page.
pub async fn login(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    query: web::Query<LoginQuery>,
) -> PageResult {
    if slug.as_str() == ADMIN_SLUG {
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", "/login"))
            .finish());
    }
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return Ok(response),
    };
    if TenantSession::of(&req, &ctx, &page).await.is_some() {
        return Ok(HttpResponse::SeeOther()
            .insert_header(("Location", next_within(&page.site, query.next.as_deref())))
            .finish());
    }
    Ok(tenant_login_page(
        &page,
        query.next.as_deref(),
        None,
        StatusCode::OK,
        read_flash(&req),
    ))
}

/// A refused login, on the page the user started from.
async fn refused(
    req: &HttpRequest,
    ctx: &Context,
    page: &TenantPage,
    next: Option<&str>,
    failure: &LoginFailure,
) -> PageResult {
    let error = LoginError::from(failure);
    if failure.status == actix_web::http::StatusCode::TOO_MANY_REQUESTS {
        ctx.metrics
            .refusals
            .count(crate::metrics::Throttle::AbuseBlock);
    }
    let mut response = if page.tenant.slug == ADMIN_SLUG {
        login_page(req, ctx, next, Some(&error), failure.status).await?
    } else {
        tenant_login_page(page, next, Some(&error), failure.status, None)
    };
    if let Some(secs) = failure.retry_after
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(&secs.to_string())
    {
        response
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    Ok(response)
}

/// `GET /t/{slug}/login/oauth`: sends the browser to the tenant's identity provider.
pub async fn start(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    query: web::Query<LoginQuery>,
) -> PageResult {
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return Ok(response),
    };
    let next = if slug.as_str() == ADMIN_SLUG {
        safe_next(query.next.as_deref())
    } else {
        next_within(&page.site, query.next.as_deref())
    };
    let browser = req
        .cookie(LOGIN_BROWSER_COOKIE)
        .map(|c| c.value().to_owned());
    let address = crate::client::Client::of(&req).address_text();
    Ok(
        match login::begin_login(
            &ctx,
            &page.tenant,
            &page.site.url("/callback"),
            Some(&next),
            browser.as_deref(),
            address.as_deref(),
        )
        .await
        {
            Ok(start) => HttpResponse::SeeOther()
                .insert_header(("Location", start.authorize_url))
                .cookie(cookie(
                    LOGIN_BROWSER_COOKIE,
                    start.browser_cookie,
                    page.site.secure,
                    Some(i64::from(ctx.config.auth.login_attempt_minutes) * 60),
                ))
                .finish(),
            Err(failure) => return refused(&req, &ctx, &page, Some(&next), &failure).await,
        },
    )
}

/// `GET /t/{slug}/callback`: the identity provider sends the browser back here. A login that
/// passes every check starts a session; any other is refused with a page that says why, and
/// nothing is created.
pub async fn callback(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    query: web::Query<CallbackParams>,
) -> PageResult {
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => {
            // A slug no tenant has is `unknown`: a label of whatever a client sends would make
            // a series for each.
            let label = if response.status() == actix_web::http::StatusCode::NOT_FOUND {
                "unknown"
            } else {
                slug.as_str()
            };
            ctx.metrics
                .auth_attempts
                .with_label_values(&[label, "oidc"])
                .inc();
            ctx.metrics
                .auth_failures
                .with_label_values(&[label, "oidc", "tenant_unavailable"])
                .inc();
            return Ok(response);
        }
    };
    let browser = req
        .cookie(LOGIN_BROWSER_COOKIE)
        .map(|c| c.value().to_owned());
    let address = crate::client::Client::of(&req).address_text();
    let user = match login::finish_login(
        &ctx,
        &page.tenant,
        &query,
        browser.as_deref(),
        address.as_deref(),
    )
    .await
    {
        Ok(user) => user,
        Err(failure) => return refused(&req, &ctx, &page, None, &failure).await,
    };
    // The users quota: a new user past a hard limit is refused; known users always get in.
    if !user.platform {
        match crate::quotas::admit_user(&ctx, &page.tenant, &user.issuer, &user.subject).await {
            Ok(()) => {}
            Err(crate::error::AppError::QuotaExceeded { details, .. }) => {
                ctx.metrics.refusals.count(crate::metrics::Throttle::Quota);
                ctx.metrics
                    .quota_rejections
                    .with_label_values(&["users", page.tenant.tier.as_str()])
                    .inc();
                let limit = details["limit"].as_u64().unwrap_or_default();
                let failure = LoginFailure::user_limit(&page.tenant.name, limit);
                return refused(&req, &ctx, &page, None, &failure).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
    let principal = user.principal();
    let actor = actor_for(&req, &principal.name);
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    let cookie_name = if user.platform {
        SESSION_COOKIE.to_owned()
    } else {
        tenant_session_cookie(&page.tenant.slug)
    };
    // The browser's earlier session of this tenant (or of the portal) is replaced.
    let previous = req.cookie(&cookie_name).map(|c| c.value().to_owned());
    Ok(
        match auth::start_session(
            &ctx,
            &principal,
            &actor,
            user_agent,
            Some(&user),
            previous.as_deref(),
        )
        .await
        {
            Ok((value, _)) => {
                let (location, session) = if user.platform {
                    (
                        safe_next(user.next.as_deref()),
                        session_cookie(&value, page.site.secure),
                    )
                } else {
                    (
                        next_within(&page.site, user.next.as_deref()),
                        cookie(cookie_name.clone(), value, page.site.secure, None),
                    )
                };
                HttpResponse::SeeOther()
                    .insert_header(("Location", location))
                    .cookie(session)
                    .finish()
            }
            Err(err) => {
                tracing::error!(tenant = %slug, "starting a session: {err}");
                crate::web::error_page(tera(), None, &err)
            }
        },
    )
}

/// `POST /t/{slug}/logout`: ends the session here and, when the provider offers it, there too.
pub async fn logout(ctx: web::Data<Context>, form: SiteForm) -> PageResult {
    let ts = form.session;
    let provider = auth::end_session(&ctx, &ts.session, &ts.actor).await?;
    let logged_out = ts.page.site.url("/logged-out");
    let at_provider = match provider {
        Some(logout) => {
            crate::identity_providers::end_session_url(
                &ctx.providers,
                &logout.issuer,
                ts.page.tenant.client_id.as_deref(),
                logout.id_token.as_deref(),
                &logged_out,
            )
            .await
        }
        None => None,
    };
    Ok(HttpResponse::SeeOther()
        .insert_header((
            "Location",
            at_provider.unwrap_or_else(|| ts.page.site.path("/logged-out")),
        ))
        .cookie(removal(tenant_session_cookie(&ts.page.tenant.slug)))
        .finish())
}

/// `GET /t/{slug}/logged-out`: where the provider sends the browser after logout.
pub async fn logged_out(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
) -> PageResult {
    if slug.as_str() == ADMIN_SLUG {
        return Ok(redirect_with(
            "/login",
            Flash::success("You are logged out."),
        ));
    }
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return Ok(response),
    };
    let mut response = tenant_login_page(
        &page,
        None,
        None,
        StatusCode::OK,
        Some(Flash::success("You are signed out.")),
    );
    let _ = response.add_cookie(&removal(tenant_session_cookie(&page.tenant.slug)));
    Ok(response)
}
