//! The portal's plugins page: each plugin's version, world, WIT version, requested and granted
//! capabilities, and its calls, failures and latency on this server.

use actix_web::web;

use crate::context::Context;
use crate::plugin_registry as registry;
use crate::web::error::PageResult;
use crate::web::portal::session::PortalSession;

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    let plugins = registry::list(&ctx).await?;
    let mut context = tera::Context::new();
    context.insert("plugins", &plugins);
    context.insert("supported", crate::plugins::SUPPORTED_WIT_VERSIONS);
    context.insert("nav", "plugins");
    Ok(portal.page("plugins.html", context)?)
}
