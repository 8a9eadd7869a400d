//! A tenant's health in its backends, and the repair of what drifted.
//!
//! - [`backend_health`]: every backend the tenant holds resources in is asked (`observe`) whether
//!   they are still as provisioned: `healthy`, `drifted` (with what) or `unreachable` (with why),
//!   each with when it was asked and how long it took.
//! - [`reconcile_plan`]: what drifted, step by step. A backend that reports drift is asked again
//!   about each applied step on its own, so that each difference is traced to the step that
//!   made the resource; that step is what a repair re-applies. Drift no single step accounts for
//!   is shown and left to an operator.
//! - [`reconcile`]: re-applies exactly the drifted steps — with the inputs recorded when they
//!   were applied (the template version of the time), or, asked for
//!   [`TemplateVersions::Current`], as the tenant's recorded request plans them with each
//!   template's newest version — as an `apply` run, audited as `tenant.reconcile`. Changes
//!   nothing when nothing drifted.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::drift::applied_steps;
use super::{DriftItem, plugin_tenant, run_url};
use crate::audit::Actor;
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{Outcome, PluginError, PluginTenant, Step};
use crate::tenants::Tenant;

/// How one backend holds a tenant's resources.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendState {
    pub plugin: String,
    /// `healthy`, `drifted` or `unreachable`.
    pub status: String,
    /// When the backend was asked.
    pub observed_at: String,
    /// How long the answer took.
    pub duration_ms: i64,
    /// The applied steps the backend was asked about.
    pub resources: usize,
    /// What differs from what was provisioned.
    pub drift: Vec<DriftItem>,
    /// Why the backend could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A tenant's health in every backend it holds resources in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendHealth {
    pub tenant: String,
    /// `healthy` when every backend is, else `drifted` or `unreachable` (the worse one).
    pub status: String,
    pub checked_at: String,
    pub backends: Vec<BackendState>,
}

struct Observed {
    result: Result<Vec<DriftItem>, String>,
    duration_ms: i64,
}

async fn observe(
    ctx: &Context,
    plugin: &str,
    tenant: &PluginTenant,
    applied: Vec<(Step, Outcome)>,
) -> Observed {
    let started = Instant::now();
    let logged = ctx.plugins.observe(plugin, tenant, applied).await;
    let result = match logged.result {
        Ok(Ok(found)) => Ok(found
            .into_iter()
            .map(|d| DriftItem {
                plugin: plugin.to_owned(),
                resource: d.resource,
                problem: d.problem,
            })
            .collect()),
        Ok(Err(PluginError::Transient(m) | PluginError::Permanent(m))) => Err(m),
        Err(err) => Err(err.to_string()),
    };
    Observed {
        result,
        duration_ms: started.elapsed().as_millis() as i64,
    }
}

fn sorted(held: HashMap<String, Vec<(Step, Outcome)>>) -> Vec<(String, Vec<(Step, Outcome)>)> {
    let mut held: Vec<_> = held.into_iter().collect();
    held.sort_by(|a, b| a.0.cmp(&b.0));
    held
}

/// Asks every backend `tenant` holds resources in whether they are as provisioned.
pub async fn backend_health(ctx: &Context, tenant: &Tenant) -> AppResult<BackendHealth> {
    let ptenant = plugin_tenant(tenant);
    let mut backends = Vec::new();
    for (plugin, applied) in sorted(applied_steps(ctx, tenant).await?) {
        let observed_at = clock::rfc3339(clock::now());
        let resources = applied.len();
        let observed = observe(ctx, &plugin, &ptenant, applied).await;
        let (status, drift, error) = match observed.result {
            Ok(drift) if drift.is_empty() => ("healthy", drift, None),
            Ok(drift) => ("drifted", drift, None),
            Err(error) => ("unreachable", Vec::new(), Some(error)),
        };
        ctx.metrics
            .backend_checks
            .with_label_values(&[plugin.as_str(), status])
            .inc();
        backends.push(BackendState {
            plugin,
            status: status.to_owned(),
            observed_at,
            duration_ms: observed.duration_ms,
            resources,
            drift,
            error,
        });
    }
    let status = if backends.iter().any(|b| b.status == "unreachable") {
        "unreachable"
    } else if backends.iter().any(|b| b.status == "drifted") {
        "drifted"
    } else {
        "healthy"
    };
    Ok(BackendHealth {
        tenant: tenant.slug.clone(),
        status: status.to_owned(),
        checked_at: clock::rfc3339(clock::now()),
        backends,
    })
}

/// Which version of its template a repaired step is rendered from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TemplateVersions {
    /// The version the step was applied with (its recorded inputs, unchanged).
    #[default]
    Recorded,
    /// The template's newest version, rendered with the values the tenant was provisioned with.
    Current,
}

/// The template a repaired step's input is rendered from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepairTemplate {
    pub name: String,
    /// The version the resource was made from.
    pub recorded_version: Option<i64>,
    /// The version the repair applies.
    pub version: Option<i64>,
}

