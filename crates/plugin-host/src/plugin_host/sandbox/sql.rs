//! The `sql` capability (WIT 0.2.0, provisioners): statements with parameters on the PostgreSQL
//! databases the operator granted to the plugin by alias. The grant is the capability: the
//! URL (sealed at rest, opened here, never shown to the plugin or written to a message) logs in
//! with the role the operator chose. A connection is opened at a call's first statement on an
//! alias and closed with the call, with `search_path` set to `pg_catalog, pg_temp` (a name the
//! plugin leaves unqualified never resolves to an object someone planted in a writable schema).
//! Each statement runs on its own (autocommit) within `sql_statement_timeout_ms` — the server's
//! `statement_timeout`, and the host's own clock besides, which a plugin that sets the timeout
//! to 0 cannot change: past it the statement is cancelled and the connection closed. A query's
//! rows are read as they come and stop at `sql_max_rows` rows or `sql_max_result_bytes` bytes
//! (the rest is never read), and a call opens at most `sql_max_connections_per_call`
//! connections.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::plugin_host::bindings::provisioner::tenantry::plugin::sql;
use crate::plugin_host::{HostServices, LoadedPlugin, database_context};
use crate::secrets::Keyring;

/// How long opening a connection may take (less when the call's end is nearer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqlUnit {
    keyring: Arc<Keyring>,
    plugin: String,
    requested: Vec<String>,
    /// Alias → sealed URL.
    granted: HashMap<String, String>,
    /// Alias → the call's connection.
    open: HashMap<String, tokio_postgres::Client>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    max_rows: usize,
    max_bytes: usize,
    max_connections: usize,
    /// Connections this call tried to open (a failed one counts too: each costs a timeout).
    attempted: usize,
    end: super::CallEnd,
    cancel: std::sync::Arc<super::Cancel>,
    /// What this call waited on (its databases), and how long.
    pub waits: super::Waits,
}

impl SqlUnit {
    pub fn new(
        services: &HostServices,
        plugin: &LoadedPlugin,
        runtime: tokio::runtime::Handle,
        end: super::CallEnd,
        cancel: std::sync::Arc<super::Cancel>,
    ) -> Self {
        let config = &services.config;
        SqlUnit {
            keyring: services.keyring.clone(),
            plugin: plugin.name.clone(),
            requested: plugin.manifest.capabilities.databases.clone(),
            granted: plugin.grants.databases.clone(),
            open: HashMap::new(),
            runtime,
            timeout: Duration::from_millis(config.sql_statement_timeout_ms),
            max_rows: config.sql_max_rows,
            max_bytes: config.sql_max_result_bytes,
            max_connections: config.sql_max_connections_per_call.max(1),
            attempted: 0,
            end,
            cancel,
            waits: super::Waits::default(),
        }
    }

    /// The call's connection to `alias`, opened on first use. `ALIAS/DATABASE` is the granted
    /// server and role of `ALIAS` on another of that server's databases (one the role made, for
    /// a plugin that makes a database per tenant); what it may do there is what the role may.
    fn client(&mut self, target: &str) -> Result<&tokio_postgres::Client, sql::SqlError> {
        if !self.open.contains_key(target) {
            let (alias, database) = match target.split_once('/') {
                Some((alias, database)) => (alias, Some(database)),
                None => (target, None),
            };
            if database.is_some_and(|d| d.is_empty() || d.len() > 63 || d.contains('/')) {
                return Err(sql::SqlError::NotGranted(format!(
                    "`{target}`: a database name after `/` is 1–63 characters"
                )));
            }
            if !self.requested.iter().any(|a| a == alias) {
                return Err(sql::SqlError::NotGranted(format!(
                    "database `{alias}` is not requested in the manifest of plugin `{}`",
                    self.plugin
                )));
            }
            let Some(sealed) = self.granted.get(alias) else {
                return Err(sql::SqlError::NotGranted(format!(
                    "no database `{alias}` is granted to plugin `{}`",
                    self.plugin
                )));
            };
            if self.attempted >= self.max_connections {
                return Err(sql::SqlError::Connection(format!(
                    "`{target}`: a call opens at most {} database connections \
                     (sql_max_connections_per_call)",
                    self.max_connections
                )));
            }
            self.attempted += 1;
            let url = self
                .keyring
                .open(sealed, &database_context(&self.plugin, alias))
                .map_err(|_| {
                    sql::SqlError::Connection(format!(
                        "the URL of database `{alias}` cannot be opened on this server"
                    ))
                })?;
            let mut config: tokio_postgres::Config = url.parse().map_err(|_| {
                sql::SqlError::Connection(format!(
                    "the URL granted as database `{alias}` is not a PostgreSQL URL"
                ))
            })?;
            if let Some(database) = database {
                config.dbname(database);
            }
            let timeout = self.timeout;
            // Connecting is not a statement: a short statement timeout does not rush it.
            let connect_within = self.end.cap(timeout.max(CONNECT_TIMEOUT));
            let runtime = self.runtime.clone();
            let client = self.runtime.block_on(async move {
                let (client, connection) =
                    tokio::time::timeout(connect_within, config.connect(tokio_postgres::NoTls))
                        .await
                        .map_err(|_| sql::SqlError::Timeout)?
                        .map_err(|e| sql::SqlError::Connection(describe(&e)))?;
                runtime.spawn(connection);
                // `search_path` pinned to the catalogue: an object anyone planted in a schema
                // they may write (`public` before PostgreSQL 15) is never what an unqualified
                // name in a plugin's statement finds, when it runs as the granted role.
                client
                    .batch_execute(&format!(
                        "SET statement_timeout = {}; SET search_path = pg_catalog, pg_temp",
                        timeout.as_millis().max(1)
                    ))
                    .await
                    .map_err(|e| failure(&e))?;
                Ok::<_, sql::SqlError>(client)
            })?;
            self.open.insert(target.to_owned(), client);
        }
        Ok(&self.open[target])
    }

