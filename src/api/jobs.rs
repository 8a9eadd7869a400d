//! `/api/v1/jobs`: the scheduled jobs, with their schedule and last run.

use actix_web::{HttpResponse, get, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::context::Context;
use crate::error::AppResult;
use crate::http::ApiCaller;
use crate::jobs::{self, JobView};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_jobs);
}

/// The jobs the servers run by themselves (each once per interval across replicas): interval,
/// next run, the server running it now, and the last run's time, duration, outcome or error.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, body = Vec<JobView>)),
)]
#[get("/jobs")]
async fn list_jobs(ctx: web::Data<Context>, caller: ApiCaller) -> AppResult<HttpResponse> {
    caller.principal.require_platform()?;
    Ok(HttpResponse::Ok().json(jobs::list(&ctx).await?))
}
