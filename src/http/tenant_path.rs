//! The tenant a route's `{slug}` names, as one extractor: [`TenantPath`] checks that the caller
//! may reach the tenant in the way the route needs ([`Access`]), records the tenant on the
//! request's span, and loads it. A handler that takes a tenant path takes this, and nothing
//! else about the tenant.
//!
//! The access check runs when the extractor is made, before the request body is read: a
//! caller refused the tenant learns nothing from the body's rules, nor whether the tenant
//! exists (another tenant's principal gets 404 for every tenant but its own).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};

use super::auth::ApiCaller;
use crate::auth::Principal;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::tenants::{self, Tenant};

/// What a route asks of its caller, given the tenant's slug.
pub trait Access {
    fn check(principal: &Principal, slug: &str) -> AppResult<()>;
}

/// The platform, and the tenant's own principals.
pub struct Read;
/// Platform admins, and the tenant's own admins.
pub struct TenantAdmin;
/// The platform's principals only (admins and viewers), never the tenant's own.
pub struct Platform;
/// Platform admins only.
pub struct PlatformAdmin;

impl Access for Read {
    fn check(principal: &Principal, slug: &str) -> AppResult<()> {
        principal.require_tenant_read(slug)
    }
}

impl Access for TenantAdmin {
    fn check(principal: &Principal, slug: &str) -> AppResult<()> {
        principal.require_tenant_admin(slug)
    }
}

impl Access for Platform {
    fn check(principal: &Principal, _slug: &str) -> AppResult<()> {
        principal.require_platform()
    }
}

impl Access for PlatformAdmin {
    fn check(principal: &Principal, _slug: &str) -> AppResult<()> {
        principal.require_admin()
    }
}

/// The route's tenant, loaded, with a caller allowed to reach it as `A` says.
pub struct TenantPath<A: Access> {
    pub caller: ApiCaller,
    pub tenant: Tenant,
    access: PhantomData<A>,
}

impl<A: Access> TenantPath<A> {
    /// The tenant's slug (the route may have named it by id).
    pub fn slug(&self) -> &str {
        &self.tenant.slug
    }
}

impl<A: Access + 'static> FromRequest for TenantPath<A> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let slug = req.match_info().get("slug").unwrap_or_default().to_owned();
        let checked = ApiCaller::from_request(req, payload)
            .into_inner()
            .and_then(|caller| A::check(&caller.principal, &slug).map(|()| caller));
        let ctx = req.app_data::<web::Data<Context>>().cloned();
        // The lookup is a task of its own: when a sibling extractor fails (a body that breaks
        // a rule), this future is dropped, and a query must never be cancelled midway.
        let lookup = match (&checked, ctx) {
            (Ok(_), Some(ctx)) => {
                let slug = slug.clone();
                Some(actix_web::rt::spawn(async move {
                    tenants::get(&ctx, &slug).await
                }))
            }
            _ => None,
        };
        Box::pin(async move {
            let caller = checked?;
            crate::telemetry::record_tenant(&slug);
            let lookup = lookup.ok_or_else(|| AppError::internal(anyhow::anyhow!("no context")))?;
            let tenant = lookup
                .await
                .map_err(|e| AppError::internal(anyhow::anyhow!("tenant lookup: {e}")))??;
            Ok(TenantPath {
                caller,
                tenant,
                access: PhantomData,
            })
        })
    }
}
