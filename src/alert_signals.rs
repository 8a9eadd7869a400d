//! What the alert evaluator is told between its rounds, kept by each server in memory:
//!
//! - the tenants to look at again (their usage, limits or tier changed), coalesced so that a
//!   busy tenant is evaluated a few times a second at most;
//! - each tenant's API traffic over the last minutes (requests, 5xx responses and a latency
//!   histogram in one-minute buckets), the base of its error-rate and response-time alerts —
//!   per tenant, which Prometheus could only give with a series per tenant;
//! - the tenants whose quota policy is failing, and why.
//!
//! Recording a request is one short lock and a few additions; nothing here touches the
//! database.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upper bounds of the latency histogram's buckets, in milliseconds (the last is unbounded).
pub const LATENCY_BOUNDS_MS: [f64; 11] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// A tenant's API traffic in one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct MinuteBucket {
    /// Minutes since 1970.
    pub minute: u64,
    pub requests: u64,
    /// Responses 5xx.
    pub errors: u64,
    /// Requests refused (429) at the tenant's API-call budget; not among `requests`.
    pub throttled: u64,
    /// Requests by response time, in the buckets of [`LATENCY_BOUNDS_MS`].
    pub latency: [u64; LATENCY_BOUNDS_MS.len() + 1],
}

/// One tenant's traffic, one bucket per minute of the window.
#[derive(Debug, Default)]
struct TenantTraffic {
    buckets: Vec<MinuteBucket>,
    /// What was counted since the last flush to the database (every server's traffic is
    /// summed there, for the API's views of it).
    pending: Vec<MinuteBucket>,
}

/// A tenant's API traffic over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficWindow {
    pub requests: u64,
    pub errors: u64,
    /// Errors in percent of requests.
    pub error_rate: f64,
    /// The 95th-percentile response time in milliseconds, interpolated in its histogram
    /// bucket.
    pub p95_ms: f64,
    /// Requests refused at the tenant's API-call budget.
    pub throttled: u64,
    /// Refused requests in percent of all it sent (admitted and refused).
    pub throttled_rate: f64,
}

/// Why a tenant's quota policy failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    pub policy: String,
    pub reason: String,
}

