//! The portal's audit page: filters by tenant, action and actor; newest first.

use actix_web::web;
use serde::Deserialize;

use crate::audit::{self, AuditQuery};
use crate::context::Context;
use crate::web::error::PageResult;
use crate::web::form::non_empty;
use crate::web::portal::session::PortalSession;

#[derive(Debug, Deserialize)]
pub struct AuditFilterForm {
    tenant: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    before: Option<i64>,
    /// Check the whole hash chain (walks every record: on request only).
    verify: Option<String>,
}

pub async fn list(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<AuditFilterForm>,
) -> PageResult {
    let page = audit::list(
        &ctx.db,
        &AuditQuery {
            tenant: non_empty(&query.tenant),
            action: non_empty(&query.action),
            actor: non_empty(&query.actor),
            before: query.before,
            limit: Some(50),
            ..AuditQuery::default()
        },
    )
    .await?;
    let verify = match query.verify.as_deref() {
        Some("1" | "on" | "true") => Some(audit::verify(&ctx.db, false).await?),
        _ => None,
    };
    let mut context = tera::Context::new();
    context.insert("page", &page);
    context.insert("tenant", &non_empty(&query.tenant).unwrap_or_default());
    context.insert("action", &non_empty(&query.action).unwrap_or_default());
    context.insert("actor", &non_empty(&query.actor).unwrap_or_default());
    context.insert("verify", &verify);
    context.insert("nav", "audit");
    Ok(portal.page("audit.html", context)?)
}
