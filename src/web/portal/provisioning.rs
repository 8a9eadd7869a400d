//! Portal pages of provisioning: the form that provisions a tenant into its backends (a
//! connection template with one input per placeholder, asset template tags, backends), the runs
//! list, and a run's page with its timeline of steps, refreshing itself while the run is open.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::context::Context;
use crate::error::{AppError, FieldError};
use crate::provisioning::templates::{self, TemplateView};
use crate::provisioning::{self, ProvisionRequest, Provisioned};
use crate::tenants::Tier;
use crate::web::error::PageResult;
use crate::web::portal::catalog::is_secret_placeholder;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, redirect_with, render, tera};

#[derive(Debug, Deserialize)]
pub struct FormQuery {
    /// The connection template chosen (re-renders the form with its placeholders).
    template: Option<String>,
}

/// The provisioning form as typed. Secrets (the client secret, the database URI and
/// placeholders that look like secrets) are kept out of what is sent back to the page.
#[derive(Debug, Default, Clone, Serialize)]
struct ProvisionForm {
    slug: String,
    name: String,
    tier: String,
    trial_days: String,
    contact_email: String,
    oauth_issuer: String,
    client_id: String,
    default_schema: String,
    database_name: String,
    idempotency_key: String,
    template: String,
    template_version: String,
    tags: Vec<String>,
    backends: Vec<String>,
    #[serde(skip)]
    client_secret: String,
    #[serde(skip)]
    db_uri: String,
    #[serde(skip)]
    placeholders: BTreeMap<String, String>,
}

impl ProvisionForm {
    fn from_pairs(pairs: &[(String, String)]) -> ProvisionForm {
        let mut form = ProvisionForm::default();
        for (key, value) in pairs {
            let value = value.clone();
            match key.as_str() {
                "csrf" => {}
                "slug" => form.slug = value,
                "name" => form.name = value,
                "tier" => form.tier = value,
                "trial_days" => form.trial_days = value,
                "contact_email" => form.contact_email = value,
                "oauth_issuer" => form.oauth_issuer = value,
                "client_id" => form.client_id = value,
                "client_secret" => form.client_secret = value,
                "default_schema" => form.default_schema = value,
                "db_uri" => form.db_uri = value,
                "database_name" => form.database_name = value,
                "idempotency_key" => form.idempotency_key = value,
                "template" => form.template = value,
                "template_version" => form.template_version = value,
                "tag" => form.tags.push(value),
                "backend" => form.backends.push(value),
                other => {
                    if let Some(p) = other.strip_prefix("ph_") {
                        form.placeholders.insert(p.to_owned(), value);
                    }
                }
            }
        }
        form
    }

    /// The request as the API would receive it (also what the idempotency key is bound to).
    fn to_body(&self) -> Result<Value, AppError> {
        let trial_days = match opt(&self.trial_days) {
            None => Value::Null,
            Some(days) => json!(days.parse::<i64>().map_err(|_| {
                AppError::invalid(
                    "tenant.trial_days",
                    "integer",
                    "must be a whole number of days",
                )
            })?),
        };
        let mut tenant = Map::new();
        tenant.insert("slug".into(), json!(self.slug.trim()));
        tenant.insert("name".into(), json!(self.name));
        for (key, value) in [
            ("tier", &self.tier),
            ("oauth_issuer", &self.oauth_issuer),
            ("client_id", &self.client_id),
            ("default_schema", &self.default_schema),
        ] {
            if let Some(v) = opt(value) {
                tenant.insert(key.into(), json!(v));
            }
        }
        if !trial_days.is_null() {
            tenant.insert("trial_days".into(), trial_days);
        }
        if let Some(email) = opt(&self.contact_email) {
            tenant.insert("contact".into(), json!({ "email": email }));
        }
        if !self.client_secret.is_empty() {
            tenant.insert("client_secret".into(), json!(self.client_secret));
        }
        if let Some(uri) = opt(&self.db_uri) {
            tenant.insert("db_uri".into(), json!(uri));
        }
        let mut body = Map::new();
        body.insert("tenant".into(), Value::Object(tenant));
        if let Some(name) = opt(&self.template) {
            // An empty input is a value not given: the renderer names it as missing.
            let values: Map<String, Value> = self
                .placeholders
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let mut connection = json!({
                "use_admin_template": true,
                "template_name": name,
                "placeholders": values,
            });
            if let Some(version) = opt(&self.template_version).and_then(|v| v.parse::<i64>().ok()) {
                connection["version"] = json!(version);
            }
            body.insert("connection_template".into(), connection);
        }
        if let Some(db) = opt(&self.database_name) {
            body.insert("database".into(), json!({ "database_name": db }));
        }
        if !self.tags.is_empty() {
            body.insert(
                "assets".into(),
                json!({ "use_admin_templates": true, "template_tags": self.tags }),
            );
        }
        body.insert("backends".into(), json!(self.backends));
        if let Some(key) = opt(&self.idempotency_key) {
            body.insert("idempotency_key".into(), json!(key));
        }
        Ok(Value::Object(body))
    }
}

