//! A logged-in user's pages of a tenant's site: the home page (who is logged in and their role;
//! for the tenant's admins its API keys, sessions and SSO settings), and the SSO settings — for
//! its admins, and for whoever holds a setup link.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

use super::{SiteForm, TenantPage, TenantSession, TenantSite, render, unavailable_page};
use crate::auth::sso::{self, TenantUrls};
use crate::auth::{self, Role};
use crate::context::Context;
use crate::error::AppError;
use crate::http::actor_for;
use crate::tenants::{self, TenantScope};
use crate::web::error::{PageError, PageResult};
use crate::web::keys::{self, KeyForm, KeysPlace};
use crate::web::sso::{SsoForm, SsoOutcome, form_context, form_errors, handle_form};
use crate::web::{Flash, redirect_with};

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

/// `GET /t/{slug}/`: who is logged in and the organisation's usage; for tenant admins the
/// tenant's keys, sessions and SSO.
pub async fn home(req: HttpRequest, ctx: web::Data<Context>, ts: TenantSession) -> PageResult {
    let mut context = tera::Context::new();
    context.insert(
        "usage",
        &crate::quotas::summary(&ctx, &ts.page.tenant).await?,
    );
    context.insert(
        "alerts",
        &crate::alerts::open_of(&ctx, &ts.page.tenant).await?,
    );
    if ts.session.principal.role == Role::TenantAdmin {
        let scope = ts.admin_scope()?;
        let tenant = tenants::get(&ctx, &scope.slug).await?;
        let urls = TenantUrls::new(&ctx.config, &scope.slug, &crate::http::request_origin(&req));
        context.insert("api_keys", &auth::list_tenant_keys(&ctx, &scope).await?);
        context.insert("sessions", &auth::list_tenant_sessions(&ctx, &scope).await?);
        context.insert("sso", &sso::SsoSettings::of(&tenant, &urls));
    }
    Ok(render(
        "tenant/home.html",
        &ts.page,
        Some(&ts),
        ts.flash.clone(),
        context,
        StatusCode::OK,
    ))
}

/// A tenant's site, as the place where its admins manage its keys and sessions.
struct SiteKeys {
    ts: TenantSession,
    scope: TenantScope,
}

impl SiteKeys {
    fn of(ts: TenantSession) -> Result<SiteKeys, PageError> {
        let scope = ts.admin_scope()?;
        Ok(SiteKeys { ts, scope })
    }
}

impl KeysPlace for SiteKeys {
    fn scope(&self) -> &TenantScope {
        &self.scope
    }

    fn actor(&self) -> &crate::audit::Actor {
        &self.ts.actor
    }

    fn back(&self, section: &str) -> String {
        format!("{}#{section}", self.ts.page.site.path("/"))
    }

    fn show_key(&self, key: &auth::NewApiToken, grace_minutes: Option<u32>) -> PageResult {
        let mut context = tera::Context::new();
        context.insert("key", key);
        context.insert("rotated", &grace_minutes.is_some());
        context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
        Ok(render(
            "tenant/key_created.html",
            &self.ts.page,
            Some(&self.ts),
            None,
            context,
            StatusCode::OK,
        ))
    }
}

/// `POST /t/{slug}/sessions/{handle}/revoke`: a tenant admin signs a user out.
pub async fn revoke_session(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: SiteForm,
) -> PageResult {
    let (_, handle) = path.into_inner();
    keys::revoke_session(&ctx, &SiteKeys::of(form.session)?, &handle).await
}

/// `POST /t/{slug}/api-keys`: a tenant admin makes a key; it is shown once.
pub async fn create_key(ctx: web::Data<Context>, form: SiteForm<KeyForm>) -> PageResult {
    keys::create_key(&ctx, &SiteKeys::of(form.session)?, &form.fields).await
}

/// `POST /t/{slug}/api-keys/{id}/revoke`.
pub async fn revoke_key(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: SiteForm,
) -> PageResult {
    let (_, id) = path.into_inner();
    keys::revoke_key(&ctx, &SiteKeys::of(form.session)?, &id).await
}

/// `POST /t/{slug}/api-keys/{id}/rotate`: a new key (shown once); the old one works for the
/// grace period.
pub async fn rotate_key(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: SiteForm<KeyForm>,
) -> PageResult {
    let (_, id) = path.into_inner();
    keys::rotate_key(&ctx, &SiteKeys::of(form.session)?, &id, &form.fields).await
}

/// `GET /t/{slug}/settings/sso`: a tenant admin's SSO settings form.
pub async fn sso_form(req: HttpRequest, ctx: web::Data<Context>, ts: TenantSession) -> PageResult {
    let scope = ts.admin_scope()?;
    let tenant = tenants::get(&ctx, &scope.slug).await?;
    Ok(sso_page(
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
    ))
}

/// `POST /t/{slug}/settings/sso`: test the provider, or save.
pub async fn sso_submit(
    req: HttpRequest,
    ctx: web::Data<Context>,
    form: SiteForm<SsoForm>,
) -> PageResult {
    let (ts, form) = (form.session, form.fields);
    let scope = ts.admin_scope()?;
    let tenant = tenants::get(&ctx, &scope.slug).await?;
    let action = ts.page.site.path("/settings/sso");
    let address = crate::client::Client::of(&req).address_text();
    let outcome = handle_form(&ctx, &tenant, &form, address.as_deref(), |update| {
        let ctx = ctx.clone();
        let actor = ts.actor.clone();
        let slug = scope.slug.clone();
        async move { sso::update(&ctx, &actor, &slug, &update).await }
    })
    .await;
    Ok(match outcome {
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
        SsoOutcome::Refused(err) => return Err(err.into()),
    })
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
    let address = crate::client::Client::of(&req).address_text();
    let outcome = handle_form(&ctx, &tenant, &form, address.as_deref(), |update| {
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
