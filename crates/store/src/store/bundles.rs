//! SQL of whole-tenant bundles: a tenant's usage counters and audit records read for an export
//! (its keys and overrides are read as their own services read them), and the rows an import
//! writes back (in the caller's transaction).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{ApiKeyRow, AuditRow, QuotaOverrideRow, UsageCounterRow};
use super::schema::{api_keys, audit_log, quota_overrides, usage_counters};
use crate::error::AppResult;
use crate::with_conn;

/// Every usage counter of a tenant, every period (a summary reads only the current ones:
/// `usage::counters_in`).
pub async fn counters_of(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<UsageCounterRow>> {
    Ok(with_conn!(conn, |c| usage_counters::table
        .filter(usage_counters::tenant_id.eq(tenant_id))
        .order((usage_counters::metric.asc(), usage_counters::period.asc()))
        .select(UsageCounterRow::as_select())
        .load(c)
        .await)?)
}

/// The audit records of a tenant, oldest first.
pub async fn audit_of(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<AuditRow>> {
    Ok(with_conn!(conn, |c| audit_log::table
        .filter(audit_log::tenant_id.eq(tenant_id))
        .order(audit_log::seq.asc())
        .select(AuditRow::as_select())
        .load(c)
        .await)?)
}

/// Writes the rows of an imported tenant.
pub async fn insert_rows(
    conn: &mut Conn,
    keys: &[ApiKeyRow],
    overrides: &[QuotaOverrideRow],
    counters: &[UsageCounterRow],
) -> AppResult<()> {
    // One row at a time: SQLite takes no multi-row insert of rows with optional columns.
    for row in keys {
        with_conn!(conn, |c| diesel::insert_into(api_keys::table)
            .values(row)
            .execute(c)
            .await)?;
    }
    for row in overrides {
        with_conn!(conn, |c| diesel::insert_into(quota_overrides::table)
            .values(row)
            .execute(c)
            .await)?;
    }
    for row in counters {
        with_conn!(conn, |c| diesel::insert_into(usage_counters::table)
            .values(row)
            .execute(c)
            .await)?;
    }
    Ok(())
}