fn opt(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// One input per placeholder of the chosen connection template.
#[derive(Debug, Serialize)]
struct PlaceholderInput {
    name: String,
    /// What was typed; empty for secrets (never sent back).
    value: String,
    secret: bool,
}

/// An asset template tag in use, with the templates carrying it.
#[derive(Debug, Serialize)]
struct TagChoice {
    tag: String,
    templates: Vec<String>,
    checked: bool,
}

#[derive(Debug, Serialize)]
struct BackendChoice {
    name: String,
    checked: bool,
}

/// Where an error of the provisioning request shows: the id of the form input it concerns
/// (`tenant.slug` → `slug`, `connection_template.placeholders.password` → `ph_password`,
/// `backends.superset` → `backend_superset`), or none (listed above the form).
fn input_of(field: &str, placeholders: &[String], backends: &[String]) -> Option<String> {
    if let Some(rest) = field.strip_prefix("tenant.") {
        let key = rest.replace('.', "_");
        return match key.as_str() {
            "slug" | "name" | "tier" | "trial_days" | "contact_email" | "oauth_issuer"
            | "client_id" | "client_secret" | "default_schema" | "db_uri" => Some(key),
            "db_sqlalchemy_uri" => Some("db_uri".into()),
            _ => None,
        };
    }
    if let Some(p) = field.strip_prefix("connection_template.placeholders.") {
        return placeholders
            .iter()
            .any(|x| x == p)
            .then(|| format!("ph_{p}"));
    }
    if field.starts_with("connection_template") {
        return Some("template".into());
    }
    if let Some(b) = field.strip_prefix("backends.") {
        return backends
            .iter()
            .any(|x| x == b)
            .then(|| format!("backend_{b}"))
            .or_else(|| Some("backends".into()));
    }
    if field == "backends" || field.starts_with("backends[") {
        return Some("backends".into());
    }
    if field.starts_with("assets") {
        return Some("tags".into());
    }
    if field.starts_with("database") {
        return Some("database_name".into());
    }
    if field.eq_ignore_ascii_case("idempotency_key") || field == "Idempotency-Key" {
        return Some("idempotency_key".into());
    }
    match field {
        "tier" | "trial_days" => Some(field.to_owned()),
        _ => None,
    }
}

/// The form's page: `chosen` is the connection template whose placeholders get inputs.
async fn form_page(
    ctx: &Context,
    portal: &PortalSession,
    form: &ProvisionForm,
    chosen: Option<&TemplateView>,
    err: Option<&AppError>,
    fresh: bool,
) -> PageResult {
    let connections = templates::list_latest(ctx, Some("connection"), None).await?;
    let assets = templates::list_latest(ctx, Some("asset"), None).await?;
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &assets {
        for tag in &t.tags {
            tags.entry(tag.clone()).or_default().push(t.name.clone());
        }
    }
    let tags: Vec<TagChoice> = tags
        .into_iter()
        .map(|(tag, templates)| TagChoice {
            checked: form.tags.contains(&tag),
            tag,
            templates,
        })
        .collect();
    let enabled = provisioning::enabled_backends(ctx).await?;
    let backends: Vec<BackendChoice> = enabled
        .iter()
        .map(|name| BackendChoice {
            name: name.clone(),
            checked: fresh || form.backends.contains(name),
        })
        .collect();
    let placeholder_names: Vec<String> = chosen.map(|t| t.placeholders.clone()).unwrap_or_default();
    let placeholders: Vec<PlaceholderInput> = placeholder_names
        .iter()
        .map(|p| {
            let secret = is_secret_placeholder(p);
            PlaceholderInput {
                name: p.clone(),
                value: if secret {
                    String::new()
                } else {
                    form.placeholders.get(p).cloned().unwrap_or_default()
                },
                secret,
            }
        })
        .collect();

    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut other_errors: Vec<String> = Vec::new();
    if let Some(err) = err {
        for FieldError { field, message, .. } in err.field_errors() {
            match input_of(field, &placeholder_names, &enabled) {
                Some(input) => errors.entry(input).or_default().push(message.clone()),
                None => other_errors.push(format!("{field}: {message}")),
            }
        }
        if let AppError::Conflict { details, .. } = err
            && details.get("field").and_then(Value::as_str) == Some("slug")
        {
            errors
                .entry("slug".into())
                .or_default()
                .push("is already taken by another tenant".into());
        }
    }
    let errors: BTreeMap<String, String> =
        errors.into_iter().map(|(k, v)| (k, v.join("; "))).collect();
    let marked = !errors.is_empty() || !other_errors.is_empty();
    let mut context = tera::Context::new();
    context.insert("form", form);
    context.insert("connections", &connections);
    context.insert("chosen", &chosen);
    context.insert("placeholders", &placeholders);
    context.insert("tags", &tags);
    context.insert("backends", &backends);
    context.insert("errors", &errors);
    context.insert("other_errors", &other_errors);
    context.insert(
        "tiers",
        &Tier::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
    );
    context.insert("nav", "runs");
    Ok(portal.form_page(
        "provisioning/form.html",
        context,
        err,
        marked,
        Some("Nothing was provisioned."),
    )?)
}

/// `GET /provision[?template=name]`.
pub async fn form(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<FormQuery>,
) -> PageResult {
    let mut form = ProvisionForm {
        tier: "free".into(),
        ..ProvisionForm::default()
    };
    let mut chosen = None;
    let mut missing = None;
    if let Some(name) = nonempty(query.template.as_deref()) {
        match templates::get(&ctx, name, None).await {
            Ok(t) if t.kind == "connection" => {
                form.template = t.name.clone();
                form.template_version = t.version.to_string();
                chosen = Some(t);
            }
            Ok(t) => {
                missing = Some(AppError::invalid(
                    "connection_template.template_name",
                    "kind",
                    format!(
                        "`{}` is an {} template, not a connection template",
                        t.name, t.kind
                    ),
                ));
            }
            Err(AppError::NotFound { .. }) => {
                missing = Some(AppError::invalid(
                    "connection_template.template_name",
                    "exists",
                    format!("no template named `{name}`"),
                ));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(form_page(
        &ctx,
        &portal,
        &form,
        chosen.as_ref(),
        missing.as_ref(),
        true,
    )
    .await?)
}

fn nonempty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// `POST /provision`: queues the run and opens its page, or shows the form again with the errors
/// next to the inputs they concern (nothing is stored then).
pub async fn submit(
    ctx: web::Data<Context>,
    form: PortalForm<Vec<(String, String)>>,
) -> PageResult {
    let (portal, pairs) = (form.session, form.fields);
    portal.require_admin()?;
    let form = ProvisionForm::from_pairs(&pairs);
    let chosen = match opt(&form.template) {
        None => None,
        Some(name) => {
            let version = opt(&form.template_version).and_then(|v| v.parse::<i64>().ok());
            templates::get(&ctx, &name, version).await.ok()
        }
    };
    let outcome = async {
        let body = form.to_body()?;
        let request: ProvisionRequest = serde_json::from_value(body.clone())
            .map_err(|e| AppError::BadRequest(format!("the form did not make a request: {e}")))?;
        provisioning::provision(&ctx, &portal.actor, request, &body, None).await
    }
    .await;
    Ok(match outcome {
        Ok(Provisioned::Queued(accepted)) => redirect_with(
            &format!("/runs/{}", accepted.run),
            Flash::success(format!(
                "Provisioning of {} queued: {} steps.",
                accepted.tenant,
                accepted.steps.len()
            )),
        ),
        Ok(Provisioned::Replayed(accepted)) => redirect_with(
            &format!("/runs/{}", accepted.run),
            Flash::success(format!(
                "This idempotency key was used before for the same request: this is its run (tenant {}).",
                accepted.tenant
            )),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            form_page(&ctx, &portal, &form, chosen.as_ref(), Some(&err), false).await?
        }
        Err(err) => return Err(err.into()),
    })
}

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    status: Option<String>,
    tenant: Option<String>,
}

/// `GET /runs`: the newest runs, by status and tenant.
pub async fn runs(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<RunsQuery>,
) -> PageResult {
    let status = nonempty(query.status.as_deref());
    let tenant = nonempty(query.tenant.as_deref());
    let mut flash = portal.flash.clone();
    let runs = match provisioning::list_runs(&ctx, tenant, status, 100).await {
        Ok(runs) => runs,
        Err(AppError::NotFound { .. }) => {
            flash = Some(Flash::error(format!(
                "There is no tenant {}.",
                tenant.unwrap_or_default()
            )));
            Vec::new()
        }
        Err(err) => return Err(err.into()),
    };
    let tenants: BTreeSet<&String> = runs.iter().map(|r| &r.tenant).collect();
    let mut context = tera::Context::new();
    context.insert("runs", &runs);
    context.insert("status", status.unwrap_or_default());
    context.insert("tenant", tenant.unwrap_or_default());
    context.insert("statuses", provisioning::RunStatus::ALL);
    context.insert("tenants_shown", &tenants);
    context.insert("nav", "runs");
    Ok(render(
        tera(),
        "provisioning/runs.html",
        Some(&portal),
        flash,
        context,
    )?)
}

/// `GET /runs/{id}`: the run and its steps; the page reloads itself every 2 s while the run is
/// open (a meta refresh: no script).
pub async fn run(
    ctx: web::Data<Context>,
    portal: PortalSession,
    id: web::Path<String>,
) -> PageResult {
    let run = provisioning::get_run(&ctx, &id).await?;
    let mut context = tera::Context::new();
    context.insert("open", &run.is_open());
    context.insert("run", &run);
    context.insert("nav", "runs");
    Ok(portal.page("provisioning/run.html", context)?)
}
