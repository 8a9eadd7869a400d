//! SQL of the request each tenant was last provisioned or applied with (sealed by the caller).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

use super::Conn;
use super::schema::tenant_requests;
use crate::error::AppResult;
use crate::with_conn;

/// Records `sealed` as `tenant_id`'s request, replacing the one before, with the key of the
/// database its connection names (`database_key`, when it names one).
pub async fn put(
    conn: &mut Conn,
    tenant_id: &str,
    sealed: &str,
    database_key: Option<&str>,
    now: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(tenant_requests::table)
        .values((
            tenant_requests::tenant_id.eq(tenant_id),
            tenant_requests::request.eq(sealed),
            tenant_requests::recorded_at.eq(now),
            tenant_requests::database_key.eq(database_key),
        ))
        .on_conflict(tenant_requests::tenant_id)
        .do_update()
        .set((
            tenant_requests::request.eq(sealed),
            tenant_requests::recorded_at.eq(now),
            tenant_requests::database_key.eq(database_key),
        ))
        .execute(c)
        .await)?;
    Ok(())
}

/// The tenants whose recorded connection names the database of `database_key`.
pub async fn holders_of(conn: &mut Conn, database_key: &str) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| tenant_requests::table
        .filter(tenant_requests::database_key.eq(database_key))
        .select(tenant_requests::tenant_id)
        .load::<String>(c)
        .await)?)
}

/// A tenant's sealed request, and when it was recorded.
#[derive(Debug, Clone, Queryable, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRow {
    pub request: String,
    pub recorded_at: NaiveDateTime,
}

/// `tenant_id`'s sealed request.
pub async fn get(conn: &mut Conn, tenant_id: &str) -> AppResult<Option<RequestRow>> {
    Ok(with_conn!(conn, |c| tenant_requests::table
        .filter(tenant_requests::tenant_id.eq(tenant_id))
        .select((tenant_requests::request, tenant_requests::recorded_at))
        .first::<RequestRow>(c)
        .await
        .optional())?)
}
