//! SQL of sessions, the portal's and tenants' users' (server-side, so that any replica serves
//! them).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::changes::Change;
use super::models::SessionRow;
use super::schema::sessions;
use crate::error::AppResult;
use crate::with_conn;

pub async fn insert(conn: &mut Conn, row: &SessionRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(sessions::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// The session with this id, unless it expired before `now`: one query, when it is not cached.
pub async fn find_live(
    conn: &mut Conn,
    id: &str,
    now: NaiveDateTime,
) -> AppResult<Option<SessionRow>> {
    let row = with_conn!(conn, |c| sessions::table
        .filter(sessions::id.eq(id))
        .filter(sessions::expires_at.gt(now))
        .select(SessionRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

pub async fn touch(conn: &mut Conn, id: &str, now: NaiveDateTime) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        sessions::table.filter(sessions::id.eq(id))
    )
    .set(sessions::last_seen_at.eq(now))
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> AppResult<()> {
    with_conn!(conn, |c| diesel::delete(
        sessions::table.filter(sessions::id.eq(id))
    )
    .execute(c)
    .await)?;
    conn.changed(Change::Session(id.to_owned()));
    Ok(())
}

/// Removes sessions that expired before `now`.
pub async fn delete_expired(conn: &mut Conn, now: NaiveDateTime) -> AppResult<usize> {
    let n = with_conn!(conn, |c| diesel::delete(
        sessions::table.filter(sessions::expires_at.le(now))
    )
    .execute(c)
    .await)?;
    Ok(n)
}

/// Live sessions of a tenant, newest first.
pub async fn list_for_tenant(
    conn: &mut Conn,
    tenant_id: &str,
    now: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<SessionRow>> {
    let rows = with_conn!(conn, |c| sessions::table
        .filter(sessions::tenant_id.eq(tenant_id))
        .filter(sessions::expires_at.gt(now))
        .order(sessions::created_at.desc())
        .limit(limit)
        .select(SessionRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Deletes the session `handle` of tenant `tenant_id` (`None`: of the platform); returns it.
pub async fn delete_by_handle(
    conn: &mut Conn,
    tenant_id: Option<&str>,
    handle: &str,
) -> AppResult<Option<SessionRow>> {
    let row = with_conn!(conn, |c| {
        let query = sessions::table
            .filter(sessions::handle.eq(handle))
            .into_boxed();
        let query = match tenant_id {
            Some(id) => query.filter(sessions::tenant_id.eq(id)),
            None => query.filter(sessions::tenant_id.is_null()),
        };
        let found = query
            .select(SessionRow::as_select())
            .first(c)
            .await
            .optional()?;
        if let Some(row) = &found {
            diesel::delete(sessions::table.filter(sessions::id.eq(&row.id)))
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(found)
    })?;
    if let Some(row) = &row {
        conn.changed(Change::Session(row.id.clone()));
    }
    Ok(row)
}
