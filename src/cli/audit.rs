//! `tenantry audit …`: the audit log listed and its hash chain verified.

use crate::audit::{self, AuditQuery};
use crate::context::Context;
use clap::Subcommand;

use super::{Output, app_error, print};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Exact action, or a prefix ending in a dot (`tenant.`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Records older than this sequence number (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Check the hash chain, from the newest checkpoint (left by the last check that found it
    /// intact); exits non-zero when a record was changed or removed.
    Verify {
        /// Hash every record from the first.
        #[arg(long)]
        full: bool,
    },
}

pub(super) async fn audit_command(
    ctx: &Context,
    out: Output,
    cmd: AuditCommand,
) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            tenant,
            action,
            actor,
            since,
            until,
            limit,
            before,
        } => {
            let page = audit::list(
                &ctx.db,
                &AuditQuery {
                    tenant,
                    action,
                    actor,
                    since: since.map(|t| t.naive_utc()),
                    until: until.map(|t| t.naive_utc()),
                    before,
                    limit: Some(limit),
                },
            )
            .await
            .map_err(app_error)?;
            print(out, &page, || {
                let mut lines: Vec<String> = page
                    .items
                    .iter()
                    .map(|r| {
                        format!(
                            "{:>6}  {}  {:<16} {:<28} {:<20} {}",
                            r.seq,
                            r.at.format("%Y-%m-%d %H:%M:%S"),
                            r.actor,
                            r.action,
                            r.tenant.as_deref().unwrap_or("-"),
                            r.details
                        )
                    })
                    .collect();
                if let Some(before) = page.next_before {
                    lines.push(format!("more: --before {before}"));
                }
                lines.join("\n")
            })
        }
        AuditCommand::Verify { full } => {
            let report = audit::verify(&ctx.db, full).await.map_err(app_error)?;
            print(out, &report, || {
                if report.ok && report.from_seq > 1 {
                    format!(
                        "audit chain intact: {} records ({} checked from record {}, the rest at an earlier check; --full checks them all)",
                        report.records, report.checked, report.from_seq
                    )
                } else if report.ok {
                    format!("audit chain intact: {} records", report.records)
                } else {
                    format!(
                        "audit chain BROKEN: {}",
                        report.problem.clone().unwrap_or_default()
                    )
                }
            })?;
            anyhow::ensure!(
                report.ok,
                "audit chain is broken at record {}",
                report.first_broken_seq.unwrap_or(0)
            );
            Ok(())
        }
    }
}
