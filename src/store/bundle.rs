//! SQL of whole-tenant bundles: a tenant's API keys, quota overrides, usage counters and audit
//! records read for an export, and written back by an import (in the caller's transaction).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{ApiKeyRow, AuditRow, QuotaOverrideRow, ResourceRow, UsageCounterRow};
use super::schema::{api_keys, audit_log, quota_overrides, tenant_resources, usage_counters};
use crate::error::AppResult;
use crate::with_conn;

pub async fn api_keys_of(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<ApiKeyRow>> {
    Ok(with_conn!(conn, |c| api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .order(api_keys::id.asc())
        .select(ApiKeyRow::as_select())
        .load(c)
        .await)?)
}

pub async fn overrides_of(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<QuotaOverrideRow>> {
    Ok(with_conn!(conn, |c| quota_overrides::table
        .filter(quota_overrides::tenant_id.eq(tenant_id))
        .order(quota_overrides::metric.asc())
        .select(QuotaOverrideRow::as_select())
        .load(c)
        .await)?)
}

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
    resources: &[ResourceRow],
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
    for row in resources {
        with_conn!(conn, |c| diesel::insert_into(tenant_resources::table)
            .values(row)
            .execute(c)
            .await)?;
    }
    Ok(())
}
