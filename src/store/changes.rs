//! The change feed: which cached rows changed — API keys, sessions, tenants and plugins — so
//! that every server's caches forget them at once.
//!
//! Three ways a change reaches a server:
//! - **its own writes**: a store function that changes such a row notes it on its [`Conn`]; the
//!   feed hears it when the transaction commits (a rolled-back change is never heard);
//! - **other servers and the CLI on PostgreSQL**: triggers (migration `000009_change_feed`) send
//!   `NOTIFY tenantry_changes, '<kind>:<key>'` in the writing transaction, delivered at its
//!   commit; [`listen`] holds one connection that listens. While it is not listening the feed is
//!   not *live*, and the caches are bypassed; when it listens again they start empty;
//! - **the CLI on SQLite**: triggers write the same subjects into `cache_changes`. Before a cache
//!   is read, [`ChangeFeed::catch_up`] asks SQLite whether another connection committed since
//!   (`PRAGMA data_version`, in process, at most once a millisecond) and only then reads the new
//!   entries; the listener does the same every [`SQLITE_POLL`] and prunes the log.
//!
//! A touch (an API key's last use, a session's last activity) is not a change: nothing a cache
//! decides on depends on it being fresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt as _;

use super::{Conn, Db, Pools};
use crate::with_conn;

/// The PostgreSQL channel the triggers notify.
pub const CHANNEL: &str = "tenantry_changes";

/// The `application_name` of the listening connection (how operators find it in
/// `pg_stat_activity`).
pub const LISTENER_NAME: &str = "tenantry change listener";

/// How often a server on SQLite reads the changes other processes made.
pub const SQLITE_POLL: Duration = Duration::from_millis(250);

/// How long the SQLite change log is kept: far longer than any server takes to read it.
const SQLITE_KEEP: Duration = Duration::from_secs(3600);

/// A changed row, by the key its cache holds it under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An API key, by its prefix.
    Key(String),
    /// A session, by its id (the hash of its cookie).
    Session(String),
    /// A tenant, by its id.
    Tenant(String),
    /// A plugin or its grants, by the plugin's name.
    Plugin(String),
    /// Anything: the changes made meanwhile are unknown (the feed was not live).
    Everything,
}

impl Change {
    /// Reads a trigger's subject (`key:tny12345`); none for a kind this server does not know.
    pub fn parse(subject: &str) -> Option<Change> {
        let (kind, key) = subject.split_once(':')?;
        let key = key.to_owned();
        Some(match kind {
            "key" => Change::Key(key),
            "session" => Change::Session(key),
            "tenant" => Change::Tenant(key),
            "plugin" => Change::Plugin(key),
            _ => return None,
        })
    }
}

type Subscriber = Box<dyn Fn(&Change) + Send + Sync>;

/// Who hears changes, and whether changes made elsewhere reach this process.
pub struct ChangeFeed {
    subscribers: RwLock<Vec<Subscriber>>,
    live: AtomicBool,
    /// SQLite: where the log of other connections' changes was read up to.
    sqlite: Option<Mutex<SqliteWatch>>,
    /// When the SQLite database was last looked at (nanoseconds since `started`).
    looked: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

/// On SQLite, the database is looked at no more often than this: every request looks, and a
/// look starts a read transaction (file locks, a statement). A change another process made is
/// heard within this time.
pub const SQLITE_LOOK_INTERVAL: Duration = Duration::from_millis(1);

/// A connection of its own to the SQLite database, to ask whether anyone committed since the
/// last look and to read the change log.
struct SqliteWatch {
    path: String,
    conn: Option<SqliteConnection>,
    /// `PRAGMA data_version` at the last look, and the newest entry of the log read.
    version: i64,
    seq: i64,
}

impl SqliteWatch {
    /// The changes committed by other connections since the last look; [`Change::Everything`]
    /// at the first look (the log is read from its end) and when the database cannot be read.
    fn look(&mut self) -> Vec<Change> {
        match self.read() {
            Ok(changes) => changes,
            Err(err) => {
                tracing::warn!("cannot read the changes to cached rows: {err}");
                self.conn = None;
                vec![Change::Everything]
            }
        }
    }

