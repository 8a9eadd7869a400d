//! SQL of the hash-chained audit log.
//!
//! Appending locks the chain's head row (`audit_head`, `FOR UPDATE` on PostgreSQL; the
//! `BEGIN IMMEDIATE` write lock on SQLite) inside the caller's transaction, so concurrent
//! writers never fork the chain. A check that finds the chain intact leaves a checkpoint (the
//! head's sequence number and hash, `audit_checkpoints`).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::AuditRow;
use super::schema::{audit_checkpoints, audit_head, audit_log};
use crate::error::AppResult;
use crate::with_conn;

/// Reads the newest link of the chain and locks it until the transaction ends, so that two
/// writers never chain onto the same record. SQLite needs no row lock: `BEGIN IMMEDIATE` already
/// holds the database's write lock.
pub async fn lock_head(conn: &mut Conn) -> AppResult<(i64, String)> {
    let head = with_conn!(
        conn,
        postgres
            | c
            | audit_head::table
                .filter(audit_head::id.eq(1))
                .select((audit_head::seq, audit_head::hash))
                .for_update()
                .first::<(i64, String)>(c)
                .await,
        sqlite
            | c
            | audit_head::table
                .filter(audit_head::id.eq(1))
                .select((audit_head::seq, audit_head::hash))
                .first::<(i64, String)>(c)
                .await
    )?;
    Ok(head)
}

pub async fn read_head(conn: &mut Conn) -> AppResult<(i64, String)> {
    let head = with_conn!(conn, |c| audit_head::table
        .filter(audit_head::id.eq(1))
        .select((audit_head::seq, audit_head::hash))
        .first::<(i64, String)>(c)
        .await)?;
    Ok(head)
}

pub async fn append(conn: &mut Conn, row: &AuditRow) -> AppResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(audit_log::table)
            .values(row)
            .execute(c)
            .await?;
        diesel::update(audit_head::table.filter(audit_head::id.eq(1)))
            .set((audit_head::seq.eq(row.seq), audit_head::hash.eq(&row.hash)))
            .execute(c)
            .await
    })?;
    Ok(())
}

/// Filters of an audit listing; newest first, keyset-paginated by `seq`.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub tenant_slug: Option<String>,
    pub tenant_id: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub until: Option<NaiveDateTime>,
    pub before_seq: Option<i64>,
    pub limit: i64,
}

pub async fn list(conn: &mut Conn, filter: &AuditFilter) -> AppResult<Vec<AuditRow>> {
    let rows = with_conn!(conn, |c| {
        let mut query = audit_log::table.select(AuditRow::as_select()).into_boxed();
        if let Some(slug) = &filter.tenant_slug {
            query = query.filter(audit_log::tenant_slug.eq(slug.clone()));
        }
        if let Some(id) = &filter.tenant_id {
            query = query.filter(audit_log::tenant_id.eq(id.clone()));
        }
        if let Some(action) = &filter.action {
            // `tenant.` matches every tenant action; a full name matches exactly.
            if action.ends_with('.') {
                let pattern = format!("{}%", super::tenants::escape_like(action));
                query = query.filter(audit_log::action.like(pattern).escape('\\'));
            } else {
                query = query.filter(audit_log::action.eq(action.clone()));
            }
        }
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_log::actor.eq(actor.clone()));
        }
        if let Some(since) = filter.since {
            query = query.filter(audit_log::at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(audit_log::at.lt(until));
        }
        if let Some(before) = filter.before_seq {
            query = query.filter(audit_log::seq.lt(before));
        }
        query
            .order(audit_log::seq.desc())
            .limit(filter.limit)
            .load(c)
            .await
    })?;
    Ok(rows)
}

/// Records in chain order, starting after `after_seq`.
/// The newest checkpoint: (seq, hash, when it was verified).
pub async fn last_checkpoint(conn: &mut Conn) -> AppResult<Option<(i64, String, NaiveDateTime)>> {
    let row = with_conn!(conn, |c| audit_checkpoints::table
        .order(audit_checkpoints::seq.desc())
        .select((
            audit_checkpoints::seq,
            audit_checkpoints::hash,
            audit_checkpoints::verified_at
        ))
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Records that the chain up to `seq`, ending in `hash`, was verified at `at`.
pub async fn add_checkpoint(
    conn: &mut Conn,
    seq: i64,
    hash: &str,
    at: NaiveDateTime,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(audit_checkpoints::table)
        .values((
            audit_checkpoints::seq.eq(seq),
            audit_checkpoints::hash.eq(hash),
            audit_checkpoints::verified_at.eq(at),
        ))
        .on_conflict_do_nothing()
        .execute(c)
        .await)?;
    Ok(())
}

/// One record's stored row, by sequence number.
pub async fn record(conn: &mut Conn, seq: i64) -> AppResult<Option<AuditRow>> {
    let row = with_conn!(conn, |c| audit_log::table
        .filter(audit_log::seq.eq(seq))
        .select(AuditRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

pub async fn chain_page(conn: &mut Conn, after_seq: i64, limit: i64) -> AppResult<Vec<AuditRow>> {
    let rows = with_conn!(conn, |c| audit_log::table
        .filter(audit_log::seq.gt(after_seq))
        .order(audit_log::seq.asc())
        .limit(limit)
        .select(AuditRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}
