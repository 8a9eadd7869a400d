//! SQL of platform administrators and API keys.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::changes::Change;
use super::models::{AdminUserRow, ApiKeyRow};
use super::schema::{admin_users, api_keys};
use crate::error::AppResult;
use crate::with_conn;

pub async fn find_admin(conn: &mut Conn, username: &str) -> AppResult<Option<AdminUserRow>> {
    let row = with_conn!(conn, |c| admin_users::table
        .filter(admin_users::username.eq(username))
        .select(AdminUserRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Inserts or replaces the administrator's password hash.
pub async fn upsert_admin(conn: &mut Conn, row: &AdminUserRow) -> AppResult<()> {
    with_conn!(conn, |c| {
        let updated =
            diesel::update(admin_users::table.filter(admin_users::username.eq(&row.username)))
                .set((
                    admin_users::password_hash.eq(&row.password_hash),
                    admin_users::updated_at.eq(row.updated_at),
                ))
                .execute(c)
                .await?;
        if updated == 0 {
            diesel::insert_into(admin_users::table)
                .values(row)
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

pub async fn insert_key(conn: &mut Conn, row: &ApiKeyRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(api_keys::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// The API key with this prefix: one query, when it is not cached.
pub async fn find_key_by_prefix(conn: &mut Conn, prefix: &str) -> AppResult<Option<ApiKeyRow>> {
    let row = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::prefix.eq(prefix))
        .select(ApiKeyRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Platform keys (no tenant), newest first.
pub async fn list_platform_keys(conn: &mut Conn) -> AppResult<Vec<ApiKeyRow>> {
    let rows = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::tenant_id.is_null())
        .order(api_keys::created_at.desc())
        .select(ApiKeyRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Revokes a platform key by id or name; returns the key as it was, if one matched and was live.
pub async fn revoke_platform_key(
    conn: &mut Conn,
    id_or_name: &str,
    at: NaiveDateTime,
) -> AppResult<Option<ApiKeyRow>> {
    let key = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::tenant_id.is_null())
        .filter(api_keys::revoked_at.is_null())
        .filter(
            api_keys::id
                .eq(id_or_name)
                .or(api_keys::name.eq(id_or_name))
        )
        .select(ApiKeyRow::as_select())
        .load(c)
        .await)?;
    let [key] = key.as_slice() else {
        return Ok(None);
    };
    with_conn!(conn, |c| diesel::update(
        api_keys::table.filter(api_keys::id.eq(&key.id))
    )
    .set(api_keys::revoked_at.eq(Some(at)))
    .execute(c)
    .await)?;
    conn.changed(Change::Key(key.prefix.clone()));
    Ok(Some(key.clone()))
}

/// Whether a live platform key already has this name.
pub async fn platform_key_name_taken(conn: &mut Conn, name: &str) -> AppResult<bool> {
    let n: i64 = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::tenant_id.is_null())
        .filter(api_keys::revoked_at.is_null())
        .filter(api_keys::name.eq(name))
        .count()
        .get_result(c)
        .await)?;
    Ok(n > 0)
}

pub async fn touch_key(conn: &mut Conn, id: &str, at: NaiveDateTime) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        api_keys::table.filter(api_keys::id.eq(id))
    )
    .set(api_keys::last_used_at.eq(Some(at)))
    .execute(c)
    .await)?;
    Ok(())
}

/// A tenant's keys, newest first.
pub async fn list_tenant_keys(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<ApiKeyRow>> {
    let rows = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::tenant_id.eq(tenant_id))
        .order(api_keys::created_at.desc())
        .select(ApiKeyRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

pub async fn find_key(conn: &mut Conn, id: &str) -> AppResult<Option<ApiKeyRow>> {
    let row = with_conn!(conn, |c| api_keys::table
        .filter(api_keys::id.eq(id))
        .select(ApiKeyRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Whether a live key (not revoked, not expired, not replaced) of this tenant (or of the
/// platform, for `None`) has this name.
pub async fn live_key_name_taken(
    conn: &mut Conn,
    tenant_id: Option<&str>,
    name: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let n: i64 = with_conn!(conn, |c| {
        let mut query = api_keys::table
            .filter(api_keys::revoked_at.is_null())
            .filter(api_keys::replaced_by.is_null())
            .filter(
                api_keys::expires_at
                    .is_null()
                    .or(api_keys::expires_at.gt(now)),
            )
            .filter(api_keys::name.eq(name.to_owned()))
            .into_boxed();
        query = match tenant_id {
            Some(t) => query.filter(api_keys::tenant_id.eq(t.to_owned())),
            None => query.filter(api_keys::tenant_id.is_null()),
        };
        query.count().get_result(c).await
    })?;
    Ok(n > 0)
}

pub async fn revoke_key(conn: &mut Conn, id: &str, at: NaiveDateTime) -> AppResult<()> {
    let prefixes: Vec<String> = with_conn!(conn, |c| diesel::update(
        api_keys::table.filter(api_keys::id.eq(id))
    )
    .set(api_keys::revoked_at.eq(Some(at)))
    .returning(api_keys::prefix)
    .get_results(c)
    .await)?;
    for prefix in prefixes {
        conn.changed(Change::Key(prefix));
    }
    Ok(())
}

/// Marks a key replaced by `by`; it keeps working until `until`.
pub async fn mark_rotated(
    conn: &mut Conn,
    id: &str,
    by: &str,
    until: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        api_keys::table.filter(api_keys::id.eq(id))
    )
    .set((
        api_keys::replaced_by.eq(Some(by)),
        api_keys::expires_at.eq(Some(until)),
    ))
    .returning(api_keys::prefix)
    .get_results::<String>(c)
    .await)?
    .into_iter()
    .for_each(|prefix| conn.changed(Change::Key(prefix)));
    Ok(())
}