    fn read(&mut self) -> anyhow::Result<Vec<Change>> {
        use super::schema::{cache_changes as cc, pragma_data_version as dv};
        use diesel::RunQueryDsl as _;
        let first = self.conn.is_none();
        if first {
            let mut conn = SqliteConnection::establish(&self.path)?;
            diesel::connection::SimpleConnection::batch_execute(
                &mut conn,
                "PRAGMA busy_timeout = 10000;",
            )?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        // The version first: a commit after it is seen at the next look. (Prepared once.)
        let version: i64 = dv::table.select(dv::data_version).first(conn)?;
        if first {
            self.version = version;
            self.seq = cc::table
                .select(diesel::dsl::max(cc::seq))
                .first::<Option<i64>>(conn)?
                .unwrap_or(0);
            return Ok(vec![Change::Everything]);
        }
        if version == self.version {
            return Ok(Vec::new());
        }
        self.version = version;
        let entries: Vec<(i64, String)> = cc::table
            .filter(cc::seq.gt(self.seq))
            .order(cc::seq.asc())
            .select((cc::seq, cc::subject))
            .load(conn)?;
        if let Some((seq, _)) = entries.last() {
            self.seq = *seq;
        }
        Ok(entries
            .iter()
            .filter_map(|(_, subject)| Change::parse(subject))
            .collect())
    }
}

impl ChangeFeed {
    /// A feed; on SQLite (`sqlite`: the database's path) live from the start, on PostgreSQL
    /// only while [`spawn_listener`]'s connection listens.
    pub(super) fn new(sqlite: Option<String>) -> ChangeFeed {
        ChangeFeed {
            subscribers: RwLock::new(Vec::new()),
            live: AtomicBool::new(sqlite.is_some()),
            looked: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            sqlite: sqlite.map(|path| {
                Mutex::new(SqliteWatch {
                    path,
                    conn: None,
                    version: 0,
                    seq: 0,
                })
            }),
        }
    }

    /// On SQLite, hears what other connections committed since the last look, before a cache
    /// is trusted: one in-process pragma at most every [`SQLITE_LOOK_INTERVAL`], and the log
    /// read only when the database changed. On PostgreSQL, nothing: the listener hears as the
    /// changes come.
    pub fn catch_up(&self) {
        let Some(watch) = &self.sqlite else {
            return;
        };
        let now = self.started.elapsed().as_nanos() as u64;
        let looked = self.looked.load(Ordering::Acquire);
        if now.saturating_sub(looked) < SQLITE_LOOK_INTERVAL.as_nanos() as u64 {
            return;
        }
        // One look at a time; whoever is looking now looks for everyone.
        let Ok(mut watch) = watch.try_lock() else {
            return;
        };
        self.looked.store(now, Ordering::Release);
        let changes = watch.look();
        drop(watch);
        for change in &changes {
            self.publish(change);
        }
    }

    /// Calls `subscriber` with every change heard from now on, on the thread that heard it (keep
    /// it short: it runs inside a commit or the listener).
    pub fn subscribe(&self, subscriber: impl Fn(&Change) + Send + Sync + 'static) {
        self.subscribers
            .write()
            .expect("change feed lock")
            .push(Box::new(subscriber));
    }

    pub fn publish(&self, change: &Change) {
        for subscriber in self.subscribers.read().expect("change feed lock").iter() {
            subscriber(change);
        }
    }

    /// Whether a change made by another server reaches this one now: what a cache may be
    /// trusted on.
    pub fn is_live(&self) -> bool {
        AtomicBool::load(&self.live, Ordering::Acquire)
    }

    /// Not live: the caches are bypassed until the feed is live again.
    fn lost(&self) {
        AtomicBool::store(&self.live, false, Ordering::Release);
    }

