//! Portal pages of the tenant registry: the list, a tenant's page, and the create and edit forms.

use std::collections::BTreeMap;

use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::audit::{self, AuditQuery};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::input::Scopes;
use crate::tenants::model::Contact;
use crate::tenants::{self, NewTenant, TenantPatch, TenantQuery, TenantStatus, Tier, Transition};
use crate::web::error::PageResult;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, redirect_with};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    tier: Option<String>,
    cursor: Option<String>,
}

fn choices() -> (Vec<&'static str>, Vec<&'static str>) {
    (
        TenantStatus::ALL.iter().map(|s| s.as_str()).collect(),
        Tier::ALL.iter().map(|t| t.as_str()).collect(),
    )
}

pub async fn list(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<ListQuery>,
) -> PageResult {
    let query = query.into_inner();
    let page = tenants::list(
        &ctx,
        &TenantQuery {
            status: query.status.clone(),
            tier: query.tier.clone(),
            q: query.q.clone(),
            cursor: query.cursor.clone(),
            limit: Some(25),
        },
    )
    .await?;
    let (statuses, tiers) = choices();
    let mut context = tera::Context::new();
    context.insert("page", &page);
    context.insert("q", &query.q.unwrap_or_default());
    context.insert("status", &query.status.unwrap_or_default());
    context.insert("tier", &query.tier.unwrap_or_default());
    context.insert(
        "is_first_page",
        &query.cursor.as_deref().unwrap_or("").is_empty(),
    );
    context.insert("statuses", &statuses);
    context.insert("tiers", &tiers);
    context.insert("nav", "tenants");
    Ok(portal.page("tenants/list.html", context)?)
}

/// The fields of the create and edit forms, as typed (secrets are never sent back to the page).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct TenantForm {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tier: String,
    #[serde(default)]
    trial_days: String,
    #[serde(default)]
    contact_name: String,
    #[serde(default)]
    contact_email: String,
    #[serde(default)]
    contact_phone: String,
    #[serde(default)]
    oauth_issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default, skip_serializing)]
    client_secret: String,
    #[serde(default)]
    scopes: String,
    #[serde(default, skip_serializing)]
    db_uri: String,
    #[serde(default)]
    default_schema: String,
    #[serde(default)]
    metadata: String,
}

fn opt(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl TenantForm {
    fn contact(&self) -> Contact {
        Contact {
            name: opt(&self.contact_name),
            email: opt(&self.contact_email),
            phone: opt(&self.contact_phone),
        }
    }

    fn metadata(&self) -> AppResult<Option<Map<String, Value>>> {
        match opt(&self.metadata) {
            None => Ok(None),
            Some(text) => serde_json::from_str::<Map<String, Value>>(&text)
                .map(Some)
                .map_err(|_| {
                    AppError::invalid(
                        "metadata",
                        "json",
                        "must be a JSON object like {\"region\": \"eu\"}",
                    )
                }),
        }
    }

    fn to_new_tenant(&self) -> AppResult<NewTenant> {
        let trial_days = match opt(&self.trial_days) {
            None => None,
            Some(days) => Some(days.parse::<i64>().map_err(|_| {
                AppError::invalid("trial_days", "integer", "must be a whole number of days")
            })?),
        };
        Ok(NewTenant {
            slug: self.slug.trim().to_owned(),
            name: self.name.clone(),
            tier: opt(&self.tier),
            trial_days,
            contact: Some(self.contact()),
            metadata: self.metadata()?,
            oauth_issuer: opt(&self.oauth_issuer),
            client_id: opt(&self.client_id),
            client_secret: (!self.client_secret.is_empty()).then(|| self.client_secret.clone()),
            scopes: opt(&self.scopes).map(Scopes::Text),
            db_uri: opt(&self.db_uri),
            default_schema: opt(&self.default_schema),
            role_mapping: None,
        })
    }

    /// A PATCH from the edit form: empty secret fields leave the secrets as they are.
    fn to_patch(&self) -> AppResult<TenantPatch> {
        Ok(TenantPatch {
            name: Some(self.name.clone()),
            tier: opt(&self.tier),
            contact: Some(Some(self.contact())),
            metadata: Some(self.metadata()?.unwrap_or_default()),
            oauth_issuer: Some(opt(&self.oauth_issuer)),
            client_id: Some(opt(&self.client_id)),
            client_secret: (!self.client_secret.is_empty())
                .then(|| Some(self.client_secret.clone())),
            scopes: opt(&self.scopes).map(Scopes::Text),
            db_uri: (!self.db_uri.is_empty()).then(|| Some(self.db_uri.clone())),
            default_schema: Some(opt(&self.default_schema)),
            ..TenantPatch::default()
        })
    }

    fn from_tenant(tenant: &tenants::Tenant) -> Self {
        TenantForm {
            slug: tenant.slug.clone(),
            name: tenant.name.clone(),
            tier: tenant.tier.to_string(),
            contact_name: tenant.contact.name.clone().unwrap_or_default(),
            contact_email: tenant.contact.email.clone().unwrap_or_default(),
            contact_phone: tenant.contact.phone.clone().unwrap_or_default(),
            oauth_issuer: tenant.oauth_issuer.clone().unwrap_or_default(),
            client_id: tenant.client_id.clone().unwrap_or_default(),
            scopes: tenant.scopes.join(","),
            default_schema: tenant.default_schema.clone().unwrap_or_default(),
            metadata: if tenant.metadata.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&tenant.metadata).unwrap_or_default()
            },
            ..TenantForm::default()
        }
    }
}

