//! Drift: what the backends say about the resources a tenant was provisioned with (each backend
//! plugin's `observe`).

use std::collections::HashMap;

use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::models::ResourceRow;
use crate::tenants::Tenant;
use serde::Serialize;
use utoipa::ToSchema;

use super::views::{ResourceView, held_resources, resource_view};
use super::{plugin_tenant, resource_context};

/// A difference between what a tenant was provisioned with and what a backend holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DriftItem {
    pub plugin: String,
    pub resource: String,
    pub problem: String,
}

/// What the backends say about a tenant's resources.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DriftReport {
    pub tenant: String,
    pub checked_at: String,
    /// Resources the tenant holds, per plugin and step, with the template that produced them.
    pub resources: Vec<ResourceView>,
    pub drift: Vec<DriftItem>,
    /// Backends that could not be asked, and why.
    pub errors: Vec<DriftItem>,
}

/// The steps applied for `tenant` that hold resources, by plugin, as `observe`, `measure` and
/// `export-tenant` take them (inputs opened).
pub async fn applied_steps(
    ctx: &Context,
    tenant: &Tenant,
) -> AppResult<HashMap<String, Vec<(crate::plugin_host::Step, crate::plugin_host::Outcome)>>> {
    let rows = held_resources(ctx, tenant).await?;
    applied_by_plugin(ctx, tenant, &rows)
}

fn applied_by_plugin(
    ctx: &Context,
    tenant: &Tenant,
    rows: &[ResourceRow],
) -> AppResult<HashMap<String, Vec<(crate::plugin_host::Step, crate::plugin_host::Outcome)>>> {
    let mut held: HashMap<String, Vec<_>> = HashMap::new();
    for r in rows {
        let input = ctx
            .keyring
            .open(
                &r.input,
                &resource_context(&tenant.id, &r.plugin, &r.step_id),
            )
            .map_err(AppError::internal)?;
        held.entry(r.plugin.clone()).or_default().push((
            crate::plugin_host::Step {
                id: r.step_id.clone(),
                description: r.description.clone(),
                input,
            },
            crate::plugin_host::Outcome {
                output: r.output.clone(),
                manual_follow_up: None,
            },
        ));
    }
    Ok(held)
}

/// Asks every backend the tenant holds resources in for drift (`observe`).
pub async fn drift(ctx: &Context, tenant: &Tenant) -> AppResult<DriftReport> {
    let rows = held_resources(ctx, tenant).await?;
    let ptenant = plugin_tenant(tenant);
    let mut plugins: Vec<String> = Vec::new();
    for r in &rows {
        if !plugins.contains(&r.plugin) {
            plugins.push(r.plugin.clone());
        }
    }
    let mut held = applied_by_plugin(ctx, tenant, &rows)?;
    let mut drift = Vec::new();
    let mut errors = Vec::new();
    for plugin in plugins {
        let applied = held.remove(&plugin).unwrap_or_default();
        let logged = ctx.plugins.observe(&plugin, &ptenant, applied).await;
        match logged.result {
            Ok(Ok(found)) => drift.extend(found.into_iter().map(|d| DriftItem {
                plugin: plugin.clone(),
                resource: d.resource,
                problem: d.problem,
            })),
            Ok(Err(crate::plugin_host::PluginError::Transient(m)))
            | Ok(Err(crate::plugin_host::PluginError::Permanent(m))) => errors.push(DriftItem {
                plugin: plugin.clone(),
                resource: "*".into(),
                problem: m,
            }),
            Err(err) => errors.push(DriftItem {
                plugin: plugin.clone(),
                resource: "*".into(),
                problem: err.to_string(),
            }),
        }
    }
    Ok(DriftReport {
        tenant: tenant.slug.clone(),
        checked_at: clock::rfc3339(clock::now()),
        resources: rows.iter().map(resource_view).collect(),
        drift,
        errors,
    })
}
