//! SQL of the tenant registry and its status history.
//!
//! A substring search of tenants (`q`) reads a trigram index (migration
//! `000010_tenant_search`). On PostgreSQL: GIN `pg_trgm` indexes of `lower(slug)` and
//! `lower(name)`, built without a pending list (`fastupdate = off`: tenants are created one at
//! a time, and a pending list is read in full by every search until a vacuum merges it); the
//! planner picks them for rare matches. On SQLite: an FTS5 trigram table (`tenant_search`) kept
//! by triggers and joined by tenant id (never by rowid, which a `VACUUM` may renumber), read for
//! at most [`MAX_SEARCH_CANDIDATES`] (1,000) candidates; a search that matches more, or is
//! shorter than three characters, reads tenants in slug order, where matches are dense. The
//! `LIKE` keeps exactly the matches either way.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::changes::Change;
use super::models::{StatusChangeRow, TenantRow};
use super::schema::{tenant_status_history, tenants};
use crate::error::AppResult;
use crate::with_conn;

/// Filters and page position of a tenant listing.
#[derive(Debug, Default, Clone)]
pub struct TenantFilter {
    pub status: Option<String>,
    pub tier: Option<String>,
    /// Case-insensitive substring of the slug or the name.
    pub search: Option<String>,
    /// Return tenants whose slug sorts after this one (keyset pagination).
    pub after_slug: Option<String>,
    pub limit: i64,
}

