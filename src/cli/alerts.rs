//! `tenantry alerts list` and `tenantry webhook …`.

use clap::Subcommand;

use super::{Output, app_error, print, table};
use crate::alerts::webhooks::{self, NewWebhook};
use crate::alerts::{self, AlertQuery};
use crate::audit::Actor;
use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first (open ones unless --status says otherwise).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// quota, at_risk, policy_failing, error_rate, latency, throttled, trial_ending, job_failing, database_down or database_slow.
        #[arg(long)]
        kind: Option<String>,
        /// The metric of a quota alert.
        #[arg(long)]
        metric: Option<String>,
        /// warning, critical or blocked.
        #[arg(long)]
        severity: Option<String>,
        /// open, resolved or all.
        #[arg(long, default_value = "open")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// The `next_before` of the previous page.
        #[arg(long)]
        before: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Register an endpoint; prints its signing secret once.
    Add {
        url: String,
        /// An event to send (repeat; default: every event).
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        /// Only this tenant's events.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// The registered endpoints, with their deliveries by state.
    List,
    /// Remove an endpoint and its deliveries.
    Remove { id: String },
    /// An endpoint's deliveries, newest first.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send a `webhook.ping` (a running server delivers it within a second).
    Ping { id: String },
    /// Attempt a pending or failed delivery now.
    Retry { id: String, delivery: String },
}

pub(super) async fn alerts_command(
    ctx: &Context,
    out: Output,
    cmd: AlertsCommand,
) -> anyhow::Result<()> {
    let AlertsCommand::List {
        tenant,
        kind,
        metric,
        severity,
        status,
        limit,
        before,
    } = cmd;
    let page = alerts::list(
        ctx,
        &AlertQuery {
            tenant,
            kind,
            metric,
            severity,
            status: Some(status),
            before,
            limit: Some(limit),
        },
    )
    .await
    .map_err(app_error)?;
    print(out, &page, || {
        let rows = page
            .items
            .iter()
            .map(|a| {
                vec![
                    a.raised_at.format("%Y-%m-%d %H:%M").to_string(),
                    a.tenant.clone(),
                    a.severity.as_str().to_owned(),
                    a.kind.as_str().to_owned(),
                    a.subject.clone(),
                    a.status.to_string(),
                    a.message.clone(),
                ]
            })
            .collect();
        let mut text = table(
            &[
                "RAISED", "TENANT", "SEVERITY", "KIND", "SUBJECT", "STATUS", "MESSAGE",
            ],
            rows,
            "no alerts",
        );
        if let Some(next) = &page.next_before {
            text.push_str(&format!("\nmore: --before {next}"));
        }
        text
    })
}

pub(super) async fn webhook_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: WebhookCommand,
) -> anyhow::Result<()> {
    match cmd {
        WebhookCommand::Add {
            url,
            events,
            tenant,
            description,
        } => {
            let created = webhooks::create(
                ctx,
                actor,
                &NewWebhook {
                    url,
                    events,
                    tenant,
                    description,
                },
            )
            .await
            .map_err(app_error)?;
            print(out, &created, || {
                format!(
                    "webhook {} → {}\nsigning secret (shown once; verify webhook-signature with it): {}",
                    created.webhook.id, created.webhook.url, created.secret
                )
            })
        }
        WebhookCommand::List => {
            let hooks = webhooks::list(ctx).await.map_err(app_error)?;
            print(out, &hooks, || {
                let rows = hooks
                    .iter()
                    .map(|h| {
                        vec![
                            h.id.clone(),
                            h.url.clone(),
                            if h.events.is_empty() {
                                "*".into()
                            } else {
                                h.events.join(",")
                            },
                            h.tenant.clone().unwrap_or_else(|| "*".into()),
                            format!(
                                "{} pending, {} delivered, {} failed",
                                h.deliveries.pending, h.deliveries.delivered, h.deliveries.failed
                            ),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "URL", "EVENTS", "TENANT", "DELIVERIES"],
                    rows,
                    "no webhooks",
                )
            })
        }
        WebhookCommand::Remove { id } => {
            webhooks::delete(ctx, actor, &id).await.map_err(app_error)?;
            print(out, &serde_json::json!({ "removed": id }), || {
                format!("removed webhook {id}")
            })
        }
        WebhookCommand::Deliveries { id, limit } => {
            let page = webhooks::deliveries(ctx, &id, None, Some(limit))
                .await
                .map_err(app_error)?;
            print(out, &page, || {
                let rows = page
                    .items
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.event_type.clone(),
                            d.status.to_string(),
                            d.attempts.to_string(),
                            d.last_status_code.map_or("-".into(), |c| c.to_string()),
                            d.next_attempt_at
                                .map_or("-".into(), |t| t.format("%H:%M:%S").to_string()),
                            d.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "EVENT", "STATUS", "ATTEMPTS", "LAST", "NEXT", "ERROR"],
                    rows,
                    "no deliveries",
                )
            })
        }
        WebhookCommand::Ping { id } => {
            let delivery = webhooks::ping(ctx, &id).await.map_err(app_error)?;
            print(out, &delivery, || {
                format!("queued ping {} to webhook {id}", delivery.id)
            })
        }
        WebhookCommand::Retry { id, delivery } => {
            webhooks::retry(ctx, &id, &delivery)
                .await
                .map_err(app_error)?;
            print(out, &serde_json::json!({ "due": delivery }), || {
                format!("delivery {delivery} is due now")
            })
        }
    }
}
