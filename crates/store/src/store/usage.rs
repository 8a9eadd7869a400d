//! SQL of usage counters, reported events and quota overrides.
//!
//! Counter changes are atomic upserts (`INSERT … ON CONFLICT DO UPDATE SET value = value + n`) so
//! that concurrent writers on either backend never lose an increment; the upsert returns the new
//! value, on which the caller decides admission in the same transaction.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{QuotaOverrideRow, UsageCounterRow, UsageEventRow};
use super::schema::{quota_overrides, tenant_users, usage_counters, usage_events};
use crate::error::AppResult;
use crate::with_conn;

/// Rows of one multi-row insert of event ids on PostgreSQL: 6 parameters a row stays far below
/// its limit of 65,535.
const EVENTS_PER_STATEMENT: usize = 1000;

/// Remembers reported events' ids; the ids the tenant had not sent before. The rows' ids must be
/// distinct. On PostgreSQL one statement per thousand (a round trip each); on SQLite, in process,
/// one per row.
pub async fn insert_events(
    conn: &mut Conn,
    events: &[UsageEventRow],
) -> AppResult<std::collections::HashSet<String>> {
    let mut fresh = std::collections::HashSet::with_capacity(events.len());
    with_conn!(
        conn,
        postgres | c | {
            for chunk in events.chunks(EVENTS_PER_STATEMENT) {
                let ids: Vec<String> = diesel::insert_into(usage_events::table)
                    .values(chunk)
                    .on_conflict((usage_events::tenant_id, usage_events::event_id))
                    .do_nothing()
                    .returning(usage_events::event_id)
                    .get_results(c)
                    .await?;
                fresh.extend(ids);
            }
        },
        sqlite | c | {
            for event in events {
                let inserted = diesel::insert_into(usage_events::table)
                    .values(event)
                    .on_conflict((usage_events::tenant_id, usage_events::event_id))
                    .do_nothing()
                    .execute(c)
                    .await?;
                if inserted == 1 {
                    fresh.insert(event.event_id.clone());
                }
            }
        }
    );
    Ok(fresh)
}

/// Adds `amount` to a counter (created at `amount`) and returns its new value, in one statement:
/// the value returned holds every change committed before, so admission decided on it is exact
/// under concurrent writers.
pub async fn add(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    period: &str,
    amount: i64,
    now: NaiveDateTime,
) -> AppResult<i64> {
    let row = UsageCounterRow {
        tenant_id: tenant_id.to_owned(),
        metric: metric.to_owned(),
        period: period.to_owned(),
        value: amount,
        measured_at: now,
        updated_at: now,
    };
    Ok(with_conn!(conn, |c| diesel::insert_into(
        usage_counters::table
    )
    .values(&row)
    .on_conflict((
        usage_counters::tenant_id,
        usage_counters::metric,
        usage_counters::period
    ))
    .do_update()
    .set((
        usage_counters::value.eq(usage_counters::value + excluded(usage_counters::value)),
        usage_counters::measured_at.eq(excluded(usage_counters::measured_at)),
        usage_counters::updated_at.eq(excluded(usage_counters::updated_at)),
    ))
    .returning(usage_counters::value)
    .get_result(c)
    .await)?)
}

/// A gauge's value and when it was measured; none when it was never set.
pub async fn gauge(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
) -> AppResult<Option<(i64, NaiveDateTime)>> {
    Ok(counter(conn, tenant_id, metric, GAUGE_PERIOD)
        .await?
        .map(|row| (row.value, row.measured_at)))
}

/// Sets a gauge to `value` as measured at `measured_at`, unless it holds a later measurement
/// (written meanwhile by another server); true when it was set.
pub async fn set_gauge(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    value: i64,
    measured_at: NaiveDateTime,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let updated = with_conn!(conn, |c| diesel::update(
        usage_counters::table
            .filter(usage_counters::tenant_id.eq(tenant_id))
            .filter(usage_counters::metric.eq(metric))
            .filter(usage_counters::period.eq(GAUGE_PERIOD))
            .filter(usage_counters::measured_at.le(measured_at))
    )
    .set((
        usage_counters::value.eq(value),
        usage_counters::measured_at.eq(measured_at),
        usage_counters::updated_at.eq(now),
    ))
    .execute(c)
    .await)?;
    if updated > 0 {
        return Ok(true);
    }
    // No row, or one measured later: only the first is set.
    let row = UsageCounterRow {
        tenant_id: tenant_id.to_owned(),
        metric: metric.to_owned(),
        period: GAUGE_PERIOD.to_owned(),
        value,
        measured_at,
        updated_at: now,
    };
    let inserted = with_conn!(conn, |c| diesel::insert_into(usage_counters::table)
        .values(&row)
        .on_conflict_do_nothing()
        .execute(c)
        .await)?;
    Ok(inserted == 1)
}

