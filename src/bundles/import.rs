//! Importing a tenant's bundle.
//!
//! Everything is checked before anything is written: the archive (every part's SHA-256), each
//! part's records, that the tenant's slug and id are free, that every sealed secret opens with
//! this installation's keys, and that every backend plugin the bundle names is enabled here. A
//! refused import leaves nothing behind. The registry's parts are then written in one
//! transaction; the resources the tenant was provisioned with are re-applied (one `apply` run,
//! with the recorded inputs) and carried to the tenant's status (a suspended tenant's backends
//! suspend it again); each plugin imports its part; and the tenant is exported again and
//! compared with the bundle: any difference outside what the manifest names as
//! instance-specific is reported, and the import is not `ok`.
//!
//! An import is all or nothing: one that is not `ok` (a run or a plugin's import failed, or the
//! tenant differs from its bundle) is taken back — the registry's part removed and a purge run
//! undoing in the backends what the import made there — and says so (`rolled_back_by`).

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{Bundle, Exclusion, ExportOptions, differences, export};
use crate::audit::{self, Actor, AuditEvent};
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{BundlePart, PluginError};
use crate::provisioning::{self, LifecycleChange, resource_context};
use crate::store::models::ResourceRow;
use crate::tenants::{Tenant, TenantStatus};
use crate::{store, transaction};

mod check;

use check::{Checked, check, plan_of};

const REQUEST_PART: &str = "provisioning/request.json";

/// One line of what an import creates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanLine {
    /// `tenant`, `status history`, `api keys`… or `backends/<plugin>`.
    pub what: String,
    pub count: u64,
    pub detail: String,
}

/// What importing a bundle creates.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportPlan {
    pub tenant: String,
    pub tenant_id: String,
    pub status: crate::tenants::TenantStatus,
    pub exported_at: String,
    pub lines: Vec<PlanLine>,
    /// What the bundle leaves out, as its manifest says.
    pub excluded: Vec<Exclusion>,
}

/// What a backend plugin's import did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackendImport {
    pub plugin: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manual_follow_up: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportOutcome {
    pub plan: ImportPlan,
    pub dry_run: bool,
    /// The run that re-applied the tenant's resources, and how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_status: Option<String>,
    pub backends: Vec<BackendImport>,
    /// Where the tenant, exported again, differs from the bundle.
    pub differences: Vec<String>,
    /// Imported, every backend restored, and no difference.
    pub ok: bool,
    /// An import that is not `ok` is taken back whole: the registry's part removed and the
    /// backends' undone by a purge run (this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_by: Option<RollBack>,
}

/// How an import that was not whole was taken back.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RollBack {
    /// The purge run that undid what the import made in the backends (none when it made
    /// nothing there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// How that run ended; `succeeded` when there was none.
    pub status: String,
}

/// How long an import waits for the run that re-applies the resources.
const RUN_WAIT: Duration = Duration::from_secs(900);

