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
//! And blocks: a key (`block:address:<ip>`, `block:tenant:<id>`) that refuses every attempt
//! until it expires, set when a failure budget is spent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::metrics::Metrics;

/// Checks the blocks, then every budget; takes from all of them only when all allow.
/// KEYS: the block keys, then the budget keys. ARGV[1]: how many block keys; then per budget:
/// kind (`w` window, `g` GCRA), limit, window or period (ms), cost. A window's cost is the most
/// to take (a lease): it grants what is left up to a sixteenth of it (at least one), so that
/// near the limit the servers take one call at a time.
/// Returns {0, 0, 0, then remaining, reset_ms, granted per budget…}, {1, wait_ms} blocked, or
/// {2, wait_ms, index} when budget `index` (1-based) is spent.
const ADMIT: &str = r"
local nb = tonumber(ARGV[1])
local wait = 0
for i = 1, nb do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > wait then wait = ttl end
end
if wait > 0 then return {1, wait} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local plans = {}
local a = 2
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
/// failure budget (GCRA) and blocks the ones spent for the budget's wait (at least a second),
/// publishing each block set on the blocks channel (`<wait ms> <block key>`) for every server.
/// KEYS: block keys, then pairs of (budget key, its block key). ARGV[1]: how many block keys;
/// ARGV[2]: the blocks channel; then per pair: limit, period (ms). Returns {longest wait in ms
/// (0: not blocked), then per pair 1 when its block holds}.
const FAIL: &str = r"
local nb = tonumber(ARGV[1])
local wait = 0
local held = {0}
for i = 1, nb do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl > wait then wait = ttl end
  held[#held + 1] = (ttl > 0) and 1 or 0
end
if wait > 0 then held[1] = wait; return held end
local out = {0}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 3
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
    redis.call('PUBLISH', ARGV[2], string.format('%d %s', w, KEYS[i + 1]))
    if w > wait then wait = w end
    out[#out + 1] = 1
  else
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
    out[#out + 1] = 0
  end
end
out[1] = wait
return out
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
    /// A block holds for this long.
    Blocked(Duration),
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

/// How often the blocks feed pings Redis to learn that its connection still stands.
const FEED_PING: Duration = Duration::from_secs(2);

pub struct SharedBudgets {
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    admit: Script,
    fail: Script,
    give_back: Script,
    timeout: Duration,
    /// The channel blocks are published on, and what their keys start with.
    channel: String,
    block_prefix: String,
    /// Whether this server hears every block set (subscribed, and the blocks that held when
    /// it subscribed loaded): only then may it admit from a lease without asking Redis.
    feed_live: Arc<AtomicBool>,
    /// `host:port` of the server, without credentials: what health and logs name.
    pub address: String,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SharedBudgets {
    /// Connects lazily (a server starts while Redis is down, and reconnects by itself).
    /// `prefix` starts every key and the blocks channel.
    pub fn new(
        url: &str,
        prefix: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
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
            give_back: Script::new(GIVE_BACK),
            timeout,
            channel: format!("{prefix}:blocks"),
            block_prefix: format!("{prefix}:block:"),
            feed_live: Arc::new(AtomicBool::new(false)),
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

    /// Whether this server hears every block set by any server (see [`BlocksFeed`]).
    pub fn feed_live(&self) -> bool {
        self.feed_live.load(Ordering::Acquire)
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

    /// Checks `blocks` and every budget, and takes from all when all allow.
    pub async fn admit(
        &self,
        blocks: &[String],
        budgets: &[Budget],
    ) -> Result<Outcome, Unreachable> {
        let mut call = self.admit.prepare_invoke();
        for key in blocks {
            call.key(key);
        }
        call.arg(blocks.len());
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
            Some(1) => Outcome::Blocked(ms(answer.get(1).copied().unwrap_or(1000))),
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
    /// the wait when a block holds or this attempt spent a budget, and which of the budgets'
    /// blocks hold.
    pub async fn fail(
        &self,
        blocks: &[String],
        budgets: &[(String, String, u64)],
    ) -> Result<Option<(Duration, Vec<bool>)>, Unreachable> {
        let mut call = self.fail.prepare_invoke();
        for key in blocks {
            call.key(key);
        }
        call.arg(blocks.len()).arg(&self.channel);
        for (budget, block, limit) in budgets {
            call.key(budget).key(block).arg((*limit).max(1)).arg(60_000);
        }
        let answer: Vec<i64> = self
            .roundtrip(|mut conn| async move { call.invoke_async(&mut conn).await })
            .await?;
        let wait = answer.first().copied().unwrap_or(0);
        let held = answer.iter().skip(1).map(|flag| *flag == 1).collect();
        Ok((wait > 0).then(|| (Duration::from_millis(wait as u64), held)))
    }

    /// Gives back `calls` leased from the window counted under `key` and not spent.
    pub async fn give_back(&self, key: &str, calls: u64) -> Result<(), Unreachable> {
        let mut call = self.give_back.prepare_invoke();
        call.key(key).arg(calls);
        self.roundtrip(|mut conn| async move { call.invoke_async::<i64>(&mut conn).await })
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

    /// What hears the blocks every server sets (run it on a task of its own).
    pub fn feed(&self) -> BlocksFeed {
        BlocksFeed {
            client: self.client.clone(),
            channel: self.channel.clone(),
            block_prefix: self.block_prefix.clone(),
            live: self.feed_live.clone(),
            timeout: self.timeout.max(Duration::from_secs(1)),
            address: self.address.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// Hears the blocks every server sets: subscribes to the blocks channel, loads the blocks that
/// already hold, and only then counts as live. A lost connection (the channel closes, or a ping
/// goes unanswered) is live no longer until subscribed again, a second later.
pub struct BlocksFeed {
    client: redis::Client,
    channel: String,
    block_prefix: String,
    live: Arc<AtomicBool>,
    timeout: Duration,
    address: String,
    metrics: Arc<Metrics>,
}

impl BlocksFeed {
    /// Runs while `on_block` has somewhere to put what it hears: it is given each block
    /// (`address:<ip>` or `tenant:<id>`, and how long it holds) and answers `false` once its
    /// server is gone (asked with no block at every ping, too).
    pub async fn run(self, on_block: impl Fn(Option<(&str, Duration)>) -> bool) {
        use futures_util::StreamExt as _;
        loop {
            match self.subscribe(&on_block).await {
                Ok((mut sink, mut stream)) => {
                    self.set_live(true);
                    tracing::info!(redis = %self.address, "hearing rate-limit blocks from every server");
                    let mut ping = tokio::time::interval(FEED_PING);
                    ping.tick().await;
                    loop {
                        tokio::select! {
                            message = stream.next() => {
                                let Some(message) = message else { break };
                                let payload: String = message.get_payload().unwrap_or_default();
                                if let Some((ms, block)) = payload.split_once(' ')
                                    && let Some(name) = block.strip_prefix(&self.block_prefix)
                                    && let Ok(ms) = ms.parse::<u64>()
                                    && !on_block(Some((name, Duration::from_millis(ms))))
                                {
                                    return self.set_live(false);
                                }
                            }
                            _ = ping.tick() => {
                                if !on_block(None) {
                                    return self.set_live(false);
                                }
                                let answered =
                                    tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                                if !matches!(answered, Ok(Ok(_))) {
                                    break;
                                }
                            }
                        }
                    }
                    self.set_live(false);
                    tracing::warn!(redis = %self.address, "no longer hearing rate-limit blocks: every request asks Redis until subscribed again");
                }
                Err(err) => tracing::debug!(redis = %self.address, "blocks feed: {err}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !on_block(None) {
                return;
            }
        }
    }

    fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
        self.metrics.redis_feed_live.set(i64::from(live));
    }

    /// Subscribes, then loads every block that holds (set before the subscription could hear
    /// it).
    async fn subscribe(
        &self,
        on_block: &impl Fn(Option<(&str, Duration)>) -> bool,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
        let connect = async {
            let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
            sink.subscribe(&self.channel).await?;
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            let pattern = format!("{}*", self.block_prefix);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                for key in keys {
                    let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
                    if ttl > 0
                        && let Some(name) = key.strip_prefix(&self.block_prefix)
                    {
                        on_block(Some((name, Duration::from_millis(ttl as u64))));
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            Ok::<_, redis::RedisError>((sink, stream))
        };
        tokio::time::timeout(self.timeout * 5, connect)
            .await
            .map_err(|_| "no answer".to_owned())?
            .map_err(|e| e.to_string())
    }
}
