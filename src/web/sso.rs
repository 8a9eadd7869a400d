//! The SSO settings form — the same form for a tenant's admins (on the tenant's site), for a
//! tenant's IT administrator holding a setup link, and for platform admins (in the portal) — and
//! the portal's pages for a tenant's SSO, setup links and sessions.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, web};
use serde::{Deserialize, Serialize};

use super::error::PageResult;
use super::portal::session::{PortalForm, PortalSession};
use super::{Flash, back_or_error, redirect_with, render_status, tera};
use crate::auth::sso::{self, ConnectionTest, SsoSettings, SsoUpdate, TenantUrls};
use crate::context::Context;
use crate::error::{AppError, FieldError};
use crate::identity_providers::ConnectionReport;
use crate::roles::RoleMapping;
use crate::tenants::input::Scopes;
use crate::tenants::{self, Tenant};

/// The form's fields, as posted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SsoForm {
    /// `save` or `test`.
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub oauth_issuer: String,
    #[serde(default)]
    pub client_id: String,
    /// Write-only: empty keeps the current secret. Never rendered back.
    #[serde(default, skip_serializing)]
    pub client_secret: String,
    #[serde(default)]
    pub scopes: String,
    #[serde(default)]
    pub role_claim: String,
    /// One `claim value = role` per line.
    #[serde(default)]
    pub role_values: String,
    #[serde(default)]
    pub default_role: String,
}

impl SsoForm {
    pub fn of(tenant: &Tenant) -> Self {
        SsoForm {
            oauth_issuer: tenant.oauth_issuer.clone().unwrap_or_default(),
            client_id: tenant.client_id.clone().unwrap_or_default(),
            scopes: tenant.scopes.join(" "),
            role_claim: tenant.role_mapping.claim.clone(),
            role_values: tenant
                .role_mapping
                .values
                .iter()
                .map(|(value, role)| format!("{value} = {role}"))
                .collect::<Vec<_>>()
                .join("\n"),
            default_role: tenant.role_mapping.default_role.clone().unwrap_or_default(),
            ..SsoForm::default()
        }
    }

    fn text(value: &str) -> Option<String> {
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// The change the form asks for; empty issuer and client id turn SSO off, an empty secret
    /// keeps the current one.
    pub fn to_update(&self) -> Result<SsoUpdate, AppError> {
        let mut values = BTreeMap::new();
        for (n, line) in self.role_values.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((value, role)) = line.rsplit_once('=') else {
                return Err(AppError::Validation(vec![FieldError::new(
                    "role_mapping.values",
                    "format",
                    format!("line {} must read `claim value = role`", n + 1),
                )]));
            };
            values.insert(value.trim().to_owned(), role.trim().to_owned());
        }
        let issuer = Self::text(&self.oauth_issuer);
        let client_id = Self::text(&self.client_id);
        let client_secret = if !self.client_secret.is_empty() {
            Some(Some(self.client_secret.clone()))
        } else if issuer.is_none() && client_id.is_none() {
            // SSO turned off: the secret goes too (kept as the previous one for a rollback).
            Some(None)
        } else {
            None
        };
        Ok(SsoUpdate {
            oauth_issuer: Some(issuer),
            client_id: Some(client_id),
            client_secret,
            scopes: Self::text(&self.scopes).map(Scopes::Text),
            role_mapping: Some(Some(RoleMapping {
                claim: Self::text(&self.role_claim).unwrap_or_else(|| "groups".into()),
                values,
                default_role: Self::text(&self.default_role),
            })),
        })
    }

    pub fn connection_test(&self) -> ConnectionTest {
        ConnectionTest {
            oauth_issuer: Self::text(&self.oauth_issuer),
            scopes: Self::text(&self.scopes).map(Scopes::Text),
        }
    }
}

