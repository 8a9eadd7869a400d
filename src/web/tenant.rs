//! A tenant's own pages: its login page, the round trip to its identity provider, and — once
//! logged in — its home page (who is logged in, their role; for tenant admins the tenant's API
//! keys, sessions and SSO settings), logout, and the SSO setup link page.
//!
//! The platform's own tenant `admin` uses the same round trip; its users get a portal session.

use std::collections::BTreeMap;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::pages::{LoginError, login_page, safe_next};
use super::session::{SESSION_COOKIE, read_flash, session_cookie, tenant_session_cookie};
use super::site::{TenantPage, TenantSession, TenantSite, unavailable_page};
use super::sso::{SsoForm, SsoOutcome, form_context, form_errors, handle_form};
use super::tenants::KeyForm;
use super::{Flash, redirect_with, tera};
use crate::auth::login::{self, CallbackParams, LOGIN_BROWSER_COOKIE, LoginFailure};
use crate::auth::sso::{self, TenantUrls};
use crate::auth::{self, Role, TenantScope};
use crate::context::Context;
use crate::error::AppError;
use crate::http::actor_for;
use crate::tenants::{self, ADMIN_SLUG};

/// Renders one of the tenant site's pages with what every page shows: the tenant, who is
/// logged in, the CSRF token of their session, a flash message.
fn render(
    template: &str,
    page: &TenantPage,
    session: Option<&TenantSession>,
    flash: Option<Flash>,
    mut context: tera::Context,
    status: StatusCode,
) -> HttpResponse {
    context.insert("tenant_name", &page.tenant.name);
    context.insert("tenant_slug", &page.tenant.slug);
    context.insert("base", &page.site.prefix);
    if let Some(ts) = session {
        let principal = &ts.session.principal;
        let user = ts.session.user.as_ref();
        context.insert(
            "user",
            &user
                .and_then(|u| u.name.clone().or_else(|| u.email.clone()))
                .unwrap_or_else(|| principal.name.clone()),
        );
        context.insert("user_email", &user.and_then(|u| u.email.clone()));
        context.insert("user_subject", &user.map(|u| u.subject.clone()));
        context.insert("role", principal.role.as_str());
        context.insert("csrf", &ts.session.csrf_token);
        context.insert("is_tenant_admin", &(principal.role == Role::TenantAdmin));
        context.insert("session_handle", &ts.session.handle);
    }
    let flash_shown = flash.is_some();
    context.insert("flash", &flash);
    match tera().render(template, &context) {
        Ok(html) => super::html_response(
            status,
            html,
            session.and_then(|ts| ts.session.user.as_ref().map(|u| u.issuer.as_str())),
            flash_shown,
        ),
        Err(err) => {
            tracing::error!("rendering {template}: {err:?}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

/// An error on a logged-in tenant page.
fn error(ts: &TenantSession, err: &AppError) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut context = tera::Context::new();
    context.insert("title", "Not possible");
    context.insert("message", &super::error_message(err));
    render(
        "tenant/message.html",
        &ts.page,
        Some(ts),
        None,
        context,
        err.status_code(),
    )
}

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
) -> HttpResponse {
    if slug.as_str() == ADMIN_SLUG {
        return HttpResponse::SeeOther()
            .insert_header(("Location", "/login"))
            .finish();
    }
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    if TenantSession::of(&req, &ctx, &page).await.is_some() {
        return HttpResponse::SeeOther()
            .insert_header(("Location", next_within(&page.site, query.next.as_deref())))
            .finish();
    }
    tenant_login_page(
        &page,
        query.next.as_deref(),
        None,
        StatusCode::OK,
        read_flash(&req),
    )
}

/// A refused login, on the page the user started from.
async fn refused(
    req: &HttpRequest,
    ctx: &Context,
    page: &TenantPage,
    next: Option<&str>,
    failure: &LoginFailure,
) -> HttpResponse {
    let error = LoginError::from(failure);
    let mut response = if page.tenant.slug == ADMIN_SLUG {
        login_page(req, ctx, next, Some(&error), failure.status).await
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
    response
}

/// `GET /t/{slug}/login/oauth`: sends the browser to the tenant's identity provider.
pub async fn start(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    query: web::Query<LoginQuery>,
) -> HttpResponse {
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    let next = if slug.as_str() == ADMIN_SLUG {
        safe_next(query.next.as_deref())
    } else {
        next_within(&page.site, query.next.as_deref())
    };
    let browser = req
        .cookie(LOGIN_BROWSER_COOKIE)
        .map(|c| c.value().to_owned());
    let address = req.peer_addr().map(|a| a.ip().to_string());
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
        Err(failure) => refused(&req, &ctx, &page, Some(&next), &failure).await,
    }
}

/// `GET /t/{slug}/callback`: the identity provider sends the browser back here. A login that
/// passes every check starts a session; any other is refused with a page that says why, and
/// nothing is created.
pub async fn callback(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    query: web::Query<CallbackParams>,
) -> HttpResponse {
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => {
            ctx.metrics
                .auth_attempts
                .with_label_values(&[slug.as_str(), "oidc"])
                .inc();
            ctx.metrics
                .auth_failures
                .with_label_values(&[slug.as_str(), "oidc", "tenant_unavailable"])
                .inc();
            return response;
        }
    };
    let browser = req
        .cookie(LOGIN_BROWSER_COOKIE)
        .map(|c| c.value().to_owned());
    let user = match login::finish_login(&ctx, &page.tenant, &query, browser.as_deref()).await {
        Ok(user) => user,
        Err(failure) => return refused(&req, &ctx, &page, None, &failure).await,
    };
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
            super::error_page(tera(), None, &err)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[expect(
    clippy::result_large_err,
    reason = "the error is the page to answer with, built once per refused request"
)]
fn check_csrf(ts: &TenantSession, submitted: &str) -> Result<(), HttpResponse> {
    if auth::csrf_matches(&ts.session.csrf_token, submitted) {
        Ok(())
    } else {
        Err(error(
            ts,
            &AppError::forbidden(
                "the form expired or did not come from this site (CSRF check failed); reload the page and try again",
            ),
        ))
    }
}

/// A form only the tenant's admins may send.
#[expect(
    clippy::result_large_err,
    reason = "the error is the page to answer with, built once per refused request"
)]
fn admin_form(ts: &TenantSession, submitted: &str) -> Result<TenantScope, HttpResponse> {
    check_csrf(ts, submitted)?;
    let scope = ts
        .session
        .principal
        .tenant
        .clone()
        .ok_or_else(|| error(ts, &AppError::forbidden("not a tenant session")))?;
    ts.session
        .principal
        .require_tenant_admin(&scope.slug)
        .map_err(|err| error(ts, &err))?;
    Ok(scope)
}

