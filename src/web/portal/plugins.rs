//! The portal's plugins page: each plugin's version, world, WIT version, requested and granted
//! capabilities, its configuration (which an administrator sets here), and its calls, failures
//! and latency.

use std::collections::HashMap;

use actix_web::web;

use crate::context::Context;
use crate::error::AppError;
use crate::plugin_registry as registry;
use crate::web::error::PageResult;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, back_or_error, redirect_with};

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    let plugins = registry::list(&ctx).await?;
    let mut context = tera::Context::new();
    context.insert("plugins", &plugins);
    context.insert("supported", crate::plugin_host::SUPPORTED_WIT_VERSIONS);
    context.insert("nav", "plugins");
    Ok(portal.page("plugins.html", context)?)
}

/// Saves a plugin's configuration from its form: one input per field (`config.<field>`), an
/// empty one meaning the field's default.
pub async fn configure(
    ctx: web::Data<Context>,
    name: web::Path<String>,
    form: PortalForm<HashMap<String, String>>,
) -> PageResult {
    let (portal, inputs) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let plugin = registry::get(&ctx, &name).await?;
        let mut values = serde_json::Map::new();
        for field in &plugin.config_fields {
            let text = inputs
                .get(&format!("config.{}", field.name))
                .map(|t| t.trim())
                .unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let value = field
                .kind
                .read(text)
                .map_err(|message| AppError::invalid(field.name.clone(), "type", message))?;
            values.insert(field.name.clone(), value);
        }
        registry::configure(&ctx, &portal.actor, &name, values).await
    }
    .await;
    match result {
        Ok(plugin) => Ok(redirect_with(
            "/plugins",
            Flash::success(format!("The configuration of {} is saved.", plugin.name)),
        )),
        Err(err) => back_or_error("/plugins", err),
    }
}
