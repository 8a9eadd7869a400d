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
/// kind (`w` window, `g` GCRA), limit, window or period (ms), cost.
/// Returns {0, 0, 0, remaining, reset_ms per budget…}, {1, wait_ms} blocked, or
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
    if used + cost > limit then return {2, ttl, i - nb} end
    plans[#plans + 1] = {'w', KEYS[i], cost, span, limit - used - cost, ttl}
  else
    local emission = span / limit
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    local new_tat = tat + emission * cost
    local allow_at = new_tat - span
    if allow_at > now then return {2, math.ceil(allow_at - now), i - nb} end
    plans[#plans + 1] = {'g', KEYS[i], new_tat, now, math.floor((now - allow_at) / emission), math.ceil(new_tat - now)}
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
end
return out
";

/// Records a failed attempt: refused at once when a block holds; else takes one from each
/// failure budget (GCRA) and blocks the ones spent for the budget's wait (at least a second).
/// KEYS: block keys, then pairs of (budget key, its block key). ARGV[1]: how many block keys;
/// then per pair: limit, period (ms). Returns {longest wait in ms (0: not blocked), then per
/// pair 1 when its block holds}.
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
    out[#out + 1] = 1
  else
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
    out[#out + 1] = 0
  end
end
out[1] = wait
return out
";

/// A budget to check and take from.
#[derive(Debug, Clone)]
pub enum Budget {
    /// `limit` per calendar window, counted under `key` (which names the window).
    Window {
        key: String,
        limit: u64,
        window: Duration,
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
    /// Every budget allowed: what remains of each, and when each resets.
    Admitted(Vec<(u64, Duration)>),
    /// A block holds for this long.
    Blocked(Duration),
    /// Budget `index` (of those given) is spent; the wait until it allows again.
    Spent { index: usize, wait: Duration },
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
    timeout: Duration,
    /// `host:port` of the server, without credentials: what health and logs name.
    pub address: String,
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl SharedBudgets {
    /// Connects lazily (a server starts while Redis is down, and reconnects by itself).
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

    fn observed<T>(&self, started: Instant, result: Result<T, String>) -> Result<T, Unreachable> {
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
                Budget::Window { key, limit, window } => {
                    call.key(key)
                        .arg("w")
                        .arg(*limit)
                        .arg(window.as_millis() as u64)
                        .arg(1);
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
        let started = Instant::now();
        let answer = match self.connection() {
            Ok(mut conn) => {
                tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                    .await
                    .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(err) => Err(err),
        };
        let answer = self.observed(started, answer)?;
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        Ok(match answer.first() {
            Some(1) => Outcome::Blocked(ms(answer.get(1).copied().unwrap_or(1000))),
            Some(2) => Outcome::Spent {
                index: answer.get(2).copied().unwrap_or(1).max(1) as usize - 1,
                wait: ms(answer.get(1).copied().unwrap_or(1000)),
            },
            _ => Outcome::Admitted(
                answer[3.min(answer.len())..]
                    .chunks(2)
                    .map(|c| (c[0].max(0) as u64, ms(c.get(1).copied().unwrap_or(0))))
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
        call.arg(blocks.len());
        for (budget, block, limit) in budgets {
            call.key(budget).key(block).arg((*limit).max(1)).arg(60_000);
        }
        let started = Instant::now();
        let answer = match self.connection() {
            Ok(mut conn) => {
                tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn))
                    .await
                    .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Err(err) => Err(err),
        };
        let answer = self.observed(started, answer)?;
        let wait = answer.first().copied().unwrap_or(0);
        let held = answer.iter().skip(1).map(|flag| *flag == 1).collect();
        Ok((wait > 0).then(|| (Duration::from_millis(wait as u64), held)))
    }

    /// One PING: how long Redis took to answer.
    pub async fn ping(&self) -> Result<Duration, Unreachable> {
        let started = Instant::now();
        let answer = match self.connection() {
            Ok(mut conn) => tokio::time::timeout(
                self.timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))
            .and_then(|r| r.map_err(|e| e.to_string())),
            Err(err) => Err(err),
        };
        self.observed(started, answer)?;
        Ok(started.elapsed())
    }
}
