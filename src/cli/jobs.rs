//! `tenantry job list`.

use clap::Subcommand;

use super::{Output, print, table};
use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// The scheduled jobs: interval, next run, and the last run's time, duration and outcome.
    List,
}

pub(super) async fn job_command(ctx: &Context, out: Output, cmd: JobCommand) -> anyhow::Result<()> {
    let JobCommand::List = cmd;
    let jobs = crate::jobs::list(ctx).await.map_err(super::app_error)?;
    print(out, &jobs, || {
        table(
            &[
                "JOB", "EVERY", "NEXT RUN", "LAST RUN", "TOOK", "RUNS", "FAILED", "LAST",
            ],
            jobs.iter()
                .map(|j| {
                    vec![
                        j.name.clone(),
                        format!("{} s", j.interval_seconds),
                        j.next_run_at.clone(),
                        j.last_started_at.clone().unwrap_or_else(|| "never".into()),
                        j.last_duration_ms
                            .map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
                        j.runs.to_string(),
                        j.failures.to_string(),
                        match (&j.running_on, &j.last_error, &j.last_outcome) {
                            (Some(server), _, _) => format!("running on {server}"),
                            (None, Some(err), _) => format!("failed: {err}"),
                            (None, None, Some(outcome)) => outcome.clone(),
                            (None, None, None) => "-".into(),
                        },
                    ]
                })
                .collect(),
            "no scheduled jobs (every interval is 0)",
        )
    })
}
