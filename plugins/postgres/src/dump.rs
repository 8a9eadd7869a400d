//! What a bundle carries of a tenant's data: the tables its role owns (in its database, or in
//! its schema of a shared database) with their columns and rows, and the position of their
//! serial columns; or, in tables every tenant shares, the tenant's rows. Columns are carried as
//! typed definitions (the types `rls` creates tables with), never as SQL text, and rows as JSON
//! (`json_agg`, restored with `json_populate_recordset`), so that an import of a crafted bundle
//! runs no SQL of its own. A default other than a serial's sequence is not carried (the log
//! says which); a column of a type outside the list refuses the export, naming it.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tenantry_plugin_sdk::backend::permanent;
use tenantry_plugin_sdk::provisioner::{BundlePart, Outcome};
use tenantry_plugin_sdk::sql::Value as SqlValue;

use super::names::{ident, valid_name};
use super::{Column, Res, RlsTable, done, execute, log, rows, tenant_db, text};

pub const FORMAT: &str = "tenantry.postgres-data/v1";

/// A bundle's part of this plugin.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    pub format: String,
    pub tables: Vec<TableDump>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDump {
    pub schema: String,
    pub table: String,
    /// Empty for a shared table (the operator's: only the tenant's rows are carried).
    pub columns: Vec<Column>,
    /// The rows as PostgreSQL writes them (`json_agg`, in a stable order), kept as its text so
    /// that no number is rounded on the way.
    pub rows: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<SerialDump>,
}

/// Where a serial column's sequence stands.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialDump {
    pub column: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// The canonical type of a column as `format_type` writes it, when a bundle carries it.
fn carried_type(formatted: &str) -> Option<String> {
    let t = formatted.trim();
    let mapped = match t {
        "timestamp with time zone" => "timestamptz".to_owned(),
        "timestamp without time zone" => "timestamp".to_owned(),
        "character varying" => "varchar".to_owned(),
        other => match other.strip_prefix("character varying(") {
            Some(n) => format!("varchar({n}"),
            None => other.to_owned(),
        },
    };
    super::names::column_type(&mapped).ok()
}

/// The rows of `table` (all of them, or those `filter` keeps), as the text of a JSON array.
fn table_rows(on: &str, schema: &str, table: &str, filter: Option<&str>) -> Res<String> {
    let found = rows(
        on,
        &format!(
            "SELECT COALESCE(pg_catalog.json_agg(t ORDER BY t::text), '[]'::json)::text \
             FROM {}.{} t{}",
            ident(schema),
            ident(table),
            filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
        ),
        &[],
        "reading the rows",
    )?;
    Ok(found
        .first()
        .and_then(|r| text(&r[0]))
        .unwrap_or_else(|| "[]".into()))
}

