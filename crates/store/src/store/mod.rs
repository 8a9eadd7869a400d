//! Storage: one portable schema on SQLite (embedded, the default) or PostgreSQL (production).
//!
//! The store knows nothing of HTTP, of the portal or of plugins. Queries are written once and run
//! in each backend's arm by the [`with_conn!`](crate::with_conn) macro; the few that differ per
//! backend branch inside it.
//!
//! Every write goes through a [`Conn`] in a transaction started by [`Db::begin`]: on SQLite that is
//! `BEGIN IMMEDIATE`, so writers queue on the database's write lock (busy timeout) instead of
//! failing when a read transaction would have to upgrade; on PostgreSQL it is a plain `BEGIN`.
//!
//! `with_conn!` runs one query body against whichever backend; its second form takes one body
//! per backend where the SQL differs (`FOR UPDATE SKIP LOCKED`, FTS5). `transaction!` runs a
//! block in a transaction. A `Conn` dropped inside an open transaction (a request given up
//! midway) is detached from the pool, so closing it rolls back. A store function that changes a
//! cached row (API key, session, tenant, plugin) notes it on its `Conn` ([`changes`]).

pub mod admin;
pub mod alerts;
pub mod audit;
pub mod bundles;
pub mod changes;
pub mod jobs;
pub mod logins;
pub mod models;
pub mod plugins;
pub mod probes;
pub mod provisioning;
pub mod schema;
pub mod sealed;
pub mod sessions;
pub mod tenant_requests;
pub mod tenants;
pub mod traffic;
pub mod usage;
pub mod vocabulary;
pub mod webhooks;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use diesel::Connection as _;
use diesel::sqlite::SqliteConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt as _;

use crate::error::{AppError, AppResult};

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Pragmas every SQLite connection gets: WAL so readers never block the writer, a busy timeout so
/// writers wait for each other, foreign keys enforced.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// The busy timeout of [`SQLITE_PRAGMAS`], in milliseconds.
const SQLITE_BUSY_TIMEOUT_MS: u128 = 10_000;

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Clone)]
enum Pools {
    Postgres(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// The connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    /// Who hears of changes to cached rows (shared by every clone).
    feed: std::sync::Arc<changes::ChangeFeed>,
    /// The URL as configured (may hold a password: never display it).
    url: String,
    /// The URL with any password removed, for messages.
    display_url: String,
    /// Waits for a pooled connection (shared by every clone).
    waits: std::sync::Arc<PoolWaits>,
}

/// Waits for a pooled connection: how many took longer than [`PoolWaits::SLOW`], and the time
/// all of them waited.
#[derive(Debug, Default)]
struct PoolWaits {
    slow: std::sync::atomic::AtomicU64,
    micros: std::sync::atomic::AtomicU64,
}

impl PoolWaits {
    /// A checkout at least this long waited for another caller to give a connection back.
    const SLOW: Duration = Duration::from_millis(1);
}

pub use crate::metrics::PoolStats;

/// One pooled connection. Created by [`Db::conn`] (reads) or [`Db::begin`] (a transaction).
pub struct Conn {
    inner: Option<Pooled>,
    in_transaction: bool,
    /// Cached rows this transaction changed, told to the feed when it commits.
    changes: Vec<changes::Change>,
    feed: std::sync::Arc<changes::ChangeFeed>,
}

pub enum Pooled {
    Postgres(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteConn>),
}

/// Runs the same diesel query body against whichever backend a [`Conn`] holds.
///
/// `with_conn!(conn, |c| query.load(c).await)` runs the body once per arm with `c` bound to the
/// concrete connection; a second form takes one body per backend for queries that differ.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn.pooled() {
            $crate::store::Pooled::Postgres($c) => {
                let $c: &mut ::diesel_async::AsyncPgConnection = &mut *$c;
                $body
            }
            $crate::store::Pooled::Sqlite($c) => {
                let $c: &mut $crate::store::SqliteConn = &mut *$c;
                $body
            }
        }
    };
    ($conn:expr, postgres |$pc:ident| $pg:expr, sqlite |$sc:ident| $sq:expr) => {
        match $conn.pooled() {
            $crate::store::Pooled::Postgres($pc) => {
                let $pc: &mut ::diesel_async::AsyncPgConnection = &mut *$pc;
                $pg
            }
            $crate::store::Pooled::Sqlite($sc) => {
                let $sc: &mut $crate::store::SqliteConn = &mut *$sc;
                $sq
            }
        }
    };
}