/// The period of a gauge's one counter.
pub const GAUGE_PERIOD: &str = "current";

async fn counter(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    period: &str,
) -> AppResult<Option<UsageCounterRow>> {
    Ok(with_conn!(conn, |c| usage_counters::table
        .filter(usage_counters::tenant_id.eq(tenant_id))
        .filter(usage_counters::metric.eq(metric))
        .filter(usage_counters::period.eq(period))
        .select(UsageCounterRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// A counter's value; none when nothing was counted in that period.
pub async fn value(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    period: &str,
) -> AppResult<Option<i64>> {
    Ok(counter(conn, tenant_id, metric, period)
        .await?
        .map(|row| row.value))
}

/// The tenant's counters of the given periods (the current ones, for a summary).
pub async fn counters_in(
    conn: &mut Conn,
    tenant_id: &str,
    periods: &[String],
) -> AppResult<Vec<UsageCounterRow>> {
    Ok(with_conn!(conn, |c| usage_counters::table
        .filter(usage_counters::tenant_id.eq(tenant_id))
        .filter(usage_counters::period.eq_any(periods))
        .select(UsageCounterRow::as_select())
        .load(c)
        .await)?)
}

/// Forgets event ids received before `before`.
pub async fn sweep_events(conn: &mut Conn, before: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        usage_events::table.filter(usage_events::received_at.lt(before))
    )
    .execute(c)
    .await)?)
}

/// The tenant's quota overrides in force, by metric (a temporary one past its end is not, even
/// before it is swept).
pub async fn overrides(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<QuotaOverrideRow>> {
    let now = crate::clock::now();
    Ok(with_conn!(conn, |c| quota_overrides::table
        .filter(quota_overrides::tenant_id.eq(tenant_id))
        .filter(
            quota_overrides::expires_at
                .is_null()
                .or(quota_overrides::expires_at.gt(now)),
        )
        .order(quota_overrides::metric.asc())
        .select(QuotaOverrideRow::as_select())
        .load(c)
        .await)?)
}

/// Sets an override (replacing the one of that metric).
pub async fn put_override(conn: &mut Conn, row: &QuotaOverrideRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(quota_overrides::table)
        .values(row)
        .on_conflict((quota_overrides::tenant_id, quota_overrides::metric))
        .do_update()
        .set(row)
        .execute(c)
        .await)?;
    Ok(())
}

/// Sets a counter back to zero; what it held (none when it held nothing).
pub async fn reset_counter(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    period: &str,
) -> AppResult<Option<i64>> {
    let held = counter(conn, tenant_id, metric, period)
        .await?
        .map(|row| row.value);
    with_conn!(conn, |c| diesel::delete(
        usage_counters::table
            .filter(usage_counters::tenant_id.eq(tenant_id))
            .filter(usage_counters::metric.eq(metric))
            .filter(usage_counters::period.eq(period))
    )
    .execute(c)
    .await)?;
    Ok(held)
}

/// The temporary overrides that ended by `now` (at most a thousand a sweep).
pub async fn expired_overrides(
    conn: &mut Conn,
    now: NaiveDateTime,
) -> AppResult<Vec<QuotaOverrideRow>> {
    Ok(with_conn!(conn, |c| quota_overrides::table
        .filter(quota_overrides::expires_at.le(now))
        .select(QuotaOverrideRow::as_select())
        .limit(1000)
        .load(c)
        .await)?)
}

/// Removes a temporary override that ended by `now`; false when it was changed or removed
/// meanwhile.
pub async fn delete_expired_override(
    conn: &mut Conn,
    tenant_id: &str,
    metric: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::delete(
        quota_overrides::table
            .filter(quota_overrides::tenant_id.eq(tenant_id))
            .filter(quota_overrides::metric.eq(metric))
            .filter(quota_overrides::expires_at.le(now))
    )
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Clears an override; false when there was none.
pub async fn delete_override(conn: &mut Conn, tenant_id: &str, metric: &str) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::delete(
        quota_overrides::table
            .filter(quota_overrides::tenant_id.eq(tenant_id))
            .filter(quota_overrides::metric.eq(metric))
    )
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Whether the tenant has seen this user log in before.
pub async fn is_known_user(
    conn: &mut Conn,
    tenant_id: &str,
    issuer: &str,
    subject: &str,
) -> AppResult<bool> {
    let n: i64 = with_conn!(conn, |c| tenant_users::table
        .filter(tenant_users::tenant_id.eq(tenant_id))
        .filter(tenant_users::issuer.eq(issuer))
        .filter(tenant_users::subject.eq(subject))
        .count()
        .get_result(c)
        .await)?;
    Ok(n > 0)
}

/// Records a login of a user: a new one is added (first and last seen now) and counted in the
/// `users` gauge; a known one gets its last-seen time. True for a new user.
pub async fn record_user(
    conn: &mut Conn,
    tenant_id: &str,
    issuer: &str,
    subject: &str,
    now: NaiveDateTime,
) -> AppResult<bool> {
    let updated = with_conn!(conn, |c| diesel::update(
        tenant_users::table
            .filter(tenant_users::tenant_id.eq(tenant_id))
            .filter(tenant_users::issuer.eq(issuer))
            .filter(tenant_users::subject.eq(subject))
    )
    .set(tenant_users::last_seen_at.eq(now))
    .execute(c)
    .await)?;
    if updated > 0 {
        return Ok(false);
    }
    let inserted = with_conn!(conn, |c| diesel::insert_into(tenant_users::table)
        .values((
            tenant_users::tenant_id.eq(tenant_id),
            tenant_users::issuer.eq(issuer),
            tenant_users::subject.eq(subject),
            tenant_users::first_seen_at.eq(now),
            tenant_users::last_seen_at.eq(now),
        ))
        .on_conflict_do_nothing()
        .execute(c)
        .await)?;
    if inserted == 1 {
        add(conn, tenant_id, "users", GAUGE_PERIOD, 1, now).await?;
    }
    Ok(inserted == 1)
}

/// The policy chosen for each scope given (`tenant:<id>`, `tier:<tier>`), as (scope, policy).
pub async fn policy_choices(
    conn: &mut Conn,
    scopes: &[String],
) -> AppResult<Vec<(String, String)>> {
    use super::schema::quota_policy_choices as q;
    Ok(with_conn!(conn, |c| q::table
        .filter(q::scope.eq_any(scopes))
        .select((q::scope, q::policy))
        .load(c)
        .await)?)
}

/// Every policy choice of a tier, as (scope, policy).
pub async fn tier_policy_choices(conn: &mut Conn) -> AppResult<Vec<(String, String)>> {
    use super::schema::quota_policy_choices as q;
    Ok(with_conn!(conn, |c| q::table
        .filter(q::scope.like("tier:%"))
        .order(q::scope.asc())
        .select((q::scope, q::policy))
        .load(c)
        .await)?)
}

/// Chooses `policy` for `scope`, or clears the choice (none); the policy chosen before, if any.
pub async fn choose_policy(
    conn: &mut Conn,
    scope: &str,
    policy: Option<&str>,
    by: &str,
    now: NaiveDateTime,
) -> AppResult<Option<String>> {
    use super::schema::quota_policy_choices as q;
    let before: Option<String> = with_conn!(conn, |c| q::table
        .filter(q::scope.eq(scope))
        .select(q::policy)
        .first(c)
        .await
        .optional())?;
    with_conn!(conn, |c| diesel::delete(
        q::table.filter(q::scope.eq(scope))
    )
    .execute(c)
    .await)?;
    if let Some(policy) = policy {
        with_conn!(conn, |c| diesel::insert_into(q::table)
            .values((
                q::scope.eq(scope),
                q::policy.eq(policy),
                q::chosen_by.eq(by),
                q::chosen_at.eq(now),
            ))
            .execute(c)
            .await)?;
    }
    Ok(before)
}

/// The last time the tenant was seen: its latest API call written or user login.
pub async fn last_active(conn: &mut Conn, tenant_id: &str) -> AppResult<Option<NaiveDateTime>> {
    use diesel::dsl::max;
    let calls: Option<NaiveDateTime> = with_conn!(conn, |c| usage_counters::table
        .filter(usage_counters::tenant_id.eq(tenant_id))
        .filter(usage_counters::metric.eq_any(["api_calls_per_minute", "api_calls_per_day"]))
        .select(max(usage_counters::updated_at))
        .first(c)
        .await)?;
    let login: Option<NaiveDateTime> = with_conn!(conn, |c| tenant_users::table
        .filter(tenant_users::tenant_id.eq(tenant_id))
        .select(max(tenant_users::last_seen_at))
        .first(c)
        .await)?;
    Ok(calls.max(login))
}
