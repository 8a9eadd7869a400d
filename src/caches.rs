//! What every authenticated request reads, kept in memory: API keys by prefix, sessions by id
//! and tenants by id and by slug ([`Caches`]). A tenant-scoped read with a cached credential and
//! tenant needs no query at all.
//!
//! The caches hold rows, not verdicts: the constant-time comparison of a key's secret, expiry,
//! rotation grace periods, a session's idle and absolute limits and the abuse limits run on
//! every request against the cached row. What they must never do is keep a row that changed:
//! - every change of a cached row is heard through the database's change feed
//!   ([`crate::store::changes`]) — this server's own at its commit, other servers' and the CLI's
//!   through PostgreSQL's `LISTEN/NOTIFY` or SQLite's change log — and the row is forgotten;
//! - while the feed is not live (the listener is reconnecting), the caches are bypassed, and they
//!   start empty when it is live again;
//! - a row loaded while a change was heard is not kept (every load is stamped with the
//!   generation it started in), so a load that raced a revocation cannot put the old row back.
//!
//! Unknown key prefixes and sessions are not cached (nothing negative is), so a guesser cannot
//! fill the caches; each cache is bounded (`cache.max_entries`, least used first out) and each
//! entry expires after `cache.ttl_seconds` as a backstop.
//!
//! Last use (keys) and last activity (sessions) are written back at most once a minute
//! ([`TOUCH_INTERVAL_SECONDS`]): a touch is not a change, and nothing cached decides on it. A
//! session this server finds idle is read again before it is refused
//! ([`Caches::recheck_session`]): another server may have seen it since.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::NaiveDateTime;
use moka::sync::Cache;

use crate::config::CacheConfig;
use crate::error::AppResult;
use crate::metrics::Metrics;
use crate::store::changes::Change;
use crate::store::models::{ApiKeyRow, SessionRow, TenantRow};
use crate::store::{self, Db};

/// Last use and last activity are written back at most this often per key or session.
pub const TOUCH_INTERVAL_SECONDS: i64 = 60;

pub struct Caches {
    db: Db,
    enabled: bool,
    keys: Cache<String, Arc<CachedKey>>,
    sessions: Cache<String, Arc<CachedSession>>,
    tenants: Cache<String, Arc<TenantRow>>,
    /// Slug → tenant id; checked against the tenant's row, so a stale entry only costs a load.
    slugs: Cache<String, String>,
    /// Counts the changes heard; a load keeps its row only when none was heard meanwhile.
    generation: AtomicU64,
    /// Held to keep a loaded row (shared) and to forget one (exclusive), so that a change heard
    /// between a load's stamp check and its insert cannot be lost.
    keeping: RwLock<()>,
    metrics: Arc<Metrics>,
}

/// An API key's row, with when this server last wrote its last use.
pub struct CachedKey {
    pub row: ApiKeyRow,
    touched: Touch,
}

/// A session's row, with its last activity as this server saw it (the row's is written back at
/// most once a minute).
pub struct CachedSession {
    pub row: SessionRow,
    seen: AtomicI64,
    touched: Touch,
}

/// When a row's last use was last written (seconds since the epoch).
struct Touch(AtomicI64);

impl Touch {
    fn new(at: Option<NaiveDateTime>) -> Touch {
        Touch(AtomicI64::new(at.map_or(0, |t| t.and_utc().timestamp())))
    }

    /// Whether `now` is to be written back: true for one caller once a minute.
    fn due(&self, now: NaiveDateTime) -> bool {
        let now = now.and_utc().timestamp();
        let last = self.0.load(Ordering::Relaxed);
        now - last >= TOUCH_INTERVAL_SECONDS
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl CachedKey {
    fn new(row: ApiKeyRow) -> CachedKey {
        CachedKey {
            touched: Touch::new(row.last_used_at),
            row,
        }
    }

    /// Whether this use is to be written back as the key's last use.
    pub fn touch_due(&self, now: NaiveDateTime) -> bool {
        self.touched.due(now)
    }
}

impl CachedSession {
    fn new(row: SessionRow) -> CachedSession {
        CachedSession {
            seen: AtomicI64::new(row.last_seen_at.and_utc().timestamp_millis()),
            touched: Touch::new(Some(row.last_seen_at)),
            row,
        }
    }

    /// The session's last activity: the row's, or a later one this server saw.
    pub fn last_seen(&self) -> NaiveDateTime {
        let ms = self.seen.load(Ordering::Relaxed);
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or(self.row.last_seen_at, |t| t.naive_utc())
            .max(self.row.last_seen_at)
    }

    /// Records activity at `now`; whether it is to be written back.
    pub fn seen_at(&self, now: NaiveDateTime) -> bool {
        self.seen
            .fetch_max(now.and_utc().timestamp_millis(), Ordering::Relaxed);
        self.touched.due(now)
    }
}

/// A cache's name in the metrics.
#[derive(Clone, Copy)]
enum Kind {
    Key,
    Session,
    Tenant,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Session => "session",
            Kind::Tenant => "tenant",
        }
    }
}

