//! SQL of the tenant database probes: which tenants are due, and each one's last probe.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::{tenant_database_probes, tenant_requests, tenants};
use crate::error::AppResult;
use crate::with_conn;

/// The last probe of a tenant's database.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = tenant_database_probes)]
#[diesel(treat_none_as_null = true)]
pub struct ProbeRow {
    pub tenant_id: String,
    /// `up`, `slow` or `down`.
    pub status: String,
    pub latency_ms: Option<f64>,
    /// JSON array of the latencies (ms) of the last answered probes, newest last.
    pub recent_ms: String,
    /// Why the last probe failed (never the URI or its password).
    pub detail: Option<String>,
    /// Since when every probe failed; none while it answers.
    pub failing_since: Option<NaiveDateTime>,
    pub checked_at: NaiveDateTime,
}

/// Up to `limit` trial or active tenants with a database tenantry knows (their own URI, or a
/// connection they were provisioned with) whose last probe is older than `before` (or that were
/// never probed), the never-probed and then the longest-unprobed first: (id, slug).
pub async fn due(
    conn: &mut Conn,
    before: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<(String, String)>> {
    use diesel::dsl::exists;
    Ok(with_conn!(conn, |c| tenants::table
        .left_join(
            tenant_database_probes::table.on(tenant_database_probes::tenant_id.eq(tenants::id)),
        )
        .filter(tenants::status.eq_any(["trial", "active"]))
        .filter(
            tenants::db_uri.is_not_null().or(exists(
                tenant_requests::table
                    .filter(tenant_requests::tenant_id.eq(tenants::id))
                    .filter(tenant_requests::database_key.is_not_null()),
            )),
        )
        .filter(
            tenant_database_probes::checked_at
                .is_null()
                .or(tenant_database_probes::checked_at.lt(before)),
        )
        .order((
            tenant_database_probes::checked_at.is_not_null().asc(),
            tenant_database_probes::checked_at.asc(),
            tenants::id.asc(),
        ))
        .select((tenants::id, tenants::slug))
        .limit(limit)
        .load(c)
        .await)?)
}

/// The last probe of `tenant_id`'s database, if it was probed.
pub async fn get(conn: &mut Conn, tenant_id: &str) -> AppResult<Option<ProbeRow>> {
    Ok(with_conn!(conn, |c| tenant_database_probes::table
        .find(tenant_id)
        .select(ProbeRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Records a probe, replacing the one before.
pub async fn put(conn: &mut Conn, row: &ProbeRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(tenant_database_probes::table)
        .values(row)
        .on_conflict(tenant_database_probes::tenant_id)
        .do_update()
        .set(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// Forgets the probe of a tenant that no longer has a database to probe.
pub async fn forget(conn: &mut Conn, tenant_id: &str) -> AppResult<()> {
    with_conn!(conn, |c| diesel::delete(
        tenant_database_probes::table.filter(tenant_database_probes::tenant_id.eq(tenant_id))
    )
    .execute(c)
    .await)?;
    Ok(())
}

/// How many probed databases are in each status: (status, databases).
pub async fn count_by_status(conn: &mut Conn) -> AppResult<Vec<(String, i64)>> {
    Ok(with_conn!(conn, |c| tenant_database_probes::table
        .group_by(tenant_database_probes::status)
        .select((tenant_database_probes::status, diesel::dsl::count_star(),))
        .load(c)
        .await)?)
}
