//! Tenants' API calls as this server counts them, until they are written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The API calls of each tenant as this server counts them: the calls of the current minute
/// (for its per-minute limit), and what is not yet written to the database (flushed every few
/// seconds by `quotas::meter`).
#[derive(Default)]
pub struct ApiCallMeter {
    by_tenant: Mutex<HashMap<String, TenantCalls>>,
    /// Held by a flush from taking what is pending until it is written or given back, so that
    /// the last flush at shutdown waits for a periodic one still writing (whose task would
    /// otherwise be dropped mid-write with the calls it took).
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct TenantCalls {
    /// The minute counted (`2026-12-04T09:15`) and the calls in it on this server, plus what
    /// the other servers had counted in it at the last flush.
    minute: String,
    in_minute: u64,
    minute_base: u64,
    /// The month counted (`2026-12`), the calls in it at the last flush (every server's) and
    /// this server's since.
    month: String,
    month_base: u64,
    /// Calls not yet written: (metric, period, calls). A handful (a period rolls over between
    /// two flushes at most), searched without allocating.
    pending: Vec<(&'static str, String, u64)>,
}

impl TenantCalls {
    fn pending(&self, metric: &str, period: &str) -> u64 {
        self.pending
            .iter()
            .find(|(m, p, _)| *m == metric && p == period)
            .map_or(0, |(_, _, n)| *n)
    }

    fn add_pending(&mut self, metric: &'static str, period: &str, n: u64) {
        match self
            .pending
            .iter_mut()
            .find(|(m, p, _)| *m == metric && p == period)
        {
            Some((_, _, count)) => *count += n,
            None => self.pending.push((metric, period.to_owned(), n)),
        }
    }
}

/// The counter of a tenant's API calls per day: not a quota, shown in the usage summary.
pub const API_CALLS_PER_DAY: &str = "api_calls_per_day";

/// The limits that apply to a tenant's API calls, from its quota decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLimits {
    pub per_minute: Option<u64>,
    pub per_month: Option<u64>,
}

/// A refused call: which limit, and how long until it resets.
#[derive(Debug, Clone)]
pub struct CallRefused {
    pub metric: &'static str,
    pub limit: u64,
    pub retry_after: Duration,
}

/// An admitted call: the per-minute budget after it (for the `RateLimit` headers).
#[derive(Debug, Clone, Copy)]
pub struct CallAdmitted {
    pub limit: Option<u64>,
    pub remaining: u64,
    pub reset: Duration,
}

impl ApiCallMeter {
    /// Counts one API call of `tenant_id` at `minute`/`month`, unless it would pass a hard
    /// limit; `reset_minute` and `reset_month` are the times left in each.
    pub fn record(
        &self,
        tenant_id: &str,
        (minute, reset_minute): (String, Duration),
        (month, reset_month): (String, Duration),
        limits: CallLimits,
    ) -> Result<CallAdmitted, CallRefused> {
        let mut map = self.by_tenant.lock().expect("api call meter");
        if !map.contains_key(tenant_id) {
            map.insert(tenant_id.to_owned(), TenantCalls::default());
        }
        let calls = map.get_mut(tenant_id).expect("inserted above");
        if calls.minute != minute {
            calls.minute = minute.clone();
            calls.in_minute = 0;
            calls.minute_base = 0;
        }
        if calls.month != month {
            calls.month = month.clone();
            calls.month_base = 0;
        }
        let minute_used = calls.minute_base + calls.in_minute;
        if let Some(limit) = limits.per_minute
            && minute_used >= limit
        {
            return Err(CallRefused {
                metric: "api_calls_per_minute",
                limit,
                retry_after: reset_minute,
            });
        }
        let month_pending = calls.pending("api_calls_per_month", &month);
        if let Some(limit) = limits.per_month
            && calls.month_base + month_pending >= limit
        {
            return Err(CallRefused {
                metric: "api_calls_per_month",
                limit,
                retry_after: reset_month,
            });
        }
        calls.in_minute += 1;
        // The day's calls, for the usage summary (`2026-12-04T09:15` → `2026-12-04`).
        calls.add_pending(API_CALLS_PER_DAY, minute.get(..10).unwrap_or(&minute), 1);
        calls.add_pending("api_calls_per_minute", &minute, 1);
        calls.add_pending("api_calls_per_month", &month, 1);
        Ok(CallAdmitted {
            limit: limits.per_minute,
            remaining: limits
                .per_minute
                .map_or(u64::MAX, |l| l.saturating_sub(minute_used + 1)),
            reset: reset_minute,
        })
    }

    /// The right to flush: one flush at a time takes, writes and gives back.
    pub async fn flushing(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.flushing.lock().await
    }

    /// Takes what is not yet written: (tenant id, metric, period, calls).
    pub fn take_pending(&self) -> Vec<(String, &'static str, String, u64)> {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let mut taken = Vec::new();
        for (tenant, calls) in map.iter_mut() {
            for (metric, period, n) in calls.pending.drain(..) {
                taken.push((tenant.clone(), metric, period, n));
            }
        }
        map.retain(|_, calls| calls.in_minute > 0 || calls.month_base > 0);
        taken
    }

    /// Gives back what could not be written, to be written with the next flush.
    pub fn restore_pending(&self, pending: Vec<(String, &'static str, String, u64)>) {
        let mut map = self.by_tenant.lock().expect("api call meter");
        for (tenant, metric, period, n) in pending {
            map.entry(tenant)
                .or_default()
                .add_pending(metric, &period, n);
        }
    }

    /// What the database holds after a flush (every server's calls): the base this server
    /// counts on from now.
    pub fn set_base(&self, tenant_id: &str, metric: &str, period: &str, value: u64) {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let Some(calls) = map.get_mut(tenant_id) else {
            return;
        };
        match metric {
            "api_calls_per_month" if calls.month == period => calls.month_base = value,
            "api_calls_per_minute" if calls.minute == period => {
                // The database holds this server's calls too: the others' are the rest.
                calls.minute_base = value.saturating_sub(calls.in_minute);
            }
            _ => {}
        }
    }

    /// Forgets what this server counted of `tenant_id`'s `metric` in `period` (an operator reset
    /// the counter): its calls in the minute or month, and what it had not yet written.
    pub fn reset(&self, tenant_id: &str, metric: &str, period: &str) {
        let mut map = self.by_tenant.lock().expect("api call meter");
        let Some(calls) = map.get_mut(tenant_id) else {
            return;
        };
        match metric {
            "api_calls_per_minute" if calls.minute == period => {
                calls.in_minute = 0;
                calls.minute_base = 0;
            }
            "api_calls_per_month" if calls.month == period => calls.month_base = 0,
            _ => {}
        }
        calls
            .pending
            .retain(|(m, p, _)| !(*m == metric && p == period));
    }
}