/// `POST /t/{slug}/logout`: ends the session here and, when the provider offers it, there too.
pub async fn logout(
    ctx: web::Data<Context>,
    ts: TenantSession,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    if let Err(page) = check_csrf(&ts, &form.csrf) {
        return page;
    }
    let provider = match auth::end_session(&ctx, &ts.session, &ts.actor).await {
        Ok(provider) => provider,
        Err(err) => return error(&ts, &err),
    };
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
    HttpResponse::SeeOther()
        .insert_header((
            "Location",
            at_provider.unwrap_or_else(|| ts.page.site.path("/logged-out")),
        ))
        .cookie(removal(tenant_session_cookie(&ts.page.tenant.slug)))
        .finish()
}

/// `GET /t/{slug}/logged-out`: where the provider sends the browser after logout.
pub async fn logged_out(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
) -> HttpResponse {
    if slug.as_str() == ADMIN_SLUG {
        return redirect_with("/login", Flash::success("You are logged out."));
    }
    let page = match TenantPage::resolve(&req, &ctx, &slug).await {
        Ok(page) => page,
        Err(response) => return response,
    };
    let mut response = tenant_login_page(
        &page,
        None,
        None,
        StatusCode::OK,
        Some(Flash::success("You are signed out.")),
    );
    let _ = response.add_cookie(&removal(tenant_session_cookie(&page.tenant.slug)));
    response
}

