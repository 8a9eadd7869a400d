//! SQL of portal sessions (server-side, so that any replica serves them).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
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

/// The session with this id if it has not expired at `now`.
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