/// The tables `owner` owns in `database` (in `schema` only, when given), with their rows.
pub fn export_owned(database: &str, owner: &str, schema: Option<&str>) -> Res<Dump> {
    let on = tenant_db(database);
    let mut params = vec![SqlValue::Text(owner.into())];
    let mut statement = "SELECT n.nspname::pg_catalog.text, c.relname::pg_catalog.text \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND pg_catalog.pg_get_userbyid(c.relowner) = $1 \
         AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        .to_owned();
    if let Some(schema) = schema {
        statement.push_str(" AND n.nspname = $2");
        params.push(SqlValue::Text(schema.into()));
    }
    statement.push_str(" ORDER BY 1, 2");
    let mut tables = Vec::new();
    for row in rows(&on, &statement, &params, "listing the tenant's tables")? {
        let (schema, table) = (
            text(&row[0]).unwrap_or_default(),
            text(&row[1]).unwrap_or_default(),
        );
        let qualified = format!("{}.{}", ident(&schema), ident(&table));
        let columns = rows(
            &on,
            "SELECT a.attname::pg_catalog.text, \
             pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
             pg_catalog.pg_get_expr(d.adbin, d.adrelid), \
             COALESCE((SELECT i.indisprimary FROM pg_catalog.pg_index i \
                       WHERE i.indrelid = a.attrelid AND i.indisprimary \
                       AND a.attnum = ANY (i.indkey)), false) \
             FROM pg_catalog.pg_attribute a \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1::pg_catalog.text::pg_catalog.regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[SqlValue::Text(qualified.clone())],
            "reading the table's columns",
        )?;
        let mut carried = Vec::new();
        let mut serials = Vec::new();
        for c in columns {
            let name = text(&c[0]).unwrap_or_default();
            let formatted = text(&c[1]).unwrap_or_default();
            let default = text(&c[3]);
            let Some(mut kind) = carried_type(&formatted) else {
                return Err(permanent(format!(
                    "column {schema}.{table}.{name} is of type {formatted}, which a bundle does not carry"
                )));
            };
            if let Some(default) = &default {
                if default.starts_with("nextval(") && (kind == "integer" || kind == "bigint") {
                    kind = if kind == "integer" {
                        "serial"
                    } else {
                        "bigserial"
                    }
                    .into();
                    let position = rows(
                        &on,
                        "SELECT pg_catalog.pg_get_serial_sequence($1, $2)",
                        &[
                            SqlValue::Text(qualified.clone()),
                            SqlValue::Text(name.clone()),
                        ],
                        "finding the column's sequence",
                    )?;
                    if let Some(sequence) = position.first().and_then(|r| text(&r[0])) {
                        // The name comes from the catalogue, quoted by it.
                        let at = rows(
                            &on,
                            &format!("SELECT last_value, is_called FROM {sequence}"),
                            &[],
                            "reading the sequence",
                        )?;
                        if let Some(at) = at.first() {
                            serials.push(SerialDump {
                                column: name.clone(),
                                last_value: match at[0] {
                                    SqlValue::Int(n) => n,
                                    _ => 1,
                                },
                                is_called: matches!(at[1], SqlValue::Boolean(true)),
                            });
                        }
                    }
                } else {
                    log::info(&format!(
                        "the default of {schema}.{table}.{name} ({default}) is not carried"
                    ));
                }
            }
            carried.push(Column {
                name,
                kind,
                not_null: matches!(c[2], SqlValue::Boolean(true)),
                primary_key: matches!(c[4], SqlValue::Boolean(true)),
            });
        }
        let rows = table_rows(&on, &schema, &table, None)?;
        tables.push(TableDump {
            schema,
            table,
            columns: carried,
            rows,
            serials,
        });
    }
    Ok(Dump {
        format: FORMAT.into(),
        tables,
    })
}

/// The tenant's rows of shared tables.
pub fn export_shared(database: &str, tables: &[RlsTable], value: &str) -> Res<Dump> {
    let on = tenant_db(database);
    let mut dumped = Vec::new();
    for t in tables {
        let rows = table_rows(&on, &t.schema, &t.table, Some(&super::clause(t, value)))?;
        dumped.push(TableDump {
            schema: t.schema.clone(),
            table: t.table.clone(),
            columns: Vec::new(),
            rows,
            serials: Vec::new(),
        });
    }
    Ok(Dump {
        format: FORMAT.into(),
        tables: dumped,
    })
}

/// The part a bundle carries.
pub fn part(dump: &Dump) -> Res<BundlePart> {
    Ok(BundlePart {
        media_type: "application/json".into(),
        data: serde_json::to_vec(dump).map_err(|e| permanent(e.to_string()))?,
        instance_specific: Vec::new(),
    })
}