/// Runs a block in a transaction: commit when it returns `Ok`, roll back when it returns `Err`.
///
/// ```ignore
/// let tenant = transaction!(db, |tx| {
///     store::tenants::insert(tx, &row).await?;
///     audit::record(tx, entry).await?;
///     Ok(row)
/// })?;
/// ```
#[macro_export]
macro_rules! transaction {
    ($db:expr, |$tx:ident| $body:block) => {
        $crate::transaction!(@run $db.begin(), |$tx| $body)
    };
    // Waits at most `wait` for the write lock (see `Db::begin_within`).
    ($db:expr, within $wait:expr, |$tx:ident| $body:block) => {
        $crate::transaction!(@run $db.begin_within($wait), |$tx| $body)
    };
    (@run $begin:expr, |$tx:ident| $body:block) => {{
        match $begin.await {
            Err(err) => Err(err),
            Ok(mut __tx) => {
                let __result: $crate::error::AppResult<_> = async {
                    let $tx: &mut $crate::store::Conn = &mut __tx;
                    $body
                }
                .await;
                match __result {
                    Ok(value) => __tx.commit().await.map(|()| value),
                    Err(err) => {
                        __tx.rollback().await;
                        Err(err)
                    }
                }
            }
        }
    }};
}

impl Db {
    /// Connects to `url` (`sqlite://PATH` or `postgres://…`) and runs pending migrations.
    pub async fn connect(url: &str, pool_size: usize) -> anyhow::Result<Db> {
        let db = Db::connect_without_migrations(url, pool_size).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Connects without touching the schema.
    pub async fn connect_without_migrations(url: &str, pool_size: usize) -> anyhow::Result<Db> {
        let display_url = redact_url(url);
        if let Some(path) = sqlite_path(url) {
            if path != ":memory:" {
                let parent = Path::new(path)
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty());
                if let Some(parent) = parent {
                    anyhow::ensure!(
                        parent.is_dir(),
                        "database directory {} does not exist (from DATABASE_URL {display_url})",
                        parent.display()
                    );
                }
            }
            let mut config = ManagerConfig::<SqliteConn>::default();
            config.custom_setup = Box::new(|url| {
                let url = url.to_owned();
                async move {
                    let mut conn = SqliteConn::establish(&url).await?;
                    conn.batch_execute(SQLITE_PRAGMAS)
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                }
                .boxed()
            });
            let manager = AsyncDieselConnectionManager::new_with_config(path, config);
            let pool = Pool::builder(manager)
                .max_size(pool_size)
                .wait_timeout(Some(Duration::from_secs(10)))
                .runtime(deadpool_runtime())
                .build()
                .context("building the SQLite pool")?;
            let pools = Pools::Sqlite(pool);
            let db = Db {
                feed: Db::feed_for(&pools, path),
                pools,
                url: path.to_owned(),
                display_url,
                waits: Default::default(),
            };
            db.conn()
                .await
                .map_err(|_| anyhow::anyhow!("cannot open SQLite database {}", path))?;
            Ok(db)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(url);
            let pool = Pool::builder(manager)
                .max_size(pool_size)
                .wait_timeout(Some(Duration::from_secs(10)))
                .create_timeout(Some(Duration::from_secs(10)))
                .runtime(deadpool_runtime())
                .build()
                .context("building the PostgreSQL pool")?;
            let pools = Pools::Postgres(pool);
            let db = Db {
                feed: Db::feed_for(&pools, url),
                pools,
                url: url.to_owned(),
                display_url: display_url.clone(),
                waits: Default::default(),
            };
            // Fail at start, with the reason, rather than on the first request.
            AsyncPgConnection::establish(url)
                .await
                .with_context(|| format!("cannot connect to {display_url}"))?;
            Ok(db)
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got {display_url})"
            )
        }
    }

    /// The pool now, and the waits for it so far.
    pub fn pool_stats(&self) -> PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        let status = match &self.pools {
            Pools::Postgres(pool) => pool.status(),
            Pools::Sqlite(pool) => pool.status(),
        };
        PoolStats {
            max_size: status.max_size,
            size: status.size,
            idle: status.available,
            waiting: status.waiting,
            slow_checkouts: self.waits.slow.load(Relaxed),
            wait_seconds: self.waits.micros.load(Relaxed) as f64 / 1e6,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Postgres(_) => Backend::Postgres,
            Pools::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The database URL without its password.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Runs the pending migrations of this backend (embedded in the binary). On PostgreSQL an
    /// advisory lock makes replicas that start together migrate one after the other.
    pub async fn migrate(&self) -> anyhow::Result<Vec<String>> {
        match &self.pools {
            Pools::Sqlite(_) => {
                let path = self.url.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                    let mut conn = SqliteConnection::establish(&path)?;
                    diesel::connection::SimpleConnection::batch_execute(&mut conn, SQLITE_PRAGMAS)?;
                    run_migrations(&mut conn, SQLITE_MIGRATIONS)
                })
                .await?
            }
            Pools::Postgres(_) => {
                let url = self.url.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
                    let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)?;
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut conn,
                        "SELECT pg_advisory_lock(736975665)",
                    )?;
                    let result = run_migrations(&mut conn, POSTGRES_MIGRATIONS);
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut conn,
                        "SELECT pg_advisory_unlock(736975665)",
                    )?;
                    result
                })
                .await?
            }
        }
    }

    /// A connection for reads (each statement commits on its own).
    pub async fn conn(&self) -> AppResult<Conn> {
        use std::sync::atomic::Ordering::Relaxed;
        let asked = std::time::Instant::now();
        let pooled = match &self.pools {
            Pools::Postgres(pool) => Pooled::Postgres(pool.get().await?),
            Pools::Sqlite(pool) => Pooled::Sqlite(pool.get().await?),
        };
        let waited = asked.elapsed();
        if waited >= PoolWaits::SLOW {
            self.waits.slow.fetch_add(1, Relaxed);
            self.waits
                .micros
                .fetch_add(waited.as_micros() as u64, Relaxed);
        }
        Ok(Conn {
            inner: Some(pooled),
            in_transaction: false,
            changes: Vec::new(),
            feed: self.feed.clone(),
        })
    }

    /// A connection inside a new transaction; see [`transaction!`](crate::transaction).
    pub async fn begin(&self) -> AppResult<Conn> {
        let mut conn = self.conn().await?;
        let begin = match conn.pooled() {
            Pooled::Postgres(_) => "BEGIN",
            Pooled::Sqlite(_) => "BEGIN IMMEDIATE",
        };
        with_conn!(conn, |c| c.batch_execute(begin).await)?;
        conn.in_transaction = true;
        Ok(conn)
    }

    /// Begins a transaction that waits at most `wait` for the database's write lock. On SQLite,
    /// where a statement cannot be given up halfway (its wrapper waits for the statement it
    /// runs), the wait is SQLite's own busy timeout, set to `wait` for the `BEGIN` alone; on
    /// PostgreSQL the caller gives up by dropping the future (the connection, detached, rolls
    /// back).
    pub async fn begin_within(&self, wait: std::time::Duration) -> AppResult<Conn> {
        let mut conn = self.conn().await?;
        // Given up midway (refused, or the caller's future dropped), the connection is detached
        // rather than pooled again: it may still carry the short busy timeout.
        conn.in_transaction = true;
        match conn.pooled() {
            Pooled::Postgres(c) => c.batch_execute("BEGIN").await?,
            Pooled::Sqlite(c) => {
                let ms = wait.as_millis().clamp(1, SQLITE_BUSY_TIMEOUT_MS);
                c.batch_execute(&format!("PRAGMA busy_timeout = {ms}; BEGIN IMMEDIATE"))
                    .await?;
                c.batch_execute(&format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"))
                    .await?;
            }
        }
        Ok(conn)
    }

    /// On SQLite, rewrites the database file from its live rows and empties the write-ahead
    /// log, so that nothing overwritten or deleted (a value sealed under a retired key) is left
    /// anywhere in the files. Nothing on PostgreSQL, which keeps no row in a file it hands over.
    pub async fn compact(&self) -> AppResult<()> {
        let mut conn = self.conn().await?;
        if let Pooled::Sqlite(c) = conn.pooled() {
            c.batch_execute("VACUUM").await?;
            c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
        }
        Ok(())
    }

    /// Round trip to the database, for readiness checks.
    pub async fn ping(&self) -> AppResult<()> {
        let mut conn = self.conn().await?;
        with_conn!(conn, |c| c.batch_execute("SELECT 1").await)?;
        Ok(())
    }
}

