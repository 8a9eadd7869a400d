//! SQL of templates, provisioning runs and steps, idempotency keys and tenant resources.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::models::{
    IdempotencyRow, ResourceRow, RunRow, StepRow, TemplateRow, TemplateVersionRow,
};
use super::schema::{
    idempotency_keys, provisioning_run_totals, provisioning_runs, provisioning_steps,
    template_versions, templates, tenant_resources,
};
use super::vocabulary::RunStatus;
use crate::error::AppResult;
use crate::with_conn;

// ---- templates ---------------------------------------------------------------------------

pub async fn insert_template(
    conn: &mut Conn,
    row: &TemplateRow,
) -> Result<(), diesel::result::Error> {
    with_conn!(conn, |c| diesel::insert_into(templates::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn update_template(conn: &mut Conn, row: &TemplateRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        templates::table.filter(templates::name.eq(&row.name))
    )
    .set(row)
    .execute(c)
    .await)?;
    Ok(())
}

pub async fn insert_template_version(conn: &mut Conn, row: &TemplateVersionRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(template_versions::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn find_template(conn: &mut Conn, name: &str) -> AppResult<Option<TemplateRow>> {
    Ok(with_conn!(conn, |c| templates::table
        .filter(templates::name.eq(name))
        .select(TemplateRow::as_select())
        .first(c)
        .await
        .optional())?)
}

pub async fn list_templates(conn: &mut Conn) -> AppResult<Vec<TemplateRow>> {
    Ok(with_conn!(conn, |c| templates::table
        .order(templates::name.asc())
        .select(TemplateRow::as_select())
        .load(c)
        .await)?)
}

pub async fn template_version(
    conn: &mut Conn,
    name: &str,
    version: i64,
) -> AppResult<Option<TemplateVersionRow>> {
    Ok(with_conn!(conn, |c| template_versions::table
        .filter(template_versions::template.eq(name))
        .filter(template_versions::version.eq(version))
        .select(TemplateVersionRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Every version of every template, newest first within a template.
pub async fn all_latest_versions(conn: &mut Conn) -> AppResult<Vec<TemplateVersionRow>> {
    Ok(with_conn!(conn, |c| template_versions::table
        .inner_join(
            templates::table.on(templates::name
                .eq(template_versions::template)
                .and(templates::latest_version.eq(template_versions::version)))
        )
        .order(template_versions::template.asc())
        .select(TemplateVersionRow::as_select())
        .load(c)
        .await)?)
}

pub async fn template_versions(conn: &mut Conn, name: &str) -> AppResult<Vec<TemplateVersionRow>> {
    Ok(with_conn!(conn, |c| template_versions::table
        .filter(template_versions::template.eq(name))
        .order(template_versions::version.desc())
        .select(TemplateVersionRow::as_select())
        .load(c)
        .await)?)
}

pub async fn delete_template(conn: &mut Conn, name: &str) -> AppResult<bool> {
    let n = with_conn!(conn, |c| {
        diesel::delete(template_versions::table.filter(template_versions::template.eq(name)))
            .execute(c)
            .await?;
        diesel::delete(templates::table.filter(templates::name.eq(name)))
            .execute(c)
            .await
    })?;
    Ok(n == 1)
}

// ---- runs and steps ------------------------------------------------------------------------

pub async fn insert_run(conn: &mut Conn, run: &RunRow, steps: &[StepRow]) -> AppResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(provisioning_runs::table)
            .values(run)
            .execute(c)
            .await?;
        for step in steps {
            diesel::insert_into(provisioning_steps::table)
                .values(step)
                .execute(c)
                .await?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    Ok(())
}

pub async fn find_run(conn: &mut Conn, id: &str) -> AppResult<Option<RunRow>> {
    Ok(with_conn!(conn, |c| provisioning_runs::table
        .filter(provisioning_runs::id.eq(id))
        .select(RunRow::as_select())
        .first(c)
        .await
        .optional())?)
}

pub async fn steps(conn: &mut Conn, run: &str) -> AppResult<Vec<StepRow>> {
    Ok(with_conn!(conn, |c| provisioning_steps::table
        .filter(provisioning_steps::run_id.eq(run))
        .order(provisioning_steps::seq.asc())
        .select(StepRow::as_select())
        .load(c)
        .await)?)
}

/// Runs, newest first; of one tenant when `tenant_id` is given.
pub async fn list_runs(
    conn: &mut Conn,
    tenant_id: Option<&str>,
    status: Option<RunStatus>,
    limit: i64,
) -> AppResult<Vec<RunRow>> {
    Ok(with_conn!(conn, |c| {
        let mut query = provisioning_runs::table
            .select(RunRow::as_select())
            .order(provisioning_runs::created_at.desc())
            .limit(limit)
            .into_boxed();
        if let Some(tenant) = tenant_id {
            query = query.filter(provisioning_runs::tenant_id.eq(tenant.to_owned()));
        }
        if let Some(status) = status {
            query = query.filter(provisioning_runs::status.eq(status));
        }
        query.load(c).await
    })?)
}

/// Unfinished runs by status.
pub async fn count_by_status(conn: &mut Conn) -> AppResult<Vec<(String, i64)>> {
    Ok(with_conn!(conn, |c| provisioning_runs::table
        .filter(provisioning_runs::status.eq_any(RunStatus::OPEN))
        .group_by(provisioning_runs::status)
        .select((provisioning_runs::status, diesel::dsl::count_star()))
        .load(c)
        .await)?)
}

/// Counts a run that ended, in the transaction that ends it: one more run of `kind` with
/// `outcome`, and its seconds.
pub async fn count_ended_run(
    conn: &mut Conn,
    kind: &str,
    outcome: &str,
    seconds: f64,
) -> AppResult<()> {
    use diesel::upsert::excluded;
    use provisioning_run_totals::dsl as t;
    with_conn!(conn, |c| diesel::insert_into(t::provisioning_run_totals)
        .values((
            t::kind.eq(kind),
            t::outcome.eq(outcome),
            t::runs.eq(1i64),
            t::seconds.eq(seconds),
        ))
        .on_conflict((t::kind, t::outcome))
        .do_update()
        .set((
            t::runs.eq(t::runs + 1i64),
            t::seconds.eq(t::seconds + excluded(t::seconds))
        ))
        .execute(c)
        .await)?;
    Ok(())
}

/// Every ended run counted so far: (kind, outcome, runs, seconds).
pub async fn run_totals(conn: &mut Conn) -> AppResult<Vec<(String, String, i64, f64)>> {
    use provisioning_run_totals::dsl as t;
    Ok(with_conn!(conn, |c| t::provisioning_run_totals
        .select((t::kind, t::outcome, t::runs, t::seconds))
        .load(c)
        .await)?)
}

/// The id of the tenant whose runs were made for `slug_or_id` (the newest such run's tenant):
/// a purged tenant's runs outlive it.
pub async fn tenant_of_runs(conn: &mut Conn, slug_or_id: &str) -> AppResult<Option<String>> {
    Ok(with_conn!(conn, |c| provisioning_runs::table
        .filter(
            provisioning_runs::tenant_slug
                .eq(slug_or_id)
                .or(provisioning_runs::tenant_id.eq(slug_or_id)),
        )
        .order(provisioning_runs::created_at.desc())
        .select(provisioning_runs::tenant_id)
        .first::<String>(c)
        .await
        .optional())?)
}

/// Whether the tenant has a run that has not finished.
pub async fn open_run_of(conn: &mut Conn, tenant_id: &str) -> AppResult<Option<RunRow>> {
    Ok(with_conn!(conn, |c| provisioning_runs::table
        .filter(provisioning_runs::tenant_id.eq(tenant_id))
        .filter(provisioning_runs::status.eq_any(RunStatus::OPEN))
        .select(RunRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Takes the lease of one open run whose lease is free or expired, for `owner` until `until`.
/// A tenant's runs are taken in the order they were queued, one at a time: a run waits while an
/// earlier run of its tenant is open (a purge never overtakes the cancellation before it).
/// Runs of different tenants go in parallel;
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas never take the same run; on SQLite the
/// caller's `BEGIN IMMEDIATE` transaction serialises the claim.
pub async fn claim_run(
    conn: &mut Conn,
    owner: &str,
    now: NaiveDateTime,
    until: NaiveDateTime,
) -> AppResult<Option<RunRow>> {
    let claimed = with_conn!(
        conn,
        postgres | c | {
            diesel::sql_query(
                "UPDATE provisioning_runs SET lease_owner = $1, lease_expires_at = $2, \
                 executions = executions + 1, started_at = COALESCE(started_at, $3), \
                 status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, \
                 updated_at = $3 \
                 WHERE id = (SELECT r.id FROM provisioning_runs r \
                    WHERE r.status IN ('queued', 'running', 'compensating') \
                    AND (r.lease_expires_at IS NULL OR r.lease_expires_at < $3) \
                    AND NOT EXISTS (SELECT 1 FROM provisioning_runs e \
                        WHERE e.tenant_id = r.tenant_id \
                        AND e.status IN ('queued', 'running', 'compensating') \
                        AND (e.created_at < r.created_at \
                             OR (e.created_at = r.created_at AND e.id < r.id))) \
                    ORDER BY r.created_at, r.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING *",
            )
            .bind::<diesel::sql_types::Text, _>(owner)
            .bind::<diesel::sql_types::Timestamp, _>(until)
            .bind::<diesel::sql_types::Timestamp, _>(now)
            .get_result::<RunRow>(c)
            .await
            .optional()
        },
        sqlite | c | {
            // The first open run of each tenant, taken when its lease is free.
            let open: Vec<(String, String, Option<NaiveDateTime>)> = provisioning_runs::table
                .filter(provisioning_runs::status.eq_any(RunStatus::OPEN))
                .order((
                    provisioning_runs::created_at.asc(),
                    provisioning_runs::id.asc(),
                ))
                .select((
                    provisioning_runs::id,
                    provisioning_runs::tenant_id,
                    provisioning_runs::lease_expires_at,
                ))
                .load(c)
                .await?;
            let mut seen = std::collections::HashSet::new();
            let candidate = open
                .into_iter()
                .filter(|(_, tenant, _)| seen.insert(tenant.clone()))
                .find(|(_, _, lease)| lease.is_none_or(|until| until < now))
                .map(|(id, _, _)| id);
            match candidate {
                None => Ok(None),
                Some(id) => {
                    diesel::update(provisioning_runs::table.filter(provisioning_runs::id.eq(&id)))
                        .set((
                            provisioning_runs::lease_owner.eq(owner),
                            provisioning_runs::lease_expires_at.eq(until),
                            provisioning_runs::executions.eq(provisioning_runs::executions + 1),
                            provisioning_runs::updated_at.eq(now),
                        ))
                        .execute(c)
                        .await?;
                    diesel::sql_query(
                        "UPDATE provisioning_runs SET started_at = COALESCE(started_at, ?), \
                         status = CASE WHEN status = 'queued' THEN 'running' ELSE status END \
                         WHERE id = ?",
                    )
                    .bind::<diesel::sql_types::Timestamp, _>(now)
                    .bind::<diesel::sql_types::Text, _>(&id)
                    .execute(c)
                    .await?;
                    provisioning_runs::table
                        .filter(provisioning_runs::id.eq(&id))
                        .select(RunRow::as_select())
                        .first(c)
                        .await
                        .optional()
                }
            }
        }
    )?;
    Ok(claimed)
}

/// Extends `owner`'s lease of `run`; false when the lease is no longer `owner`'s.
pub async fn renew_lease(
    conn: &mut Conn,
    run: &str,
    owner: &str,
    until: NaiveDateTime,
) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        provisioning_runs::table
            .filter(provisioning_runs::id.eq(run))
            .filter(provisioning_runs::lease_owner.eq(owner))
    )
    .set(provisioning_runs::lease_expires_at.eq(until))
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Saves the run if `owner` still holds its lease; false otherwise.
pub async fn save_run(conn: &mut Conn, run: &RunRow, owner: &str) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        provisioning_runs::table
            .filter(provisioning_runs::id.eq(&run.id))
            .filter(provisioning_runs::lease_owner.eq(owner))
    )
    .set(run)
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Saves a step if `owner` still holds its run's lease; false otherwise (nothing written).
pub async fn save_step(conn: &mut Conn, step: &StepRow, owner: &str) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        provisioning_steps::table
            .filter(provisioning_steps::run_id.eq(&step.run_id))
            .filter(provisioning_steps::seq.eq(step.seq))
            .filter(diesel::dsl::exists(
                provisioning_runs::table
                    .filter(provisioning_runs::id.eq(&step.run_id))
                    .filter(provisioning_runs::lease_owner.eq(owner)),
            ))
    )
    .set(step)
    .execute(c)
    .await)?;
    Ok(n == 1)
}

/// Steps of the runs of one tenant that are `done` apply steps (for purge and drift).
pub async fn resources(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<ResourceRow>> {
    Ok(with_conn!(conn, |c| tenant_resources::table
        .filter(tenant_resources::tenant_id.eq(tenant_id))
        // Plan order: what a resource was made after, it is listed after.
        .order((
            tenant_resources::seq.asc(),
            tenant_resources::applied_at.asc(),
            tenant_resources::plugin.asc(),
            tenant_resources::step_id.asc(),
        ))
        .select(ResourceRow::as_select())
        .load(c)
        .await)?)
}

/// The tenants that hold resources in some backend, by id.
pub async fn tenants_with_resources(conn: &mut Conn) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| tenant_resources::table
        .select(tenant_resources::tenant_id)
        .distinct()
        .order(tenant_resources::tenant_id.asc())
        .load(c)
        .await)?)
}

/// Records what a step made. A resource made before keeps its place in the plan (`seq`): a
/// repair re-applies a step in a run of its own, and the resources are re-applied in plan order
/// (an import), which a repair must not change.
pub async fn put_resource(conn: &mut Conn, row: &ResourceRow) -> AppResult<()> {
    let mut row = row.clone();
    with_conn!(conn, |c| {
        let earlier: Option<i64> = diesel::delete(
            tenant_resources::table
                .filter(tenant_resources::tenant_id.eq(&row.tenant_id))
                .filter(tenant_resources::plugin.eq(&row.plugin))
                .filter(tenant_resources::step_id.eq(&row.step_id)),
        )
        .returning(tenant_resources::seq)
        .get_result(c)
        .await
        .optional()?;
        if let Some(seq) = earlier {
            row.seq = seq;
        }
        diesel::insert_into(tenant_resources::table)
            .values(&row)
            .execute(c)
            .await
    })?;
    Ok(())
}

pub async fn delete_resource(
    conn: &mut Conn,
    tenant_id: &str,
    plugin: &str,
    step_id: &str,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::delete(
        tenant_resources::table
            .filter(tenant_resources::tenant_id.eq(tenant_id))
            .filter(tenant_resources::plugin.eq(plugin))
            .filter(tenant_resources::step_id.eq(step_id)),
    )
    .execute(c)
    .await)?;
    Ok(())
}

// ---- idempotency keys ---------------------------------------------------------------------

pub async fn insert_key(
    conn: &mut Conn,
    row: &IdempotencyRow,
) -> Result<(), diesel::result::Error> {
    with_conn!(conn, |c| diesel::insert_into(idempotency_keys::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn find_key(conn: &mut Conn, key: &str) -> AppResult<Option<IdempotencyRow>> {
    Ok(with_conn!(conn, |c| idempotency_keys::table
        .filter(idempotency_keys::key.eq(key))
        .select(IdempotencyRow::as_select())
        .first(c)
        .await
        .optional())?)
}

/// Forgets keys past their expiry; returns how many.
pub async fn expire_keys(conn: &mut Conn, now: NaiveDateTime) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        idempotency_keys::table.filter(idempotency_keys::expires_at.lt(now))
    )
    .execute(c)
    .await)?)
}
