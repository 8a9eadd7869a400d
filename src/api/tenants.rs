//! `/api/v1/tenant…`: the registry and the lifecycle.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::body::ApiJson;
use crate::http::tenant_path::{PlatformAdmin, Read, TenantPath};
use crate::http::{ApiAdmin, ApiCaller};
use crate::lifecycle;
use crate::telemetry::record_tenant;
use crate::tenants::record::{self, TenantBundle};
use crate::tenants::{
    self, NewTenant, StatusChange, Tenant, TenantPage, TenantPatch, TenantQuery, Transition,
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(create_tenant)
        .service(list_tenants)
        .service(get_tenant)
        .service(update_tenant)
        .service(delete_tenant)
        .service(suspend_tenant)
        .service(reactivate_tenant)
        .service(cancel_tenant)
        .service(restore_tenant)
        .service(convert_tenant)
        .service(export_tenant_bundle)
        .service(import_tenant_bundle)
        .service(rollback_client_secret)
        .service(tenant_history)
        .service(export_tenant)
        .service(import_tenant)
        .service(tenant_database_health);
}

/// Create a tenant.
#[utoipa::path(
    tag = "tenants",
    request_body = NewTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 409, description = "Slug taken", body = ErrorBody),
    ),
)]
#[post("/tenant")]
async fn create_tenant(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: ApiJson<NewTenant>,
) -> AppResult<HttpResponse> {
    record_tenant(&body.0.slug);
    let tenant = tenants::create(&ctx, &caller.actor, &body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/tenant/{}", tenant.slug)))
        .json(tenant))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only tenants in this status.
    status: Option<String>,
    /// Only tenants on this tier.
    tier: Option<String>,
    /// Substring of the slug or the name (case-insensitive).
    q: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<i64>,
}

/// List tenants, in slug order, a page at a time.
#[utoipa::path(
    tag = "tenants",
    params(ListParams),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 422, description = "A filter is invalid", body = ErrorBody),
    ),
)]
#[get("/tenant")]
async fn list_tenants(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<ListParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    let params = params.into_inner();
    let page = tenants::list(
        &ctx,
        &TenantQuery {
            status: params.status,
            tier: params.tier,
            q: params.q,
            cursor: params.cursor,
            limit: params.limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// Show a tenant (secrets only as set/fingerprint).
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "The tenant", body = Tenant),
    ),
)]
#[get("/tenant/{slug}")]
async fn get_tenant(target: TenantPath<Read>) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(&target.tenant))
}

/// Change a tenant: fields, OAuth settings (a new client secret keeps the previous one for a
/// rollback) and `is_active` (false suspends, true reactivates).
#[utoipa::path(
    tag = "tenants",
    request_body = TenantPatch,
    responses(
        (status = 200, description = "The changed tenant", body = Tenant),
        (status = 409, description = "Illegal status change, or changed concurrently", body = ErrorBody),
    ),
)]
#[patch("/tenant/{slug}")]
async fn update_tenant(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    body: ApiJson<TenantPatch>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok()
        .json(lifecycle::patch_tenant(&ctx, &target.caller.actor, target.slug(), &body.0).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteParams {
    /// Purge (hard delete) instead of a soft delete.
    #[serde(default)]
    hard: bool,
    /// With `hard`: purge before the retention period has passed.
    #[serde(default)]
    force: bool,
    /// Why (recorded in the status history and the audit log).
    reason: Option<String>,
}

/// Delete a tenant: soft (restorable), or with `hard=true` purge it (only from canceled, deleted
/// or failed, and after the retention period unless `force=true`).
#[utoipa::path(
    tag = "tenants",
    params(("slug" = String, Path, description = "The tenant's slug"), DeleteParams),
    responses(
        (status = 200, description = "Soft-deleted", body = Tenant),
        (status = 202, description = "Purged from the registry; the purge run that undoes its resources in the backends is queued (`run`, `url`)", body = Object),
        (status = 204, description = "Purged (it held nothing in any backend)"),
        (status = 409, description = "Not allowed in the current status or retention period", body = ErrorBody),
    ),
)]
#[delete("/tenant/{slug}")]
async fn delete_tenant(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    params: web::Query<DeleteParams>,
) -> AppResult<HttpResponse> {
    if params.hard {
        let reason = params
            .reason
            .clone()
            .unwrap_or_else(|| "purged through the API".into());
        return Ok(
            match lifecycle::purge(
                &ctx,
                &target.caller.actor,
                target.slug(),
                params.force,
                &reason,
            )
            .await?
            {
                Some(run) => HttpResponse::Accepted().json(serde_json::json!({
                    "purged": target.slug(),
                    "run": run,
                    "url": crate::provisioning::run_url(&run),
                })),
                None => HttpResponse::NoContent().finish(),
            },
        );
    }
    let reason = params
        .reason
        .clone()
        .unwrap_or_else(|| "deleted through the API".into());
    let tenant = lifecycle::transition(
        &ctx,
        &target.caller.actor,
        target.slug(),
        Transition::Delete,
        &reason,
    )
    .await?;
    Ok(HttpResponse::Ok().json(tenant))
}