/// Field errors by field name, as the form shows them (the mapping's errors on its inputs).
pub fn form_errors(err: &AppError) -> BTreeMap<String, String> {
    err.field_errors()
        .iter()
        .map(|e| {
            let field = if e.field.starts_with("role_mapping.values") {
                "role_values".to_owned()
            } else if e.field == "role_mapping.default_role" {
                "default_role".to_owned()
            } else if e.field == "role_mapping.claim" {
                "role_claim".to_owned()
            } else {
                e.field.clone()
            };
            (field, e.message.clone())
        })
        .collect()
}

/// What the SSO form template needs.
pub fn form_context(
    context: &mut tera::Context,
    tenant: &Tenant,
    form: &SsoForm,
    urls: &TenantUrls,
    errors: &BTreeMap<String, String>,
    report: Option<&ConnectionReport>,
    action: &str,
) {
    let settings = SsoSettings::of(tenant, urls);
    let platform = tenant.slug == tenants::ADMIN_SLUG;
    context.insert("sso", &settings);
    context.insert("form", form);
    context.insert("errors", errors);
    context.insert("report", &report);
    context.insert("form_action", action);
    context.insert("roles", crate::roles::allowed_roles(platform));
}

/// Handles a posted SSO form for `tenant`: `test` reports on the provider, `save` saves.
/// `save` is the closure that stores the change (directly, or through a setup link).
pub enum SsoOutcome {
    Tested(Box<ConnectionReport>),
    Saved(Box<Tenant>),
    Refused(AppError),
}

pub async fn handle_form<F, Fut>(
    ctx: &Context,
    tenant: &Tenant,
    form: &SsoForm,
    address: Option<&str>,
    save: F,
) -> SsoOutcome
where
    F: FnOnce(SsoUpdate) -> Fut,
    Fut: std::future::Future<Output = Result<Tenant, AppError>>,
{
    if form.action == "test" {
        return match sso::test_connection(ctx, tenant, &form.connection_test(), address).await {
            Ok(report) => SsoOutcome::Tested(Box::new(report)),
            Err(err) => SsoOutcome::Refused(err),
        };
    }
    let update = match form.to_update() {
        Ok(update) => update,
        Err(err) => return SsoOutcome::Refused(err),
    };
    match save(update).await {
        Ok(tenant) => SsoOutcome::Saved(Box::new(tenant)),
        Err(err) => SsoOutcome::Refused(err),
    }
}

// ---------------------------------------------------------------------------------------------
// The portal's pages

fn admin_sso_page(
    portal: &PortalSession,
    tenant: &Tenant,
    form: &SsoForm,
    urls: &TenantUrls,
    errors: &BTreeMap<String, String>,
    report: Option<&ConnectionReport>,
    status: actix_web::http::StatusCode,
) -> PageResult {
    let mut context = tera::Context::new();
    form_context(
        &mut context,
        tenant,
        form,
        urls,
        errors,
        report,
        &format!("/tenants/{}/sso", tenant.slug),
    );
    context.insert("tenant", tenant);
    context.insert("nav", "tenants");
    Ok(render_status(
        tera(),
        "tenants/sso.html",
        status,
        Some(portal),
        portal.flash.clone(),
        &mut context,
    )?)
}

/// `GET /tenants/{slug}/sso`.
pub async fn admin_form(
    req: HttpRequest,
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
) -> PageResult {
    let tenant = tenants::get(&ctx, &slug).await?;
    let urls = TenantUrls::new(&ctx.config, &slug, &crate::http::request_origin(&req));
    Ok(admin_sso_page(
        &portal,
        &tenant,
        &SsoForm::of(&tenant),
        &urls,
        &BTreeMap::new(),
        None,
        actix_web::http::StatusCode::OK,
    )?)
}

