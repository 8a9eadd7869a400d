//! `tenantry tenant usage`, `tenantry tenant quota show|set` and `tenantry usage report`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Map, Value};

use super::{Output, app_error, print, table};
use crate::audit::Actor;
use crate::context::Context;
use crate::quotas::report::UsageEvent;
use crate::quotas::{self, QuotaView};
use crate::tenants;

/// A tenant's limits.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Each metric's tier default, override, limit in effect, use and severity.
    Show { slug: String },
    /// Set or clear overrides (audited as `quota.updated`).
    Set {
        slug: String,
        /// `METRIC=N` sets a limit, `METRIC=default` goes back to the tier's default.
        #[arg(long = "limit", value_name = "METRIC=N", required_unless_present_any = ["soft", "hard"])]
        limits: Vec<String>,
        /// Make these metrics' quotas soft: counted past the limit and alerted on.
        #[arg(long, value_name = "METRIC")]
        soft: Vec<String>,
        /// Make these metrics' quotas hard: use past the limit is refused.
        #[arg(long, value_name = "METRIC")]
        hard: Vec<String>,
        /// Make the `--limit`s temporary: they fall back to the tier's default after this
        /// many hours by themselves (audited when set and when they end). Needs `--reason`.
        #[arg(long, value_name = "HOURS", requires = "reason")]
        expires_in_hours: Option<u64>,
        /// Why (required with `--expires-in-hours`; kept with the override).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The quota policy that decides for the tenant; `--use NAME` chooses one for it,
    /// `--default` goes back to its tier's (or the default).
    Policy {
        slug: String,
        #[arg(long = "use", value_name = "PLUGIN", conflicts_with = "default")]
        policy: Option<String>,
        #[arg(long)]
        default: bool,
    },
}

/// Usage reported by an operator's system.
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Report one use of a metric (counted once per id).
    Report {
        slug: String,
        #[arg(long)]
        metric: String,
        /// How much was used (a rate or a counter).
        #[arg(long, conflicts_with = "value", required_unless_present = "value")]
        increment: Option<i64>,
        /// The current value (a gauge).
        #[arg(long)]
        value: Option<i64>,
        /// The event's id: the same id is counted once.
        #[arg(long)]
        id: String,
        /// When it was used (RFC 3339; default now).
        #[arg(long)]
        timestamp: Option<DateTime<Utc>>,
    },
    /// Measure a tenant's usage in its backends now (each enabled provisioner's `measure`,
    /// WIT 0.2.0) and record the gauges of the catalogue.
    Measure { slug: String },
    /// The heaviest tenants: API traffic over the window (every server's), heaviest first.
    Heaviest {
        /// Minutes back from now, 1–60.
        #[arg(long, default_value_t = 15)]
        window_minutes: i64,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// requests, errors, error-rate, p95-ms or throttled.
        #[arg(long, value_enum, default_value_t = CliRankBy::Requests)]
        by: CliRankBy,
    },
    /// Reset a counter or rate of the current period to zero (audited as `quota.usage_reset`
    /// with what it held and why).
    Reset {
        slug: String,
        #[arg(long)]
        metric: String,
        #[arg(long)]
        reason: String,
    },
}

fn quota_rows(views: &[QuotaView]) -> String {
    let limit = |l: Option<u64>| l.map_or("—".to_owned(), |l| l.to_string());
    let rows = views
        .iter()
        .map(|v| {
            vec![
                v.metric.clone(),
                v.used.to_string(),
                limit(v.limit),
                limit(v.default_limit),
                limit(v.override_limit),
                if v.hard { "hard" } else { "soft" }.into(),
                format!("{:.1} %", v.percent),
                v.severity.as_str().to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "METRIC", "USED", "LIMIT", "DEFAULT", "OVERRIDE", "KIND", "USE", "SEVERITY",
        ],
        rows,
        "no metrics",
    )
}

pub async fn usage(ctx: &Context, out: Output, slug: &str) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let summary = quotas::summary(ctx, &tenant).await.map_err(app_error)?;
    print(out, &summary, || {
        format!(
            "{} ({}, tier {}){}\n{}",
            summary.tenant,
            summary.status,
            summary.tier,
            if summary.at_risk { " — AT RISK" } else { "" },
            quota_rows(&summary.metrics)
        )
    })
}

