//! SQL of installed plugins, their grants and their per-tenant state.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{PluginGrantRow, PluginRow};
use super::schema::{plugin_grants, plugin_state, plugins};
use crate::error::AppResult;
use crate::with_conn;

pub async fn find(conn: &mut Conn, name: &str) -> AppResult<Option<PluginRow>> {
    let row = with_conn!(conn, |c| plugins::table
        .filter(plugins::name.eq(name))
        .select(PluginRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

pub async fn list(conn: &mut Conn) -> AppResult<Vec<PluginRow>> {
    let rows = with_conn!(conn, |c| plugins::table
        .order(plugins::name.asc())
        .select(PluginRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Inserts the plugin, or replaces every column of the one with its name.
pub async fn upsert(conn: &mut Conn, row: &PluginRow) -> AppResult<()> {
    with_conn!(conn, |c| {
        let n = diesel::update(plugins::table.filter(plugins::name.eq(&row.name)))
            .set(row)
            .execute(c)
            .await?;
        if n == 0 {
            diesel::insert_into(plugins::table)
                .values(row)
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

pub async fn set_enabled(
    conn: &mut Conn,
    name: &str,
    enabled: bool,
    at: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        plugins::table.filter(plugins::name.eq(name))
    )
    .set((plugins::enabled.eq(enabled), plugins::updated_at.eq(at)))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

pub async fn grants(conn: &mut Conn, plugin: &str) -> AppResult<Vec<PluginGrantRow>> {
    let rows = with_conn!(conn, |c| plugin_grants::table
        .filter(plugin_grants::plugin.eq(plugin))
        .order((plugin_grants::kind.asc(), plugin_grants::name.asc()))
        .select(PluginGrantRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Adds or replaces a grant.
pub async fn put_grant(conn: &mut Conn, row: &PluginGrantRow) -> AppResult<()> {
    with_conn!(conn, |c| {
        diesel::delete(
            plugin_grants::table
                .filter(plugin_grants::plugin.eq(&row.plugin))
                .filter(plugin_grants::kind.eq(&row.kind))
                .filter(plugin_grants::name.eq(&row.name)),
        )
        .execute(c)
        .await?;
        diesel::insert_into(plugin_grants::table)
            .values(row)
            .execute(c)
            .await
    })?;
    Ok(())
}

pub async fn delete_grant(
    conn: &mut Conn,
    plugin: &str,
    kind: &str,
    name: &str,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::delete(
        plugin_grants::table
            .filter(plugin_grants::plugin.eq(plugin))
            .filter(plugin_grants::kind.eq(kind))
            .filter(plugin_grants::name.eq(name)),
    )
    .execute(c)
    .await)?;
    Ok(n == 1)
}

pub async fn state_get(
    conn: &mut Conn,
    plugin: &str,
    tenant_id: &str,
    key: &str,
) -> AppResult<Option<Vec<u8>>> {
    let value = with_conn!(conn, |c| plugin_state::table
        .filter(plugin_state::plugin.eq(plugin))
        .filter(plugin_state::tenant_id.eq(tenant_id))
        .filter(plugin_state::key.eq(key))
        .select(plugin_state::value)
        .first::<Vec<u8>>(c)
        .await
        .optional())?;
    Ok(value)
}

pub async fn state_keys(conn: &mut Conn, plugin: &str, tenant_id: &str) -> AppResult<Vec<String>> {
    let keys = with_conn!(conn, |c| plugin_state::table
        .filter(plugin_state::plugin.eq(plugin))
        .filter(plugin_state::tenant_id.eq(tenant_id))
        .order(plugin_state::key.asc())
        .select(plugin_state::key)
        .load::<String>(c)
        .await)?;
    Ok(keys)
}

pub async fn state_put(
    conn: &mut Conn,
    plugin: &str,
    tenant_id: &str,
    key: &str,
    value: &[u8],
    at: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| {
        let n = diesel::update(
            plugin_state::table
                .filter(plugin_state::plugin.eq(plugin))
                .filter(plugin_state::tenant_id.eq(tenant_id))
                .filter(plugin_state::key.eq(key)),
        )
        .set((
            plugin_state::value.eq(value),
            plugin_state::updated_at.eq(at),
        ))
        .execute(c)
        .await?;
        if n == 0 {
            diesel::insert_into(plugin_state::table)
                .values((
                    plugin_state::plugin.eq(plugin),
                    plugin_state::tenant_id.eq(tenant_id),
                    plugin_state::key.eq(key),
                    plugin_state::value.eq(value),
                    plugin_state::updated_at.eq(at),
                ))
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

pub async fn state_delete(
    conn: &mut Conn,
    plugin: &str,
    tenant_id: &str,
    key: &str,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::delete(
        plugin_state::table
            .filter(plugin_state::plugin.eq(plugin))
            .filter(plugin_state::tenant_id.eq(tenant_id))
            .filter(plugin_state::key.eq(key)),
    )
    .execute(c)
    .await)?;
    Ok(())
}