/// Renders the create or edit form with the values typed and the errors per field.
pub(super) fn form_page(
    portal: &PortalSession,
    mode: &str,
    form: &TenantForm,
    tenant: Option<&tenants::Tenant>,
    err: Option<&AppError>,
) -> PageResult {
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    if let Some(err) = err {
        for field in err.field_errors() {
            let key = field.field.replace("contact.", "contact_");
            errors.entry(key).or_insert_with(|| field.message.clone());
        }
        if let AppError::Conflict { details, .. } = err
            && details.get("field").and_then(Value::as_str) == Some("slug")
        {
            errors.insert("slug".into(), "is already taken by another tenant".into());
        }
    }
    let (_, tiers) = choices();
    let mut context = tera::Context::new();
    context.insert("mode", mode);
    context.insert("form", form);
    context.insert("tenant", &tenant);
    context.insert("errors", &errors);
    context.insert("tiers", &tiers);
    context.insert("nav", "tenants");
    Ok(portal.form_page("tenants/form.html", context, err, !errors.is_empty(), None)?)
}

pub async fn new_form(portal: PortalSession) -> PageResult {
    let form = TenantForm {
        tier: "free".into(),
        scopes: "openid,profile,email".into(),
        ..TenantForm::default()
    };
    Ok(form_page(&portal, "create", &form, None, None)?)
}

pub async fn create(ctx: web::Data<Context>, form: PortalForm<TenantForm>) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = match form.to_new_tenant() {
        Ok(request) => tenants::create(&ctx, &portal.actor, &request).await,
        Err(err) => Err(err),
    };
    Ok(match result {
        Ok(tenant) => redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!("Tenant {} created.", tenant.slug)),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            form_page(&portal, "create", &form, None, Some(&err))?
        }
        Err(err) => return Err(err.into()),
    })
}

/// A lifecycle action the detail page offers for the tenant's status.
#[derive(Debug, Serialize)]
struct ActionView {
    action: &'static str,
    label: &'static str,
    danger: bool,
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    /// `?drift=1` asks every backend whether the tenant's resources are still as provisioned.
    drift: Option<String>,
}

/// The tenant's resources in the backends, its recent runs and (when asked for) each backend's
/// health, the drift found and the repair that would mend it.
#[derive(Debug, Serialize)]
struct BackendsView {
    resources: Vec<crate::provisioning::ResourceView>,
    runs: Vec<crate::provisioning::RunView>,
    health: Option<crate::provisioning::BackendHealth>,
    drift: Option<crate::provisioning::DriftReport>,
    /// The steps a repair re-applies (when something drifted and the tenant is live).
    repair: Option<crate::provisioning::ReconcilePlan>,
    /// Why the drift check could not run at all.
    drift_error: Option<String>,
}

async fn check_backends(
    ctx: &Context,
    tenant: &tenants::Tenant,
    resources: &[crate::provisioning::ResourceView],
) -> AppResult<(
    crate::provisioning::BackendHealth,
    crate::provisioning::DriftReport,
    Option<crate::provisioning::ReconcilePlan>,
)> {
    let health = crate::provisioning::backend_health(ctx, tenant).await?;
    let report = crate::provisioning::DriftReport {
        tenant: tenant.slug.clone(),
        checked_at: health.checked_at.clone(),
        resources: resources.to_vec(),
        drift: health
            .backends
            .iter()
            .flat_map(|b| b.drift.iter().cloned())
            .collect(),
        errors: health
            .backends
            .iter()
            .filter_map(|b| {
                b.error.as_ref().map(|e| crate::provisioning::DriftItem {
                    plugin: b.plugin.clone(),
                    resource: "*".into(),
                    problem: e.clone(),
                })
            })
            .collect(),
    };
    let repair = if !report.drift.is_empty() && tenant.status.is_active() {
        Some(
            crate::provisioning::reconcile_plan(
                ctx,
                tenant,
                crate::provisioning::TemplateVersions::Recorded,
            )
            .await?,
        )
    } else {
        None
    };
    Ok((health, report, repair))
}

