//! `/api/v1/template…`, `/api/v1/tenant/provision`, `/api/v1/provisioning…` and a tenant's
//! resources and drift.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::error::{AppError, AppResult, ErrorBody};
use crate::http::body::{self, ApiJson};
use crate::http::tenant_path::{PlatformAdmin, Read, TenantPath};
use crate::http::{ApiAdmin, ApiCaller};
use crate::provisioning::templates::{self, TemplateInput, TemplateView, VersionSummary};
use crate::provisioning::{
    self, Accepted, BackendHealth, DriftReport, ProvisionRequest, Provisioned, ReconcilePlan,
    ResourceView, RunView,
};
use crate::telemetry::record_tenant;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_templates)
        .service(create_template)
        .service(get_template)
        .service(template_versions)
        .service(update_template)
        .service(delete_template)
        .service(render_template)
        .service(provision_tenant)
        .service(list_runs)
        .service(get_run)
        .service(tenant_resources)
        .service(tenant_drift)
        .service(tenant_backend_health)
        .service(reconcile_tenant)
        .service(retry_provision);
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TemplateListParams {
    /// `connection` or `asset`.
    kind: Option<String>,
    /// Only templates carrying this tag.
    tag: Option<String>,
}

/// Templates at their newest versions.
#[utoipa::path(
    tag = "templates",
    params(TemplateListParams),
    responses((status = 200, description = "Templates", body = [TemplateView]),),
)]
#[get("/template")]
async fn list_templates(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<TemplateListParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok()
        .json(templates::list_latest(&ctx, params.kind.as_deref(), params.tag.as_deref()).await?))
}

/// Create a template (version 1). Its body is checked against its placeholders by the renderer.
#[utoipa::path(
    tag = "templates",
    request_body = TemplateInput,
    responses(
        (status = 201, description = "Created", body = TemplateView),
        (status = 409, description = "A template of that name exists", body = ErrorBody),
        (status = 422, description = "A field breaks a rule (an undeclared `{slot}` in the body…)", body = ErrorBody),
    ),
)]
#[post("/template")]
async fn create_template(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    body: ApiJson<TemplateInput>,
) -> AppResult<HttpResponse> {
    let view = templates::create(&ctx, &caller.actor, &body.0).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/template/{}", view.name)))
        .json(view))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VersionParam {
    /// A version; default the newest.
    version: Option<i64>,
}

/// A template (newest version, or `?version=N`).
#[utoipa::path(
    tag = "templates",
    params(("name" = String, Path, description = "Template name"), VersionParam),
    responses((status = 200, description = "The template", body = TemplateView),),
)]
#[get("/template/{name}")]
async fn get_template(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    name: web::Path<String>,
    params: web::Query<VersionParam>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(templates::get(&ctx, &name, params.version).await?))
}

/// Every version of a template, newest first.
#[utoipa::path(
    tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 200, description = "Versions", body = [VersionSummary]),),
)]
#[get("/template/{name}/versions")]
async fn template_versions(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    name: web::Path<String>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(templates::versions(&ctx, &name).await?))
}

/// Save a new version of a template (body, placeholders, tags, format, description). An
/// identical version is not saved again (200 with the current one).
#[utoipa::path(
    tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    request_body = TemplateInput,
    responses(
        (status = 201, description = "A new version", body = TemplateView),
        (status = 200, description = "Nothing changed", body = TemplateView),
    ),
)]
#[put("/template/{name}")]
async fn update_template(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
    body: ApiJson<TemplateInput>,
) -> AppResult<HttpResponse> {
    let (view, changed) = templates::update(&ctx, &caller.actor, &name, &body.0).await?;
    Ok(if changed {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

/// Delete a template and its versions (resources made from it keep its name and version).
#[utoipa::path(
    tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 204, description = "Deleted"),),
)]
#[delete("/template/{name}")]
async fn delete_template(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
) -> AppResult<HttpResponse> {
    templates::delete(&ctx, &caller.actor, &name).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Values to render a template with.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderInput {
    #[serde(default)]
    pub version: Option<i64>,
    #[schema(value_type = Object)]
    pub values: std::collections::BTreeMap<String, serde_json::Value>,
}

/// What a template renders to with these values (nothing is stored).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RenderOutput {
    pub template: String,
    pub version: i64,
    pub rendered: String,
    pub fingerprint: String,
}

