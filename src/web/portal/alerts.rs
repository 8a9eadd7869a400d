//! The portal's Alerts page (every tenant's, filtered) and a tenant's quota override form.

use std::collections::{BTreeMap, HashMap};

use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::alerts::{self, AlertQuery};
use crate::context::Context;
use crate::error::AppError;
use crate::quotas;
use crate::tenants;
use crate::web::error::PageResult;
use crate::web::form::non_empty;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, redirect_with};

#[derive(Debug, Deserialize)]
pub struct AlertFilterForm {
    tenant: Option<String>,
    severity: Option<String>,
    kind: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

/// `GET /alerts`: alerts on every tenant, newest first, with the registered webhooks.
pub async fn list(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<AlertFilterForm>,
) -> PageResult {
    let status = non_empty(&query.status).unwrap_or_else(|| "open".into());
    let page = alerts::list(
        &ctx,
        &AlertQuery {
            tenant: non_empty(&query.tenant),
            kind: non_empty(&query.kind),
            severity: non_empty(&query.severity),
            status: Some(status.clone()),
            before: non_empty(&query.before),
            limit: Some(50),
            ..AlertQuery::default()
        },
    )
    .await?;
    let mut context = tera::Context::new();
    context.insert("page", &page);
    context.insert("counts", &alerts::open_counts(&ctx).await?);
    context.insert("webhooks", &alerts::webhooks::list(&ctx).await?);
    context.insert("tenant", &non_empty(&query.tenant).unwrap_or_default());
    context.insert("severity", &non_empty(&query.severity).unwrap_or_default());
    context.insert("kind", &non_empty(&query.kind).unwrap_or_default());
    context.insert("status", &status);
    context.insert("nav", "alerts");
    Ok(portal.page("alerts.html", context)?)
}

/// The override form's fields: `limit_<metric>` (empty: the tier's default) and
/// `hard_<metric>` (`hard` or `soft`).
fn overrides_body(
    ctx: &Context,
    fields: &HashMap<String, String>,
) -> Result<Map<String, Value>, AppError> {
    let mut body = Map::new();
    let mut errors = Vec::new();
    for metric in quotas::metrics(ctx) {
        let limit = fields
            .get(&format!("limit_{}", metric.name))
            .map(|v| v.trim())
            .unwrap_or("");
        let hard = match fields
            .get(&format!("hard_{}", metric.name))
            .map(String::as_str)
        {
            Some("soft") => false,
            Some("hard") => true,
            _ => metric.hard,
        };
        let value = match limit {
            "" if hard == metric.hard => Value::Null,
            "" => json!({ "limit": null, "hard": hard }),
            text => match text.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => json!({ "limit": n, "hard": hard }),
                _ => {
                    errors.push(crate::error::FieldError::new(
                        format!("limit_{}", metric.name),
                        "limit",
                        "must be a whole number (empty: the tier's default)",
                    ));
                    continue;
                }
            },
        };
        body.insert(metric.name.clone(), value);
    }
    if errors.is_empty() {
        Ok(body)
    } else {
        Err(AppError::Validation(errors))
    }
}

/// `POST /tenants/{slug}/quotas`: sets the overrides of the form (audited as
/// `quota.updated`); a refused form comes back with each field's error.
pub async fn save_quotas(
    ctx: web::Data<Context>,
    slug: web::Path<String>,
    form: PortalForm<HashMap<String, String>>,
) -> PageResult {
    let (portal, fields) = (form.session, form.fields);
    portal.require_admin()?;
    let tenant = tenants::get(&ctx, &slug).await?;
    let result = match overrides_body(&ctx, &fields) {
        Ok(body) => match quotas::parse_overrides(&ctx, &body) {
            Ok(changes) => quotas::set_overrides(&ctx, &portal.actor, &tenant, &changes)
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => Ok(redirect_with(
            &format!("/tenants/{}#quotas", tenant.slug),
            Flash::success(format!("Quotas of {} saved.", tenant.slug)),
        )),
        Err(err @ AppError::Validation(_)) => {
            let mut errors: BTreeMap<String, String> = BTreeMap::new();
            for field in err.field_errors() {
                // The service names `metric` or `metric.limit`; the form `limit_metric`.
                let name = field.field.split('.').next().unwrap_or(&field.field);
                let key = if name.starts_with("limit_") {
                    name.to_owned()
                } else {
                    format!("limit_{name}")
                };
                errors.entry(key).or_insert_with(|| field.message.clone());
            }
            let views = quotas::quotas(&ctx, &tenant).await?;
            let mut context = tera::Context::new();
            context.insert("tenant", &tenant);
            context.insert("rows", &quota_form_rows(&views, Some(&fields), &errors));
            context.insert("nav", "tenants");
            Ok(portal.form_page("tenants/quotas.html", context, Some(&err), true, None)?)
        }
        Err(err) => Err(err.into()),
    }
}

/// One metric of the override form.
#[derive(Debug, Serialize)]
pub struct QuotaFormRow {
    metric: String,
    default_limit: Option<u64>,
    /// The override as the form shows it: what was sent, else the override in force.
    value: String,
    hard: bool,
    error: Option<String>,
}

/// The override form's rows for `views`, with what was `sent` and its `errors`.
pub fn quota_form_rows(
    views: &[quotas::QuotaView],
    sent: Option<&HashMap<String, String>>,
    errors: &BTreeMap<String, String>,
) -> Vec<QuotaFormRow> {
    views
        .iter()
        .map(|q| {
            let limit_field = format!("limit_{}", q.metric);
            let sent_value = sent.and_then(|s| s.get(&limit_field)).cloned();
            let hard = match sent.and_then(|s| s.get(&format!("hard_{}", q.metric))) {
                Some(h) => h == "hard",
                None => q.hard,
            };
            QuotaFormRow {
                metric: q.metric.clone(),
                default_limit: q.default_limit,
                value: sent_value
                    .unwrap_or_else(|| q.override_limit.map(|l| l.to_string()).unwrap_or_default()),
                hard,
                error: errors.get(&limit_field).cloned(),
            }
        })
        .collect()
}
