//! SQL of the tenants' API traffic a minute (`tenant_traffic`): what each server counted added
//! in, sums over a window, the heaviest tenants, and the hour kept.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::tenant_traffic;
use crate::error::AppResult;
use crate::with_conn;

/// One tenant's traffic in one minute (or summed over a window).
#[derive(Debug, Clone, Default, PartialEq, Insertable, QueryableByName)]
#[diesel(table_name = tenant_traffic)]
pub struct TrafficRow {
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = BigInt)]
    pub minute: i64,
    #[diesel(sql_type = BigInt)]
    pub requests: i64,
    #[diesel(sql_type = BigInt)]
    pub errors: i64,
    #[diesel(sql_type = BigInt)]
    pub throttled: i64,
    #[diesel(sql_type = BigInt)]
    pub l0: i64,
    #[diesel(sql_type = BigInt)]
    pub l1: i64,
    #[diesel(sql_type = BigInt)]
    pub l2: i64,
    #[diesel(sql_type = BigInt)]
    pub l3: i64,
    #[diesel(sql_type = BigInt)]
    pub l4: i64,
    #[diesel(sql_type = BigInt)]
    pub l5: i64,
    #[diesel(sql_type = BigInt)]
    pub l6: i64,
    #[diesel(sql_type = BigInt)]
    pub l7: i64,
    #[diesel(sql_type = BigInt)]
    pub l8: i64,
    #[diesel(sql_type = BigInt)]
    pub l9: i64,
    #[diesel(sql_type = BigInt)]
    pub l10: i64,
    #[diesel(sql_type = BigInt)]
    pub l11: i64,
}

impl TrafficRow {
    /// The latency histogram's buckets, in order.
    pub fn latency(&self) -> [u64; 12] {
        [
            self.l0, self.l1, self.l2, self.l3, self.l4, self.l5, self.l6, self.l7, self.l8,
            self.l9, self.l10, self.l11,
        ]
        .map(|n| n.max(0) as u64)
    }

    pub fn with_latency(mut self, latency: [u64; 12]) -> Self {
        let [l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11] = latency.map(|n| n as i64);
        (self.l0, self.l1, self.l2, self.l3) = (l0, l1, l2, l3);
        (self.l4, self.l5, self.l6, self.l7) = (l4, l5, l6, l7);
        (self.l8, self.l9, self.l10, self.l11) = (l8, l9, l10, l11);
        self
    }
}

/// Adds what a server counted to each tenant's minute (a tenant purged since is skipped by
/// the caller's filter of known ids).
pub async fn add(conn: &mut Conn, rows: &[TrafficRow]) -> AppResult<()> {
    use diesel::upsert::excluded;
    use tenant_traffic::dsl as t;
    for row in rows {
        with_conn!(conn, |c| diesel::insert_into(t::tenant_traffic)
            .values(row)
            .on_conflict((t::tenant_id, t::minute))
            .do_update()
            .set((
                t::requests.eq(t::requests + excluded(t::requests)),
                t::errors.eq(t::errors + excluded(t::errors)),
                t::throttled.eq(t::throttled + excluded(t::throttled)),
                t::l0.eq(t::l0 + excluded(t::l0)),
                t::l1.eq(t::l1 + excluded(t::l1)),
                t::l2.eq(t::l2 + excluded(t::l2)),
                t::l3.eq(t::l3 + excluded(t::l3)),
                t::l4.eq(t::l4 + excluded(t::l4)),
                t::l5.eq(t::l5 + excluded(t::l5)),
                t::l6.eq(t::l6 + excluded(t::l6)),
                t::l7.eq(t::l7 + excluded(t::l7)),
                t::l8.eq(t::l8 + excluded(t::l8)),
                t::l9.eq(t::l9 + excluded(t::l9)),
                t::l10.eq(t::l10 + excluded(t::l10)),
                t::l11.eq(t::l11 + excluded(t::l11)),
            ))
            .execute(c)
            .await)?;
    }
    Ok(())
}

/// Forgets the minutes before `minute`.
pub async fn forget_before(conn: &mut Conn, minute: i64) -> AppResult<usize> {
    Ok(with_conn!(conn, |c| diesel::delete(
        tenant_traffic::table.filter(tenant_traffic::minute.lt(minute))
    )
    .execute(c)
    .await)?)
}

/// What a ranking is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heaviest {
    Requests,
    Errors,
    Throttled,
}

/// The sums since `since` (a minute), per tenant: every tenant's heaviest first by `by`, at
/// most `limit` (`only`: one tenant's). `minute` holds the number of minutes that had traffic.
pub async fn sums(
    conn: &mut Conn,
    since: i64,
    only: Option<&str>,
    by: Heaviest,
    limit: i64,
) -> AppResult<Vec<TrafficRow>> {
    let sum = |c: &str| format!("CAST(SUM({c}) AS BIGINT) AS {c}");
    let columns: Vec<String> = [
        "requests",
        "errors",
        "throttled",
        "l0",
        "l1",
        "l2",
        "l3",
        "l4",
        "l5",
        "l6",
        "l7",
        "l8",
        "l9",
        "l10",
        "l11",
    ]
    .iter()
    .map(|c| sum(c))
    .collect();
    // Every value is a number or a checked id: nothing of a request reaches the statement's text.
    let only = match only {
        Some(id) if uuid::Uuid::try_parse(id).is_ok() => format!("AND tenant_id = '{id}'"),
        Some(_) => return Ok(Vec::new()),
        None => String::new(),
    };
    let order = match by {
        Heaviest::Requests => "requests",
        Heaviest::Errors => "errors",
        Heaviest::Throttled => "throttled",
    };
    let query = format!(
        "SELECT tenant_id, CAST(COUNT(*) AS BIGINT) AS minute, {} FROM tenant_traffic \
         WHERE minute >= {since} {only} GROUP BY tenant_id ORDER BY {order} DESC, tenant_id \
         LIMIT {limit}",
        columns.join(", ")
    );
    Ok(with_conn!(conn, |c| diesel::sql_query(query.clone())
        .load::<TrafficRow>(c)
        .await)?)
}
