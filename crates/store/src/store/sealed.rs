//! Every sealed value in a column, read with what binds it (the context's parts), and replaced
//! by value: what a master key rotation re-seals. Table and column names are the code's own
//! constants, never input.

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;

use super::Conn;
use crate::error::AppResult;
use crate::with_conn;

/// A column holding sealed values, and the columns whose values bind each (at most three;
/// nullable ones read as empty).
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    pub table: &'static str,
    pub column: &'static str,
    pub binds: &'static [&'static str],
}

/// One sealed value, with the values of its column's `binds`.
#[derive(Debug, diesel::QueryableByName)]
pub struct SealedValue {
    #[diesel(sql_type = Text)]
    pub a0: String,
    #[diesel(sql_type = Text)]
    pub a1: String,
    #[diesel(sql_type = Text)]
    pub a2: String,
    #[diesel(sql_type = Text)]
    pub value: String,
}

impl SealedValue {
    /// The bind values, in the order of the column's `binds`.
    pub fn binds(&self) -> [&str; 3] {
        [&self.a0, &self.a1, &self.a2]
    }
}

/// Every sealed value of `column`.
pub async fn values(conn: &mut Conn, column: &SealedColumn) -> AppResult<Vec<SealedValue>> {
    assert!(column.binds.len() <= 3, "at most three bind columns");
    let part = |i: usize| {
        column
            .binds
            .get(i)
            .map_or("''".to_owned(), |b| format!("COALESCE({b}, '')"))
    };
    let sql = format!(
        "SELECT {} AS a0, {} AS a1, {} AS a2, {col} AS value FROM {table} WHERE {col} IS NOT NULL",
        part(0),
        part(1),
        part(2),
        col = column.column,
        table = column.table,
    );
    Ok(with_conn!(conn, |c| diesel::sql_query(&sql)
        .load::<SealedValue>(c)
        .await)?)
}

/// Replaces the sealed value `old` of `column` (sealed values are unique: each has a nonce of
/// its own) with `new`.
pub async fn replace(
    conn: &mut Conn,
    column: &SealedColumn,
    old: &str,
    new: &str,
) -> AppResult<()> {
    let (table, col) = (column.table, column.column);
    with_conn!(
        conn,
        postgres | c | {
            diesel::sql_query(format!("UPDATE {table} SET {col} = $1 WHERE {col} = $2"))
                .bind::<Text, _>(new)
                .bind::<Text, _>(old)
                .execute(c)
                .await
        },
        sqlite | c | {
            diesel::sql_query(format!("UPDATE {table} SET {col} = ? WHERE {col} = ?"))
                .bind::<Text, _>(new)
                .bind::<Text, _>(old)
                .execute(c)
                .await
        }
    )?;
    Ok(())
}
