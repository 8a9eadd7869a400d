//! Portal pages of the tenant registry: list, detail, create and edit forms, lifecycle actions.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::session::PortalSession;
use super::{Flash, error_page, redirect_with, render, render_status, tera};
use crate::audit::{self, AuditQuery};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::input::Scopes;
use crate::tenants::model::Contact;
use crate::tenants::{self, NewTenant, TenantPatch, TenantQuery, TenantStatus, Tier, Transition};

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
) -> HttpResponse {
    let query = query.into_inner();
    let result = async {
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
        render(
            tera(),
            "tenants/list.html",
            Some(&portal),
            portal.flash.clone(),
            context,
        )
    }
    .await;
    result.unwrap_or_else(|err| error_page(tera(), Some(&portal), &err))
}

/// The fields of the create and edit forms, as typed (secrets are never sent back to the page).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct TenantForm {
    #[serde(default)]
    csrf: String,
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
fn form_page(
    portal: &PortalSession,
    mode: &str,
    form: &TenantForm,
    tenant: Option<&tenants::Tenant>,
    err: Option<&AppError>,
) -> HttpResponse {
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
    let status = match err {
        None => StatusCode::OK,
        Some(AppError::Validation(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(err) => actix_web::ResponseError::status_code(err),
    };
    let flash = err
        .filter(|e| !matches!(e, AppError::Validation(_)) && errors.is_empty())
        .map(|e| Flash::error(e.to_string()));
    let flash = flash.or_else(|| {
        err.is_some()
            .then(|| Flash::error("Please correct the fields marked below."))
    });
    render_status(
        tera(),
        "tenants/form.html",
        status,
        Some(portal),
        flash,
        &mut context,
    )
    .unwrap_or_else(|e| error_page(tera(), Some(portal), &e))
}

pub async fn new_form(portal: PortalSession) -> HttpResponse {
    let form = TenantForm {
        tier: "free".into(),
        scopes: "openid,profile,email".into(),
        ..TenantForm::default()
    };
    form_page(&portal, "create", &form, None, None)
}

pub async fn create(
    ctx: web::Data<Context>,
    portal: PortalSession,
    form: web::Form<TenantForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let result = match form.to_new_tenant() {
        Ok(request) => tenants::create(&ctx, &portal.actor, &request).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(tenant) => redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!("Tenant {} created.", tenant.slug)),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            form_page(&portal, "create", &form, None, Some(&err))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
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

/// The tenant's resources in the backends, its recent runs and (when asked for) the drift report.
#[derive(Debug, Serialize)]
struct BackendsView {
    resources: Vec<crate::provisioning::ResourceView>,
    runs: Vec<crate::provisioning::RunView>,
    drift: Option<crate::provisioning::DriftReport>,
    /// Why the drift check could not run at all.
    drift_error: Option<String>,
}

async fn backends_view(
    ctx: &Context,
    tenant: &tenants::Tenant,
    check_drift: bool,
) -> AppResult<BackendsView> {
    let resources = crate::provisioning::resources(ctx, tenant).await?;
    let runs = crate::provisioning::list_runs(ctx, Some(&tenant.slug), None, 10).await?;
    let (drift, drift_error) = if check_drift {
        match crate::provisioning::drift(ctx, tenant).await {
            Ok(report) => (Some(report), None),
            Err(AppError::Internal(inner)) => {
                tracing::error!("drift check of {}: {inner:#}", tenant.slug);
                (
                    None,
                    Some("the drift check failed on our side; the error was logged".to_owned()),
                )
            }
            Err(err) => (None, Some(err.to_string())),
        }
    } else {
        (None, None)
    };
    Ok(BackendsView {
        resources,
        runs,
        drift,
        drift_error,
    })
}

pub async fn detail(
    req: actix_web::HttpRequest,
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> HttpResponse {
    let result = async {
        let tenant = tenants::get(&ctx, &slug).await?;
        let check_drift = query
            .drift
            .as_deref()
            .is_some_and(|d| !d.is_empty() && d != "0");
        let backends = backends_view(&ctx, &tenant, check_drift).await?;
        let history = tenants::history(&ctx, &tenant).await?;
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
        context.insert("events", &events.items);
        context.insert("actions", &actions);
        context.insert(
            "can_purge",
            &(tenant.status.is_purgeable() && tenant.slug != tenants::ADMIN_SLUG),
        );
        context.insert("nav", "tenants");
        render(
            tera(),
            "tenants/detail.html",
            Some(&portal),
            portal.flash.clone(),
            context,
        )
    }
    .await;
    result.unwrap_or_else(|err| error_page(tera(), Some(&portal), &err))
}

pub async fn edit_form(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
) -> HttpResponse {
    match tenants::get(&ctx, &slug).await {
        Ok(tenant) => form_page(
            &portal,
            "edit",
            &TenantForm::from_tenant(&tenant),
            Some(&tenant),
            None,
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

pub async fn update(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<TenantForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let result = match form.to_patch() {
        Ok(patch) => crate::lifecycle::update(&ctx, &portal.actor, &slug, &patch).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(tenant) => redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!("Tenant {} saved.", tenant.slug)),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            let tenant = tenants::get(&ctx, &slug).await.ok();
            let mut form = form.into_inner();
            form.slug = slug.to_string();
            form_page(&portal, "edit", &form, tenant.as_ref(), Some(&err))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Deserialize)]
pub struct LifecycleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

pub async fn lifecycle(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<LifecycleForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let location = format!("/tenants/{slug}");
    let Ok(transition) = form.action.parse::<Transition>() else {
        return redirect_with(
            &location,
            Flash::error(format!("Unknown action `{}`.", form.action)),
        );
    };
    match crate::lifecycle::transition(&ctx, &portal.actor, &slug, transition, &form.reason).await {
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
        Err(err @ AppError::Conflict { .. }) => {
            redirect_with(&location, Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Deserialize)]
pub struct PurgeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: Option<String>,
}

pub async fn purge(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<PurgeForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let force = form
        .force
        .as_deref()
        .is_some_and(|f| f == "on" || f == "true");
    match crate::lifecycle::purge(&ctx, &portal.actor, &slug, force, &form.reason).await {
        Ok(()) => redirect_with(
            "/tenants",
            Flash::success(format!("Tenant {slug} was purged.")),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with(&format!("/tenants/{slug}"), Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Downloads the tenant's bundle (its record with sealed secrets, and its status history).
pub async fn export(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    match tenants::bundle::export(&ctx, &portal.actor, &slug).await {
        Ok(bundle) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header((
                "Content-Disposition",
                format!("attachment; filename=\"tenant-{slug}.json\""),
            ))
            .insert_header(("Cache-Control", "no-store"))
            .body(serde_json::to_string_pretty(&bundle).unwrap_or_default()),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ImportForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    bundle: String,
}

fn import_page(
    portal: &PortalSession,
    errors: &[crate::error::FieldError],
    status: StatusCode,
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("errors", errors);
    context.insert("nav", "tenants");
    let flash = (!errors.is_empty()).then(|| Flash::error("The bundle was not imported."));
    render_status(
        tera(),
        "tenants/import.html",
        status,
        Some(portal),
        flash,
        &mut context,
    )
    .unwrap_or_else(|e| error_page(tera(), Some(portal), &e))
}

pub async fn import_form(portal: PortalSession) -> HttpResponse {
    import_page(&portal, &[], StatusCode::OK)
}

/// Restores a tenant from a pasted bundle.
pub async fn import(
    ctx: web::Data<Context>,
    portal: PortalSession,
    form: web::Form<ImportForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let result =
        match crate::http::body::parse::<tenants::bundle::TenantBundle>(form.bundle.as_bytes()) {
            Ok(bundle) => tenants::bundle::import(&ctx, &portal.actor, &bundle).await,
            Err(AppError::BadRequest(message)) => Err(AppError::invalid("bundle", "json", message)),
            Err(err) => Err(err),
        };
    match result {
        Ok(tenant) => redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!(
                "Tenant {} restored ({}).",
                tenant.slug, tenant.status
            )),
        ),
        Err(AppError::Validation(errors)) => {
            import_page(&portal, &errors, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(err @ AppError::Conflict { .. }) => import_page(
            &portal,
            &[crate::error::FieldError::new(
                "bundle",
                "conflict",
                err.to_string(),
            )],
            StatusCode::CONFLICT,
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

/// Swaps the client secret back to the one before the last rotation.
pub async fn rollback_secret(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let location = format!("/tenants/{slug}");
    match tenants::rollback_client_secret(&ctx, &portal.actor, &slug).await {
        Ok(tenant) => redirect_with(
            &location,
            Flash::success(format!(
                "The client secret of {} is back to {}.",
                tenant.slug,
                tenant.client_secret.fingerprint.as_deref().unwrap_or("-")
            )),
        ),
        Err(err @ AppError::Conflict { .. }) => {
            redirect_with(&location, Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

/// Checks the tenant's database connection and reports it as a flash message.
pub async fn check_database(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<CsrfOnly>,
) -> HttpResponse {
    if let Err(err) = portal.check_csrf(&form.csrf) {
        return error_page(tera(), Some(&portal), &err);
    }
    let location = format!("/tenants/{slug}");
    match crate::health::tenant_database(&ctx, &slug).await {
        Ok(report) if report.status == "connected" => redirect_with(
            &location,
            Flash::success(format!(
                "Database connected in {:.1} ms.",
                report.response_time_ms.unwrap_or_default()
            )),
        ),
        Ok(report) => redirect_with(
            &location,
            Flash::error(format!(
                "Database {}: {}",
                report.status.replace('_', " "),
                report.detail.unwrap_or_default()
            )),
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    rate_limit_per_minute: String,
    #[serde(default)]
    grace_minutes: String,
}

impl KeyForm {
    /// The key the form asks for.
    pub(super) fn spec(&self) -> AppResult<crate::auth::KeySpec> {
        Ok(crate::auth::KeySpec {
            name: self.name.clone(),
            role: match self.role.as_str() {
                "tenant-admin" => crate::auth::Role::TenantAdmin,
                _ => crate::auth::Role::Member,
            },
            expires_in_days: number("expires_in_days", &self.expires_in_days)?,
            rate_limit_per_minute: number("rate_limit_per_minute", &self.rate_limit_per_minute)?,
        })
    }

    /// Minutes the rotated key keeps working (default 60).
    pub(super) fn grace(&self) -> AppResult<u32> {
        Ok(number("grace_minutes", &self.grace_minutes)?.unwrap_or(60))
    }
}

/// A number field of a form: empty is none; anything else must be a whole number.
pub(super) fn number(field: &str, text: &str) -> AppResult<Option<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| AppError::invalid(field, "number", "must be a whole number"))
}

/// Shows a key once, on the page that answers the form (never in a redirect or a flash).
fn key_page(
    portal: &PortalSession,
    slug: &str,
    key: &crate::auth::NewApiToken,
    grace_minutes: Option<u32>,
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("slug", slug);
    context.insert("key", key);
    context.insert("rotated", &grace_minutes.is_some());
    context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
    context.insert("nav", "tenants");
    render(
        tera(),
        "tenants/key_created.html",
        Some(portal),
        None,
        context,
    )
    .map(|mut response| {
        response.headers_mut().insert(
            actix_web::http::header::CACHE_CONTROL,
            actix_web::http::header::HeaderValue::from_static("no-store"),
        );
        response
    })
    .unwrap_or_else(|err| error_page(tera(), Some(portal), &err))
}

/// Creates an API key of the tenant and shows it once.
pub async fn create_key(
    ctx: web::Data<Context>,
    portal: PortalSession,
    slug: web::Path<String>,
    form: web::Form<KeyForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let location = format!("/tenants/{slug}#api-keys");
    let result = async {
        let tenant = tenants::get(&ctx, &slug).await?;
        crate::auth::create_key(&ctx, &portal.actor, Some(&tenant.scope()), &form.spec()?).await
    }
    .await;
    match result {
        Ok(key) => key_page(&portal, &slug, &key, None),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with(&location, Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

/// Revokes an API key of the tenant.
pub async fn revoke_key(
    ctx: web::Data<Context>,
    portal: PortalSession,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let (slug, id) = path.into_inner();
    let result = async {
        let tenant = tenants::get(&ctx, &slug).await?;
        crate::auth::revoke_key(&ctx, &portal.actor, &tenant.scope(), &id).await
    }
    .await;
    match result {
        Ok(()) => redirect_with(
            &format!("/tenants/{slug}#api-keys"),
            Flash::success("The key is revoked.".to_owned()),
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

/// Rotates an API key of the tenant and shows the new one once.
pub async fn rotate_key(
    ctx: web::Data<Context>,
    portal: PortalSession,
    path: web::Path<(String, String)>,
    form: web::Form<KeyForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let (slug, id) = path.into_inner();
    let result = async {
        let grace = form.grace()?;
        let tenant = tenants::get(&ctx, &slug).await?;
        let key =
            crate::auth::rotate_key(&ctx, &portal.actor, Some(&tenant.scope()), &id, grace).await?;
        Ok::<_, AppError>((key, grace))
    }
    .await;
    match result {
        Ok((key, grace)) => key_page(&portal, &slug, &key, Some(grace)),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => redirect_with(
            &format!("/tenants/{slug}#api-keys"),
            Flash::error(err.to_string()),
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}