pub struct AlertSignals {
    window_minutes: u64,
    dirty: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
    traffic: Mutex<HashMap<String, TenantTraffic>>,
    failing: Mutex<HashMap<String, PolicyFailure>>,
}

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl AlertSignals {
    pub fn new(window_minutes: u32) -> Self {
        Self {
            window_minutes: u64::from(window_minutes.max(1)),
            dirty: Mutex::new(HashSet::new()),
            wake: tokio::sync::Notify::new(),
            traffic: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// Asks for `tenant_id` to be evaluated again soon.
    pub fn mark(&self, tenant_id: &str) {
        let new = self
            .dirty
            .lock()
            .expect("alerting lock")
            .insert(tenant_id.to_owned());
        if new {
            self.wake.notify_one();
        }
    }

    /// The tenants marked since the last call.
    pub fn take_marked(&self) -> Vec<String> {
        self.dirty.lock().expect("alerting lock").drain().collect()
    }

    /// Resolves when a tenant is marked.
    pub async fn marked(&self) {
        self.wake.notified().await;
    }

    /// Counts one API request of `tenant_id`: its status and how long it took.
    pub fn record_request(&self, tenant_id: &str, status: u16, elapsed: Duration) {
        self.record_request_at(tenant_id, status, elapsed, minute_now());
    }

    fn record_request_at(&self, tenant_id: &str, status: u16, elapsed: Duration, minute: u64) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.in_bucket(tenant_id, minute, |current| {
            current.requests += 1;
            if status >= 500 {
                current.errors += 1;
            }
            current.latency[bucket] += 1;
        });
    }

    /// Counts one request of `tenant_id` refused at its API-call budget.
    pub fn record_throttled(&self, tenant_id: &str) {
        self.in_bucket(tenant_id, minute_now(), |current| current.throttled += 1);
        self.mark(tenant_id);
    }

    /// Runs `change` on `tenant_id`'s bucket of `minute`, dropping buckets out of the window.
    fn in_bucket(&self, tenant_id: &str, minute: u64, change: impl Fn(&mut MinuteBucket)) {
        let mut traffic = self.traffic.lock().expect("alerting lock");
        let tenant = match traffic.get_mut(tenant_id) {
            Some(t) => t,
            None => traffic.entry(tenant_id.to_owned()).or_default(),
        };
        let oldest = minute.saturating_sub(self.window_minutes - 1);
        tenant.buckets.retain(|b| b.minute >= oldest);
        let current = match tenant.buckets.iter_mut().position(|b| b.minute == minute) {
            Some(i) => &mut tenant.buckets[i],
            None => {
                tenant.buckets.push(MinuteBucket {
                    minute,
                    ..MinuteBucket::default()
                });
                tenant.buckets.last_mut().expect("pushed")
            }
        };
        change(current);
        let pending = match tenant.pending.iter_mut().position(|b| b.minute == minute) {
            Some(i) => &mut tenant.pending[i],
            None => {
                tenant.pending.push(MinuteBucket {
                    minute,
                    ..MinuteBucket::default()
                });
                tenant.pending.last_mut().expect("pushed")
            }
        };
        change(pending);
    }

    /// Takes what was counted since the last flush: (tenant id, its minutes).
    pub fn take_pending(&self) -> Vec<(String, MinuteBucket)> {
        let mut traffic = self.traffic.lock().expect("alerting lock");
        let mut taken = Vec::new();
        for (tenant, t) in traffic.iter_mut() {
            taken.extend(t.pending.drain(..).map(|b| (tenant.clone(), b)));
        }
        taken
    }

    /// Gives back what could not be written, for the next flush.
    pub fn restore_pending(&self, pending: Vec<(String, MinuteBucket)>) {
        let mut traffic = self.traffic.lock().expect("alerting lock");
        for (tenant, bucket) in pending {
            let t = traffic.entry(tenant).or_default();
            match t.pending.iter_mut().find(|b| b.minute == bucket.minute) {
                Some(b) => {
                    b.requests += bucket.requests;
                    b.errors += bucket.errors;
                    b.throttled += bucket.throttled;
                    for (sum, n) in b.latency.iter_mut().zip(bucket.latency) {
                        *sum += n;
                    }
                }
                None => t.pending.push(bucket),
            }
        }
    }

    /// `tenant_id`'s traffic over the window; none without a request in it.
    pub fn traffic_of(&self, tenant_id: &str) -> Option<TrafficWindow> {
        self.traffic_at(tenant_id, minute_now())
    }

    fn traffic_at(&self, tenant_id: &str, minute: u64) -> Option<TrafficWindow> {
        let oldest = minute.saturating_sub(self.window_minutes - 1);
        let traffic = self.traffic.lock().expect("alerting lock");
        let mut requests = 0;
        let mut errors = 0;
        let mut throttled = 0;
        let mut latency = [0u64; LATENCY_BOUNDS_MS.len() + 1];
        for b in traffic
            .get(tenant_id)?
            .buckets
            .iter()
            .filter(|b| b.minute >= oldest)
        {
            requests += b.requests;
            errors += b.errors;
            throttled += b.throttled;
            for (sum, n) in latency.iter_mut().zip(b.latency) {
                *sum += n;
            }
        }
        (requests + throttled > 0).then(|| TrafficWindow {
            requests,
            errors,
            error_rate: errors as f64 * 100.0 / requests.max(1) as f64,
            p95_ms: percentile(&latency, requests, 0.95),
            throttled,
            throttled_rate: throttled as f64 * 100.0 / (requests + throttled) as f64,
        })
    }

    /// The tenants with traffic in the window; tenants whose traffic has left the window are
    /// forgotten (and returned one last time, so that their alerts can resolve).
    pub fn traffic_tenants(&self) -> Vec<String> {
        let oldest = minute_now().saturating_sub(self.window_minutes - 1);
        let mut traffic = self.traffic.lock().expect("alerting lock");
        let tenants = traffic.keys().cloned().collect();
        traffic
            .retain(|_, t| !t.pending.is_empty() || t.buckets.iter().any(|b| b.minute >= oldest));
        tenants
    }

    /// Records that `tenant_id`'s policy failed; true when it was not failing before.
    pub fn policy_failed(&self, tenant_id: &str, failure: PolicyFailure) -> bool {
        let before = self
            .failing
            .lock()
            .expect("alerting lock")
            .insert(tenant_id.to_owned(), failure);
        if before.is_none() {
            self.mark(tenant_id);
        }
        before.is_none()
    }

    /// Records that `tenant_id`'s policy answered.
    pub fn policy_answered(&self, tenant_id: &str) {
        let was = self
            .failing
            .lock()
            .expect("alerting lock")
            .remove(tenant_id);
        if was.is_some() {
            self.mark(tenant_id);
        }
    }

    /// Why `tenant_id`'s policy is failing, when it is.
    pub fn policy_failure(&self, tenant_id: &str) -> Option<PolicyFailure> {
        self.failing
            .lock()
            .expect("alerting lock")
            .get(tenant_id)
            .cloned()
    }
}

/// The `q` quantile of a histogram of `total` observations, interpolated linearly inside its
/// bucket.
pub fn percentile(latency: &[u64], total: u64, q: f64) -> f64 {
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, n) in latency.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (below + n) as f64 >= rank {
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BOUNDS_MS[i - 1]
            };
            let upper = LATENCY_BOUNDS_MS
                .get(i)
                .copied()
                .unwrap_or(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1] * 2.0);
            let within = (rank - below as f64) / *n as f64;
            return lower + (upper - lower) * within.clamp(0.0, 1.0);
        }
        below += n;
    }
    0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_error_rate_counts_5xx_in_the_window_only() {
        let alerting = AlertSignals::new(5);
        for i in 0..100 {
            let status = if i < 3 { 503 } else { 200 };
            alerting.record_request_at("t", status, ms(3), 1000);
        }
        // A 4xx is the client's error, not the server's.
        alerting.record_request_at("t", 429, ms(3), 1001);
        let w = alerting.traffic_at("t", 1001).unwrap();
        assert_eq!((w.requests, w.errors), (101, 3));
        assert!((w.error_rate - 300.0 / 101.0).abs() < 1e-9);
        // Five minutes on, the first minute has left the window.
        let later = alerting.traffic_at("t", 1005).unwrap();
        assert_eq!((later.requests, later.errors), (1, 0));
        assert!(alerting.traffic_at("t", 1006).is_none());
        assert!(alerting.traffic_at("other", 1001).is_none());
    }

    #[test]
    fn p95_lies_in_the_bucket_of_the_95th_request() {
        let alerting = AlertSignals::new(5);
        for _ in 0..90 {
            alerting.record_request_at("t", 200, ms(20), 7);
        }
        for _ in 0..10 {
            alerting.record_request_at("t", 200, ms(800), 7);
        }
        let p95 = alerting.traffic_at("t", 7).unwrap().p95_ms;
        assert!(p95 > 500.0 && p95 <= 1000.0, "{p95}");
        let calm = AlertSignals::new(5);
        for _ in 0..100 {
            calm.record_request_at("t", 200, ms(20), 7);
        }
        let p95 = calm.traffic_at("t", 7).unwrap().p95_ms;
        assert!(p95 > 10.0 && p95 <= 25.0, "{p95}");
    }

    #[test]
    fn marks_coalesce() {
        let alerting = AlertSignals::new(5);
        alerting.mark("a");
        alerting.mark("a");
        alerting.mark("b");
        let mut marked = alerting.take_marked();
        marked.sort();
        assert_eq!(marked, ["a", "b"]);
        assert!(alerting.take_marked().is_empty());
    }

    #[test]
    fn a_policy_failure_is_new_once() {
        let alerting = AlertSignals::new(5);
        let failure = PolicyFailure {
            policy: "p".into(),
            reason: "trap".into(),
        };
        assert!(alerting.policy_failed("t", failure.clone()));
        assert!(!alerting.policy_failed("t", failure.clone()));
        assert_eq!(alerting.policy_failure("t"), Some(failure));
        alerting.policy_answered("t");
        assert!(alerting.policy_failure("t").is_none());
    }
}
