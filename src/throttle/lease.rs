//! Leases of a tenant's shared per-minute budget: a server takes a few calls of the minute
//! from Redis at once and admits from them without a round trip, so a busy tenant far from
//! its limit costs Redis one round trip per lease, not one per request.
//!
//! Exactness is kept from both sides:
//! - a lease is taken from the shared count atomically, so the servers together never admit
//!   more than the limit;
//! - a lease lasts about [`LEASE_SPAN`] of this server's rate for the tenant, the script grants
//!   at most a sixteenth of what is left (one call near the limit: then every request is a round
//!   trip, as without leases), and what a server leased and has not spent for [`IDLE`] is given
//!   back — so a server that stops seeing a tenant does not sit on calls the others need.
//!
//! A lease belongs to one calendar minute (the counter's key names it): a new minute starts
//! without one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a lease should last at the rate this server sees a tenant's calls.
pub const LEASE_SPAN: Duration = Duration::from_millis(250);
/// Unspent calls of a lease untouched this long are given back.
pub const IDLE: Duration = Duration::from_millis(500);
/// The most calls one lease asks for.
pub const MAX_LEASE: u64 = 1024;
/// The most tenants a server keeps leases for; a tenant beyond them asks call by call until
/// idle leases are forgotten (memory does not grow with the number of tenants seen).
pub const MAX_TENANTS: usize = 10_000;

/// What a request is to do about its tenant's minute budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted from this server's lease: the calls left in the minute, as far as it knows.
    Local { remaining: u64 },
    /// Ask Redis for a lease of this many calls (one for this request, the rest kept).
    Lease(u64),
    /// Ask Redis for this request's call alone (another request is asking for a lease).
    One,
}

#[derive(Debug)]
struct Lease {
    /// The counter's key: it names the minute.
    window: String,
    limit: u64,
    /// Leased and not spent.
    tokens: u64,
    /// What Redis had left after the last grant.
    remaining: u64,
    /// The last grant: how many, and when.
    granted: u64,
    granted_at: Instant,
    last_take: Instant,
    /// A request is asking Redis for a lease: the others ask for one call each meanwhile.
    asking: bool,
    /// When it asked (an ask whose request went away is not waited for past [`ASK_STALE`]).
    asked_at: Instant,
}

/// An ask for a lease unanswered this long no longer stops another request from asking.
const ASK_STALE: Duration = Duration::from_secs(1);

/// The leases of this server, by tenant.
#[derive(Debug, Default)]
pub struct Leases {
    by_tenant: Mutex<HashMap<String, Lease>>,
    /// Unspent calls of leases a changed limit dropped, to give back with the idle ones: the
    /// shared count holds them until then (so a lowered limit refuses a little early, never
    /// admits past itself).
    dropped: Mutex<Vec<(String, u64)>>,
}

impl Leases {
    /// Takes one call of `tenant`'s minute `window` (limit `limit`) from the lease, or says how
    /// many to ask Redis for.
    pub fn take(&self, tenant: &str, window: &str, limit: u64, now: Instant) -> Take {
        let mut leases = self.by_tenant.lock().expect("leases lock");
        if leases.len() >= MAX_TENANTS && !leases.contains_key(tenant) {
            return Take::One;
        }
        let Some(lease) = leases.get_mut(tenant) else {
            leases.insert(tenant.to_owned(), Lease::asking(window, limit, now));
            return Take::Lease(1);
        };
        if lease.window != window || lease.limit != limit {
            // A new minute, or a changed limit: what was leased under the old one is not used,
            // and a changed limit's unspent calls of this minute are given back.
            if lease.window == window && lease.tokens > 0 {
                self.dropped
                    .lock()
                    .expect("leases lock")
                    .push((lease.window.clone(), lease.tokens));
            }
            *lease = Lease::asking(window, limit, now);
            return Take::Lease(1);
        }
        lease.last_take = now;
        if lease.tokens > 0 {
            lease.tokens -= 1;
            return Take::Local {
                remaining: lease.remaining + lease.tokens,
            };
        }
        if lease.asking && now.saturating_duration_since(lease.asked_at) < ASK_STALE {
            return Take::One;
        }
        lease.asking = true;
        lease.asked_at = now;
        // Enough for LEASE_SPAN at the rate the last lease was spent.
        let spent_in = now
            .saturating_duration_since(lease.granted_at)
            .max(Duration::from_micros(100));
        let per_span = lease.granted as f64 * LEASE_SPAN.as_secs_f64() / spent_in.as_secs_f64();
        Take::Lease((per_span as u64).clamp(1, MAX_LEASE))
    }

