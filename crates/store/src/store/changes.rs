//! The change feed: which cached rows changed — API keys, sessions, tenants and plugins — so
//! that every server's caches forget them at once.
//!
//! Three ways a change reaches a server:
//! - **its own writes**: a store function that changes such a row notes it on its [`Conn`]; the
//!   feed hears it when the transaction commits (a rolled-back change is never heard);
//! - **other servers and the CLI on PostgreSQL**: triggers (migration `000009_change_feed`) send
//!   `NOTIFY tenantry_changes, '<kind>:<key>'` in the writing transaction, delivered at its
//!   commit; [`spawn_listener`] holds one connection that listens. The feed is *live* only while
//!   that connection hears the heartbeat the server sends itself from a second session every
//!   [`HEARTBEAT_EVERY`], as any writer's notification comes: a listener that answers but hears
//!   nothing (behind a transaction-pooling proxy, say) is not live. While it is not live the
//!   caches are bypassed; when it is live again they start empty;
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

/// How often the listener sends itself a heartbeat notification (from a second session, as a
/// writer's notification comes).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A listener that heard none of its heartbeats for this long is not live: the caches are
/// bypassed, and it connects again. It bounds how long a change whose notification was lost
/// can go unheard.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(3);

/// What a heartbeat's payload starts with (older servers read no change in it).
const HEARTBEAT: &str = "heartbeat:";

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
    /// When the last look at the SQLite database began (nanoseconds since `started`).
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
        let now = self.nanos();
        let looked = self.looked.load(Ordering::Acquire);
        if now.saturating_sub(looked) < SQLITE_LOOK_INTERVAL.as_nanos() as u64 {
            return;
        }
        // One look at a time. A look that is under way may have begun before a commit this
        // caller must see: wait for it, and look again unless a look began since this call.
        let mut watch = watch.lock().expect("change feed watch lock");
        if self.looked.load(Ordering::Acquire) >= now {
            return;
        }
        self.looked.store(self.nanos(), Ordering::Release);
        self.look(&mut watch);
    }

    /// Nanoseconds since the feed was made: when a look begins.
    fn nanos(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// Reads what other connections committed and tells the subscribers, before the look's
    /// lock is let go: whoever waited for the lock finds the caches told.
    fn look(&self, watch: &mut SqliteWatch) {
        for change in &watch.look() {
            self.publish(change);
        }
    }

    /// Whether every change committed before this call has now been heard, so that a cache
    /// may be trusted for a decision that must never be late (a plugin's grants). On SQLite,
    /// after a look at the database made now (one in-process pragma); on PostgreSQL never: a
    /// notification arrives after its commit, if at all.
    pub fn heard_everything_committed(&self) -> bool {
        let Some(watch) = &self.sqlite else {
            return false;
        };
        let mut watch = watch.lock().expect("change feed watch lock");
        self.looked.store(self.nanos(), Ordering::Release);
        self.look(&mut watch);
        true
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
/// the database: on PostgreSQL by listening on [`CHANNEL`] (reconnecting with backoff, and
/// live only while its heartbeats are heard), on SQLite by reading `cache_changes`.
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
    // The last reason the listener stopped, so that a reason that repeats (a proxy that never
    // delivers notifications) is a warning once, not at every attempt.
    let mut last_reason: Option<String> = None;
    loop {
        if db.abandoned() {
            return;
        }
        let reason = match connect_listener(&db).await {
            Ok((mut listener, mut sender)) => {
                let reason = hear(&db, &mut listener, &mut sender).await;
                if db.feed.is_live() {
                    backoff = Duration::from_millis(100);
                    last_reason = None;
                }
                db.feed.lost();
                match reason {
                    None => return,
                    Some(err) => format!(
                        "stopped hearing changes to cached rows ({err}): caches are bypassed until the listener is back"
                    ),
                }
            }
            Err(err) => format!("cannot listen for changes to cached rows: {err}"),
        };
        if last_reason.as_deref() == Some(reason.as_str()) {
            tracing::debug!("{reason}");
        } else {
            tracing::warn!("{reason}");
            last_reason = Some(reason);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The listening connection, and a second connection that sends the heartbeats: another
/// session, as a writer's notification comes from another session (and, through a pooler,
/// another server connection).
async fn connect_listener(db: &Db) -> anyhow::Result<(AsyncPgConnection, AsyncPgConnection)> {
    let mut listener = AsyncPgConnection::establish(&db.url).await?;
    listener
        .batch_execute(&format!(
            "SET application_name = '{LISTENER_NAME}'; LISTEN {CHANNEL}"
        ))
        .await?;
    let mut sender = AsyncPgConnection::establish(&db.url).await?;
    sender
        .batch_execute(&format!(
            "SET application_name = '{LISTENER_NAME} (heartbeat)'"
        ))
        .await?;
    Ok((listener, sender))
}

/// Passes the notifications `listener` hears to the feed until a connection fails or none of
/// the heartbeats `sender` sends every [`HEARTBEAT_EVERY`] arrives within
/// [`HEARTBEAT_DEADLINE`] (the reason), or the database is abandoned (none). The feed is live
/// from the first heartbeat heard.
async fn hear(
    db: &Db,
    listener: &mut AsyncPgConnection,
    sender: &mut AsyncPgConnection,
) -> Option<String> {
    let heartbeat = format!("{HEARTBEAT}{}", uuid::Uuid::new_v4().simple());
    let notify = format!("NOTIFY {CHANNEL}, '{heartbeat}'");
    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let listening = std::time::Instant::now();
    let mut heard: Option<std::time::Instant> = None;
    loop {
        // The notifications stream borrows the listening connection.
        let event = {
            let mut notifications = std::pin::pin!(listener.notifications_stream());
            tokio::select! {
                n = notifications.next() => Some(n),
                _ = beat.tick() => None,
            }
        };
        match event {
            Some(Some(Ok(notification))) => {
                if notification.payload.starts_with(HEARTBEAT) {
                    // Another server's heartbeat says nothing of this listener.
                    if notification.payload == heartbeat {
                        if heard.is_none() {
                            db.feed.resumed();
                            tracing::info!("listening for changes to cached rows");
                        }
                        heard = Some(std::time::Instant::now());
                    }
                } else if let Some(change) = Change::parse(&notification.payload) {
                    db.feed.publish(&change);
                }
            }
            Some(Some(Err(err))) => return Some(err.to_string()),
            Some(None) => return Some("the connection closed".into()),
            None => {
                if db.abandoned() {
                    return None;
                }
                if heard.unwrap_or(listening).elapsed() > HEARTBEAT_DEADLINE {
                    return Some(format!(
                        "none of its heartbeat notifications arrived within {} s: notifications do \
                         not reach this server, as behind a proxy that pools transactions",
                        HEARTBEAT_DEADLINE.as_secs()
                    ));
                }
                match tokio::time::timeout(HEARTBEAT_EVERY, sender.batch_execute(&notify)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return Some(format!("sending a heartbeat: {err}")),
                    Err(_) => {
                        return Some(format!(
                            "a heartbeat took longer than {} s to send",
                            HEARTBEAT_EVERY.as_secs()
                        ));
                    }
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