impl Caches {
    /// The caches of `db`, told of its changes from now on.
    pub fn new(db: &Db, config: &CacheConfig, metrics: Arc<Metrics>) -> Arc<Caches> {
        fn cache<V: Clone + Send + Sync + 'static>(config: &CacheConfig) -> Cache<String, V> {
            Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(Duration::from_secs(config.ttl_seconds))
                .build()
        }
        let caches = Arc::new(Caches {
            db: db.clone(),
            enabled: config.enabled,
            keys: cache(config),
            sessions: cache(config),
            tenants: cache(config),
            slugs: cache(config),
            generation: AtomicU64::new(0),
            keeping: RwLock::new(()),
            metrics,
        });
        let weak = Arc::downgrade(&caches);
        db.changes().subscribe(move |change| {
            if let Some(caches) = weak.upgrade() {
                caches.forget(change);
            }
        });
        caches
    }

    /// Forgets what `change` names (everything for [`Change::Everything`]).
    pub fn forget(&self, change: &Change) {
        let _forgetting = self.keeping.write().expect("cache lock");
        self.generation.fetch_add(1, Ordering::AcqRel);
        match change {
            Change::Key(prefix) => self.keys.invalidate(prefix),
            Change::Session(id) => self.sessions.invalidate(id),
            Change::Tenant(id) => self.tenants.invalidate(id),
            Change::Plugin(_) => {}
            Change::Everything => {
                self.keys.invalidate_all();
                self.sessions.invalidate_all();
                self.tenants.invalidate_all();
                self.slugs.invalidate_all();
            }
        }
    }

    /// Whether the caches may be read: enabled, and changes made elsewhere are heard.
    fn usable(&self, kind: Kind) -> bool {
        if !self.enabled {
            self.count(kind, "bypass");
            return false;
        }
        self.db.changes().catch_up();
        let live = self.db.changes().is_live();
        if !live {
            self.count(kind, "bypass");
        }
        live
    }

    /// Sets the gauges the caches export (when `/metrics` is scraped).
    pub fn refresh_metrics(&self) {
        self.metrics
            .change_feed_live
            .set(i64::from(self.db.changes().is_live()));
    }

    fn count(&self, kind: Kind, result: &str) {
        self.metrics
            .cache_lookups
            .with_label_values(&[kind.label(), result])
            .inc();
    }

    fn stamp(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `insert` (keeping what was loaded since `stamp`) unless a change was heard
    /// meanwhile or the feed is not live.
    fn keep(&self, stamp: u64, insert: impl FnOnce()) {
        let _keeping = self.keeping.read().expect("cache lock");
        if self.db.changes().is_live() && self.generation.load(Ordering::Acquire) == stamp {
            insert();
        }
    }

    /// A row from its cache (`cached`) when the caches may be read, else `load`ed and kept
    /// (`keep`, given the stamp of the load).
    async fn read_through<V, Fut>(
        &self,
        kind: Kind,
        cached: impl FnOnce() -> Option<V>,
        load: impl FnOnce() -> Fut,
        keep: impl FnOnce(u64, &V),
    ) -> AppResult<Option<V>>
    where
        Fut: std::future::Future<Output = AppResult<Option<V>>>,
    {
        let usable = self.usable(kind);
        if usable {
            if let Some(value) = cached() {
                self.count(kind, "hit");
                return Ok(Some(value));
            }
            self.count(kind, "miss");
        }
        let stamp = self.stamp();
        let value = load().await?;
        if usable && let Some(value) = &value {
            keep(stamp, value);
        }
        Ok(value)
    }

    /// The tenant of a credential (none for the platform's, or when the tenant is gone).
    async fn tenant_of(&self, tenant_id: Option<&str>) -> AppResult<Option<Arc<TenantRow>>> {
        match tenant_id {
            Some(id) => self.tenant_by_id(id).await,
            None => Ok(None),
        }
    }

    /// The API key with this prefix and its tenant (none for a platform key, or when the
    /// tenant is gone).
    pub async fn key_with_tenant(
        &self,
        prefix: &str,
    ) -> AppResult<Option<(Arc<CachedKey>, Option<Arc<TenantRow>>)>> {
        let key = self
            .read_through(
                Kind::Key,
                || self.keys.get(prefix),
                || async {
                    let mut conn = self.db.conn().await?;
                    let row = store::admin::find_key_by_prefix(&mut conn, prefix).await?;
                    Ok(row.map(|row| Arc::new(CachedKey::new(row))))
                },
                |stamp, key| self.keep(stamp, || self.keys.insert(prefix.to_owned(), key.clone())),
            )
            .await?;
        let Some(key) = key else {
            return Ok(None);
        };
        let tenant = self.tenant_of(key.row.tenant_id.as_deref()).await?;
        Ok(Some((key, tenant)))
    }

    /// The session with this id, unless it expired before `now`, and its tenant (none for a
    /// platform session, or when the tenant is gone).
    pub async fn session_with_tenant(
        &self,
        id: &str,
        now: NaiveDateTime,
    ) -> AppResult<Option<(Arc<CachedSession>, Option<Arc<TenantRow>>)>> {
        let session = self
            .read_through(
                Kind::Session,
                || self.sessions.get(id),
                || async {
                    let mut conn = self.db.conn().await?;
                    let row = store::sessions::find_live(&mut conn, id, now).await?;
                    Ok(row.map(|row| Arc::new(CachedSession::new(row))))
                },
                |stamp, session| {
                    self.keep(stamp, || {
                        self.sessions.insert(id.to_owned(), session.clone())
                    })
                },
            )
            .await?;
        let Some(session) = session.filter(|s| s.row.expires_at > now) else {
            return Ok(None);
        };
        let tenant = self.tenant_of(session.row.tenant_id.as_deref()).await?;
        Ok(Some((session, tenant)))
    }

    /// Forgets a session this server found idle: another server may have seen it since, so
    /// the next look reads its row again.
    pub fn recheck_session(&self, id: &str) {
        self.sessions.invalidate(id);
    }

    /// The tenant with this id; none when there is none.
    pub async fn tenant_by_id(&self, id: &str) -> AppResult<Option<Arc<TenantRow>>> {
        self.read_through(
            Kind::Tenant,
            || self.tenants.get(id),
            || async {
                let mut conn = self.db.conn().await?;
                Ok(store::tenants::find_by_id(&mut conn, id)
                    .await?
                    .map(Arc::new))
            },
            |stamp, tenant| self.keep_tenant(stamp, tenant),
        )
        .await
    }

    /// The tenant with this slug; none when there is none.
    pub async fn tenant_by_slug(&self, slug: &str) -> AppResult<Option<Arc<TenantRow>>> {
        self.read_through(
            Kind::Tenant,
            || {
                let id = self.slugs.get(slug)?;
                self.tenants.get(&id).filter(|tenant| tenant.slug == slug)
            },
            || async {
                let mut conn = self.db.conn().await?;
                Ok(store::tenants::find_by_slug(&mut conn, slug)
                    .await?
                    .map(Arc::new))
            },
            |stamp, tenant| self.keep_tenant(stamp, tenant),
        )
        .await
    }

    fn keep_tenant(&self, stamp: u64, tenant: &Arc<TenantRow>) {
        self.keep(stamp, || {
            self.slugs.insert(tenant.slug.clone(), tenant.id.clone());
            self.tenants.insert(tenant.id.clone(), tenant.clone());
        });
    }

    /// Entries held now (approximately: evictions are applied lazily), for tests of the bounds.
    pub fn entries(&self) -> u64 {
        [
            self.keys.entry_count(),
            self.sessions.entry_count(),
            self.tenants.entry_count(),
            self.slugs.entry_count(),
        ]
        .iter()
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn caches(max_entries: u64) -> (tempfile::TempDir, Arc<Caches>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::connect(&url, 2).await.unwrap();
        let config = CacheConfig {
            max_entries,
            ..CacheConfig::default()
        };
        let caches = Caches::new(&db, &config, Arc::new(Metrics::new()));
        (dir, caches)
    }

    #[tokio::test]
    async fn a_row_loaded_while_a_change_was_heard_is_not_kept() {
        let (_dir, caches) = caches(100).await;
        let stamp = caches.stamp();
        // The load raced a change (a revocation heard between its query and its insert).
        caches.forget(&Change::Key("tny12345".into()));
        caches.keep(stamp, || caches.slugs.insert("acme".into(), "old".into()));
        assert!(caches.slugs.get("acme").is_none());
        // A load that raced nothing is kept.
        let stamp = caches.stamp();
        caches.keep(stamp, || caches.slugs.insert("acme".into(), "new".into()));
        assert_eq!(caches.slugs.get("acme").as_deref(), Some("new"));
        // Forgetting everything empties every cache.
        caches.forget(&Change::Everything);
        assert!(caches.slugs.get("acme").is_none());
    }

    #[tokio::test]
    async fn each_cache_holds_at_most_its_bound() {
        let (_dir, caches) = caches(100).await;
        for i in 0..5_000 {
            let stamp = caches.stamp();
            caches.keep(stamp, || {
                caches
                    .slugs
                    .insert(format!("tenant-{i}"), format!("id-{i}"))
            });
        }
        caches.slugs.run_pending_tasks();
        assert!(
            caches.slugs.entry_count() <= 100,
            "{} entries",
            caches.slugs.entry_count()
        );
    }

    #[test]
    fn a_touch_is_due_once_a_minute() {
        let at = chrono::NaiveDate::from_ymd_opt(2026, 12, 6)
            .unwrap()
            .and_hms_opt(10, 0, 0)
            .unwrap();
        let touch = Touch::new(Some(at));
        assert!(!touch.due(at + chrono::Duration::seconds(59)));
        assert!(touch.due(at + chrono::Duration::seconds(60)));
        assert!(!touch.due(at + chrono::Duration::seconds(61)), "once");
        assert!(touch.due(at + chrono::Duration::seconds(121)));
    }
}