/// Body of a lifecycle action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRequest {
    /// Why (required; recorded in the status history and the audit log).
    pub reason: String,
}

async fn lifecycle(
    ctx: &Context,
    target: &TenantPath<PlatformAdmin>,
    transition: Transition,
    body: &LifecycleRequest,
) -> AppResult<HttpResponse> {
    let tenant = lifecycle::transition(
        ctx,
        &target.caller.actor,
        target.slug(),
        transition,
        &body.reason,
    )
    .await?;
    Ok(HttpResponse::Ok().json(tenant))
}

macro_rules! lifecycle_route {
    ($fn:ident, $path:literal, $transition:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(
            tag = "tenants",
            request_body = LifecycleRequest,
            responses(
                (status = 200, description = "The tenant in its new status", body = Tenant),
                (status = 409, description = "Not allowed from the current status (named in the error)", body = ErrorBody),
                (status = 422, description = "Missing reason", body = ErrorBody),
            ),
        )]
        #[post($path)]
        async fn $fn(
            ctx: web::Data<Context>,
            target: TenantPath<PlatformAdmin>,
            body: ApiJson<LifecycleRequest>,
        ) -> AppResult<HttpResponse> {
            lifecycle(&ctx, &target, $transition, &body.0).await
        }
    };
}

lifecycle_route!(
    suspend_tenant,
    "/tenant/{slug}/suspend",
    Transition::Suspend,
    "Suspend a trial or active tenant."
);
lifecycle_route!(
    reactivate_tenant,
    "/tenant/{slug}/reactivate",
    Transition::Reactivate,
    "Reactivate a suspended tenant."
);
lifecycle_route!(
    cancel_tenant,
    "/tenant/{slug}/cancel",
    Transition::Cancel,
    "Cancel a tenant: its retention period starts."
);
lifecycle_route!(
    restore_tenant,
    "/tenant/{slug}/restore",
    Transition::Restore,
    "Restore a canceled or deleted tenant."
);
lifecycle_route!(
    convert_tenant,
    "/tenant/{slug}/convert",
    Transition::Convert,
    "Convert a trial into an active tenant: its trial ends now."
);

/// Roll the OAuth client secret back to the one before the last rotation.
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "The tenant with the previous secret restored", body = Tenant),
        (status = 409, description = "No previous secret", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/client-secret/rollback")]
async fn rollback_client_secret(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok()
        .json(tenants::rollback_client_secret(&ctx, &target.caller.actor, target.slug()).await?))
}

/// A tenant's status history, newest first.
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "Status changes", body = [StatusChange]),
    ),
)]
#[get("/tenant/{slug}/history")]
async fn tenant_history(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(tenants::history(&ctx, tenant).await?))
}

/// Export a tenant as a self-contained bundle (its record with secrets still sealed, and its
/// status history), to restore later with `POST /api/v1/tenant/import`.
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "The bundle", body = TenantBundle),
    ),
)]
#[get("/tenant/{slug}/export")]
async fn export_tenant(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
) -> AppResult<HttpResponse> {
    let bundle = record::export(&ctx, &target.caller.actor, target.slug()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"tenant-{}.json\"", target.slug()),
        ))
        .json(bundle))
}

/// Restore a tenant from a JSON export bundle (same id, status and history). Such a bundle
/// carries the registry record and status history only: nothing is restored in the tenant's
/// backends (`POST /api/v1/tenant/bundle` takes the tar bundle, which carries them).
#[utoipa::path(
    tag = "tenants",
    request_body = TenantBundle,
    responses(
        (status = 201, description = "Restored", body = Tenant),
        (status = 409, description = "The slug or id exists", body = ErrorBody),
        (status = 422, description = "Not a valid bundle, or sealed with a key this server lacks", body = ErrorBody),
    ),
)]
#[post("/tenant/import")]
async fn import_tenant(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: ApiJson<TenantBundle>,
) -> AppResult<HttpResponse> {
    record_tenant(&body.0.tenant.slug);
    let tenant = record::import(&ctx, &caller.actor, &body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/tenant/{}", tenant.slug)))
        .json(tenant))
}