async fn wait_run(ctx: &Context, id: &str) -> AppResult<provisioning::RunView> {
    let started = std::time::Instant::now();
    loop {
        let run = provisioning::get_run(ctx, id).await?;
        if !run.is_open() {
            return Ok(run);
        }
        if started.elapsed() > RUN_WAIT {
            return Err(AppError::Unavailable(format!(
                "run {id} has not finished after {} s; follow it at {}",
                RUN_WAIT.as_secs(),
                provisioning::run_url(id)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Imports `bundle` (or, with `dry_run`, says what it would create). Whoever calls it runs a
/// provisioning worker (a server does; the CLI starts one).
pub async fn import(
    ctx: &Context,
    actor: &Actor,
    bundle: &Bundle,
    dry_run: bool,
) -> AppResult<ImportOutcome> {
    let checked = check(ctx, bundle).await?;
    let plan = plan_of(bundle, &checked);
    let mut outcome = ImportOutcome {
        plan,
        dry_run,
        run: None,
        run_status: None,
        backends: Vec::new(),
        differences: Vec::new(),
        ok: true,
        rolled_back_by: None,
    };
    if dry_run {
        return Ok(outcome);
    }
    let Checked {
        row,
        history,
        keys,
        overrides,
        counters,
        resources,
        request,
    } = checked;
    transaction!(ctx.db, |tx| {
        crate::tenants::record::insert_restored(tx, &row, &history).await?;
        store::bundles::insert_rows(tx, &keys, &overrides, &counters).await?;
        if let Some(r) = &request {
            // The database key comes back at the tenant's next provision or apply (working it
            // out here would mean rendering the connection).
            store::tenant_requests::put(tx, &row.id, &r.request, None, r.recorded_at).await?;
        }
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.import",
                &row.id,
                &row.slug,
                json!({
                    "format": super::FORMAT,
                    "exported_at": bundle.manifest.exported_at,
                    "history": history.len(),
                    "api_keys": keys.len(),
                    "quota_overrides": overrides.len(),
                    "usage_counters": counters.len(),
                    "resources": resources.len(),
                }),
            ),
        )
        .await?;
        Ok(())
    })?;
    let tenant = Tenant::from_row(&row, ctx.config.retention_days)?;
    restore(ctx, actor, bundle, &tenant, resources, &mut outcome).await?;
    if !outcome.ok {
        outcome.rolled_back_by = Some(roll_back(ctx, actor, &tenant, &outcome).await?);
    }
    Ok(outcome)
}

/// Takes back an import that is not whole: in one transaction the tenant's registry part is
/// removed and a purge run queued, which undoes in the backends what the import made there; it
/// is waited for.
async fn roll_back(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    outcome: &ImportOutcome,
) -> AppResult<RollBack> {
    let why = outcome
        .backends
        .iter()
        .find_map(|b| b.error.as_ref().map(|e| format!("{}: {e}", b.plugin)))
        .or_else(|| outcome.differences.first().cloned())
        .unwrap_or_else(|| "the import was not whole".into());
    let reason: String = format!("import rolled back: {why}")
        .chars()
        .take(480)
        .collect();
    let run = transaction!(ctx.db, |tx| {
        crate::tenants::record::withdraw_import_in(tx, actor, &tenant.slug, &reason).await?;
        provisioning::queue_lifecycle_in(
            tx,
            &ctx.keyring,
            actor,
            tenant,
            LifecycleChange::Purge,
            &reason,
        )
        .await
    })?;
    ctx.runs_queued.notify_one();
    let Some(run) = run else {
        return Ok(RollBack {
            run: None,
            status: provisioning::RunStatus::Succeeded.to_string(),
        });
    };
    let view = wait_run(ctx, &run).await?;
    Ok(RollBack {
        run: Some(run),
        status: view.status.to_string(),
    })
}

/// Restores into the backends what the registry part of an import names, and compares the
/// tenant, exported again, with the bundle; what went wrong is in `outcome`.
async fn restore(
    ctx: &Context,
    actor: &Actor,
    bundle: &Bundle,
    tenant: &Tenant,
    resources: Vec<ResourceRow>,
    outcome: &mut ImportOutcome,
) -> AppResult<()> {
    // The resources, re-applied in plan order with their recorded inputs (never in the order
    // they were last applied: a repair re-applies an early step late).
    if !resources.is_empty() {
        let mut ordered = resources;
        ordered.sort_by_key(|r| (r.seq, r.applied_at));
        let mut steps = Vec::new();
        for r in &ordered {
            let input = ctx.keyring.open(
                &r.input,
                &resource_context(&r.tenant_id, &r.plugin, &r.step_id),
            )?;
            steps.push((
                r.plugin.clone(),
                crate::plugin_host::Step {
                    id: r.step_id.clone(),
                    description: r.description.clone(),
                    input,
                },
            ));
        }
        let run =
            provisioning::spec::queue_apply(ctx, actor, tenant, &steps, "tenant.import").await?;
        let view = wait_run(ctx, &run).await?;
        outcome.run_status = Some(view.status.to_string());
        outcome.run = Some(run.clone());
        if view.status != provisioning::RunStatus::Succeeded {
            outcome.ok = false;
            outcome.differences.push(format!(
                "the resources could not be re-applied: run {run} {}{}",
                view.status,
                view.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            return Ok(());
        }
        // A tenant that is not live has its backends told so again.
        let change = match tenant.status {
            TenantStatus::Suspended => Some(LifecycleChange::Suspend),
            TenantStatus::Canceled | TenantStatus::Deleted => Some(LifecycleChange::Cancel),
            _ => None,
        };
        if let Some(change) = change {
            let queued = transaction!(ctx.db, |tx| {
                provisioning::queue_lifecycle_in(
                    tx,
                    &ctx.keyring,
                    actor,
                    tenant,
                    change,
                    "restored from a bundle",
                )
                .await
            })?;
            ctx.runs_queued.notify_one();
            if let Some(run) = queued {
                let view = wait_run(ctx, &run).await?;
                if view.status != provisioning::RunStatus::Succeeded {
                    outcome.ok = false;
                    outcome.differences.push(format!(
                        "the backends were not told the tenant is {}: run {run} {}",
                        tenant.status, view.status
                    ));
                }
            }
        }
    }

    // Each plugin's own part.
    let ptenant = provisioning::plugin_tenant(tenant);
    for part in bundle.manifest.parts.iter().filter(|p| p.plugin.is_some()) {
        let plugin = part.plugin.clone().unwrap_or_default();
        // What the bundle carries sealed reaches the plugin open (checked before anything
        // was written).
        let (data, _) = super::sealed_fields::map(&bundle.parts[&part.path], |pointer, value| {
            ctx.keyring.open(
                value,
                &super::sealed_fields::context(&tenant.id, &plugin, pointer),
            )
        })?;
        let logged = ctx
            .plugins
            .import_tenant(
                &plugin,
                &ptenant,
                BundlePart {
                    media_type: part.media_type.clone(),
                    data,
                    instance_specific: part.instance_specific.clone(),
                },
            )
            .await;
        let (ok, manual_follow_up, error) = match logged.result {
            Ok(Ok(done)) => (true, done.manual_follow_up, None),
            Ok(Err(PluginError::Transient(m) | PluginError::Permanent(m))) => {
                (false, None, Some(m))
            }
            Err(err) => (false, None, Some(err.to_string())),
        };
        outcome.ok &= ok;
        outcome.backends.push(BackendImport {
            plugin,
            ok,
            manual_follow_up,
            error,
        });
    }

    // The tenant as it now is, against the bundle.
    let again = export(
        ctx,
        actor,
        &tenant.slug,
        ExportOptions {
            recipient: None,
            unaudited: true,
        },
    )
    .await?;
    outcome.differences.extend(differences(bundle, &again));
    outcome.ok &= outcome.differences.is_empty();
    Ok(())
}