impl Conn {
    pub fn pooled(&mut self) -> &mut Pooled {
        self.inner
            .as_mut()
            .expect("connection used after it was released")
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Some(Pooled::Postgres(_)) => Backend::Postgres,
            _ => Backend::Sqlite,
        }
    }

    pub async fn commit(mut self) -> AppResult<()> {
        with_conn!(self, |c| c.batch_execute("COMMIT").await)?;
        self.in_transaction = false;
        for change in std::mem::take(&mut self.changes) {
            self.feed.publish(&change);
        }
        Ok(())
    }

    /// Rolls back; a failure to roll back closes the connection instead (which rolls back too).
    pub async fn rollback(mut self) {
        if with_conn!(self, |c| c.batch_execute("ROLLBACK").await).is_ok() {
            self.in_transaction = false;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A transaction that was neither committed nor rolled back (a cancelled future, a panic)
        // must not go back to the pool: detach the connection so that closing it rolls back.
        if self.in_transaction {
            match self.inner.take() {
                Some(Pooled::Postgres(obj)) => drop(Object::take(obj)),
                Some(Pooled::Sqlite(obj)) => drop(Object::take(obj)),
                None => {}
            }
        }
    }
}

fn deadpool_runtime() -> deadpool::Runtime {
    deadpool::Runtime::Tokio1
}

fn run_migrations<C>(conn: &mut C, migrations: EmbeddedMigrations) -> anyhow::Result<Vec<String>>
where
    C: MigrationHarness<C::Backend> + diesel::Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|err| anyhow::anyhow!("running migrations: {err}"))?;
    Ok(applied.iter().map(|v| v.to_string()).collect())
}

/// The file path of a `sqlite://` URL, if it is one.
pub fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// Maps a UNIQUE violation to a domain conflict, leaving other errors as they are.
pub fn unique_violation(
    err: diesel::result::Error,
    conflict: impl FnOnce() -> AppError,
) -> AppError {
    match err {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => conflict(),
        other => other.into(),
    }
}
