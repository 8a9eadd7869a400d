//! `tenantry tenant export|import` and `tenantry backup --dir DIR`: a tenant as one bundle.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Output, app_error, print};
use crate::audit::Actor;
use crate::context::Context;
use crate::tenants;

/// `tenantry tenant export SLUG [--file F] [--recipient-key K] [--format tar|json]`.
pub(super) async fn export(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    file: Option<PathBuf>,
    recipient_key: Option<PathBuf>,
    format: &str,
) -> anyhow::Result<()> {
    let slug = slug.to_owned();
    let bytes = if format == "json" {
        anyhow::ensure!(
            recipient_key.is_none(),
            "--recipient-key re-seals a tar bundle; the JSON bundle keeps this installation's sealing"
        );
        let bundle = tenants::record::export(ctx, actor, &slug)
            .await
            .map_err(app_error)?;
        let mut json = serde_json::to_vec_pretty(&bundle)?;
        json.push(b'\n');
        json
    } else {
        let recipient = recipient_key
            .map(|path| {
                crate::secrets::MasterKey::read_file(&path).with_context(|| {
                    format!("--recipient-key {}: not a master key file", path.display())
                })
            })
            .transpose()?;
        let bundle = crate::bundles::export(
            ctx,
            actor,
            &slug,
            crate::bundles::ExportOptions {
                recipient,
                unaudited: false,
            },
        )
        .await
        .map_err(app_error)?;
        bundle.to_tar().map_err(app_error)?
    };
    match file {
        Some(path) => {
            crate::bundles::backup::write_private(&path, &bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("tenant {slug} exported to {}", path.display());
        }
        None => {
            use std::io::{IsTerminal as _, Write as _};
            anyhow::ensure!(
                format == "json" || !std::io::stdout().is_terminal(),
                "the bundle is a tar archive: write it with --file FILE, or redirect standard output"
            );
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

/// `tenantry tenant import --file F [--dry-run]`.
pub(super) async fn import(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    file: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    let bytes = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        bytes
    } else {
        std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
    };
    if !crate::bundles::is_tar(&bytes) {
        anyhow::ensure!(!dry_run, "--dry-run needs a tar bundle");
        let bundle = crate::http::body::parse(&bytes).map_err(app_error)?;
        let tenant = tenants::record::import(ctx, actor, &bundle)
            .await
            .map_err(app_error)?;
        if out == Output::Text {
            eprintln!("note: {}", tenants::record::RECORD_ONLY);
        }
        return print(out, &tenant, || {
            format!(
                "restored tenant {} ({}): its record only",
                tenant.slug, tenant.status
            )
        });
    }
    let bundle = crate::bundles::Bundle::from_tar(&bytes).map_err(app_error)?;
    // The resources are re-applied by a run: this command carries it out itself.
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let worker = (!dry_run).then(|| crate::provisioning::saga::spawn(ctx.clone(), stop.clone()));
    let outcome = crate::bundles::import(ctx, actor, &bundle, dry_run).await;
    stop.notify_one();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    let outcome = outcome.map_err(app_error)?;
    print(out, &outcome, || import_text(&outcome))?;
    anyhow::ensure!(
        outcome.ok,
        "tenant {} not imported: it was not whole, and was taken back (see above)",
        outcome.plan.tenant
    );
    Ok(())
}

fn import_text(outcome: &crate::bundles::ImportOutcome) -> String {
    let plan = &outcome.plan;
    let mut lines = vec![format!(
        "{} tenant {} ({}, exported {}):",
        if outcome.dry_run {
            "would restore"
        } else {
            "restored"
        },
        plan.tenant,
        plan.status,
        plan.exported_at
    )];
    for l in &plan.lines {
        lines.push(format!("  + {} {} — {}", l.count, l.what, l.detail));
    }
    for e in &plan.excluded {
        lines.push(format!("  - {} (not in the bundle: {})", e.name, e.why));
    }
    if let (Some(run), Some(status)) = (&outcome.run, &outcome.run_status) {
        lines.push(format!("resources re-applied by run {run}: {status}"));
    }
    for b in &outcome.backends {
        lines.push(match (&b.error, &b.manual_follow_up) {
            (Some(e), _) => format!("backend {}: import failed: {e}", b.plugin),
            (None, Some(f)) => format!("backend {}: imported; to do by hand: {f}", b.plugin),
            (None, None) => format!("backend {}: imported", b.plugin),
        });
    }
    for d in &outcome.differences {
        lines.push(format!("difference: {d}"));
    }
    if !outcome.dry_run && outcome.ok {
        lines.push("verified: the tenant exported again matches the bundle".into());
    }
    if let Some(back) = &outcome.rolled_back_by {
        lines.push(match &back.run {
            Some(run) => format!(
                "taken back: the registry holds nothing of it, and run {run} undid its backends ({})",
                back.status
            ),
            None => "taken back: the registry holds nothing of it".into(),
        });
    }
    lines.join("\n")
}

/// `tenantry backup --dir DIR [--full] [--keep N]`.
pub(super) async fn backup(
    ctx: &Context,
    actor: &crate::audit::Actor,
    out: Output,
    dir: &std::path::Path,
    full: bool,
    keep: usize,
) -> anyhow::Result<()> {
    let report = crate::bundles::backup::backup(ctx, actor, dir, full, keep)
        .await
        .map_err(super::app_error)?;
    print(out, &report, || {
        let mut text = format!(
            "backup in {}: {} exported, {} unchanged",
            report.dir,
            report.exported.len(),
            report.unchanged.len()
        );
        if !report.exported.is_empty() {
            text.push_str(&format!("\nexported: {}", report.exported.join(", ")));
        }
        if !report.gone.is_empty() {
            text.push_str(&format!(
                "\nno longer in the registry (their last file is kept): {}",
                report.gone.join(", ")
            ));
        }
        text
    })
}