pub async fn insert(conn: &mut Conn, row: &TenantRow) -> Result<(), diesel::result::Error> {
    with_conn!(conn, |c| diesel::insert_into(tenants::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn find_by_id(conn: &mut Conn, id: &str) -> AppResult<Option<TenantRow>> {
    let row = with_conn!(conn, |c| tenants::table
        .filter(tenants::id.eq(id))
        .select(TenantRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Which of `ids` name tenants that exist.
pub async fn existing_ids(conn: &mut Conn, ids: &[String]) -> AppResult<Vec<String>> {
    Ok(with_conn!(conn, |c| tenants::table
        .filter(tenants::id.eq_any(ids))
        .select(tenants::id)
        .load(c)
        .await)?)
}

pub async fn find_by_slug(conn: &mut Conn, slug: &str) -> AppResult<Option<TenantRow>> {
    let row = with_conn!(conn, |c| tenants::table
        .filter(tenants::slug.eq(slug))
        .select(TenantRow::as_select())
        .first(c)
        .await
        .optional())?;
    Ok(row)
}

/// Writes `row` if the stored version is still `row.version - 1` (optimistic concurrency).
/// Returns false when someone else changed the tenant in between.
pub async fn update(conn: &mut Conn, row: &TenantRow) -> AppResult<bool> {
    let n = with_conn!(conn, |c| diesel::update(
        tenants::table
            .filter(tenants::id.eq(&row.id))
            .filter(tenants::version.eq(row.version - 1))
    )
    .set(row)
    .execute(c)
    .await)?;
    if n == 1 {
        conn.changed(Change::Tenant(row.id.clone()));
    }
    Ok(n == 1)
}

/// Removes the tenant; its status history, keys and sessions go with it (ON DELETE CASCADE).
pub async fn delete(conn: &mut Conn, id: &str) -> AppResult<()> {
    with_conn!(conn, |c| diesel::delete(
        tenants::table.filter(tenants::id.eq(id))
    )
    .execute(c)
    .await)?;
    conn.changed(Change::Tenant(id.to_owned()));
    Ok(())
}

pub async fn list(conn: &mut Conn, filter: &TenantFilter) -> AppResult<Vec<TenantRow>> {
    // A search for a whole tenant id finds that tenant (audit records and webhooks name
    // tenants by id).
    let by_id = filter
        .search
        .as_deref()
        .filter(|s| s.len() == 36 && uuid::Uuid::try_parse(s).is_ok())
        .map(str::to_ascii_lowercase);
    let candidates = match &filter.search {
        _ if by_id.is_some() => None,
        Some(search) => search_candidates(conn, search).await?,
        None => None,
    };
    let rows = with_conn!(conn, |c| {
        let mut query = tenants::table.select(TenantRow::as_select()).into_boxed();
        if let Some(status) = &filter.status {
            query = query.filter(tenants::status.eq(status.clone()));
        }
        if let Some(tier) = &filter.tier {
            query = query.filter(tenants::tier.eq(tier.clone()));
        }
        if let Some(id) = &by_id {
            query = query.filter(tenants::id.eq(id.clone()));
        } else if let Some(search) = &filter.search {
            let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
            query = query.filter(
                lower(tenants::slug)
                    .like(pattern.clone())
                    .escape('\\')
                    .or(lower(tenants::name).like(pattern).escape('\\')),
            );
        }
        if let Some(ids) = &candidates {
            query = query.filter(tenants::id.eq_any(ids.clone()));
        }
        if let Some(after) = &filter.after_slug {
            query = query.filter(tenants::slug.gt(after.clone()));
        }
        query
            .order(tenants::slug.asc())
            .limit(filter.limit)
            .load(c)
            .await
    })?;
    Ok(rows)
}

/// At most this many candidates of a search are read from SQLite's trigram index; a search
/// that matches more is served by reading tenants in slug order, where matches are dense.
const MAX_SEARCH_CANDIDATES: i64 = 1_000;

/// The ids of the tenants whose slug or name may contain `search`, from SQLite's trigram index
/// (`tenant_search`, FTS5), when they are few; `None` when the index cannot narrow the search:
/// on PostgreSQL (its pg_trgm indexes serve the LIKE itself, the planner choosing them), for a
/// search shorter than three characters (no trigram), or when it matches more than
/// [`MAX_SEARCH_CANDIDATES`] tenants. The LIKE of [`list`] then keeps exactly the matches.
async fn search_candidates(conn: &mut Conn, search: &str) -> AppResult<Option<Vec<String>>> {
    if search.chars().count() < 3 {
        return Ok(None);
    }
    let phrase = format!(
        "{{slug name}} : \"{}\"",
        search.to_lowercase().replace('"', "\"\"")
    );
    let rows: Option<Vec<SearchCandidate>> = with_conn!(
        conn,
        postgres | _pg | Ok(None),
        sqlite
            | c
            | diesel::sql_query("SELECT id FROM tenant_search WHERE tenant_search MATCH ? LIMIT ?")
                .bind::<diesel::sql_types::Text, _>(&phrase)
                .bind::<diesel::sql_types::BigInt, _>(MAX_SEARCH_CANDIDATES + 1)
                .load::<SearchCandidate>(c)
                .await
                .map(Some)
    )?;
    Ok(rows
        .map(|rows| rows.into_iter().map(|row| row.id).collect::<Vec<_>>())
        .filter(|ids| ids.len() as i64 <= MAX_SEARCH_CANDIDATES))
}

#[derive(diesel::QueryableByName)]
struct SearchCandidate {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// Number of tenants per (status, tier), for the dashboard and the metrics.
pub async fn count_by_status_and_tier(conn: &mut Conn) -> AppResult<Vec<(String, String, i64)>> {
    let rows = with_conn!(conn, |c| tenants::table
        .group_by((tenants::status, tenants::tier))
        .select((tenants::status, tenants::tier, diesel::dsl::count_star()))
        .load::<(String, String, i64)>(c)
        .await)?;
    Ok(rows)
}

/// Every tenant row in slug order, a page at a time (for key rotation and exports).
pub async fn page_after(
    conn: &mut Conn,
    after_slug: &str,
    limit: i64,
) -> AppResult<Vec<TenantRow>> {
    list(
        conn,
        &TenantFilter {
            after_slug: Some(after_slug.to_owned()),
            limit,
            ..TenantFilter::default()
        },
    )
    .await
}

pub async fn insert_status_change(conn: &mut Conn, row: &StatusChangeRow) -> AppResult<()> {
    with_conn!(conn, |c| diesel::insert_into(tenant_status_history::table)
        .values(row)
        .execute(c)
        .await)?;
    Ok(())
}

pub async fn status_history(conn: &mut Conn, tenant_id: &str) -> AppResult<Vec<StatusChangeRow>> {
    let rows = with_conn!(conn, |c| tenant_status_history::table
        .filter(tenant_status_history::tenant_id.eq(tenant_id))
        .order((
            tenant_status_history::at.desc(),
            tenant_status_history::id.desc()
        ))
        .select(StatusChangeRow::as_select())
        .load(c)
        .await)?;
    Ok(rows)
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// Escapes `%`, `_` and `\` so that user input matches literally inside a LIKE pattern.
pub fn escape_like(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for ch in input.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Rewrites the sealed columns of one tenant (master key rotation; not a change of the tenant).
pub async fn update_sealed(
    conn: &mut Conn,
    id: &str,
    client_secret: Option<String>,
    client_secret_previous: Option<String>,
    db_uri: Option<String>,
) -> AppResult<()> {
    with_conn!(conn, |c| diesel::update(
        tenants::table.filter(tenants::id.eq(id))
    )
    .set((
        tenants::client_secret.eq(client_secret.clone()),
        tenants::client_secret_previous.eq(client_secret_previous.clone()),
        tenants::db_uri.eq(db_uri.clone()),
    ))
    .execute(c)
    .await)?;
    conn.changed(Change::Tenant(id.to_owned()));
    Ok(())
}

/// The slugs of tenants in one of `statuses` whose status changed before `before`, oldest
/// change first (at most `limit`).
pub async fn slugs_in_status_since(
    conn: &mut Conn,
    statuses: &[&str],
    before: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<String>> {
    let statuses: Vec<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
    Ok(with_conn!(conn, |c| tenants::table
        .filter(tenants::status.eq_any(&statuses))
        .filter(tenants::status_changed_at.lt(before))
        .order(tenants::status_changed_at.asc())
        .limit(limit)
        .select(tenants::slug)
        .load(c)
        .await)?)
}

/// Tenants in `trial` whose trial ends before `before`, soonest first: (id, slug, end).
pub async fn trials_ending_before(
    conn: &mut Conn,
    before: NaiveDateTime,
    limit: i64,
) -> AppResult<Vec<(String, String, NaiveDateTime)>> {
    let rows: Vec<(String, String, Option<NaiveDateTime>)> = with_conn!(conn, |c| tenants::table
        .filter(tenants::status.eq("trial"))
        .filter(tenants::trial_ends_at.lt(before))
        .order(tenants::trial_ends_at.asc())
        .limit(limit)
        .select((tenants::id, tenants::slug, tenants::trial_ends_at))
        .load(c)
        .await)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, slug, end)| end.map(|end| (id, slug, end)))
        .collect())
}
