//! SQL of alerts: one row per tenant, kind, subject, period and threshold.
//!
//! Raising is an insert that does nothing when the alert exists, and re-raising an update of a
//! resolved one: two servers evaluating the same tenant at once raise it once.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::AlertRow;
use super::schema::{alerts, tenants};
use super::vocabulary::{AlertKind, AlertSeverity, AlertStatus};
use crate::error::AppResult;
use crate::with_conn;

/// The alerts of one tenant that are open, or belong to one of `periods` (the current ones;
/// `""` for alerts without a period).
pub async fn of_tenant(
    conn: &mut Conn,
    tenant_id: &str,
    periods: &[String],
) -> AppResult<Vec<AlertRow>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::tenant_id.eq(tenant_id))
        .filter(
            alerts::status
                .eq(AlertStatus::Open)
                .or(alerts::period.eq_any(periods))
        )
        .select(AlertRow::as_select())
        .load(c)
        .await)?)
}

/// Inserts a new alert; false when one with its key exists.
pub async fn insert(conn: &mut Conn, row: &AlertRow) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::insert_into(alerts::table)
        .values(row)
        .on_conflict((
            alerts::tenant_id,
            alerts::kind,
            alerts::subject,
            alerts::period,
            alerts::threshold
        ))
        .do_nothing()
        .execute(c)
        .await)?;
    Ok(n == 1)
}

/// Raises a resolved alert again; false when it is open already (another server did).
pub async fn reopen(
    conn: &mut Conn,
    id: &str,
    value: f64,
    message: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        alerts::table
            .filter(alerts::id.eq(id))
            .filter(alerts::status.eq(AlertStatus::Resolved))
    )
    .set((
        alerts::status.eq(AlertStatus::Open),
        alerts::value.eq(value),
        alerts::raised_value.eq(value),
        alerts::message.eq(message),
        alerts::times_raised.eq(alerts::times_raised + 1),
        alerts::raised_at.eq(now),
        alerts::updated_at.eq(now),
        alerts::resolved_at.eq(None::<NaiveDateTime>),
    ))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Resolves an open alert; false when it was resolved already.
pub async fn resolve(
    conn: &mut Conn,
    id: &str,
    value: f64,
    message: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        alerts::table
            .filter(alerts::id.eq(id))
            .filter(alerts::status.eq(AlertStatus::Open))
    )
    .set((
        alerts::status.eq(AlertStatus::Resolved),
        alerts::value.eq(value),
        alerts::message.eq(message),
        alerts::updated_at.eq(now),
        alerts::resolved_at.eq(Some(now)),
    ))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Updates what an open alert measured (no notification).
pub async fn touch(
    conn: &mut Conn,
    id: &str,
    value: f64,
    message: &str,
    now: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        alerts::table
            .filter(alerts::id.eq(id))
            .filter(alerts::status.eq(AlertStatus::Open))
    )
    .set((
        alerts::value.eq(value),
        alerts::message.eq(message),
        alerts::updated_at.eq(now),
    ))
    .execute(c)
    .await)?;
    Ok(())
}

/// What a listing of alerts asks for.
#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    pub tenant_id: Option<String>,
    pub kind: Option<AlertKind>,
    pub subject: Option<String>,
    pub severity: Option<AlertSeverity>,
    pub status: Option<AlertStatus>,
    /// Alerts with an id below this one (ids grow with time).
    pub before: Option<String>,
    pub limit: i64,
}

/// Alerts with their tenant's slug, newest first.
pub async fn list(conn: &mut Conn, filter: &AlertFilter) -> AppResult<Vec<(AlertRow, String)>> {
    Ok(with_conn!(conn, |c| {
        let mut query = alerts::table
            .inner_join(tenants::table)
            .select((AlertRow::as_select(), tenants::slug))
            .order(alerts::id.desc())
            .limit(filter.limit)
            .into_boxed();
        if let Some(tenant) = &filter.tenant_id {
            query = query.filter(alerts::tenant_id.eq(tenant.clone()));
        }
        if let Some(kind) = &filter.kind {
            query = query.filter(alerts::kind.eq(kind.clone()));
        }
        if let Some(subject) = &filter.subject {
            query = query.filter(alerts::subject.eq(subject.clone()));
        }
        if let Some(severity) = &filter.severity {
            query = query.filter(alerts::severity.eq(severity.clone()));
        }
        if let Some(status) = &filter.status {
            query = query.filter(alerts::status.eq(status.clone()));
        }
        if let Some(before) = &filter.before {
            query = query.filter(alerts::id.lt(before.clone()));
        }
        query.load(c).await
    })?)
}

/// Open alerts by severity.
pub async fn open_by_severity(conn: &mut Conn) -> AppResult<Vec<(String, i64)>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::status.eq(AlertStatus::Open))
        .group_by(alerts::severity)
        .select((alerts::severity, diesel::dsl::count_star()))
        .load(c)
        .await)?)
}

/// The tenants with an open alert (at most `limit`).
pub async fn tenants_with_open(conn: &mut Conn, limit: i64) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::status.eq(AlertStatus::Open))
        .select(alerts::tenant_id)
        .distinct()
        .limit(limit)
        .load(c)
        .await)?)
}

/// Open quota alerts as (tenant slug, metric, percent): the tenants at warning or above.
pub async fn open_quota_use(conn: &mut Conn) -> AppResult<Vec<(String, String, f64)>> {
    Ok(with_conn!(conn, |c| alerts::table
        .inner_join(tenants::table)
        .filter(alerts::status.eq(AlertStatus::Open))
        .filter(alerts::kind.eq("quota"))
        .select((tenants::slug, alerts::subject, alerts::value))
        .load(c)
        .await)?)
}

pub async fn get(conn: &mut Conn, id: &str) -> AppResult<Option<AlertRow>> {
    Ok(with_conn!(conn, |c| alerts::table
        .filter(alerts::id.eq(id))
        .select(AlertRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// The open alerts of `kind`, with their tenant's slug and status.
pub async fn open_of_kind(
    conn: &mut Conn,
    kind: &str,
    limit: i64,
) -> AppResult<Vec<(AlertRow, String, String)>> {
    Ok(with_conn!(conn, |c| alerts::table
        .inner_join(tenants::table)
        .filter(alerts::status.eq(AlertStatus::Open))
        .filter(alerts::kind.eq(kind))
        .order(alerts::id.asc())
        .limit(limit)
        .select((AlertRow::as_select(), tenants::slug, tenants::status))
        .load(c)
        .await)?)
}