/// `POST /tenants/{slug}/sso`: test or save.
pub async fn admin_submit(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<SsoForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let tenant = tenants::get(&ctx, &slug).await?;
    let urls = TenantUrls::new(&ctx.config, &slug, &crate::http::request_origin(&req));
    let address = crate::client::Client::of(&req).address_text();
    let outcome = handle_form(&ctx, &tenant, &form, address.as_deref(), |update| {
        let ctx = ctx.clone();
        let actor = portal.actor.clone();
        let slug = slug.clone();
        async move { sso::update(&ctx, &actor, &slug, &update).await }
    })
    .await;
    Ok(match outcome {
        SsoOutcome::Tested(report) => admin_sso_page(
            &portal,
            &tenant,
            &form,
            &urls,
            &BTreeMap::new(),
            Some(&report),
            actix_web::http::StatusCode::OK,
        )?,
        SsoOutcome::Saved(_) => redirect_with(
            &format!("/tenants/{slug}#sso"),
            Flash::success("The SSO settings are saved; the next login uses them."),
        ),
        SsoOutcome::Refused(err @ AppError::Validation(_)) => admin_sso_page(
            &portal,
            &tenant,
            &form,
            &urls,
            &form_errors(&err),
            None,
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
        )?,
        SsoOutcome::Refused(err) => return Err(err.into()),
    })
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    expires_in_hours: String,
}

/// `POST /tenants/{slug}/sso/setup-links`: makes a link and shows it once.
pub async fn create_link(
    req: HttpRequest,
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<LinkForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let tenant = tenants::get(&ctx, &slug).await?;
        let hours = match form.expires_in_hours.trim() {
            "" => None,
            text => Some(text.parse::<u32>().map_err(|_| {
                AppError::invalid("expires_in_hours", "number", "must be a whole number")
            })?),
        };
        let urls = TenantUrls::new(&ctx.config, &slug, &crate::http::request_origin(&req));
        let link =
            sso::create_setup_link(&ctx, &portal.actor, &tenant.scope(), hours, &urls).await?;
        Ok::<_, AppError>((tenant, link))
    }
    .await;
    match result {
        Ok((tenant, link)) => {
            let mut context = tera::Context::new();
            context.insert("tenant", &tenant);
            context.insert("link", &link);
            context.insert("nav", "tenants");
            Ok(portal.page("tenants/setup_link.html", context)?)
        }
        Err(err) => back_or_error(&format!("/tenants/{slug}#sso"), err),
    }
}

/// `POST /tenants/{slug}/sso/setup-links/{id}/revoke`.
pub async fn revoke_link(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: PortalForm,
) -> PageResult {
    let (portal, _form) = (form.session, form.fields);
    portal.require_admin()?;
    let (slug, id) = path.into_inner();
    let tenant = tenants::get(&ctx, &slug).await?;
    sso::revoke_setup_link(&ctx, &portal.actor, &tenant.scope(), &id).await?;
    Ok(redirect_with(
        &format!("/tenants/{slug}#sso"),
        Flash::success("The setup link no longer works."),
    ))
}

/// `POST /tenants/{slug}/sessions/{handle}/revoke`: signs a tenant's user out.
pub async fn revoke_session(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: PortalForm,
) -> PageResult {
    let (slug, handle) = path.into_inner();
    let place = super::portal::tenant_actions::PortalTenant::of(&ctx, form.session, &slug).await?;
    super::keys::revoke_session(&ctx, &place, &handle).await
}

/// `POST /tenants/{slug}/health/oauth`: the OAuth health check, as a flash on the tenant page.
pub async fn check_oauth(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    let _portal = form.session;
    let health = sso::oauth_health(&ctx, &slug).await?;
    let timing = |p: &Option<crate::identity_providers::Probe>| {
        p.as_ref()
            .map_or("—".to_owned(), |p| format!("{} ms", p.response_time_ms))
    };
    let message = format!(
        "OAuth provider: {} (discovery {}, keys {}: {} key(s)){}",
        health.status,
        timing(&health.discovery),
        timing(&health.jwks),
        health.keys,
        if health.problems.is_empty() {
            String::new()
        } else {
            format!(" — {}", health.problems.join("; "))
        }
    );
    let flash = if health.status == "healthy" {
        Flash::success(message)
    } else {
        Flash::error(message)
    };
    Ok(redirect_with(&format!("/tenants/{slug}#sso"), flash))
}