/// Render a template (a preview: nothing is stored).
#[utoipa::path(
    tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    request_body = RenderInput,
    responses(
        (status = 200, description = "Rendered", body = RenderOutput),
        (status = 422, description = "A missing or undeclared placeholder, named", body = ErrorBody),
    ),
)]
#[post("/template/{name}/render")]
async fn render_template(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    name: web::Path<String>,
    body: ApiJson<RenderInput>,
) -> AppResult<HttpResponse> {
    let _ = &caller;
    let r = templates::render_named(&ctx, &name, body.0.version, &body.0.values).await?;
    Ok(HttpResponse::Ok().json(RenderOutput {
        template: r.template,
        version: r.version,
        rendered: r.text,
        fingerprint: r.fingerprint,
    }))
}

/// Provision a tenant into its backends. Answers 202 at once with the run to follow; the run
/// creates everything through the backend plugins, retries, compensates on failure and survives
/// restarts. `Idempotency-Key` (or `idempotency_key`) makes retries safe: the same key and body
/// give the same run (and, once it has finished, the same answer); another body is a 422; a
/// retry while the run is still going is a 409 naming it.
#[utoipa::path(
    tag = "provisioning",
    request_body = ProvisionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to retry")),
    responses(
        (status = 202, description = "Queued (or, with a known key, the first answer replayed)", body = Accepted),
        (status = 409, description = "Slug taken, or the run of this key is still going", body = ErrorBody),
        (status = 422, description = "A field breaks a rule: tenant fields, placeholders, backends…", body = ErrorBody),
    ),
)]
#[post("/tenant/provision")]
async fn provision_tenant(
    ctx: web::Data<Context>,
    caller: ApiAdmin,
    req: HttpRequest,
    raw: ApiJson<serde_json::Value>,
) -> AppResult<HttpResponse> {
    let request: ProvisionRequest = body::parse(raw.0.to_string().as_bytes())?;
    record_tenant(&request.tenant.slug);
    let header = match req.headers().get("Idempotency-Key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            AppError::invalid(
                "Idempotency-Key",
                "format",
                "must be visible ASCII characters",
            )
        })?),
    };
    match provisioning::provision(&ctx, &caller.actor, request, &raw.0, header).await? {
        Provisioned::Queued(accepted) => Ok(HttpResponse::Accepted()
            .insert_header(("Location", accepted.url.clone()))
            .json(accepted)),
        Provisioned::Replayed(accepted) => Ok(HttpResponse::Accepted()
            .insert_header(("Location", accepted.url.clone()))
            .insert_header(("Idempotent-Replayed", "true"))
            .json(accepted)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunListParams {
    /// Only the runs of this tenant.
    tenant: Option<String>,
    /// `queued`, `running`, `compensating`, `succeeded` or `failed`.
    status: Option<String>,
    /// At most this many (1–500, default 50).
    limit: Option<i64>,
}

/// Provisioning and lifecycle runs, newest first.
#[utoipa::path(
    tag = "provisioning",
    params(RunListParams),
    responses(
        (status = 200, description = "Runs", body = [RunView]),
        (status = 404, description = "No tenant of the `tenant` filter's slug", body = ErrorBody),
    ),
)]
#[get("/provisioning")]
async fn list_runs(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    params: web::Query<RunListParams>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(
        provisioning::list_runs(
            &ctx,
            params.tenant.as_deref(),
            params.status.as_deref(),
            params.limit.unwrap_or(50),
        )
        .await?,
    ))
}

/// A run with its steps: state, attempts, durations, errors, outputs and the plugins' log lines.
#[utoipa::path(
    tag = "provisioning",
    params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = RunView),),
)]
#[get("/provisioning/{id}")]
async fn get_run(
    ctx: web::Data<Context>,
    caller: ApiCaller,
    id: web::Path<String>,
) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(provisioning::get_run(&ctx, &id).await?))
}