/// Export a tenant as one archive across every system (`application/x-tar`): its registry
/// record and history, SSO settings, API keys (hashes only), quota overrides and usage
/// counters, audit records, resources, and each backend plugin's part, listed with their
/// SHA-256 (and every exclusion) in `manifest.json`. Secrets stay sealed.
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "The archive", content_type = "application/x-tar", body = TarArchive),
        (status = 503, description = "A backend plugin's export failed; nothing was written", body = ErrorBody),
    ),
)]
#[get("/tenant/{slug}/bundle")]
async fn export_tenant_bundle(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
) -> AppResult<HttpResponse> {
    let bundle = crate::bundles::export(
        &ctx,
        &target.caller.actor,
        target.slug(),
        crate::bundles::ExportOptions::default(),
    )
    .await?;
    Ok(HttpResponse::Ok()
        .content_type(crate::bundles::MEDIA_TYPE)
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"tenant-{}.tar\"", target.slug()),
        ))
        .body(bundle.to_tar()?))
}

/// A tenant bundle: a tar archive (`tenantry.tenant-bundle/v2`).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
struct TarArchive(Vec<u8>);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BundleImportParams {
    /// Only say what would be created.
    dry_run: Option<bool>,
}

/// Restore a tenant from its archive (`GET /tenant/{slug}/bundle`): checked whole first (a
/// refused import leaves nothing), the registry in one transaction, its resources re-applied
/// and each backend's part imported, then verified against the bundle (`ok`, `differences`).
/// An import that is not whole is taken back, registry and backends.
#[utoipa::path(
    tag = "tenants",
    params(BundleImportParams),
    request_body(content = TarArchive, content_type = "application/octet-stream", description = "The tar archive of `GET /tenant/{slug}/bundle` (sent as `application/x-tar` or `application/octet-stream`)"),
    responses(
        (status = 200, description = "A dry run: what would be created", body = crate::bundles::ImportOutcome),
        (status = 201, description = "Imported, every backend restored, and equal to the bundle", body = crate::bundles::ImportOutcome),
        (status = 502, description = "Not imported: a backend's restore failed or the tenant differed from its bundle, and the import was taken back (`rolled_back_by`, `backends`, `differences` say why)", body = crate::bundles::ImportOutcome),
        (status = 409, description = "The slug or id exists", body = ErrorBody),
        (status = 422, description = "Not a valid bundle (naming the part), sealed with a key this server lacks, or naming a backend plugin not enabled here", body = ErrorBody),
    ),
)]
#[post("/tenant/bundle")]
async fn import_tenant_bundle(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    params: web::Query<BundleImportParams>,
    mut payload: web::Payload,
) -> AppResult<HttpResponse> {
    use futures_util::StreamExt as _;
    let mut bytes = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            AppError::Validation(vec![crate::error::FieldError::new(
                "bundle",
                "body",
                format!("could not be read: {e}"),
            )])
        })?;
        if bytes.len() + chunk.len() > crate::bundles::MAX_BYTES {
            return Err(AppError::Validation(vec![crate::error::FieldError::new(
                "bundle",
                "size",
                format!(
                    "is larger than {} MiB",
                    crate::bundles::MAX_BYTES / (1024 * 1024)
                ),
            )]));
        }
        bytes.extend_from_slice(&chunk);
    }
    let bundle = crate::bundles::Bundle::from_tar(&bytes)?;
    // The parts are the bundle's own now: the archive goes before the import runs.
    drop(bytes);
    record_tenant(&bundle.manifest.tenant_slug);
    let dry_run = params.dry_run.unwrap_or(false);
    let outcome = crate::bundles::import(&ctx, &caller.actor, &bundle, dry_run).await?;
    Ok(if dry_run {
        HttpResponse::Ok().json(outcome)
    } else if outcome.rolled_back_by.is_some() {
        HttpResponse::BadGateway().json(outcome)
    } else {
        HttpResponse::Created()
            .insert_header((
                "Location",
                format!("/api/v1/tenant/{}", outcome.plan.tenant),
            ))
            .json(outcome)
    })
}

/// Round trip to the tenant's own database (its `db_uri`, or the connection it was provisioned
/// with from a connection template), with the time it took.
#[utoipa::path(
    tag = "tenants",
    responses(
        (status = 200, description = "connected, unreachable, not_configured or unsupported, and the probe job's last probe", body = crate::database_probes::DatabaseHealthReport),
    ),
)]
#[get("/tenant/{slug}/health/database")]
async fn tenant_database_health(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(crate::database_probes::report(&ctx, target.slug()).await?))
}
