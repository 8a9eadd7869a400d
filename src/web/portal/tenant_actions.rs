//! What a platform admin does to one tenant from its page: lifecycle actions, purge, repair of
//! drift, export, the client secret's rollback, the database check, and its API keys (with the shared
//! key handlers).

use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::{self, Transition};
use crate::web::error::PageResult;
use crate::web::keys::{self, KeyForm, KeysPlace};
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, back_or_error, redirect_with, render, tera};
use actix_web::{HttpResponse, web};
use serde::Deserialize;

/// The repair button: which template versions to render the drifted steps from.
#[derive(Debug, Deserialize)]
pub struct ReconcileForm {
    #[serde(default)]
    templates: crate::provisioning::TemplateVersions,
}

#[derive(Debug, Deserialize)]
pub struct LifecycleForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn lifecycle(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<LifecycleForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let location = format!("/tenants/{slug}");
    let Ok(transition) = form.action.parse::<Transition>() else {
        return Ok(redirect_with(
            &location,
            Flash::error(format!("Unknown action `{}`.", form.action)),
        ));
    };
    Ok(
        match crate::lifecycle::transition(&ctx, &portal.actor, &slug, transition, &form.reason)
            .await
        {
            Ok(tenant) => redirect_with(
                &location,
                Flash::success(format!("Tenant {} is now {}.", tenant.slug, tenant.status)),
            ),
            Err(err @ AppError::Validation(_)) => redirect_with(
                &location,
                Flash::error(format!(
                    "Please give a reason to {} the tenant ({err}).",
                    transition.as_str()
                )),
            ),
            Err(err) => return back_or_error(&location, err),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct PurgeForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn purge(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<PurgeForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let force = form
        .force
        .as_deref()
        .is_some_and(|f| f == "on" || f == "true");
    match crate::lifecycle::purge(&ctx, &portal.actor, &slug, force, &form.reason).await {
        Ok(Some(run)) => Ok(redirect_with(
            &format!("/runs/{run}"),
            Flash::success(format!(
                "Tenant {slug} was purged; this run undoes it in its backends."
            )),
        )),
        Ok(None) => Ok(redirect_with(
            "/tenants",
            Flash::success(format!("Tenant {slug} was purged.")),
        )),
        Err(err) => back_or_error(&format!("/tenants/{slug}"), err),
    }
}

/// Repairs drift: the backends are asked again what drifted, and exactly those steps are
/// re-applied; the page of the run that does it.
pub async fn reconcile(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<ReconcileForm>,
) -> PageResult {
    form.session.require_admin()?;
    let location = format!("/tenants/{slug}");
    let tenant = tenants::get(&ctx, &slug).await?;
    let repaired = async {
        let plan =
            crate::provisioning::reconcile_plan(&ctx, &tenant, form.fields.templates).await?;
        crate::provisioning::reconcile(&ctx, &form.session.actor, &tenant, plan).await
    }
    .await;
    match repaired {
        Ok(plan) => match &plan.run {
            Some(run) => Ok(redirect_with(
                &format!("/runs/{run}"),
                Flash::success(format!(
                    "Repair of {slug} queued: {} step(s) re-applied.",
                    plan.steps.len()
                )),
            )),
            None => Ok(redirect_with(
                &format!("{location}?drift=1#backends"),
                Flash::success(format!("Nothing of {slug} has drifted: nothing to repair.")),
            )),
        },
        Err(err) => back_or_error(&location, err),
    }
}

/// Provisions a failed tenant again; the page of the run that does it.
pub async fn retry_provision(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    form.session.require_admin()?;
    let location = format!("/tenants/{slug}");
    let tenant = tenants::get(&ctx, &slug).await?;
    match crate::provisioning::retry(&ctx, &form.session.actor, &tenant).await {
        Ok(accepted) => Ok(redirect_with(
            &format!("/runs/{}", accepted.run),
            Flash::success(format!("{slug} is being provisioned again.")),
        )),
        Err(err) => back_or_error(&location, err),
    }
}

/// Downloads the tenant's bundle (its record with sealed secrets, and its status history).
pub async fn export(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    form.session.require_admin()?;
    let bundle = tenants::record::export(&ctx, &form.session.actor, &slug).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"tenant-{slug}.json\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(serde_json::to_string_pretty(&bundle).unwrap_or_default()))
}

/// Downloads the tenant's whole bundle (`tenantry.tenant-bundle/v2`, a tar archive).
pub async fn bundle(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    form.session.require_admin()?;
    let location = format!("/tenants/{slug}");
    let bundle = match crate::bundles::export(
        &ctx,
        &form.session.actor,
        &slug,
        crate::bundles::ExportOptions::default(),
    )
    .await
    {
        Ok(bundle) => bundle,
        Err(err @ AppError::Unavailable(_)) => {
            return Ok(redirect_with(
                &location,
                Flash::error(format!("The bundle was not made: {err}")),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    Ok(HttpResponse::Ok()
        .content_type(crate::bundles::MEDIA_TYPE)
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"tenant-{slug}.tar\""),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .body(bundle.to_tar()?))
}

/// Swaps the client secret back to the one before the last rotation.
pub async fn rollback_secret(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    form.session.require_admin()?;
    let location = format!("/tenants/{slug}");
    match tenants::rollback_client_secret(&ctx, &form.session.actor, &slug).await {
        Ok(tenant) => Ok(redirect_with(
            &location,
            Flash::success(format!(
                "The client secret of {} is back to {}.",
                tenant.slug,
                tenant.client_secret.fingerprint.as_deref().unwrap_or("-")
            )),
        )),
        Err(err) => back_or_error(&location, err),
    }
}

/// Checks the tenant's database connection and reports it as a flash message.
pub async fn check_database(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    let _portal = form.session;
    let location = format!("/tenants/{slug}");
    let report = crate::tenant_health::tenant_database(&ctx, &slug).await?;
    Ok(if report.status == "connected" {
        redirect_with(
            &location,
            Flash::success(format!(
                "Database connected in {:.1} ms.",
                report.response_time_ms.unwrap_or_default()
            )),
        )
    } else {
        redirect_with(
            &location,
            Flash::error(format!(
                "Database {}: {}",
                report.status.replace('_', " "),
                report.detail.unwrap_or_default()
            )),
        )
    })
}

/// The portal's tenant page, as the place where a platform admin manages the tenant's keys and
/// sessions.
pub struct PortalTenant {
    portal: PortalSession,
    scope: crate::tenants::TenantScope,
}

impl PortalTenant {
    /// Tenant `slug`'s keys, managed by the administrator of `portal`.
    pub async fn of(ctx: &Context, portal: PortalSession, slug: &str) -> AppResult<PortalTenant> {
        portal.session.principal.require_admin()?;
        let scope = tenants::get(ctx, slug).await?.scope();
        Ok(PortalTenant { portal, scope })
    }
}

impl KeysPlace for PortalTenant {
    fn scope(&self) -> &crate::tenants::TenantScope {
        &self.scope
    }

    fn actor(&self) -> &crate::audit::Actor {
        &self.portal.actor
    }

    fn back(&self, section: &str) -> String {
        format!("/tenants/{}#{section}", self.scope.slug)
    }

    fn show_key(&self, key: &crate::auth::NewApiToken, grace_minutes: Option<u32>) -> PageResult {
        let mut context = tera::Context::new();
        context.insert("slug", &self.scope.slug);
        context.insert("key", key);
        context.insert("rotated", &grace_minutes.is_some());
        context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
        context.insert("nav", "tenants");
        Ok(render(
            tera(),
            "tenants/key_created.html",
            Some(&self.portal),
            None,
            context,
        )?)
    }
}

/// Creates an API key of the tenant and shows it once.
pub async fn create_key(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<KeyForm>,
) -> PageResult {
    let place = PortalTenant::of(&ctx, form.session, &slug).await?;
    keys::create_key(&ctx, &place, &form.fields).await
}

/// Revokes an API key of the tenant.
pub async fn revoke_key(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: PortalForm,
) -> PageResult {
    let (slug, id) = path.into_inner();
    let place = PortalTenant::of(&ctx, form.session, &slug).await?;
    keys::revoke_key(&ctx, &place, &id).await
}

/// Rotates an API key of the tenant and shows the new one once.
pub async fn rotate_key(
    ctx: web::Data<Context>,
    path: web::Path<(String, String)>,
    form: PortalForm<KeyForm>,
) -> PageResult {
    let (slug, id) = path.into_inner();
    let place = PortalTenant::of(&ctx, form.session, &slug).await?;
    keys::rotate_key(&ctx, &place, &id, &form.fields).await
}