/// A step a repair re-applies, and the drift that asks for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RepairStep {
    pub plugin: String,
    pub step: String,
    pub description: String,
    pub drift: Vec<DriftItem>,
    /// Where the step's input comes from a template (else null).
    pub template: Option<RepairTemplate>,
}

/// What a repair of `tenant` would do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconcilePlan {
    pub tenant: String,
    pub checked_at: String,
    /// Which template versions the repaired steps are rendered from.
    pub templates: TemplateVersions,
    /// The steps to re-apply.
    pub steps: Vec<RepairStep>,
    /// Drift no single step accounts for: left to an operator.
    pub unattributed: Vec<DriftItem>,
    /// Backends that could not be asked: nothing of theirs is repaired.
    pub unreachable: Vec<DriftItem>,
    /// Whether the plan repairs anything.
    pub changes: bool,
    /// The run that carries the repair out (when it was asked for and there was drift).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip)]
    apply: Vec<(String, Step)>,
}

/// Finds what drifted, step by step, and what re-applying it would apply (with `templates`'
/// versions); changes nothing.
pub async fn reconcile_plan(
    ctx: &Context,
    tenant: &Tenant,
    templates: TemplateVersions,
) -> AppResult<ReconcilePlan> {
    let ptenant = plugin_tenant(tenant);
    let (mut steps, mut unattributed, mut unreachable, mut apply) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The inputs the drifted steps were applied with, beside `apply`.
    let mut recorded = Vec::new();
    for (plugin, applied) in sorted(applied_steps(ctx, tenant).await?) {
        let drift = match observe(ctx, &plugin, &ptenant, applied.clone())
            .await
            .result
        {
            Ok(drift) => drift,
            Err(error) => {
                unreachable.push(DriftItem {
                    plugin: plugin.clone(),
                    resource: "*".into(),
                    problem: error,
                });
                continue;
            }
        };
        if drift.is_empty() {
            continue;
        }
        let mut explained = Vec::new();
        for (step, outcome) in applied {
            let own = observe(ctx, &plugin, &ptenant, vec![(step.clone(), outcome)])
                .await
                .result;
            match own {
                Ok(own) if own.is_empty() => {}
                Ok(own) => {
                    explained.extend(own.iter().map(|d| (d.resource.clone(), d.problem.clone())));
                    steps.push(RepairStep {
                        plugin: plugin.clone(),
                        step: step.id.clone(),
                        description: step.description.clone(),
                        drift: own,
                        template: None,
                    });
                    recorded.push(step.input.clone());
                    apply.push((plugin.clone(), step));
                }
                Err(error) => unreachable.push(DriftItem {
                    plugin: plugin.clone(),
                    resource: step.id.clone(),
                    problem: error,
                }),
            }
        }
        unattributed.extend(
            drift
                .into_iter()
                .filter(|d| !explained.contains(&(d.resource.clone(), d.problem.clone()))),
        );
    }
    if templates == TemplateVersions::Current && !apply.is_empty() {
        let fresh = super::desired::current_steps(ctx, tenant).await?;
        for (plugin, step) in &mut apply {
            if let Some((_, now)) = fresh.iter().find(|(p, s)| p == plugin && s.id == step.id) {
                *step = now.clone();
            }
        }
    }
    for ((repair, (_, step)), before) in steps.iter_mut().zip(&apply).zip(&recorded) {
        repair.template = step_template(before, &step.input);
    }
    Ok(ReconcilePlan {
        tenant: tenant.slug.clone(),
        checked_at: clock::rfc3339(clock::now()),
        templates,
        changes: !apply.is_empty(),
        steps,
        unattributed,
        unreachable,
        run: None,
        url: None,
        apply,
    })
}

/// The template a step's input was rendered from, before (`recorded`) and as re-applied (`now`).
fn step_template(recorded: &str, now: &str) -> Option<RepairTemplate> {
    let origin = |input: &str| {
        serde_json::from_str::<serde_json::Value>(input)
            .ok()
            .and_then(|v| super::template_origin(&v))
    };
    let (name, recorded_version, _) = origin(recorded)?;
    let version = origin(now).map(|(_, v, _)| v).unwrap_or(recorded_version);
    Some(RepairTemplate {
        name,
        recorded_version,
        version,
    })
}

/// Re-applies the drifted steps of `plan` as an `apply` run; the plan with its run. Nothing is
/// queued when nothing drifted.
pub async fn reconcile(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    mut plan: ReconcilePlan,
) -> AppResult<ReconcilePlan> {
    if !tenant.status.is_active() {
        return Err(AppError::conflict(
            "illegal_transition",
            format!(
                "cannot repair tenant `{}`: it is {}; its backends hold it as such (repair a trial or active tenant)",
                tenant.slug, tenant.status
            ),
            serde_json::json!({ "current_status": tenant.status }),
        ));
    }
    if plan.apply.is_empty() {
        return Ok(plan);
    }
    let run = super::spec::queue_apply(ctx, actor, tenant, &plan.apply, "tenant.reconcile").await?;
    plan.url = Some(run_url(&run));
    plan.run = Some(run);
    Ok(plan)
}