    fn wait<T>(&mut self, target: &str, work: impl Fn(&mut Self) -> T) -> T {
        let started = Instant::now();
        let result = work(self);
        self.waits.ended(
            || format!("database `{target}` (SQL)"),
            started.elapsed(),
            &self.end,
        );
        result
    }
}

/// A database error, as the plugin sees it: the SQLSTATE and the message; a cancelled
/// statement is a timeout.
fn failure(err: &tokio_postgres::Error) -> sql::SqlError {
    match err.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::QUERY_CANCELED => {
            sql::SqlError::Timeout
        }
        Some(db) => sql::SqlError::Database(format!("{}: {}", db.code().code(), db.message())),
        None if err.is_closed() => sql::SqlError::Connection("the connection closed".into()),
        None => sql::SqlError::Connection(describe(err)),
    }
}

/// A connection error with its causes, never the URL (tokio-postgres does not print it).
fn describe(err: &tokio_postgres::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A parameter, converted to the type PostgreSQL inferred for its placeholder.
#[derive(Debug)]
struct Param(sql::Value);

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use sql::Value as V;
        let wrong = || -> Box<dyn std::error::Error + Sync + Send> {
            format!(
                "a {} parameter cannot be sent as {ty}; cast the placeholder (e.g. `$1::text`)",
                match &self.0 {
                    V::Null => "null",
                    V::Boolean(_) => "boolean",
                    V::Int(_) => "int",
                    V::Float(_) => "float",
                    V::Text(_) => "text",
                    V::Bytes(_) => "bytes",
                }
            )
            .into()
        };
        match (&self.0, ty) {
            (V::Null, _) => Ok(IsNull::Yes),
            (V::Boolean(b), &Type::BOOL) => b.to_sql(ty, out),
            (V::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (V::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (V::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (V::Int(i), &Type::OID) => u32::try_from(*i)?.to_sql(ty, out),
            (V::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (V::Float(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (V::Float(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (V::Text(t), ty) if <&str as ToSql>::accepts(ty) => t.as_str().to_sql(ty, out),
            (V::Bytes(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            _ => Err(wrong()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column's value; a type without a plain counterpart is an error that says how to read it.
fn column(row: &tokio_postgres::Row, index: usize) -> Result<(sql::Value, usize), sql::SqlError> {
    use sql::Value as V;
    let col = &row.columns()[index];
    let bad = |e: tokio_postgres::Error| sql::SqlError::Database(e.to_string());
    let value = match *col.type_() {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(index)
            .map_err(bad)?
            .map(V::Boolean),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(index)
            .map_err(bad)?
            .map(|v| V::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(index)
            .map_err(bad)?
            .map(|v| V::Int(v.into())),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(index)
            .map_err(bad)?
            .map(V::Int),
        Type::OID => row
            .try_get::<_, Option<u32>>(index)
            .map_err(bad)?
            .map(|v| V::Int(v.into())),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(index)
            .map_err(bad)?
            .map(|v| V::Float(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(index)
            .map_err(bad)?
            .map(V::Float),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(index)
            .map_err(bad)?
            .map(V::Bytes),
        ref ty if <String as tokio_postgres::types::FromSql>::accepts(ty) => row
            .try_get::<_, Option<String>>(index)
            .map_err(bad)?
            .map(V::Text),
        ref ty => {
            return Err(sql::SqlError::Database(format!(
                "column `{}` is of type {ty}, which the plugin interface does not carry; cast \
                 it in the query (e.g. `{}::text`)",
                col.name(),
                col.name()
            )));
        }
    };
    let value = value.unwrap_or(V::Null);
    let size = match &value {
        V::Text(t) => t.len(),
        V::Bytes(b) => b.len(),
        _ => 8,
    };
    Ok((value, size))
}

impl SqlUnit {
    /// Runs `work` on the connection to `target` within the host's own time limit (a grace
    /// second past the server's `statement_timeout`, which the plugin may have changed): past
    /// it, the statement is cancelled on the server and the connection closed.
    fn bounded<T>(
        &mut self,
        target: &str,
        work: impl for<'c> FnOnce(
            &'c tokio_postgres::Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sql::SqlError>> + Send + 'c>,
        >,
    ) -> Result<T, sql::SqlError> {
        // The call's own end comes first when it is nearer.
        let limit = self.end.cap(self.timeout + Duration::from_secs(1));
        if limit.is_zero() {
            self.waits.cut = true;
            return Err(sql::SqlError::Timeout);
        }
        let runtime = self.runtime.clone();
        let stop = self.cancel.clone();
        let client = self.client(target)?;
        let cancel = client.cancel_token();
        let outcome = runtime.block_on(async {
            stop.or(
                async {
                    tokio::time::timeout(limit, work(client))
                        .await
                        .map_err(|_| ())
                },
                Err(()),
            )
            .await
        });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(sql::SqlError::TooLarge)) => {
                // The rest of the result is not read: stop the statement, drop the connection.
                self.abandon(target, cancel);
                Err(sql::SqlError::TooLarge)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => {
                self.abandon(target, cancel);
                Err(sql::SqlError::Timeout)
            }
        }
    }

    /// Cancels what runs on `target`'s connection and closes it (the next statement opens
    /// another, within the call's connection cap).
    fn abandon(&mut self, target: &str, cancel: tokio_postgres::CancelToken) {
        self.open.remove(target);
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                cancel.cancel_query(tokio_postgres::NoTls),
            )
            .await
        });
    }
}

impl sql::Host for SqlUnit {
    fn execute(
        &mut self,
        alias: String,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<u64, sql::SqlError> {
        self.wait(&alias.clone(), |unit| {
            let params: Vec<Param> = params.iter().cloned().map(Param).collect();
            let statement = statement.clone();
            unit.bounded(&alias, move |client| {
                Box::pin(async move {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                    client
                        .execute(statement.as_str(), &refs)
                        .await
                        .map_err(|e| failure(&e))
                })
            })
        })
    }

    fn query(
        &mut self,
        alias: String,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::Rows, sql::SqlError> {
        self.wait(&alias.clone(), |unit| {
            let (max_rows, max_bytes) = (unit.max_rows, unit.max_bytes);
            let params: Vec<Param> = params.iter().cloned().map(Param).collect();
            let statement = statement.clone();
            unit.bounded(&alias, move |client| {
                Box::pin(async move {
                    use futures_util::StreamExt as _;
                    let stream = client
                        .query_raw(statement.as_str(), params.iter())
                        .await
                        .map_err(|e| failure(&e))?;
                    let mut stream = std::pin::pin!(stream);
                    let mut columns = Vec::new();
                    let mut rows = Vec::new();
                    let mut bytes = 0usize;
                    // Row by row: a result past a cap is never read, let alone kept.
                    while let Some(row) = stream.next().await {
                        let row = row.map_err(|e| failure(&e))?;
                        if rows.len() == max_rows {
                            return Err(sql::SqlError::TooLarge);
                        }
                        if columns.is_empty() {
                            columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
                        }
                        let mut values = Vec::with_capacity(row.len());
                        for index in 0..row.len() {
                            let (value, size) = column(&row, index)?;
                            bytes += size;
                            if bytes > max_bytes {
                                return Err(sql::SqlError::TooLarge);
                            }
                            values.push(value);
                        }
                        rows.push(values);
                    }
                    Ok(sql::Rows { columns, rows })
                })
            })
        })
    }
}
