//! SQL of webhook endpoints and their outbox of deliveries.
//!
//! A delivery is leased like a provisioning run: `FOR UPDATE SKIP LOCKED` on PostgreSQL, the
//! write lock of `BEGIN IMMEDIATE` on SQLite, so two servers never send the same one at once,
//! and a server that dies mid-delivery leaves it to another when the lease ends.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{DeliveryRow, WebhookRow};
use super::schema::{webhook_deliveries, webhooks};
use super::vocabulary::DeliveryStatus;
use crate::error::AppResult;
use crate::with_conn;

pub async fn insert(conn: &mut Conn, row: &WebhookRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(webhooks::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn list(conn: &mut Conn) -> AppResult<Vec<WebhookRow>> {
    Ok(with_conn!(conn, |c| webhooks::table
        .order(webhooks::created_at.asc())
        .select(WebhookRow::as_select())
        .load(c)
        .await)?)
}

pub async fn get(conn: &mut Conn, id: &str) -> AppResult<Option<WebhookRow>> {
    Ok(with_conn!(conn, |c| webhooks::table
        .filter(webhooks::id.eq(id))
        .select(WebhookRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Removes an endpoint and its deliveries; false when there was none.
pub async fn delete(conn: &mut Conn, id: &str) -> AppResult<bool> {
    let n = with_conn!(conn, |c| {
        diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(id)))
            .execute(c)
            .await?;
        diesel::delete(webhooks::table.filter(webhooks::id.eq(id)))
            .execute(c)
            .await
    })?;
    Ok(n == 1)
}

/// The enabled endpoints that hear about `tenant_id`'s events (and the platform-wide ones).
pub async fn listening(conn: &mut Conn, tenant_id: Option<&str>) -> AppResult<Vec<WebhookRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = webhooks::table
            .filter(webhooks::enabled.eq(true))
            .select(WebhookRow::as_select())
            .into_boxed();
        query = match tenant_id {
            Some(t) => query.filter(
                webhooks::tenant_id
                    .is_null()
                    .or(webhooks::tenant_id.eq(t.to_owned())),
            ),
            None => query.filter(webhooks::tenant_id.is_null()),
        };
        query.load(c).await
    })?)
}

pub async fn enqueue(conn: &mut Conn, rows: &[DeliveryRow]) -> AppResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // One statement a row: SQLite's batch insert cannot leave optional columns out.
    for row in rows {
        with_conn!(conn, |c| diesel::insert_into(webhook_deliveries::table)
            .values(row)
            .execute(c)
            .await)?;
    }
    Ok(())
}

/// Leases up to `limit` pending deliveries that are due, for `owner` until `until`.
pub async fn claim_due(
    conn: &mut Conn,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<DeliveryRow>> {
    let claimed = with_conn!(
        conn,
        postgres | c | {
            diesel::sql_query(
                "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2 \
                 WHERE id IN (SELECT id FROM webhook_deliveries \
                    WHERE status = 'pending' AND next_attempt_at <= $3 \
                    AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                    ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind::<diesel::sql_types::Text, _>(owner)
            .bind::<diesel::sql_types::Timestamp, _>(until)
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .bind::<diesel::sql_types::BigInt, _>(limit)
            .load::<DeliveryRow>(c)
            .await
        },
        sqlite | c | {
            let ids: Vec<String> = webhook_deliveries::table
                .filter(webhook_deliveries::status.eq(DeliveryStatus::Pending))
                .filter(webhook_deliveries::next_attempt_at.le(now))
                .filter(
                    webhook_deliveries::lease_expires_at
                        .is_null()
                        .or(webhook_deliveries::lease_expires_at.lt(now)),
                )
                .order(webhook_deliveries::next_attempt_at.asc())
                .limit(limit)
                .select(webhook_deliveries::id)
                .load(c)
                .await?;
            diesel::update(webhook_deliveries::table.filter(webhook_deliveries::id.eq_any(&ids)))
                .set((
                    webhook_deliveries::lease_owner.eq(owner),
                    webhook_deliveries::lease_expires_at.eq(until),
                ))
                .execute(c)
                .await?;
            webhook_deliveries::table
                .filter(webhook_deliveries::id.eq_any(&ids))
                .select(DeliveryRow::as_select())
                .load(c)
                .await
        }
    )?;
    Ok(claimed)
}

/// What one attempt of a delivery came to.
pub struct Attempt {
    pub status: DeliveryStatus,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub at: NaiveDateTime,
}

/// Records an attempt of `owner`'s leased delivery and releases the lease; false when the lease
/// was no longer `owner`'s.
pub async fn record_attempt(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    attempt: &Attempt,
) -> AppResult<bool> {
    let delivered_at = (attempt.status == DeliveryStatus::Delivered).then_some(attempt.at);
    let n = with_conn!(conn, |c| diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::id.eq(id))
            .filter(webhook_deliveries::lease_owner.eq(owner))
    )
    .set((
        webhook_deliveries::status.eq(attempt.status),
        webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
        webhook_deliveries::next_attempt_at.eq(attempt.next_attempt_at),
        webhook_deliveries::last_attempt_at.eq(Some(attempt.at)),
        webhook_deliveries::last_status_code.eq(attempt.status_code),
        webhook_deliveries::last_error.eq(attempt.error.clone()),
        webhook_deliveries::delivered_at.eq(delivered_at),
        webhook_deliveries::lease_owner.eq(None::<String>),
        webhook_deliveries::lease_expires_at.eq(None::<NaiveDateTime>),
    ))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Makes a delivery due now again (a manual retry); false when there is none of that endpoint.
pub async fn retry_now(
    conn: &mut Conn,
    webhook_id: &str,
    id: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        webhook_deliveries::table
            .filter(webhook_deliveries::id.eq(id))
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .filter(webhook_deliveries::status.ne(DeliveryStatus::Delivered))
    )
    .set((
        webhook_deliveries::status.eq(DeliveryStatus::Pending),
        webhook_deliveries::next_attempt_at.eq(Some(now)),
    ))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(
    conn: &mut Conn,
    webhook_id: &str,
    before: Option<&str>,
    limit: i64,
) -> AppResult<Vec<DeliveryRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = webhook_deliveries::table
            .filter(webhook_deliveries::webhook_id.eq(webhook_id))
            .order(webhook_deliveries::id.desc())
            .limit(limit)
            .select(DeliveryRow::as_select())
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(webhook_deliveries::id.lt(before.to_owned()));
        }
        query.load(c).await
    })?)
}

/// Deliveries by status, over every endpoint.
pub async fn count_by_status(conn: &mut Conn) -> AppResult<Vec<(String, DeliveryStatus, i64)>> {
    Ok(with_conn!(conn, |c| webhook_deliveries::table
        .group_by((webhook_deliveries::webhook_id, webhook_deliveries::status))
        .select((
            webhook_deliveries::webhook_id,
            webhook_deliveries::status,
            diesel::dsl::count_star()
        ))
        .load(c)
        .await)?)
}