    /// Redis granted the lease that [`Take::Lease`] asked for: `granted` calls of `window`
    /// (one of them this request's), with `remaining` left after them.
    pub fn granted(
        &self,
        tenant: &str,
        window: &str,
        limit: u64,
        granted: u64,
        remaining: u64,
        now: Instant,
    ) {
        let mut leases = self.by_tenant.lock().expect("leases lock");
        let lease = leases
            .entry(tenant.to_owned())
            .or_insert_with(|| Lease::asking(window, limit, now));
        if lease.window != window || lease.limit != limit {
            // The minute turned while asking: the grant belongs to the minute it names.
            *lease = Lease::asking(window, limit, now);
        }
        lease.tokens += granted.saturating_sub(1);
        lease.remaining = remaining;
        lease.granted = granted.max(1);
        lease.granted_at = now;
        lease.asking = false;
        lease.last_take = now;
    }

    /// The lease that [`Take::Lease`] asked for was refused or not answered.
    pub fn not_granted(&self, tenant: &str) {
        if let Some(lease) = self.by_tenant.lock().expect("leases lock").get_mut(tenant) {
            lease.asking = false;
        }
    }

    /// The unspent calls of leases untouched for [`IDLE`] (or of a minute that is over), taken
    /// out to be given back: (counter key, calls). Leases idle for a minute are forgotten.
    pub fn idle(&self, now: Instant) -> Vec<(String, u64)> {
        let mut back = std::mem::take(&mut *self.dropped.lock().expect("leases lock"));
        let mut leases = self.by_tenant.lock().expect("leases lock");
        leases.retain(|_, lease| {
            let idle = now.saturating_duration_since(lease.last_take);
            if lease.tokens > 0 && idle >= IDLE && !lease.asking {
                back.push((lease.window.clone(), lease.tokens));
                lease.tokens = 0;
            }
            // An ask unanswered for a minute is long gone.
            idle < Duration::from_secs(60)
        });
        back
    }

    /// Every unspent call, taken out to be given back (a server stopping, or one that can no
    /// longer hear blocks and so stops admitting from leases).
    pub fn drain(&self) -> Vec<(String, u64)> {
        let mut back = std::mem::take(&mut *self.dropped.lock().expect("leases lock"));
        let mut leases = self.by_tenant.lock().expect("leases lock");
        back.extend(
            leases
                .values_mut()
                .filter(|lease| lease.tokens > 0)
                .map(|lease| (lease.window.clone(), std::mem::take(&mut lease.tokens))),
        );
        back
    }
}

