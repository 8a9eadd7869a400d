//! Runs, their steps and a tenant's resources as the API, the portal and the CLI show them.

use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::LogLine;
use crate::store::models::{ResourceRow, RunRow, StepRow};
use crate::store::provisioning as sql;
use crate::tenants::{self, Tenant};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{RunKind, RunStatus, StepAction, StepState};

/// One step of a run, as the API and the portal show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StepView {
    pub seq: i64,
    pub plugin: String,
    /// The plugin's id of the step.
    pub step: String,
    pub action: StepAction,
    pub description: String,
    pub state: StepState,
    pub attempts: i64,
    /// What the backend holds after the step (the plugin's JSON, any value); null before the
    /// step has run.
    pub output: Option<Value>,
    /// Something a person must do; never counted as done.
    pub manual_follow_up: Option<String>,
    /// The last error (kept while a retry is pending).
    pub error: Option<String>,
    /// When the next attempt is due, while a retry is pending.
    pub next_attempt_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Lines the plugin logged, every attempt.
    pub log: Vec<LogLine>,
}

/// A provisioning or lifecycle run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub kind: RunKind,
    pub tenant: String,
    pub status: RunStatus,
    pub backends: Vec<String>,
    pub error: Option<String>,
    /// How many times a server took the run up (more than 1 after a server died during it).
    pub executions: i64,
    /// The server (host, process, random part) executing the run, or the one that finished it.
    pub executed_by: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// `/api/v1/provisioning/{id}`.
    pub url: String,
    pub manual_follow_ups: Vec<String>,
    pub steps: Vec<StepView>,
}

impl RunView {
    pub fn is_open(&self) -> bool {
        self.status.is_open()
    }
}

fn ms_between(a: Option<chrono::NaiveDateTime>, b: Option<chrono::NaiveDateTime>) -> Option<i64> {
    Some((b? - a?).num_milliseconds())
}

pub fn run_url(id: &str) -> String {
    format!("/api/v1/provisioning/{id}")
}

fn step_view(step: &StepRow) -> StepView {
    StepView {
        seq: step.seq,
        plugin: step.plugin.clone(),
        step: step.step_id.clone(),
        action: step.action,
        description: step.description.clone(),
        state: step.state,
        attempts: step.attempts,
        output: step
            .output
            .as_deref()
            .map(|o| serde_json::from_str(o).unwrap_or(Value::String(o.to_owned()))),
        manual_follow_up: step.manual_follow_up.clone(),
        error: step.error.clone(),
        next_attempt_at: step.next_attempt_at.map(clock::rfc3339),
        started_at: step.started_at.map(clock::rfc3339),
        finished_at: step.finished_at.map(clock::rfc3339),
        duration_ms: ms_between(step.started_at, step.finished_at),
        log: serde_json::from_str(&step.log).unwrap_or_default(),
    }
}

pub fn run_view(run: &RunRow, steps: &[StepRow]) -> RunView {
    let steps: Vec<StepView> = steps.iter().map(step_view).collect();
    RunView {
        id: run.id.clone(),
        kind: run.kind,
        tenant: run.tenant_slug.clone(),
        status: run.status,
        backends: serde_json::from_str(&run.backends).unwrap_or_default(),
        error: run.error.clone(),
        executions: run.executions,
        executed_by: run.lease_owner.clone(),
        created_by: run.created_by.clone(),
        created_at: clock::rfc3339(run.created_at),
        started_at: run.started_at.map(clock::rfc3339),
        finished_at: run.finished_at.map(clock::rfc3339),
        duration_ms: ms_between(Some(run.created_at), run.finished_at),
        url: run_url(&run.id),
        manual_follow_ups: steps
            .iter()
            .filter_map(|s| {
                s.manual_follow_up
                    .as_ref()
                    .map(|f| format!("{} / {}: {f}", s.plugin, s.step))
            })
            .collect(),
        steps,
    }
}

pub async fn get_run(ctx: &Context, id: &str) -> AppResult<RunView> {
    let mut conn = ctx.db.conn().await?;
    let run = sql::find_run(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::not_found("provisioning run", id))?;
    let steps = sql::steps(&mut conn, id).await?;
    Ok(run_view(&run, &steps))
}

/// Recent runs (newest first), of one tenant when `tenant_slug` is given, of one status when
/// `status` is (a word of [`RunStatus`]; another is a 422 naming it).
pub async fn list_runs(
    ctx: &Context,
    tenant_slug: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> AppResult<Vec<RunView>> {
    let status = status
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<RunStatus>()
                .map_err(|e| AppError::invalid("status", "one_of", e.to_string()))
        })
        .transpose()?;
    let mut conn = ctx.db.conn().await?;
    let tenant_id = match tenant_slug {
        None => None,
        Some(slug) => match tenants::get(ctx, slug).await {
            Ok(tenant) => Some(tenant.id),
            // Purged: its runs (its purge run above all) are still found by the slug (or id)
            // they were made for.
            Err(AppError::NotFound { .. }) => Some(
                sql::tenant_of_runs(&mut conn, slug)
                    .await?
                    .ok_or_else(|| AppError::not_found("tenant", slug))?,
            ),
            Err(err) => return Err(err),
        },
    };
    let runs = sql::list_runs(&mut conn, tenant_id.as_deref(), status, limit.clamp(1, 500)).await?;
    let mut views = Vec::with_capacity(runs.len());
    for run in runs {
        let steps = sql::steps(&mut conn, &run.id).await?;
        views.push(run_view(&run, &steps));
    }
    Ok(views)
}

/// A resource a tenant holds in a backend.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResourceView {
    pub plugin: String,
    pub step: String,
    pub description: String,
    /// What the plugin reported of it (its JSON, any value).
    pub output: Value,
    pub template: Option<String>,
    pub template_version: Option<i64>,
    pub fingerprint: Option<String>,
    pub run: String,
    pub applied_at: String,
}

pub(super) fn resource_view(r: &ResourceRow) -> ResourceView {
    ResourceView {
        plugin: r.plugin.clone(),
        step: r.step_id.clone(),
        description: r.description.clone(),
        output: serde_json::from_str(&r.output).unwrap_or(Value::Null),
        template: r.template.clone(),
        template_version: r.template_version,
        fingerprint: r.fingerprint.clone(),
        run: r.run_id.clone(),
        applied_at: clock::rfc3339(r.applied_at),
    }
}

pub async fn resources(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<ResourceView>> {
    Ok(held_resources(ctx, tenant)
        .await?
        .iter()
        .map(resource_view)
        .collect())
}

/// The rows of what the tenant holds in its backends, oldest first.
pub(super) async fn held_resources(ctx: &Context, tenant: &Tenant) -> AppResult<Vec<ResourceRow>> {
    let mut conn = ctx.db.conn().await?;
    sql::resources(&mut conn, &tenant.id).await
}
