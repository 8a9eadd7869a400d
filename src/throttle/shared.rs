//! Budgets shared by every server through one Redis: each check is one round trip, a Lua
//! script that reads and takes atomically, on Redis's own clock.
//!
//! Two kinds of budget:
//! - a **window**: a count per calendar window (a tenant's API calls of this minute, as the
//!   usage counters count them): admitted while `used + cost <= limit`, so the servers together
//!   admit exactly the limit;
//! - a **GCRA** budget (the generic cell rate algorithm, as `governor` applies it in each
//!   server): `limit` per period with a burst of `limit`, for a key's own limit and the abuse
//!   limits of logins and failed keys.
//!
//! And blocks: a key (`block:address:<ip>`, `block:key:<prefix>`) that refuses every *failed*
//! attempt until it expires, set when a failure budget is spent. A correct credential never
//! meets a block: blocks slow down guessing, they do not lock out the right key.
//!
//! Each check is one call of one Lua script (`redis::Script`) that reads and takes every
//! budget of the request at once — window counts, GCRA budgets and blocks — on Redis's own
//! clock (`TIME`), so servers with skewed clocks agree. Connections are `redis`'s connection
//! managers, one per runtime thread (a thread-local map), so a check never hops to another
//! thread of the runtime and back. What happens while Redis does not answer within
//! `redis_timeout_ms` is `Limits`'s (`redis_on_failure`: `open` falls back to this server's own
//! budgets, `closed` refuses with 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// Checks every budget; takes from all of them only when all allow.
/// KEYS: the budget keys. ARGV, per budget: kind (`w` window, `g` GCRA), limit, window or
/// period (ms), cost. A window's cost is the most to take (a lease): it grants what is left up
/// to a sixteenth of it (at least one), so that near the limit the servers take one call at a
/// time.
/// Returns {0, 0, 0, then remaining, reset_ms, granted per budget…}, or {2, wait_ms, index} when
/// budget `index` (1-based) is spent.
const ADMIT: &str = r"
local nb = 0
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local plans = {}
local a = 1
for i = nb + 1, #KEYS do
  local kind, limit, span, cost = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  if kind == 'w' then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = span end
    local left = limit - used
    if left < 1 then return {2, ttl, i - nb} end
    local grant = math.min(cost, math.max(1, math.floor(left / 16)))
    plans[#plans + 1] = {'w', KEYS[i], grant, span, left - grant, ttl, grant}
  else
    local emission = span / limit
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + emission * cost
    local allow_at = new_tat - span
    if allow_at > now then return {2, math.ceil(allow_at - now), i - nb} end
    plans[#plans + 1] = {'g', KEYS[i], new_tat, now, math.floor((now - allow_at) / emission), math.ceil(new_tat - now), cost}
  end
end
local out = {0, 0, 0}
for _, p in ipairs(plans) do
  if p[1] == 'w' then
    redis.call('INCRBY', p[2], p[3])
    if redis.call('PTTL', p[2]) < 0 then redis.call('PEXPIRE', p[2], p[4] * 2) end
  else
    redis.call('SET', p[2], string.format('%d', p[3]), 'PX', math.ceil(p[3] - p[4]) + 1000)
  end
  out[#out + 1] = p[5]
  out[#out + 1] = p[6]
  out[#out + 1] = p[7]
end
return out
";

/// Records a failed attempt: refused at once when a block holds; else takes one from each
/// failure budget (GCRA) and blocks the ones spent for the budget's wait (at least a second).
/// KEYS: block keys, then pairs of (budget key, its block key). ARGV[1]: how many block keys;
/// then per pair: limit, period (ms). Returns {longest wait in ms (0: not blocked)}.
const FAIL: &str = r"
local nb = tonumber(ARGV[1])
local wait = 0
for i = 1, nb do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > wait then wait = ttl end
end
if wait > 0 then return {wait} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 2
for i = nb + 1, #KEYS, 2 do
  local limit, span = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local emission = span / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + emission
  local allow_at = new_tat - span
  if allow_at > now then
    local w = math.max(math.ceil(allow_at - now), 1000)
    redis.call('SET', KEYS[i + 1], '1', 'PX', w)
    if w > wait then wait = w end
  else
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  end
end
return {wait}
";

/// The longest time any of KEYS (blocks) still holds, in ms (0: none).
const BLOCKED: &str = r"
local wait = 0
for i = 1, #KEYS do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > wait then wait = ttl end
end
return wait
";

/// Gives back calls leased from a window that have not been spent (while the window lasts).
/// KEYS[1]: the window's counter; ARGV[1]: how many.
const GIVE_BACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECRBY', KEYS[1], ARGV[1]) end
return 0
";

/// A budget to check and take from.
#[derive(Debug, Clone)]
pub enum Budget {
    /// `limit` per calendar window, counted under `key` (which names the window); `lease` calls
    /// at most are taken at once (one for this request, the rest leased).
    Window {
        key: String,
        limit: u64,
        window: Duration,
        lease: u64,
    },
    /// `limit` per `period` with a burst of `limit`.
    Gcra {
        key: String,
        limit: u64,
        period: Duration,
    },
}

/// What a shared check came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every budget allowed: what remains of each, when each resets and how many calls each
    /// granted.
    Admitted(Vec<Granted>),
    /// Budget `index` (of those given) is spent; the wait until it allows again.
    Spent { index: usize, wait: Duration },
}

/// What a budget that allowed has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub remaining: u64,
    pub reset: Duration,
    /// Calls taken: one, or a window's lease.
    pub granted: u64,
}

/// Redis could not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Redis is unreachable: {0}")]
pub struct Unreachable(pub String);

thread_local! {
    /// Each thread's connection to each Redis (by [`SharedBudgets::id`]): a check then never
    /// crosses to another thread's runtime and back, which on a busy server costs more than the
    /// round trip itself.
    static MANAGERS: std::cell::RefCell<std::collections::HashMap<u64, ConnectionManager>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

pub struct SharedBudgets {
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    admit: Script,
    fail: Script,
    blocked: Script,
    give_back: Script,
    timeout: Duration,
    /// `host:port` of the server, without credentials: what health and logs name.
    pub address: String,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SharedBudgets {
    /// Connects lazily (a server starts while Redis is down, and reconnects by itself).
    /// `prefix` starts every key and the blocks channel.
    pub fn new(url: &str, timeout: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let invalid =
            |e: redis::RedisError| anyhow::anyhow!("invalid configuration: redis_url: {e}");
        // TCP_NODELAY: the checks of concurrent requests share a connection, and Nagle's
        // algorithm would hold each small write back until the one before it is acknowledged.
        let info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(invalid)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(invalid)?;
        let address = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        // Checked once here: the per-thread managers are made the same way.
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        metrics.redis_up.set(1);
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client,
            config,
            admit: Script::new(ADMIT),
            fail: Script::new(FAIL),
            blocked: Script::new(BLOCKED),
            give_back: Script::new(GIVE_BACK),
            timeout,
            address,
            up: AtomicBool::new(true),
            metrics,
        })
    }

    /// This thread's connection manager (made, lazily connected, on first use).
    fn connection(&self) -> Result<ConnectionManager, String> {
        MANAGERS.with(|managers| {
            let mut managers = managers.borrow_mut();
            if let Some(manager) = managers.get(&self.id) {
                return Ok(manager.clone());
            }
            let manager =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
                    .map_err(|e| e.to_string())?;
            managers.insert(self.id, manager.clone());
            Ok(manager)
        })
    }

    /// Whether the last round trip succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts a request admitted from a lease, without a round trip.
    pub fn count_leased(&self) {
        self.metrics.redis_leased.inc();
    }

    /// One round trip on this thread's connection, within the timeout; timed, counted, and
    /// `up` kept.
    async fn roundtrip<T, F, Fut>(&self, send: F) -> Result<T, Unreachable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match self.connection() {
            Ok(conn) => tokio::time::timeout(self.timeout, send(conn))
                .await
                .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(err) => Err(err),
        };
        self.metrics
            .redis_roundtrip
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(redis = %self.address, "Redis answers again: rate limits are shared again");
                }
                self.metrics.redis_up.set(1);
                Ok(value)
            }
            Err(err) => {
                self.metrics.redis_errors.inc();
                if self.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(redis = %self.address, "Redis is unreachable ({err}): rate limits follow redis_on_failure");
                }
                self.metrics.redis_up.set(0);
                Err(Unreachable(err))
            }
        }
    }

    /// Checks every budget, and takes from all when all allow.
    pub async fn admit(&self, budgets: &[Budget]) -> Result<Outcome, Unreachable> {
        let mut call = self.admit.prepare_invoke();
        for budget in budgets {
            match budget {
                Budget::Window {
                    key,
                    limit,
                    window,
                    lease,
                } => {
                    call.key(key)
                        .arg("w")
                        .arg(*limit)
                        .arg(window.as_millis() as u64)
                        .arg((*lease).max(1));
                }
                Budget::Gcra { key, limit, period } => {
                    call.key(key)
                        .arg("g")
                        .arg((*limit).max(1))
                        .arg(period.as_millis() as u64)
                        .arg(1);
                }
            }
        }
        let answer: Vec<i64> = self
            .roundtrip(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        Ok(match answer.first() {
            Some(2) => Outcome::Spent {
                index: answer.get(2).copied().unwrap_or(1).max(1) as usize - 1,
                wait: ms(answer.get(1).copied().unwrap_or(1000)),
            },
            _ => Outcome::Admitted(
                answer[3.min(answer.len())..]
                    .chunks(3)
                    .map(|c| Granted {
                        remaining: c[0].max(0) as u64,
                        reset: ms(c.get(1).copied().unwrap_or(0)),
                        granted: c.get(2).copied().unwrap_or(1).max(1) as u64,
                    })
                    .collect(),
            ),
        })
    }

    /// Records a failed attempt against `budgets` (budget key, block key, limit per minute);
    /// the wait when a block holds or this attempt spent a budget.
    pub async fn fail(
        &self,
        blocks: &[String],
        budgets: &[(String, String, u64)],
    ) -> Result<Option<Duration>, Unreachable> {
        let mut call = self.fail.prepare_invoke();
        for key in blocks {
            call.key(key);
        }
        call.arg(blocks.len());
        for (budget, block, limit) in budgets {
            call.key(budget).key(block).arg((*limit).max(1)).arg(60_000);
        }
        let answer: Vec<i64> = self
            .roundtrip(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let wait = answer.first().copied().unwrap_or(0);
        Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
    }

    /// How long the longest of `blocks` still holds.
    pub async fn blocked(&self, blocks: &[String]) -> Result<Option<Duration>, Unreachable> {
        if blocks.is_empty() {
            return Ok(None);
        }
        let mut call = self.blocked.prepare_invoke();
        for key in blocks {
            call.key(key);
        }
        let wait: i64 = self
            .roundtrip(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait as u64)))
    }

    /// Gives back `calls` leased from the window counted under `key` and not spent.
    pub async fn give_back(&self, key: &str, calls: u64) -> Result<(), Unreachable> {
        let mut call = self.give_back.prepare_invoke();
        call.key(key).arg(calls);
        self.roundtrip(|mut conn| async move { call.invoke_async::<i64>(&mut conn).await })
            .await
            .map(|_| ())
    }

    /// Forgets the budget counted under `key` (an operator reset it).
    pub async fn clear(&self, key: &str) -> Result<(), Unreachable> {
        let key = key.to_owned();
        self.roundtrip(|mut conn| async move {
            redis::cmd("DEL")
                .arg(&key)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(|_| ())
    }

    /// One PING: how long Redis took to answer.
    pub async fn ping(&self) -> Result<Duration, Unreachable> {
        let started = Instant::now();
        self.roundtrip(|mut conn| async move {
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await?;
        Ok(started.elapsed())
    }
}
