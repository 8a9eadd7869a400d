//! The portal's plugins page: each plugin's version, world, WIT version, requested and granted
//! capabilities, and its calls, failures and latency on this server.

use actix_web::{HttpResponse, web};

use super::session::PortalSession;
use super::{error_page, render, tera};
use crate::context::Context;
use crate::plugin_registry as registry;

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> HttpResponse {
    let result = async {
        let plugins = registry::list(&ctx).await?;
        let mut context = tera::Context::new();
        context.insert("plugins", &plugins);
        context.insert("supported", crate::plugins::SUPPORTED_WIT_VERSIONS);
        context.insert("nav", "plugins");
        render(
            tera(),
            "plugins.html",
            Some(&portal),
            portal.flash.clone(),
            context,
        )
    }
    .await;
    result.unwrap_or_else(|err| error_page(tera(), Some(&portal), &err))
}
