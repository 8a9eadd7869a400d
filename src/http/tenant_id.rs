//! A tenant addressed by its id. Audit records, webhooks and run records name tenants by id, so
//! `/api/v1/tenant/<id>/…` is served as `/api/v1/tenant/<slug>/…` (and the portal's
//! `/tenants/<id>…` as `/tenants/<slug>…`): an operator pastes what they have. A slug is never
//! shaped like an id (the slug rules refuse it), and a tenant whose old slug was is still found
//! by its slug when no tenant has that id.

use std::str::FromStr as _;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Uri;
use actix_web::middleware::Next;
use actix_web::web;

use crate::context::Context;
use crate::tenants::is_tenant_id;

/// Middleware, outside authentication (which then sees the slug, as a tenant's key scope names
/// it): an id in a tenant's address becomes its slug.
pub async fn by_id(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(target) = rewritten(&req).await
        && let Ok(uri) = Uri::from_str(&target)
    {
        req.head_mut().uri = uri.clone();
        req.match_info_mut().get_mut().update(&uri);
    }
    next.call(req).await
}

async fn rewritten(req: &ServiceRequest) -> Option<String> {
    let path = req.path();
    let (prefix, rest) = [super::TENANT_API_PREFIX, "/tenants/"]
        .into_iter()
        .find_map(|prefix| path.strip_prefix(prefix).map(|rest| (prefix, rest)))?;
    let (id, tail) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    if !is_tenant_id(id) {
        return None;
    }
    let ctx = req.app_data::<web::Data<Context>>()?;
    let row = ctx.caches.tenant_by_id(id).await.ok()??;
    Some(match req.uri().query() {
        Some(query) => format!("{prefix}{}{tail}?{query}", row.slug),
        None => format!("{prefix}{}{tail}", row.slug),
    })
}