impl Lease {
    fn asking(window: &str, limit: u64, now: Instant) -> Self {
        Self {
            window: window.to_owned(),
            limit,
            tokens: 0,
            remaining: 0,
            granted: 1,
            granted_at: now,
            last_take: now,
            asking: true,
            asked_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_first_request_asks_for_one_and_the_lease_grows_with_the_rate() {
        let leases = Leases::default();
        let t0 = Instant::now();
        assert_eq!(leases.take("t", "w1", 1000, t0), Take::Lease(1));
        // Concurrent requests while the first asks: one call each.
        assert_eq!(leases.take("t", "w1", 1000, t0), Take::One);
        leases.granted("t", "w1", 1000, 1, 999, t0);
        // One call spent in 1 ms: a quarter-second's worth is 250.
        assert_eq!(leases.take("t", "w1", 1000, t0 + MS), Take::Lease(250));
        leases.granted("t", "w1", 1000, 60, 939, t0 + MS);
        for left in (0..59).rev() {
            assert_eq!(
                leases.take("t", "w1", 1000, t0 + 2 * MS),
                Take::Local {
                    remaining: 939 + left
                }
            );
        }
        // Spent: the next asks again, sized by how fast the 60 went.
        assert!(
            matches!(leases.take("t", "w1", 1000, t0 + 2 * MS), Take::Lease(n) if n == MAX_LEASE)
        );
    }

    #[test]
    fn a_slow_tenant_asks_for_one_call_at_a_time() {
        let leases = Leases::default();
        let t0 = Instant::now();
        assert_eq!(leases.take("t", "w1", 1000, t0), Take::Lease(1));
        leases.granted("t", "w1", 1000, 1, 999, t0);
        assert_eq!(leases.take("t", "w1", 1000, t0 + 2000 * MS), Take::Lease(1));
    }

    #[test]
    fn a_new_minute_or_limit_drops_what_was_leased() {
        let leases = Leases::default();
        let t0 = Instant::now();
        leases.take("t", "w1", 1000, t0);
        leases.granted("t", "w1", 1000, 10, 990, t0);
        assert!(matches!(
            leases.take("t", "w1", 1000, t0),
            Take::Local { .. }
        ));
        assert_eq!(leases.take("t", "w2", 1000, t0), Take::Lease(1));
        // The minute's turn gives nothing back: the old minute's counter is gone with it.
        assert_eq!(leases.idle(t0), []);
        leases.granted("t", "w2", 1000, 10, 990, t0);
        assert_eq!(leases.take("t", "w2", 500, t0), Take::Lease(1));
        // A changed limit gives back the nine calls leased under the old one, at once.
        assert_eq!(leases.idle(t0), [("w2".to_owned(), 9)]);
        assert_eq!(leases.idle(t0), []);
    }

    #[test]
    fn idle_leases_are_given_back_once() {
        let leases = Leases::default();
        let t0 = Instant::now();
        leases.take("t", "w1", 1000, t0);
        leases.granted("t", "w1", 1000, 10, 990, t0);
        leases.take("t", "w1", 1000, t0 + MS);
        assert!(leases.idle(t0 + 100 * MS).is_empty());
        assert_eq!(leases.idle(t0 + MS + IDLE), vec![("w1".to_owned(), 8)]);
        assert!(leases.idle(t0 + 2 * IDLE).is_empty());
        // Forgotten after a minute without use.
        assert!(leases.by_tenant.lock().unwrap().contains_key("t"));
        leases.idle(t0 + Duration::from_secs(61));
        assert!(leases.by_tenant.lock().unwrap().is_empty());
    }

    #[test]
    fn leases_are_kept_for_a_bounded_number_of_tenants() {
        let leases = Leases::default();
        let t0 = Instant::now();
        for i in 0..MAX_TENANTS {
            assert_eq!(
                leases.take(&format!("t{i}"), "w1", 1000, t0),
                Take::Lease(1)
            );
        }
        assert_eq!(leases.take("one more", "w1", 1000, t0), Take::One);
        assert_eq!(leases.by_tenant.lock().unwrap().len(), MAX_TENANTS);
        // Known tenants go on leasing; once idle ones are forgotten, new ones lease again.
        assert_eq!(leases.take("t0", "w1", 1000, t0), Take::One);
        leases.idle(t0 + Duration::from_secs(61));
        assert_eq!(
            leases.take("one more", "w1", 1000, t0 + Duration::from_secs(61)),
            Take::Lease(1)
        );
    }

    #[test]
    fn a_refused_ask_lets_the_next_request_ask() {
        let leases = Leases::default();
        let t0 = Instant::now();
        leases.take("t", "w1", 1000, t0);
        leases.granted("t", "w1", 1000, 1, 999, t0);
        assert!(matches!(leases.take("t", "w1", 1000, t0 + MS), Take::Lease(n) if n > 1));
        assert_eq!(leases.take("t", "w1", 1000, t0 + MS), Take::One);
        leases.not_granted("t");
        assert!(matches!(leases.take("t", "w1", 1000, t0 + MS), Take::Lease(n) if n > 1));
        leases.granted("t", "w1", 1000, 3, 5, t0 + MS);
        assert_eq!(leases.drain(), vec![("w1".to_owned(), 2)]);
        assert!(leases.drain().is_empty());
    }
}