pub async fn quota_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: QuotaCommand,
) -> anyhow::Result<()> {
    match cmd {
        QuotaCommand::Policy {
            slug,
            policy,
            default,
        } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let in_force = if policy.is_some() || default {
                let choice = quotas::policy::PolicyChoice { policy };
                quotas::policy::choose_for_tenant(ctx, actor, &tenant, &choice)
                    .await
                    .map_err(app_error)?
            } else {
                quotas::policy_of(ctx, &tenant).await.map_err(app_error)?
            };
            print(out, &in_force, || {
                format!(
                    "{slug}: quota policy {} (chosen for the {})",
                    in_force.policy,
                    match in_force.chosen_for {
                        "default" => "server, by default",
                        other => other,
                    }
                )
            })
        }
        QuotaCommand::Show { slug } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let views = quotas::quotas(ctx, &tenant).await.map_err(app_error)?;
            print(out, &views, || quota_rows(&views))
        }
        QuotaCommand::Set {
            slug,
            limits,
            soft,
            hard,
            expires_in_hours,
            reason,
        } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let mut body = Map::new();
            for item in &limits {
                let Some((metric, value)) = item.split_once('=') else {
                    anyhow::bail!("--limit {item}: expected METRIC=N or METRIC=default");
                };
                let value = match value.trim() {
                    "default" | "none" => Value::Null,
                    n => Value::from(n.parse::<u64>().map_err(|_| {
                        anyhow::anyhow!("--limit {item}: `{n}` is not a whole number")
                    })?),
                };
                let value = match (&value, expires_in_hours, &reason) {
                    (Value::Number(_), hours, Some(reason)) => {
                        let mut object = Map::new();
                        object.insert("limit".into(), value.clone());
                        object.insert("reason".into(), Value::from(reason.clone()));
                        if let Some(hours) = hours {
                            object.insert("expires_in_hours".into(), Value::from(hours));
                        }
                        Value::Object(object)
                    }
                    _ => value,
                };
                body.insert(metric.trim().to_owned(), value);
            }
            for (metrics, is_hard) in [(&soft, false), (&hard, true)] {
                for metric in metrics {
                    let entry = body.entry(metric.clone()).or_insert(Value::Null);
                    let limit = entry.take();
                    let mut object = Map::new();
                    match limit {
                        Value::Object(existing) => object = existing,
                        Value::Null
                            if limits.iter().any(|l| l.starts_with(&format!("{metric}="))) =>
                        {
                            anyhow::bail!(
                                "--limit {metric}=default cannot be combined with --soft/--hard {metric}"
                            )
                        }
                        Value::Null => {}
                        limit => {
                            object.insert("limit".into(), limit);
                        }
                    }
                    object.insert("hard".into(), Value::Bool(is_hard));
                    *entry = Value::Object(object);
                }
            }
            let changes = quotas::parse_overrides(ctx, &body).map_err(app_error)?;
            let views = quotas::set_overrides(ctx, actor, &tenant, &changes)
                .await
                .map_err(app_error)?;
            print(out, &views, || quota_rows(&views))
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliRankBy {
    Requests,
    Errors,
    ErrorRate,
    P95Ms,
    Throttled,
}

pub async fn usage_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: UsageCommand,
) -> anyhow::Result<()> {
    match cmd {
        UsageCommand::Report {
            slug,
            metric,
            increment,
            value,
            id,
            timestamp,
        } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let event = UsageEvent {
                id: id.clone(),
                metric,
                increment,
                value,
                timestamp,
            };
            let outcome = quotas::report::report(ctx, &tenant, &[event], true)
                .await
                .map_err(app_error)?;
            print(out, &outcome, || {
                format!("{id}: {}", outcome.events[0].outcome)
            })
        }
        UsageCommand::Heaviest {
            window_minutes,
            limit,
            by,
        } => {
            use crate::quotas::traffic::{RankBy, heaviest};
            let by = match by {
                CliRankBy::Requests => RankBy::Requests,
                CliRankBy::Errors => RankBy::Errors,
                CliRankBy::ErrorRate => RankBy::ErrorRate,
                CliRankBy::P95Ms => RankBy::P95Ms,
                CliRankBy::Throttled => RankBy::Throttled,
            };
            let ranked = heaviest(ctx, window_minutes, limit, by)
                .await
                .map_err(app_error)?;
            print(out, &ranked, || {
                let rows = ranked
                    .iter()
                    .map(|v| {
                        vec![
                            v.tenant.clone().unwrap_or_default(),
                            v.requests.to_string(),
                            format!("{:.1}", v.requests_per_minute),
                            format!("{:.2} %", v.error_rate),
                            format!("{:.0} ms", v.p95_ms),
                            v.throttled.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "TENANT",
                        "REQUESTS",
                        "PER MINUTE",
                        "ERRORS",
                        "P95",
                        "THROTTLED",
                    ],
                    rows,
                    &format!("no API traffic in the last {window_minutes} minutes"),
                )
            })
        }
        UsageCommand::Reset {
            slug,
            metric,
            reason,
        } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let reset = quotas::overrides::reset_usage(ctx, actor, &tenant, &metric, &reason)
                .await
                .map_err(app_error)?;
            print(out, &reset, || {
                format!(
                    "{} of {} ({}) reset: {} → 0",
                    reset.metric, tenant.slug, reset.period, reset.from
                )
            })
        }
        UsageCommand::Measure { slug } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
            let outcome = quotas::measure::measure(ctx, &tenant)
                .await
                .map_err(app_error)?;
            print(out, &outcome, || {
                let mut lines: Vec<String> = outcome
                    .measured
                    .iter()
                    .map(|m| {
                        format!(
                            "{} {} = {}: {}",
                            m.plugin,
                            m.metric,
                            m.value,
                            match &m.note {
                                None => "recorded".to_owned(),
                                Some(note) => format!("not recorded ({note})"),
                            }
                        )
                    })
                    .collect();
                lines.extend(
                    outcome
                        .failures
                        .iter()
                        .map(|f| format!("{}: measuring failed: {}", f.plugin, f.error)),
                );
                if lines.is_empty() {
                    "no plugin measured anything".to_owned()
                } else {
                    lines.join("\n")
                }
            })
        }
    }
}
