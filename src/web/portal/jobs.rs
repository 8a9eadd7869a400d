//! The portal's jobs page: what the servers run by themselves, when next, and how it went.

use actix_web::web;

use crate::context::Context;
use crate::web::error::PageResult;
use crate::web::portal::session::PortalSession;

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    let jobs = crate::jobs::list(&ctx).await?;
    let mut context = tera::Context::new();
    context.insert("jobs", &jobs);
    context.insert("nav", "jobs");
    Ok(portal.page("jobs.html", context)?)
}
