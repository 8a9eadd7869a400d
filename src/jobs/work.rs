//! The work of each job: housekeeping, retention (with its export before a purge), trials and
//! the alerts of every live tenant.

use crate::alerts::{AlertKind, AlertSeverity};
use crate::audit::Actor;
use crate::clock;
use crate::config::TrialEndAction;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;

pub(super) async fn housekeeping(ctx: &Context) -> AppResult<String> {
    let now = clock::now();
    let mut conn = ctx.db.conn().await?;
    let sessions = store::sessions::delete_expired(&mut conn, now).await?;
    let attempts = store::logins::delete_expired_attempts(&mut conn, now).await?;
    let links = store::logins::delete_expired_setup_links(&mut conn, now).await?;
    let keys = store::provisioning::expire_keys(&mut conn, now).await?;
    drop(conn);
    let events = crate::quotas::report::forget_old_events(ctx).await?;
    let overrides = crate::quotas::overrides::end_expired(ctx, &job_actor("housekeeping")).await?;
    Ok(format!(
        "swept {sessions} sessions, {attempts} login attempts, {links} setup links, {keys} idempotency keys, {events} reported-event ids, {overrides} ended temporary overrides"
    ))
}

/// Tenants purged by one run of `retention` at most (the next run takes the rest).
const PURGES_PER_RUN: i64 = 1000;

/// Purges the canceled and deleted tenants whose retention period has ended, as an operator's
/// purge would (audited, and undone in every backend by a purge run), as `job:retention`.
pub(super) async fn retention(ctx: &Context) -> AppResult<String> {
    let ended = clock::now() - chrono::Duration::days(ctx.config.retention_days.into());
    let slugs = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::slugs_in_status_since(
            &mut conn,
            &["canceled", "deleted"],
            ended,
            PURGES_PER_RUN,
        )
        .await?
    };
    let actor = job_actor("retention");
    let reason = format!(
        "retention period of {} days ended",
        ctx.config.retention_days
    );
    let (mut purged, mut failed) = (Vec::new(), Vec::new());
    for slug in slugs {
        if let Some(dir) = &ctx.config.jobs.export_before_purge_dir
            && let Err(err) = export_before_purge(ctx, &actor, dir, &slug).await
        {
            failed.push(format!("{slug}: not purged, its export failed: {err}"));
            continue;
        }
        match crate::lifecycle::purge(ctx, &actor, &slug, false, &reason).await {
            Ok(_) => purged.push(slug),
            // Restored, purged or changed meanwhile: not this run's to purge.
            Err(AppError::NotFound { .. } | AppError::Conflict { .. }) => {}
            Err(err) => failed.push(format!("{slug}: {err}")),
        }
    }
    if !failed.is_empty() {
        return Err(AppError::Unavailable(format!(
            "purged {}; could not purge {}",
            purged.len(),
            failed.join("; ")
        )));
    }
    Ok(if purged.is_empty() {
        "nothing to purge".to_owned()
    } else {
        format!("purged {} tenants: {}", purged.len(), purged.join(", "))
    })
}

/// Writes the bundle of `slug` to `dir` (created when missing) as `<slug>-<time>.tar`,
/// readable by this user only; the path written.
async fn export_before_purge(
    ctx: &Context,
    actor: &Actor,
    dir: &std::path::Path,
    slug: &str,
) -> AppResult<std::path::PathBuf> {
    let bundle =
        crate::bundles::export(ctx, actor, slug, crate::bundles::ExportOptions::default()).await?;
    let tar = bundle.to_tar()?;
    let path = dir.join(format!(
        "{slug}-{}.tar",
        clock::now().format("%Y%m%dT%H%M%SZ")
    ));
    let written = path.clone();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        crate::bundles::backup::write_private(&path, &tar)
    })
    .await
    .map_err(AppError::internal)?
    .map_err(|err| AppError::Unavailable(format!("cannot write {}: {err}", written.display())))?;
    tracing::info!(tenant = %slug, path = %written.display(), "retention: exported before the purge");
    Ok(written)
}

/// Who a job acts as in the audit log and the status history.
fn job_actor(job: &str) -> Actor {
    Actor {
        name: format!("job:{job}"),
        source_ip: None,
        request_id: None,
    }
}

/// Trials ended (or noticed) by one run of `trials` at most (the next run takes the rest).
const TRIALS_PER_RUN: i64 = 1000;