    /// Live again: whatever was cached may have changed meanwhile, so everything is forgotten
    /// first.
    fn resumed(&self) {
        self.publish(&Change::Everything);
        AtomicBool::store(&self.live, true, Ordering::Release);
    }
}

/// Keeps the feed told of the changes other processes make, for as long as anyone else holds
/// the database: on PostgreSQL by listening on [`CHANNEL`] (reconnecting with backoff; a ping
/// every few seconds finds a connection that died silently), on SQLite by reading
/// `cache_changes`.
pub fn spawn_listener(db: &Db) -> tokio::task::JoinHandle<()> {
    let db = db.clone();
    tokio::spawn(async move {
        match db.backend() {
            super::Backend::Postgres => listen_postgres(db).await,
            super::Backend::Sqlite => poll_sqlite(db).await,
        }
    })
}

impl Db {
    /// Whether this clone is the last one: the server that held the database is gone.
    fn abandoned(&self) -> bool {
        std::sync::Arc::strong_count(&self.feed) <= 1
    }
}

async fn listen_postgres(db: Db) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if db.abandoned() {
            return;
        }
        match AsyncPgConnection::establish(&db.url).await {
            Ok(mut conn) => match conn
                .batch_execute(&format!(
                    "SET application_name = '{LISTENER_NAME}'; LISTEN {CHANNEL}"
                ))
                .await
            {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    db.feed.resumed();
                    tracing::info!("listening for changes to cached rows");
                    let reason = hear(&db, &mut conn).await;
                    db.feed.lost();
                    match reason {
                        None => return,
                        Some(err) => tracing::warn!(
                            "stopped hearing changes to cached rows ({err}): caches are bypassed until the listener is back"
                        ),
                    }
                }
                Err(err) => {
                    tracing::warn!("cannot listen for changes to cached rows: {err}");
                }
            },
            Err(err) => {
                tracing::warn!("cannot connect to listen for changes to cached rows: {err}")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Passes the notifications of `conn` to the feed until the connection fails (the reason) or
/// the database is abandoned (none).
async fn hear(db: &Db, conn: &mut AsyncPgConnection) -> Option<String> {
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    ping.tick().await;
    loop {
        // The notifications stream borrows the connection; the ping needs it too.
        let heard = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                n = notifications.next() => Some(n),
                _ = ping.tick() => None,
            }
        };
        match heard {
            Some(Some(Ok(notification))) => {
                if let Some(change) = Change::parse(&notification.payload) {
                    db.feed.publish(&change);
                }
            }
            Some(Some(Err(err))) => return Some(err.to_string()),
            Some(None) => return Some("the connection closed".into()),
            None => {
                if db.abandoned() {
                    return None;
                }
                let alive =
                    tokio::time::timeout(Duration::from_secs(2), conn.batch_execute("SELECT 1"))
                        .await;
                match alive {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return Some(err.to_string()),
                    Err(_) => return Some("no answer to a ping within 2 s".into()),
                }
            }
        }
    }
}

/// SQLite: looks at the log every [`SQLITE_POLL`] (so that memory of changed rows goes even
/// without requests) and prunes it now and then.
async fn poll_sqlite(db: Db) {
    use super::schema::cache_changes as cc;
    let mut ticks = tokio::time::interval(SQLITE_POLL);
    let mut pruned = std::time::Instant::now();
    loop {
        ticks.tick().await;
        if db.abandoned() {
            return;
        }
        let feed = db.feed.clone();
        let _ = tokio::task::spawn_blocking(move || feed.catch_up()).await;
        if pruned.elapsed() > SQLITE_KEEP / 4 {
            pruned = std::time::Instant::now();
            let before =
                crate::clock::now() - chrono::Duration::from_std(SQLITE_KEEP).expect("an hour");
            let prune = async {
                let mut conn = db.begin().await?;
                with_conn!(conn, |c| diesel_async::RunQueryDsl::execute(
                    diesel::delete(cc::table.filter(cc::at.lt(before))),
                    c
                )
                .await)?;
                conn.commit().await
            };
            if let Err(err) = prune.await {
                tracing::warn!("cannot prune the log of changes to cached rows: {err}");
            }
        }
    }
}

impl Conn {
    /// Notes that this connection changed a cached row: heard by the feed when the transaction
    /// commits (at once outside a transaction).
    pub fn changed(&mut self, change: Change) {
        if self.in_transaction {
            self.changes.push(change);
        } else {
            self.feed.publish(&change);
        }
    }
}

impl Db {
    /// The feed of changes to cached rows.
    pub fn changes(&self) -> &ChangeFeed {
        &self.feed
    }

    pub(super) fn feed_for(pools: &Pools, url: &str) -> std::sync::Arc<ChangeFeed> {
        std::sync::Arc::new(ChangeFeed::new(
            matches!(pools, Pools::Sqlite(_)).then(|| url.to_owned()),
        ))
    }
}
