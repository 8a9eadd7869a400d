//! SQL of scheduled jobs: each job's row holds its interval, when it is due, the lease of the
//! server running it and what its last run did. A claim is one conditional `UPDATE` of the
//! job's row (due, and its lease free or expired): on PostgreSQL a second server's update waits
//! for the first and then finds the row no longer matching; on SQLite writes are serialised.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::scheduled_jobs;
use crate::error::AppResult;
use crate::with_conn;

/// A job as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = scheduled_jobs)]
pub struct JobRow {
    pub name: String,
    pub interval_seconds: i64,
    pub next_run_at: NaiveDateTime,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub runs: i64,
    pub failures: i64,
    pub last_started_at: Option<NaiveDateTime>,
    pub last_finished_at: Option<NaiveDateTime>,
    pub last_duration_ms: Option<i64>,
    pub last_server: Option<String>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
}

/// Records `name` with its interval, due first at `first_run_at` (a job already recorded keeps
/// its schedule; a changed interval counts from its next run).
pub async fn ensure(
    conn: &mut Conn,
    name: &str,
    interval_seconds: i64,
    first_run_at: NaiveDateTime,
) -> AppResult<()> {
    let row = JobRow {
        name: name.to_owned(),
        interval_seconds,
        next_run_at: first_run_at,
        lease_owner: None,
        lease_expires_at: None,
        runs: 0,
        failures: 0,
        last_started_at: None,
        last_finished_at: None,
        last_duration_ms: None,
        last_server: None,
        last_outcome: None,
        last_error: None,
    };
    with_conn!(conn, |c| diesel::insert_into(scheduled_jobs::table)
        .values(&row)
        .on_conflict(scheduled_jobs::name)
        .do_update()
        .set(scheduled_jobs::interval_seconds.eq(interval_seconds))
        .execute(c)
        .await)?;
    Ok(())
}

/// Takes `name`'s lease for `owner` until `until` when the job is due at `now` and nobody holds
/// a live lease; whether it was taken.
pub async fn claim(
    conn: &mut Conn,
    name: &str,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> AppResult<bool> {
    let taken = with_conn!(conn, |c| diesel::update(
        scheduled_jobs::table
            .filter(scheduled_jobs::name.eq(name))
            .filter(scheduled_jobs::next_run_at.le(now))
            .filter(
                scheduled_jobs::lease_expires_at
                    .is_null()
                    .or(scheduled_jobs::lease_expires_at.lt(now))
            )
    )
    .set((
        scheduled_jobs::lease_owner.eq(owner),
        scheduled_jobs::lease_expires_at.eq(until),
        scheduled_jobs::last_started_at.eq(now),
    ))
    .execute(c)
    .await)?;
    Ok(taken == 1)
}

/// Extends `owner`'s lease of `name`; false when it is no longer `owner`'s.
pub async fn renew(
    conn: &mut Conn,
    name: &str,
    owner: &str,
    until: NaiveDateTime,
) -> AppResult<bool> {
    let renewed = with_conn!(conn, |c| diesel::update(
        scheduled_jobs::table
            .filter(scheduled_jobs::name.eq(name))
            .filter(scheduled_jobs::lease_owner.eq(owner))
    )
    .set(scheduled_jobs::lease_expires_at.eq(until))
    .execute(c)
    .await)?;
    Ok(renewed == 1)
}

/// What a finished run did.
pub struct Finished<'a> {
    pub finished_at: NaiveDateTime,
    pub next_run_at: NaiveDateTime,
    pub duration_ms: i64,
    pub outcome: Option<&'a str>,
    pub error: Option<&'a str>,
}

/// Records `owner`'s run of `name` and frees the lease; false when the lease was lost (nothing
/// written: the server that holds it now records its own run).
pub async fn finish(
    conn: &mut Conn,
    name: &str,
    owner: &str,
    run: Finished<'_>,
) -> AppResult<bool> {
    let failed = i64::from(run.error.is_some());
    let done = with_conn!(conn, |c| diesel::update(
        scheduled_jobs::table
            .filter(scheduled_jobs::name.eq(name))
            .filter(scheduled_jobs::lease_owner.eq(owner))
    )
    .set((
        scheduled_jobs::lease_owner.eq(None::<String>),
        scheduled_jobs::lease_expires_at.eq(None::<NaiveDateTime>),
        scheduled_jobs::next_run_at.eq(run.next_run_at),
        scheduled_jobs::runs.eq(scheduled_jobs::runs + 1),
        scheduled_jobs::failures.eq(scheduled_jobs::failures + failed),
        scheduled_jobs::last_finished_at.eq(run.finished_at),
        scheduled_jobs::last_duration_ms.eq(run.duration_ms),
        scheduled_jobs::last_server.eq(owner),
        scheduled_jobs::last_outcome.eq(run.outcome),
        scheduled_jobs::last_error.eq(run.error),
    ))
    .execute(c)
    .await)?;
    Ok(done == 1)
}

/// Every recorded job, by name.
pub async fn list(conn: &mut Conn) -> AppResult<Vec<JobRow>> {
    Ok(with_conn!(conn, |c| scheduled_jobs::table
        .order(scheduled_jobs::name.asc())
        .select(JobRow::as_select())
        .load(c)
        .await)?)
}