/// Ends the trials that have ended (`trials.end_action`: suspend or convert, as the lifecycle
/// transition an operator would make, as `job:trials`), raises `trial_ending` for the trials
/// that end within `trials.notice_days`, and resolves that alert for tenants no longer in trial.
pub(super) async fn trials(ctx: &Context) -> AppResult<String> {
    let now = clock::now();
    let config = &ctx.config.trials;
    let actor = job_actor("trials");
    let (transition, done) = match config.end_action {
        TrialEndAction::Suspend => (crate::tenants::Transition::Suspend, "suspended"),
        TrialEndAction::Convert => (crate::tenants::Transition::Convert, "converted to active"),
    };
    let ended = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::trials_ending_before(&mut conn, now, TRIALS_PER_RUN).await?
    };
    let (mut changed, mut failed) = (Vec::new(), Vec::new());
    for (id, slug, end) in ended {
        let reason = format!("trial ended on {}", end.format("%Y-%m-%d %H:%M UTC"));
        match crate::lifecycle::transition(ctx, &actor, &slug, transition, &reason).await {
            Ok(_) => {
                crate::alerts::operations::resolve(
                    ctx,
                    &id,
                    &slug,
                    AlertKind::TrialEnding,
                    "trial",
                    &format!("{slug}'s {reason}; it is {done}"),
                )
                .await?;
                changed.push(slug);
            }
            // Changed meanwhile by an operator: not this run's.
            Err(AppError::NotFound { .. } | AppError::Conflict { .. }) => {}
            Err(err) => failed.push(format!("{slug}: {err}")),
        }
    }
    let mut noticed = 0;
    if config.notice_days > 0 {
        let horizon = now + chrono::Duration::days(config.notice_days.into());
        let soon = {
            let mut conn = ctx.db.conn().await?;
            store::tenants::trials_ending_before(&mut conn, horizon, TRIALS_PER_RUN).await?
        };
        for (id, slug, end) in soon.into_iter().filter(|(_, _, end)| *end > now) {
            let left = end - now;
            let days = (left.num_seconds() as f64 / 86_400.0).ceil().max(1.0);
            let raised = crate::alerts::operations::raise(
                ctx,
                crate::alerts::operations::Raise {
                    tenant_id: &id,
                    slug: &slug,
                    kind: AlertKind::TrialEnding,
                    subject: "trial",
                    period: &end.format("%Y-%m-%d").to_string(),
                    severity: AlertSeverity::Warning,
                    value: days,
                    message: format!(
                        "{slug}'s trial ends on {} (in {days} day{}); it is then {done}",
                        end.format("%Y-%m-%d %H:%M UTC"),
                        if days == 1.0 { "" } else { "s" }
                    ),
                },
            )
            .await?;
            noticed += usize::from(raised.is_some());
        }
    }
    // Tenants converted, suspended or canceled by an operator before their trial ended.
    let stale = {
        let mut conn = ctx.db.conn().await?;
        store::alerts::open_of_kind(&mut conn, AlertKind::TrialEnding.as_str(), TRIALS_PER_RUN)
            .await?
    };
    for (row, slug, status) in stale.into_iter().filter(|(_, _, s)| s != "trial") {
        crate::alerts::operations::resolve(
            ctx,
            &row.tenant_id,
            &slug,
            AlertKind::TrialEnding,
            "trial",
            &format!("{slug} is no longer in trial: it is {status}"),
        )
        .await?;
    }
    if !failed.is_empty() {
        return Err(AppError::Unavailable(format!(
            "{} trials ended; could not end {}",
            changed.len(),
            failed.join("; ")
        )));
    }
    Ok(match changed.is_empty() {
        true => format!("no trial ended; {noticed} trial_ending alerts raised"),
        false => format!(
            "{} trials ended ({done}): {}; {noticed} trial_ending alerts raised",
            changed.len(),
            changed.join(", ")
        ),
    })
}

/// Evaluates the alerts of every trial and active tenant.
pub(super) async fn alerts(ctx: &Context) -> AppResult<String> {
    let (mut after, mut evaluated, mut raised, mut resolved) = (String::new(), 0, 0, 0);
    loop {
        let rows = {
            let mut conn = ctx.db.conn().await?;
            store::tenants::page_after(&mut conn, &after, 200).await?
        };
        let Some(last) = rows.last() else { break };
        after = last.slug.clone();
        for row in &rows {
            let tenant = crate::tenants::Tenant::from_row(row, ctx.config.retention_days)?;
            if !tenant.status.is_active() {
                continue;
            }
            let changes = crate::alerts::evaluate::evaluate_tenant(ctx, &tenant).await?;
            evaluated += 1;
            raised += changes.raised.len();
            resolved += changes.resolved.len();
        }
    }
    Ok(format!(
        "{evaluated} tenants evaluated: {raised} alerts raised, {resolved} resolved"
    ))
}
