//! The templates a provision request names, rendered for the tenant: its connection and its
//! assets.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::super::templates;
use super::{ProvisionRequest, with_tenant_values};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::input::ValidTenant;

/// The tenant's connection: the platform's connection template rendered for it, or its own URI.
pub(super) async fn rendered_connections(
    ctx: &Context,
    req: &ProvisionRequest,
    valid: &ValidTenant,
    auto: &BTreeMap<&'static str, String>,
    database: Value,
) -> AppResult<Vec<Value>> {
    let with_tenant = |given: &BTreeMap<String, Value>, declared: &[String]| {
        with_tenant_values(given, declared, auto, true)
    };
    let mut connections = Vec::new();
    if let Some(c) = &req.connection_template {
        let declared = templates::get(ctx, &c.template_name, c.version)
            .await
            .map(|t| t.placeholders)
            .unwrap_or_default();
        let rendered = templates::render(
            ctx,
            "connection_template.placeholders",
            &c.template_name,
            c.version,
            &with_tenant(&c.placeholders, &declared),
        )
        .await?;
        let kind = templates::get(ctx, &rendered.template, Some(rendered.version))
            .await?
            .kind;
        if kind != "connection" {
            return Err(AppError::invalid(
                "connection_template.template_name",
                "kind",
                format!(
                    "template `{}` is an {kind} template, not a connection template",
                    c.template_name
                ),
            ));
        }
        connections.push(json!({
            "name": c.name.clone().unwrap_or_else(|| "primary".into()),
            "template": rendered.template,
            "version": rendered.version,
            "fingerprint": rendered.fingerprint,
            "uri": rendered.text,
            "database": database,
        }));
    } else if let Some(uri) = &valid.db_uri {
        connections.push(json!({
            "name": "primary",
            "template": Value::Null,
            "version": Value::Null,
            "fingerprint": Value::Null,
            "uri": uri,
            "database": database,
        }));
    }
    Ok(connections)
}

/// The asset templates with the request's tags, each rendered for the tenant.
pub(super) async fn rendered_assets(
    ctx: &Context,
    req: &ProvisionRequest,
    auto: &BTreeMap<&'static str, String>,
) -> AppResult<Vec<Value>> {
    let mut assets = Vec::new();
    if let Some(a) = &req.assets
        && a.use_admin_templates
    {
        let chosen = templates::assets_tagged(ctx, &a.template_tags).await?;
        if chosen.is_empty() {
            return Err(AppError::invalid(
                "assets.template_tags",
                "no_match",
                format!(
                    "no asset template carries any of the tags {}",
                    a.template_tags.join(", ")
                ),
            ));
        }
        for t in chosen {
            let mut values = with_tenant_values(&a.placeholders, &t.placeholders, auto, false);
            // Request values only for what this template declares: one set of values serves
            // several templates.
            values.retain(|k, _| t.placeholders.contains(k));
            let rendered = templates::render(
                ctx,
                "assets.placeholders",
                &t.name,
                Some(t.version),
                &values,
            )
            .await?;
            assets.push(json!({
                "name": t.name,
                "template": rendered.template,
                "version": rendered.version,
                "tags": rendered.tags,
                "fingerprint": rendered.fingerprint,
                "format": t.format,
                "body": rendered.text,
            }));
        }
    }
    Ok(assets)
}
