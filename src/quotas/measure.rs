//! Usage measured in the backends: the `measure` (WIT 0.2.0) of each enabled provisioner that
//! holds resources of the tenant, given the steps applied for it there. A figure is recorded as
//! its metric's value only when the metric is a gauge of the catalogue, the plugin's manifest
//! declares it (`measures`), and the value is within the catalogue's bound (`max_value`); any
//! other figure is shown with why it was not recorded (what the server counts itself, rates,
//! which are counted from events, undeclared metrics, values out of bounds).

use serde::Serialize;
use utoipa::ToSchema;

use super::report::{self, UsageEvent};
use crate::config::MetricKind;
use crate::context::Context;
use crate::error::AppResult;
use crate::plugin_host::World;
use crate::tenants::Tenant;

/// One figure a plugin measured.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Measured {
    pub plugin: String,
    pub metric: String,
    pub value: f64,
    /// Recorded as the metric's value (rounded up to a whole number).
    pub recorded: bool,
    /// Why it was not recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A plugin whose `measure` failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeasureFailure {
    pub plugin: String,
    pub error: String,
}

/// What measuring a tenant found and recorded.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MeasureOutcome {
    pub measured: Vec<Measured>,
    pub failures: Vec<MeasureFailure>,
}

/// Measures every active tenant that holds resources in a backend (the `usage-measure` job):
/// how many were measured, and how many measurements failed.
pub async fn measure_all(ctx: &Context) -> AppResult<(usize, usize)> {
    let ids = {
        let mut conn = ctx.db.conn().await?;
        crate::store::provisioning::tenants_with_resources(&mut conn).await?
    };
    let (mut measured, mut failed) = (0, 0);
    for id in ids {
        let Some(tenant) = crate::tenants::get_by_id(ctx, &id).await? else {
            continue;
        };
        if !tenant.status.is_active() {
            continue;
        }
        match measure(ctx, &tenant).await {
            Ok(outcome) => {
                measured += 1;
                for failure in outcome.failures {
                    failed += 1;
                    tracing::warn!(
                        tenant = %tenant.slug,
                        plugin = %failure.plugin,
                        "usage: measuring failed: {}",
                        failure.error
                    );
                }
            }
            Err(err) => {
                failed += 1;
                tracing::warn!(tenant = %tenant.slug, "usage: cannot measure: {err}");
            }
        }
    }
    tracing::info!(
        measured,
        failed,
        "usage: tenants measured in their backends"
    );
    Ok((measured, failed))
}

/// Measures `tenant` in every enabled provisioner that holds resources of it, and records what
/// is a declared gauge of the catalogue within its bound (all of it or, when recording fails,
/// none). A plugin that holds nothing of the tenant is not asked: it cannot speak for it.
pub async fn measure(ctx: &Context, tenant: &Tenant) -> AppResult<MeasureOutcome> {
    if !tenant.status.is_active() {
        return Err(crate::error::AppError::forbidden(format!(
            "tenant {} is {}: its usage is not measured",
            tenant.slug, tenant.status
        )));
    }
    let metrics = super::metrics(ctx);
    let plugin_tenant = crate::provisioning::plugin_tenant(tenant);
    let stamp = chrono::Utc::now().timestamp_millis();
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    let mut events = Vec::new();
    let mut held = crate::provisioning::applied_steps(ctx, tenant).await?;
    for plugin in ctx.plugins.enabled(World::Provisioner).await? {
        let Some(applied) = held.remove(&plugin) else {
            continue;
        };
        let declared = ctx
            .plugins
            .manifest(&plugin)
            .await
            .map(|m| m.measures)
            .unwrap_or_default();
        let logged = ctx.plugins.measure(&plugin, &plugin_tenant, applied).await;
        let figures = match logged.result {
            Ok(Ok(figures)) => figures,
            Ok(Err(err)) => {
                failures.push(MeasureFailure {
                    plugin,
                    error: match err {
                        crate::plugin_host::PluginError::Transient(m)
                        | crate::plugin_host::PluginError::Permanent(m) => m,
                    },
                });
                continue;
            }
            Err(err) => {
                failures.push(MeasureFailure {
                    plugin,
                    error: err.to_string(),
                });
                continue;
            }
        };
        for figure in figures {
            let metric = metrics.iter().find(|m| m.name == figure.metric);
            let note = match metric {
                None => Some("not a metric of the quota catalogue".to_owned()),
                Some(m) if m.metered => Some("counted by the server itself".to_owned()),
                Some(m) if m.kind != MetricKind::Gauge => Some(
                    "a rate: counted from reported events, not from a measured total".to_owned(),
                ),
                Some(_) if !declared.contains(&figure.metric) => Some(format!(
                    "not one of the metrics the plugin's manifest declares it measures (`measures`: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                )),
                Some(_) if !figure.value.is_finite() || figure.value < 0.0 => {
                    Some("not a value of 0 or more".to_owned())
                }
                Some(m) if figure.value > m.max_value as f64 => Some(format!(
                    "past the catalogue's bound of {} for it (`max_value`)",
                    m.max_value
                )),
                Some(_) => None,
            };
            if note.is_none() {
                events.push(UsageEvent {
                    id: format!("measure:{plugin}:{}:{stamp}", figure.metric),
                    metric: figure.metric.clone(),
                    increment: None,
                    value: Some(figure.value.ceil() as i64),
                    timestamp: None,
                });
            }
            measured.push(Measured {
                plugin: plugin.clone(),
                metric: figure.metric,
                value: figure.value,
                recorded: note.is_none(),
                note,
            });
        }
    }
    if !events.is_empty() {
        report::report(ctx, tenant, &events, false).await?;
    }
    Ok(MeasureOutcome { measured, failures })
}