/// `GET /t/{slug}` → the home page.
pub async fn home_redirect(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", TenantSite::of(&req, &ctx, &slug).path("/")))
        .finish()
}

/// `GET /t/{slug}/`: who is logged in; for tenant admins the tenant's keys, sessions and SSO.
pub async fn home(req: HttpRequest, ctx: web::Data<Context>, ts: TenantSession) -> HttpResponse {
    let result = async {
        let mut context = tera::Context::new();
        let scope = ts
            .session
            .principal
            .tenant
            .clone()
            .ok_or_else(|| AppError::forbidden("not a tenant session"))?;
        if ts.session.principal.role == Role::TenantAdmin {
            let tenant = tenants::get(&ctx, &scope.slug).await?;
            let urls =
                TenantUrls::new(&ctx.config, &scope.slug, &crate::http::request_origin(&req));
            context.insert("api_keys", &auth::list_tenant_keys(&ctx, &scope).await?);
            context.insert("sessions", &auth::list_tenant_sessions(&ctx, &scope).await?);
            context.insert("sso", &sso::SsoSettings::of(&tenant, &urls));
        }
        Ok::<_, AppError>(context)
    }
    .await;
    match result {
        Ok(context) => render(
            "tenant/home.html",
            &ts.page,
            Some(&ts),
            ts.flash.clone(),
            context,
            StatusCode::OK,
        ),
        Err(err) => error(&ts, &err),
    }
}

