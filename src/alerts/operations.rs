//! Alerts of the scheduled jobs: a trial about to end (`trial_ending`, on the tenant), a job
//! that failed (`job_failing`, on the platform's own tenant). Each is raised once per tenant,
//! kind, subject and period like every alert, its webhook queued in the same transaction, and
//! resolved by the job when what it tells of is over.

use chrono::NaiveDateTime;
use serde_json::json;

use super::{Alert, AlertKind, AlertSeverity, webhooks};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::models::AlertRow;
use crate::store::vocabulary::AlertStatus;
use crate::store::{self, Conn};
use crate::transaction;

/// An alert a job raises.
#[derive(Debug, Clone)]
pub struct Raise<'a> {
    pub tenant_id: &'a str,
    pub slug: &'a str,
    pub kind: AlertKind,
    pub subject: &'a str,
    pub period: &'a str,
    pub severity: AlertSeverity,
    pub value: f64,
    pub message: String,
}

/// The threshold of the alerts raised here: they have one line each.
const THRESHOLD: &str = "raised";

/// Raises `alert`, or updates what it says when it is open already. The alert when it was
/// raised now (its webhook queued), none when it was open.
pub async fn raise(ctx: &Context, alert: Raise<'_>) -> AppResult<Option<Alert>> {
    let now = clock::now();
    let raised = transaction!(ctx.db, |tx| {
        let existing = find(tx, &alert).await?;
        let id = match existing {
            None => {
                let row = AlertRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    tenant_id: alert.tenant_id.to_owned(),
                    kind: alert.kind,
                    subject: alert.subject.to_owned(),
                    period: alert.period.to_owned(),
                    threshold: THRESHOLD.to_owned(),
                    severity: alert.severity,
                    status: AlertStatus::Open,
                    value: alert.value,
                    raised_value: alert.value,
                    message: alert.message.clone(),
                    times_raised: 1,
                    raised_at: now,
                    updated_at: now,
                    resolved_at: None,
                };
                store::alerts::insert(tx, &row).await?.then_some(row.id)
            }
            Some(row) if row.status == AlertStatus::Resolved => {
                store::alerts::reopen(tx, &row.id, alert.value, &alert.message, now)
                    .await?
                    .then_some(row.id)
            }
            Some(row) => {
                store::alerts::touch(tx, &row.id, alert.value, &alert.message, now).await?;
                None
            }
        };
        match id {
            Some(id) => Ok(Some(
                announce(
                    tx,
                    &id,
                    alert.tenant_id,
                    alert.slug,
                    webhooks::ALERT_RAISED,
                    now,
                )
                .await?,
            )),
            None => Ok(None),
        }
    })?;
    if let Some(raised) = &raised {
        ctx.metrics
            .alerts_raised
            .with_label_values(&[raised.kind.as_str(), raised.severity.as_str()])
            .inc();
        tracing::warn!(tenant = %alert.slug, kind = raised.kind.as_str(), "alert raised: {}", raised.message);
        ctx.deliveries_queued.notify_one();
    }
    Ok(raised)
}

/// Resolves the open alerts of `kind` and `subject` (any period) of a tenant with `message`;
/// the alerts resolved now.
pub async fn resolve(
    ctx: &Context,
    tenant_id: &str,
    slug: &str,
    kind: AlertKind,
    subject: &str,
    message: &str,
) -> AppResult<Vec<Alert>> {
    let now = clock::now();
    let resolved = transaction!(ctx.db, |tx| {
        let open: Vec<AlertRow> = store::alerts::of_tenant(tx, tenant_id, &[])
            .await?
            .into_iter()
            .filter(|r| r.kind == kind && r.subject == subject)
            .collect();
        let mut resolved = Vec::new();
        for row in open {
            if store::alerts::resolve(tx, &row.id, row.value, message, now).await? {
                resolved.push(
                    announce(tx, &row.id, tenant_id, slug, webhooks::ALERT_RESOLVED, now).await?,
                );
            }
        }
        Ok(resolved)
    })?;
    for alert in &resolved {
        tracing::info!(tenant = %slug, kind = alert.kind.as_str(), "alert resolved: {}", alert.message);
    }
    if !resolved.is_empty() {
        ctx.deliveries_queued.notify_one();
    }
    Ok(resolved)
}

async fn find(tx: &mut Conn, alert: &Raise<'_>) -> AppResult<Option<AlertRow>> {
    Ok(
        store::alerts::of_tenant(tx, alert.tenant_id, &[alert.period.to_owned()])
            .await?
            .into_iter()
            .find(|r| {
                r.kind == alert.kind
                    && r.subject == alert.subject
                    && r.period == alert.period
                    && r.threshold == THRESHOLD
            }),
    )
}

async fn announce(
    tx: &mut Conn,
    id: &str,
    tenant_id: &str,
    slug: &str,
    event: &str,
    now: NaiveDateTime,
) -> AppResult<Alert> {
    let alert = store::alerts::get(tx, id)
        .await?
        .map(|row| Alert::from_row(&row, slug))
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("alert {id} vanished")))?;
    webhooks::enqueue(tx, Some(tenant_id), event, json!({ "alert": alert }), now).await?;
    Ok(alert)
}