async fn backends_view(
    ctx: &Context,
    tenant: &tenants::Tenant,
    check_drift: bool,
) -> AppResult<BackendsView> {
    let resources = crate::provisioning::resources(ctx, tenant).await?;
    let runs = crate::provisioning::list_runs(ctx, Some(&tenant.slug), None, 10).await?;
    let mut view = BackendsView {
        resources,
        runs,
        health: None,
        drift: None,
        repair: None,
        drift_error: None,
    };
    if check_drift {
        match check_backends(ctx, tenant, &view.resources).await {
            Ok((health, drift, repair)) => {
                view.health = Some(health);
                view.drift = Some(drift);
                view.repair = repair;
            }
            Err(AppError::Internal(inner)) => {
                tracing::error!("drift check of {}: {inner:#}", tenant.slug);
                view.drift_error =
                    Some("the drift check failed on our side; the error was logged".to_owned());
            }
            Err(err) => view.drift_error = Some(err.to_string()),
        }
    }
    Ok(view)
}

pub async fn detail(
    req: actix_web::HttpRequest,
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> PageResult {
    let tenant = tenants::get(&ctx, &slug).await?;
    let check_drift = query
        .drift
        .as_deref()
        .is_some_and(|d| !d.is_empty() && d != "0");
    let backends = backends_view(&ctx, &tenant, check_drift).await?;
    let history = tenants::history(&ctx, &tenant).await?;
    let usage = crate::quotas::summary(&ctx, &tenant).await?;
    let events = audit::list(
        &ctx.db,
        &AuditQuery {
            tenant: Some(tenant.slug.clone()),
            limit: Some(20),
            ..AuditQuery::default()
        },
    )
    .await?;
    let actions: Vec<ActionView> = Transition::ALL
        .iter()
        .filter(|t| t.target(tenant.status, false).is_some())
        .filter(|_| tenant.slug != tenants::ADMIN_SLUG)
        .map(|t| ActionView {
            action: t.as_str(),
            label: match t {
                Transition::Suspend => "Suspend",
                Transition::Reactivate => "Reactivate",
                Transition::Cancel => "Cancel",
                Transition::Delete => "Delete",
                Transition::Restore => "Restore",
                Transition::Convert => "Convert to active",
            },
            danger: matches!(
                t,
                Transition::Suspend | Transition::Cancel | Transition::Delete
            ),
        })
        .collect();
    let scope = tenant.scope();
    let api_keys = crate::auth::list_tenant_keys(&ctx, &scope).await?;
    let urls = crate::auth::sso::TenantUrls::new(
        &ctx.config,
        &tenant.slug,
        &crate::http::request_origin(&req),
    );
    let mut context = tera::Context::new();
    context.insert("sso", &crate::auth::sso::SsoSettings::of(&tenant, &urls));
    context.insert(
        "setup_links",
        &crate::auth::sso::list_setup_links(&ctx, &scope).await?,
    );
    context.insert(
        "sessions",
        &crate::auth::list_tenant_sessions(&ctx, &scope).await?,
    );
    context.insert("tenant", &tenant);
    context.insert("api_keys", &api_keys);
    context.insert("backends", &backends);
    context.insert("drift_checked", &check_drift);
    context.insert("history", &history);
    context.insert(
        "quota_rows",
        &super::alerts::quota_form_rows(&usage.metrics, None, &Default::default()),
    );
    context.insert("usage", &usage);
    context.insert("alerts", &crate::alerts::open_of(&ctx, &tenant).await?);
    context.insert("events", &events.items);
    context.insert("actions", &actions);
    context.insert(
        "can_purge",
        &(tenant.status.is_purgeable() && tenant.slug != tenants::ADMIN_SLUG),
    );
    // A canceled or deleted tenant is purged by the `retention` job when its retention ends.
    context.insert(
        "auto_purge",
        &(ctx.config.jobs.retention_interval_seconds > 0),
    );
    context.insert(
        "trial_over",
        &tenant
            .trial_ends_at
            .is_some_and(|end| end.naive_utc() <= crate::clock::now()),
    );
    // What the `trials` job does when the trial ends (nothing when the job is off).
    if ctx.config.jobs.trials_interval_seconds > 0 {
        context.insert(
            "trial_end",
            match ctx.config.trials.end_action {
                crate::config::TrialEndAction::Suspend => "then it is suspended",
                crate::config::TrialEndAction::Convert => "then it becomes active",
            },
        );
    }
    context.insert("nav", "tenants");
    Ok(portal.page("tenants/detail.html", context)?)
}

pub async fn edit_form(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
) -> PageResult {
    let tenant = tenants::get(&ctx, &slug).await?;
    form_page(
        &portal,
        "edit",
        &TenantForm::from_tenant(&tenant),
        Some(&tenant),
        None,
    )
}

pub async fn update(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<TenantForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = match form.to_patch() {
        Ok(patch) => crate::lifecycle::patch_tenant(&ctx, &portal.actor, &slug, &patch).await,
        Err(err) => Err(err),
    };
    Ok(match result {
        Ok(tenant) => redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!("Tenant {} saved.", tenant.slug)),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            let tenant = tenants::get(&ctx, &slug).await.ok();
            let mut form = form;
            form.slug = slug.to_string();
            form_page(&portal, "edit", &form, tenant.as_ref(), Some(&err))?
        }
        Err(err) => return Err(err.into()),
    })
}