/// `POST /t/{slug}/sessions/{handle}/revoke`: a tenant admin signs a user out.
pub async fn revoke_session(
    ctx: web::Data<Context>,
    ts: TenantSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let scope = match admin_form(&ts, &form.csrf) {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let (_, handle) = path.into_inner();
    match auth::revoke_tenant_session(&ctx, &ts.actor, &scope, &handle).await {
        Ok(()) => redirect_with(
            &format!("{}#sessions", ts.page.site.path("/")),
            Flash::success("The user is signed out."),
        ),
        Err(err) => error(&ts, &err),
    }
}

fn key_page(
    ts: &TenantSession,
    key: &auth::NewApiToken,
    grace_minutes: Option<u32>,
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("key", key);
    context.insert("rotated", &grace_minutes.is_some());
    context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
    render(
        "tenant/key_created.html",
        &ts.page,
        Some(ts),
        None,
        context,
        StatusCode::OK,
    )
}

fn keys_back(ts: &TenantSession, flash: Flash) -> HttpResponse {
    redirect_with(&format!("{}#api-keys", ts.page.site.path("/")), flash)
}

/// `POST /t/{slug}/api-keys`: a tenant admin makes a key; it is shown once.
pub async fn create_key(
    ctx: web::Data<Context>,
    ts: TenantSession,
    form: web::Form<KeyForm>,
) -> HttpResponse {
    let scope = match admin_form(&ts, &form.csrf) {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let result =
        async { auth::create_key(&ctx, &ts.actor, Some(&scope), &form.spec()?).await }.await;
    match result {
        Ok(key) => key_page(&ts, &key, None),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            keys_back(&ts, Flash::error(err.to_string()))
        }
        Err(err) => error(&ts, &err),
    }
}

/// `POST /t/{slug}/api-keys/{id}/revoke`.
pub async fn revoke_key(
    ctx: web::Data<Context>,
    ts: TenantSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let scope = match admin_form(&ts, &form.csrf) {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let (_, id) = path.into_inner();
    match auth::revoke_key(&ctx, &ts.actor, &scope, &id).await {
        Ok(()) => keys_back(&ts, Flash::success("The key is revoked.")),
        Err(err) => error(&ts, &err),
    }
}

/// `POST /t/{slug}/api-keys/{id}/rotate`: a new key (shown once); the old one works for the
/// grace period.
pub async fn rotate_key(
    ctx: web::Data<Context>,
    ts: TenantSession,
    path: web::Path<(String, String)>,
    form: web::Form<KeyForm>,
) -> HttpResponse {
    let scope = match admin_form(&ts, &form.csrf) {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let (_, id) = path.into_inner();
    let result = async {
        let grace = form.grace()?;
        let key = auth::rotate_key(&ctx, &ts.actor, Some(&scope), &id, grace).await?;
        Ok::<_, AppError>((key, grace))
    }
    .await;
    match result {
        Ok((key, grace)) => key_page(&ts, &key, Some(grace)),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            keys_back(&ts, Flash::error(err.to_string()))
        }
        Err(err) => error(&ts, &err),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one page, several independent pieces of what it shows"
)]
fn sso_page(
    req: &HttpRequest,
    ctx: &Context,
    page: &TenantPage,
    session: Option<&TenantSession>,
    tenant: &tenants::Tenant,
    form: &SsoForm,
    errors: &BTreeMap<String, String>,
    report: Option<&crate::identity_providers::ConnectionReport>,
    action: &str,
    status: StatusCode,
) -> HttpResponse {
    let urls = TenantUrls::new(&ctx.config, &tenant.slug, &crate::http::request_origin(req));
    let mut context = tera::Context::new();
    form_context(&mut context, tenant, form, &urls, errors, report, action);
    context.insert("setup_link", &session.is_none());
    render(
        "tenant/sso.html",
        page,
        session,
        session.and_then(|s| s.flash.clone()),
        context,
        status,
    )
}

/// `GET /t/{slug}/settings/sso`: a tenant admin's SSO settings form.
pub async fn sso_form(
    req: HttpRequest,
    ctx: web::Data<Context>,
    ts: TenantSession,
) -> HttpResponse {
    if ts.session.principal.role != Role::TenantAdmin {
        return error(
            &ts,
            &AppError::forbidden("the SSO settings are for the tenant's admins"),
        );
    }
    match tenants::get(&ctx, &ts.page.tenant.slug).await {
        Ok(tenant) => sso_page(
            &req,
            &ctx,
            &ts.page,
            Some(&ts),
            &tenant,
            &SsoForm::of(&tenant),
            &BTreeMap::new(),
            None,
            &ts.page.site.path("/settings/sso"),
            StatusCode::OK,
        ),
        Err(err) => error(&ts, &err),
    }
}

/// `POST /t/{slug}/settings/sso`: test the provider, or save.
pub async fn sso_submit(
    req: HttpRequest,
    ctx: web::Data<Context>,
    ts: TenantSession,
    form: web::Form<SsoForm>,
) -> HttpResponse {
    let scope = match admin_form(&ts, &form.csrf) {
        Ok(scope) => scope,
        Err(page) => return page,
    };
    let tenant = match tenants::get(&ctx, &scope.slug).await {
        Ok(tenant) => tenant,
        Err(err) => return error(&ts, &err),
    };
    let action = ts.page.site.path("/settings/sso");
    let outcome = handle_form(&ctx, &tenant, &form, |update| {
        let ctx = ctx.clone();
        let actor = ts.actor.clone();
        let slug = scope.slug.clone();
        async move { sso::update(&ctx, &actor, &slug, &update).await }
    })
    .await;
    match outcome {
        SsoOutcome::Tested(report) => sso_page(
            &req,
            &ctx,
            &ts.page,
            Some(&ts),
            &tenant,
            &form,
            &BTreeMap::new(),
            Some(&report),
            &action,
            StatusCode::OK,
        ),
        SsoOutcome::Saved(_) => redirect_with(
            &format!("{}#sso", ts.page.site.path("/")),
            Flash::success("The SSO settings are saved; the next login uses them."),
        ),
        SsoOutcome::Refused(err @ AppError::Validation(_)) => sso_page(
            &req,
            &ctx,
            &ts.page,
            Some(&ts),
            &tenant,
            &form,
            &form_errors(&err),
            None,
            &action,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        SsoOutcome::Refused(err) => error(&ts, &err),
    }
}

/// The page a setup link opens; 404 for an unknown link, 403 for a used or expired one.
async fn setup_page(
    req: &HttpRequest,
    ctx: &Context,
    slug: &str,
    token: &str,
) -> Result<(TenantPage, tenants::Tenant), HttpResponse> {
    let page = TenantPage::resolve(req, ctx, slug).await?;
    match sso::open_setup_link(ctx, slug, token).await {
        Ok(tenant) => Ok((page, tenant)),
        Err(err) => {
            use actix_web::ResponseError as _;
            Err(unavailable_page(
                err.status_code(),
                "Setup link",
                &match err {
                    AppError::NotFound { .. } => {
                        "This setup link is not valid. Please check that you copied all of it."
                            .to_owned()
                    }
                    other => other.to_string(),
                },
            ))
        }
    }
}

/// `GET /t/{slug}/setup/{token}`: the SSO settings form, for whoever holds the link.
pub async fn setup_form(
    req: HttpRequest,
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (slug, token) = path.into_inner();
    match setup_page(&req, &ctx, &slug, &token).await {
        Ok((page, tenant)) => {
            let action = page.site.path(&format!("/setup/{token}"));
            sso_page(
                &req,
                &ctx,
                &page,
                None,
                &tenant,
                &SsoForm::of(&tenant),
                &BTreeMap::new(),
                None,
                &action,
                StatusCode::OK,
            )
        }
        Err(response) => response,
    }
}

/// `POST /t/{slug}/setup/{token}`: test, or save — which uses the link up.
pub async fn setup_submit(
    req: HttpRequest,
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: web::Form<SsoForm>,
) -> HttpResponse {
    let (slug, token) = path.into_inner();
    let (page, tenant) = match setup_page(&req, &ctx, &slug, &token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // The link itself is the credential: the form carries no CSRF token of a session, and the
    // token in the address is what a forged form could not know.
    let actor = actor_for(&req, "setup-link");
    let action = page.site.path(&format!("/setup/{token}"));
    let outcome = handle_form(&ctx, &tenant, &form, |update| {
        let ctx = ctx.clone();
        let slug = slug.clone();
        let token = token.clone();
        async move { sso::use_setup_link(&ctx, &actor, &slug, &token, &update).await }
    })
    .await;
    match outcome {
        SsoOutcome::Tested(report) => sso_page(
            &req,
            &ctx,
            &page,
            None,
            &tenant,
            &form,
            &BTreeMap::new(),
            Some(&report),
            &action,
            StatusCode::OK,
        ),
        SsoOutcome::Saved(saved) => {
            let mut context = tera::Context::new();
            context.insert("title", "SSO is set up");
            context.insert(
                "message",
                &format!(
                    "The single sign-on settings of {} are saved, and this setup link no longer \
                     works. Users can now sign in at {}.",
                    saved.name,
                    page.site.url("/login")
                ),
            );
            render(
                "tenant/message.html",
                &page,
                None,
                None,
                context,
                StatusCode::OK,
            )
        }
        SsoOutcome::Refused(err @ AppError::Validation(_)) => sso_page(
            &req,
            &ctx,
            &page,
            None,
            &tenant,
            &form,
            &form_errors(&err),
            None,
            &action,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        SsoOutcome::Refused(err) => {
            use actix_web::ResponseError as _;
            unavailable_page(err.status_code(), "Setup link", &err.to_string())
        }
    }
}
