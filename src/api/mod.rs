//! The JSON API under `/api/v1`, and the OpenAPI document generated from its handlers.
//!
//! Handlers are thin: extract, check who is asking, call one service, return. Routes are
//! registered through `utoipa-actix-web`, so a handler that is served is also documented.

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod jobs;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod plugins;
pub mod provisioning;
pub mod quotas;
pub mod rules;
pub mod sso;
pub mod tenants;

use actix_web::{HttpRequest, HttpResponse, get};
use utoipa::OpenApi as _;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::{AppExt as _, scope};

use crate::error::AppError;

/// Registers every API route (documented ones through utoipa).
fn configure(cfg: &mut ServiceConfig) {
    cfg.service(
        scope::scope("/api/v1")
            .configure(tenants::routes)
            .configure(keys::routes)
            .configure(sso::routes)
            .configure(audit::routes)
            .configure(admin::routes)
            .configure(plugins::routes)
            .configure(provisioning::routes)
            .configure(quotas::routes)
            .configure(alerts::routes)
            .configure(jobs::routes)
            .service(openapi_json),
    )
    .configure(ops::routes);
}

/// Adds the API to an actix `App` and returns it; the OpenAPI document is served at
/// `/api/v1/openapi.json`.
pub fn mount<T>(app: actix_web::App<T>) -> actix_web::App<T>
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Error = actix_web::Error,
            InitError = (),
        >,
{
    let (app, _) = app
        .into_utoipa_app()
        .openapi(openapi::ApiDoc::openapi())
        .configure(configure)
        .split_for_parts();
    app
}

/// The OpenAPI document as served (JSON): [`openapi`] with the rules of every request field
/// ([`rules`]).
pub fn openapi_document() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).expect("the OpenAPI document is JSON");
    rules::state(&mut doc);
    doc
}

/// The OpenAPI document of the API, as the handlers declare it: what the handlers declare, with the error
/// answers every operation shares ([`openapi::complete`]).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(openapi::ApiDoc::openapi())
        .configure(configure)
        .split_for_parts();
    openapi::complete(&mut api);
    api
}

/// This document. Public, like `/health`: a client generator fetches it without credentials,
/// and it holds nothing of any tenant.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
    security(()),
)]
#[get("/openapi.json")]
async fn openapi_json() -> HttpResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| {
        serde_json::to_string_pretty(&openapi_document()).expect("OpenAPI document serialises")
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.as_str())
}

/// 404 for anything not routed, as a JSON error under `/api/`.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("route", req.path()))
}
