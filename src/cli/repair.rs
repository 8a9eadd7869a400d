//! `tenantry tenant drift`, `tenantry tenant reconcile` and `tenantry tenant retry`: what
//! drifted in the backends, its repair, and the way forward from a failed provision.

use super::provisioning::{finish, wait_for};
use super::{Output, app_error, print};
use crate::audit::Actor;
use crate::context::Context;
use crate::provisioning::{self, ReconcilePlan, TemplateVersions};
use crate::tenants;

pub async fn drift(ctx: &Context, out: Output, slug: &str) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let report = provisioning::drift(ctx, &tenant).await.map_err(app_error)?;
    print(out, &report, || {
        let mut lines = Vec::new();
        if report.drift.is_empty() && report.errors.is_empty() {
            lines.push(format!("{slug}: no drift"));
        }
        for d in &report.drift {
            lines.push(format!("{}: {} — {}", d.plugin, d.resource, d.problem));
        }
        for e in &report.errors {
            lines.push(format!("{}: cannot check: {}", e.plugin, e.problem));
        }
        lines.join("\n")
    })?;
    if !report.drift.is_empty() {
        anyhow::bail!("{} resources drifted", report.drift.len());
    }
    Ok(())
}

fn reconcile_text(plan: &ReconcilePlan) -> String {
    let mut text = if plan.changes {
        format!("tenant {}: steps that drifted, to re-apply:", plan.tenant)
    } else {
        format!("tenant {}: nothing to repair", plan.tenant)
    };
    for s in &plan.steps {
        text.push_str(&format!(
            "\n  ~ {}/{} — {}",
            s.plugin, s.step, s.description
        ));
        if let Some(t) = &s.template {
            let version = |v: Option<i64>| v.map_or("?".to_owned(), |v| v.to_string());
            text.push_str(&if t.version == t.recorded_version {
                format!("\n      from template {}@{}", t.name, version(t.version))
            } else {
                format!(
                    "\n      from template {}@{} (made from @{})",
                    t.name,
                    version(t.version),
                    version(t.recorded_version)
                )
            });
        }
        for d in &s.drift {
            text.push_str(&format!("\n      {} — {}", d.resource, d.problem));
        }
    }
    for d in &plan.unattributed {
        text.push_str(&format!(
            "\n  ! {}: {} — {} (no single step made it: repair by hand)",
            d.plugin, d.resource, d.problem
        ));
    }
    for d in &plan.unreachable {
        text.push_str(&format!("\n  ? {}: cannot check: {}", d.plugin, d.problem));
    }
    text
}

/// `tenantry tenant reconcile SLUG [--yes] [--current-templates]`: the plan, then (with `--yes`) the repair run.
pub async fn reconcile(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    slug: &str,
    yes: bool,
    templates: TemplateVersions,
) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let plan = provisioning::reconcile_plan(ctx, &tenant, templates)
        .await
        .map_err(app_error)?;
    if !yes || !plan.changes {
        print(out, &plan, || {
            let mut text = reconcile_text(&plan);
            if plan.changes {
                text.push_str("\nrun again with --yes to repair");
            }
            text
        })?;
        return Ok(());
    }
    if out == Output::Text {
        eprintln!("{}", reconcile_text(&plan));
    }
    let plan = provisioning::reconcile(ctx, actor, &tenant, plan)
        .await
        .map_err(app_error)?;
    let run = plan
        .run
        .as_deref()
        .expect("a plan with changes queues a run");
    let run = wait_for(ctx, run).await?;
    finish(out, &run)
}

/// `tenantry tenant retry SLUG [--no-wait]`: a failed tenant provisioned again.
pub async fn retry(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    slug: &str,
    no_wait: bool,
) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let accepted = provisioning::retry(ctx, actor, &tenant)
        .await
        .map_err(app_error)?;
    if no_wait {
        return print(out, &accepted, || {
            format!(
                "tenant {slug}: provisioning again, run {} ({})",
                accepted.run,
                accepted.steps.join(", ")
            )
        });
    }
    let run = wait_for(ctx, &accepted.run).await?;
    finish(out, &run)
}
