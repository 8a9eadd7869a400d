//! SQL of installed plugins, their configuration, their grants, their call statistics and their
//! per-tenant state.
//!
//! Every write to a plugin's row, its configuration or its grants bumps the plugin's `revision` in the same
//! statement batch, so a server that reads the revision before a call knows whether what it
//! loaded is still what the database holds.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::changes::Change;
use super::models::{
    PluginCallStatsRow, PluginConfigRow, PluginGrantRow, PluginMetaRow, PluginRow,
};
use super::schema::{plugin_call_stats, plugin_config, plugin_grants, plugin_state, plugins};
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

/// A plugin's row without its component bytes, with its revision.
pub async fn find_meta(conn: &mut Conn, name: &str) -> AppResult<Option<PluginMetaRow>> {
    let row = with_conn!(conn, |c| plugins::table
        .filter(plugins::name.eq(name))
        .select(PluginMetaRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Every plugin's row without its component bytes, in name order.
pub async fn list_meta(conn: &mut Conn) -> AppResult<Vec<PluginMetaRow>> {
    let rows = with_conn!(conn, |c| plugins::table
        .order(plugins::name.asc())
        .select(PluginMetaRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// The revision of a plugin: what the host compares before each call.
pub async fn revision(conn: &mut Conn, name: &str) -> AppResult<Option<i64>> {
    let revision = with_conn!(conn, |c| plugins::table
        .filter(plugins::name.eq(name))
        .select(plugins::revision)
        .first::<i64>(c)
        .await
        .optional())?;
    Ok(revision)
}

/// The component bytes of an installed plugin (none for a built-in).
pub async fn component(conn: &mut Conn, name: &str) -> AppResult<Option<Vec<u8>>> {
    let bytes = with_conn!(conn, |c| plugins::table
        .filter(plugins::name.eq(name))
        .select(plugins::component)
        .first::<Option<Vec<u8>>>(c)
        .await
        .optional())?;
    Ok(bytes.flatten())
}

/// Names of the enabled plugins of `world`, in name order.
pub async fn enabled_of(conn: &mut Conn, world: &str) -> AppResult<Vec<String>> {
    let names = with_conn!(conn, |c| plugins::table
        .filter(plugins::world.eq(world))
        .filter(plugins::enabled.eq(true))
        .order(plugins::name.asc())
        .select(plugins::name)
        .load::<String>(c)
        .await)?;
    Ok(names)
}

/// Marks a change of the plugin or its grants.
macro_rules! bump_revision {
    ($c:expr, $name:expr) => {
        diesel::update(plugins::table.filter(plugins::name.eq($name)))
            .set(plugins::revision.eq(plugins::revision + 1))
            .execute($c)
            .await
    };
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
        bump_revision!(c, &row.name)?;
        Ok::<_, diesel::result::Error>(())
    })?;
    conn.changed(Change::Plugin(row.name.clone()));
    Ok(())
}

/// Enables or disables a plugin and sets its deadline (`None`: the world's default).
pub async fn set_enabled(
    conn: &mut Conn,
    name: &str,
    enabled: bool,
    deadline_ms: Option<i64>,
    at: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        plugins::table.filter(plugins::name.eq(name))
    )
    .set((
        plugins::enabled.eq(enabled),
        plugins::deadline_ms.eq(deadline_ms),
        plugins::updated_at.eq(at),
        plugins::revision.eq(plugins::revision + 1),
    ))
    .execute(c)
    .await)?;
    conn.changed(Change::Plugin(name.to_owned()));
    Ok(n == 1)
}

/// The configuration the operator set for `plugin`, by key.
pub async fn config(conn: &mut Conn, plugin: &str) -> AppResult<Vec<PluginConfigRow>> {
    let rows = with_conn!(conn, |c| plugin_config::table
        .filter(plugin_config::plugin.eq(plugin))
        .order(plugin_config::key.asc())
        .select(PluginConfigRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

/// Replaces the configuration of `plugin` by `rows`.
pub async fn replace_config(
    conn: &mut Conn,
    plugin: &str,
    rows: &[PluginConfigRow],
) -> AppResult<()> {
    with_conn!(conn, |c| {
        diesel::delete(plugin_config::table.filter(plugin_config::plugin.eq(plugin)))
            .execute(c)
            .await?;
        for row in rows {
            diesel::insert_into(plugin_config::table)
                .values(row)
                .execute(c)
                .await?;
        }
        bump_revision!(c, plugin)
    })?;
    conn.changed(Change::Plugin(plugin.to_owned()));
    Ok(())
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
            .await?;
        bump_revision!(c, &row.plugin)
    })?;
    conn.changed(Change::Plugin(row.plugin.clone()));
    Ok(())
}

pub async fn delete_grant(
    conn: &mut Conn,
    plugin: &str,
    kind: &str,
    name: &str,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| {
        let n = diesel::delete(
            plugin_grants::table
                .filter(plugin_grants::plugin.eq(plugin))
                .filter(plugin_grants::kind.eq(kind))
                .filter(plugin_grants::name.eq(name)),
        )
        .execute(c)
        .await?;
        bump_revision!(c, plugin)?;
        Ok::<_, diesel::result::Error>(n)
    })?;
    conn.changed(Change::Plugin(plugin.to_owned()));
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

/// The call statistics of a plugin, summed over every server.
pub async fn call_stats(conn: &mut Conn, plugin: &str) -> AppResult<Option<PluginCallStatsRow>> {
    let row = with_conn!(conn, |c| plugin_call_stats::table
        .filter(plugin_call_stats::plugin.eq(plugin))
        .select(PluginCallStatsRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Adds what one server counted since its last report to a plugin's statistics.
pub async fn add_call_stats(conn: &mut Conn, delta: &PluginCallStatsRow) -> AppResult<()> {
    with_conn!(conn, |c| {
        let n = diesel::update(
            plugin_call_stats::table.filter(plugin_call_stats::plugin.eq(&delta.plugin)),
        )
        .set((
            plugin_call_stats::calls.eq(plugin_call_stats::calls + delta.calls),
            plugin_call_stats::failures.eq(plugin_call_stats::failures + delta.failures),
            plugin_call_stats::total_us.eq(plugin_call_stats::total_us + delta.total_us),
            plugin_call_stats::updated_at.eq(delta.updated_at),
        ))
        .execute(c)
        .await?;
        if n == 0 {
            diesel::insert_into(plugin_call_stats::table)
                .values(delta)
                .execute(c)
                .await?;
        } else {
            diesel::update(
                plugin_call_stats::table
                    .filter(plugin_call_stats::plugin.eq(&delta.plugin))
                    .filter(plugin_call_stats::max_us.lt(delta.max_us)),
            )
            .set(plugin_call_stats::max_us.eq(delta.max_us))
            .execute(c)
            .await?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}