/// What a tenant holds in each backend, with the template version and input fingerprint that
/// produced each resource.
#[utoipa::path(
    tag = "provisioning",
    responses((status = 200, description = "Resources", body = [ResourceView]),),
)]
#[get("/tenant/{slug}/resources")]
async fn tenant_resources(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(provisioning::resources(&ctx, tenant).await?))
}

/// Asks each backend whether the tenant's resources are still as provisioned.
#[utoipa::path(
    tag = "provisioning",
    responses((status = 200, description = "Drift report", body = DriftReport),),
)]
#[get("/tenant/{slug}/drift")]
async fn tenant_drift(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(provisioning::drift(&ctx, tenant).await?))
}

/// Each backend's health for the tenant: its `observe`, when it was asked, how long it took,
/// and what drifted (or why it could not be asked).
#[utoipa::path(
    tag = "provisioning",
    responses((status = 200, description = "Health of each backend the tenant holds resources in", body = BackendHealth),),
)]
#[get("/tenant/{slug}/health/backends")]
async fn tenant_backend_health(
    ctx: web::Data<Context>,
    target: TenantPath<Read>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    Ok(HttpResponse::Ok().json(provisioning::backend_health(&ctx, tenant).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReconcileParams {
    /// Only show what would be re-applied.
    dry_run: Option<bool>,
    /// `recorded` (default): the template versions the steps were applied with; `current`:
    /// each template's newest version, rendered with the values the tenant was provisioned with.
    templates: Option<provisioning::TemplateVersions>,
}

/// Repair drift: the backends are asked what drifted, step by step, and exactly the drifted
/// steps are re-applied (an `apply` run) with the inputs they were applied with, or, with
/// `templates=current`, rendered from their templates' newest versions. With `dry_run=true`,
/// the plan only.
#[utoipa::path(
    tag = "provisioning",
    params(ReconcileParams),
    responses(
        (status = 200, description = "The plan: nothing drifted, or a dry run", body = ReconcilePlan),
        (status = 202, description = "The plan and the run that repairs it", body = ReconcilePlan),
        (status = 409, description = "The tenant is not trial or active, has a run in progress, or (`templates=current`) has no recorded provisioning request", body = ErrorBody),
        (status = 422, description = "`templates=current`: a template's newest version cannot be rendered with the recorded values", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/reconcile")]
async fn reconcile_tenant(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
    params: web::Query<ReconcileParams>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let templates = params.templates.unwrap_or_default();
    let plan = provisioning::reconcile_plan(&ctx, tenant, templates).await?;
    if params.dry_run.unwrap_or(false) {
        return Ok(HttpResponse::Ok().json(plan));
    }
    let plan = provisioning::reconcile(&ctx, &target.caller.actor, tenant, plan).await?;
    Ok(match &plan.run {
        Some(_) => HttpResponse::Accepted().json(plan),
        None => HttpResponse::Ok().json(plan),
    })
}

/// Provision a `failed` tenant again: a provision run from the request it was provisioned with
/// (each template's newest version, the values recorded then), which makes it `active` (or
/// `trial`) when it succeeds and, like the first, compensates and leaves it `failed` when it
/// does not.
#[utoipa::path(
    tag = "provisioning",
    responses(
        (status = 202, description = "The run that provisions the tenant again", body = provisioning::Accepted),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "The tenant is not failed, has a run in progress, or has no recorded provisioning request", body = ErrorBody),
        (status = 422, description = "A template's newest version cannot be rendered with the recorded values", body = ErrorBody),
    ),
)]
#[post("/tenant/{slug}/provision/retry")]
async fn retry_provision(
    ctx: web::Data<Context>,
    target: TenantPath<PlatformAdmin>,
) -> AppResult<HttpResponse> {
    let tenant = &target.tenant;
    let accepted = provisioning::retry(&ctx, &target.caller.actor, tenant).await?;
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", accepted.url.clone()))
        .json(accepted))
}