/// Restores `dump` into `database`: each table made from its typed columns when it is
/// missing (in `only_schema` when the tenant has one schema; owned by `owner`), its rows
/// replaced by the bundle's — for a shared table, the rows `shared` keeps — and each serial set
/// where it stood.
pub fn restore(
    database: &str,
    owner: &str,
    only_schema: Option<&str>,
    shared: Option<(&[RlsTable], &str)>,
    part: &BundlePart,
) -> Res<Outcome> {
    let dump: Dump = serde_json::from_slice(&part.data)
        .map_err(|e| permanent(format!("the bundle's part is not this plugin's: {e}")))?;
    if dump.format != FORMAT {
        return Err(permanent(format!(
            "the bundle's part is `{}`, not `{FORMAT}`",
            dump.format
        )));
    }
    let on = tenant_db(database);
    let mut restored = 0usize;
    for t in &dump.tables {
        for name in [&t.schema, &t.table] {
            valid_name(name).map_err(|e| permanent(format!("the bundle's table {name}: {e}")))?;
        }
        let qualified = format!("{}.{}", ident(&t.schema), ident(&t.table));
        let replace =
            match shared {
                Some((tables, value)) => {
                    let Some(listed) = tables
                        .iter()
                        .find(|s| s.schema == t.schema && s.table == t.table)
                    else {
                        return Err(permanent(format!(
                            "the bundle's table {}.{} is not a shared table of this tenant",
                            t.schema, t.table
                        )));
                    };
                    format!(
                        "DELETE FROM {qualified} WHERE {}",
                        super::clause(listed, value)
                    )
                }
                None => {
                    if only_schema.is_some_and(|s| s != t.schema) {
                        return Err(permanent(format!(
                            "the bundle's table {}.{} is outside the tenant's schema",
                            t.schema, t.table
                        )));
                    }
                    let exists = !rows(
                    &on,
                    "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2",
                    &[SqlValue::Text(t.schema.clone()), SqlValue::Text(t.table.clone())],
                    "looking up a table",
                )?
                .is_empty();
                    if !exists {
                        let columns = t
                            .columns
                            .iter()
                            .map(|c| {
                                valid_name(&c.name).map_err(|e| {
                                    permanent(format!("the bundle's column {}: {e}", c.name))
                                })?;
                                c.definition()
                            })
                            .collect::<Res<Vec<_>>>()?
                            .join(", ");
                        if only_schema.is_none() {
                            execute(
                                &on,
                                &format!(
                                    "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                                    ident(&t.schema),
                                    ident(owner)
                                ),
                                "making the table's schema",
                            )?;
                        }
                        execute(
                            &on,
                            &format!("CREATE TABLE {qualified} ({columns})"),
                            "making the table",
                        )?;
                        execute(
                            &on,
                            &format!("ALTER TABLE {qualified} OWNER TO {}", ident(owner)),
                            "giving the table to the tenant's role",
                        )?;
                    }
                    format!("DELETE FROM {qualified}")
                }
            };
        execute(&on, &replace, "clearing the rows the bundle replaces")?;
        serde_json::from_str::<Vec<serde_json::Map<String, Value>>>(&t.rows).map_err(|e| {
            permanent(format!(
                "the bundle's rows of {}.{} are not a list of objects: {e}",
                t.schema, t.table
            ))
        })?;
        let rows_json = t.rows.clone();
        let inserted = rows(
            &on,
            &format!(
                "WITH restored AS (INSERT INTO {qualified} SELECT * FROM \
                 pg_catalog.json_populate_recordset(NULL::{qualified}, $1::pg_catalog.text::pg_catalog.json) \
                 RETURNING 1) SELECT pg_catalog.count(*) FROM restored"
            ),
            &[SqlValue::Text(rows_json)],
            "restoring the rows",
        )?;
        if let Some(SqlValue::Int(n)) = inserted.first().map(|r| &r[0]) {
            restored += *n as usize;
        }
        for s in &t.serials {
            valid_name(&s.column)
                .map_err(|e| permanent(format!("the bundle's column {}: {e}", s.column)))?;
            rows(
                &on,
                "SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence($1, $2), $3, $4)",
                &[
                    SqlValue::Text(qualified.clone()),
                    SqlValue::Text(s.column.clone()),
                    SqlValue::Int(s.last_value),
                    SqlValue::Boolean(s.is_called),
                ],
                "setting the serial where it stood",
            )?;
        }
    }
    log::info(&format!(
        "{restored} row(s) of {} table(s) restored",
        dump.tables.len()
    ));
    Ok(done(
        json!({ "tables": dump.tables.len(), "rows": restored }),
    ))
}
