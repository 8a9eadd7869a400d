//! SQL of OpenID Connect login attempts and SSO setup links.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{LoginAttemptRow, SetupLinkRow};
use super::schema::{login_attempts, sso_setup_links};
use crate::error::AppResult;
use crate::with_conn;

pub async fn insert_attempt(conn: &mut Conn, row: &LoginAttemptRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(login_attempts::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// Removes the attempt with this state and returns it: a state can be used once, whatever the
/// outcome of the login it belongs to.
/// Whether a login attempt with this state exists (a read: nothing is taken).
pub async fn attempt_exists(conn: &mut Conn, state_hash: &str) -> AppResult<bool> {
    let found = with_conn!(conn, |c| login_attempts::table
        .filter(login_attempts::state_hash.eq(state_hash))
        .select(login_attempts::state_hash)
        .first::<String>(c)
        .await
        .optional())?;
    Ok(found.is_some())
}

pub async fn take_attempt(conn: &mut Conn, state_hash: &str) -> AppResult<Option<LoginAttemptRow>> {
    let row = with_conn!(conn, |c| diesel::delete(
        login_attempts::table.filter(login_attempts::state_hash.eq(state_hash))
    )
    .returning(LoginAttemptRow::as_returning())
    .get_result(c)
    .await
    .optional())?;
    Ok(row)
}

/// Removes attempts that expired before `now`.
pub async fn delete_expired_attempts(conn: &mut Conn, now: NaiveDateTime) -> AppResult<usize> {
    let n = with_conn!(conn, |c| diesel::delete(
        login_attempts::table.filter(login_attempts::expires_at.le(now))
    )
    .execute(c)
    .await)?;
    Ok(n)
}

pub async fn insert_link(conn: &mut Conn, row: &SetupLinkRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(sso_setup_links::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn find_link(conn: &mut Conn, token_hash: &str) -> AppResult<Option<SetupLinkRow>> {
    let row = with_conn!(conn, |c| sso_setup_links::table
        .filter(sso_setup_links::token_hash.eq(token_hash))
        .select(SetupLinkRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// A tenant's setup links, newest first.
pub async fn list_links(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<SetupLinkRow>> {
    let rows = with_conn!(conn, |c| sso_setup_links::table
        .filter(sso_setup_links::tenant_id.eq(tenant_id))
        .order(sso_setup_links::created_at.desc())
        .limit(100)
        .select(SetupLinkRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Marks a link used, if it still is usable at `now`; whether it was.
pub async fn use_link(
    conn: &mut Conn,
    id: &str,
    now: NaiveDateTime,
    used_by: Option<&str>,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        sso_setup_links::table
            .filter(sso_setup_links::id.eq(id))
            .filter(sso_setup_links::used_at.is_null())
            .filter(sso_setup_links::revoked_at.is_null())
            .filter(sso_setup_links::expires_at.gt(now))
    )
    .set((
        sso_setup_links::used_at.eq(now),
        sso_setup_links::used_by.eq(used_by),
    ))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Revokes a link of a tenant; the link as it was, if it exists.
pub async fn revoke_link(
    conn: &mut Conn,
    tenant_id: &str,
    id: &str,
    now: NaiveDateTime,
) -> AppResult<Option<SetupLinkRow>> {
    let row = with_conn!(conn, |c| {
        let found = sso_setup_links::table
            .filter(sso_setup_links::id.eq(id))
            .filter(sso_setup_links::tenant_id.eq(tenant_id))
            .select(SetupLinkRow::as_select())
            .first(c)
            .await
            .optional()?;
        if found.as_ref().is_some_and(|l| l.revoked_at.is_none()) {
            diesel::update(sso_setup_links::table.filter(sso_setup_links::id.eq(id)))
                .set(sso_setup_links::revoked_at.eq(now))
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(found)
    })?;
    Ok(row)
}

/// Removes setup links that expired before `now`, used or not (their use is in the audit log).
pub async fn delete_expired_setup_links(conn: &mut Conn, now: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        sso_setup_links::table.filter(sso_setup_links::expires_at.lt(now))
    )
    .execute(c)
    .await)?)
}
