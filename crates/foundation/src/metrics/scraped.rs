//! Series set when `/metrics` is scraped from what every process can see, so that each server
//! shows the same fleet-wide figures whoever did the work (a server or the CLI): the provisioning
//! runs that ended, from the run totals the ending transaction writes. And the series of this
//! process alone: its connection pool and, on Linux, its CPU and memory.

use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// The connection pool as it is now, and the waits for it since the process started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    pub max_size: usize,
    /// Connections open (in use and idle).
    pub size: usize,
    /// Connections idle in the pool.
    pub idle: usize,
    /// Callers waiting for a connection now.
    pub waiting: usize,
    /// Checkouts that waited (longer than a millisecond) so far.
    pub slow_checkouts: u64,
    /// Seconds every checkout waited in all.
    pub wait_seconds: f64,
}

pub struct ScrapedMetrics {
    runs_ended: IntCounterVec,
    runs_ended_seconds: CounterVec,
    pool_connections: IntGaugeVec,
    pool_max: IntGauge,
    pool_waiting: IntGauge,
    pool_slow_checkouts: IntCounter,
    pool_wait_seconds: Counter,
    databases: IntGaugeVec,
    probe_seconds: Histogram,
    tenant_requests: prometheus::GaugeVec,
    tenant_errors: prometheus::GaugeVec,
    tenant_p95: prometheus::GaugeVec,
    /// The process's CPU, memory and open files (Linux).
    process: Option<super::process::ProcessMetrics>,
}

/// Raises a counter to `total` (a counter only goes up; a total that went down is left alone).
fn raise_to(current: u64, total: u64) -> u64 {
    total.saturating_sub(current)
}

impl ScrapedMetrics {
    pub fn new(registry: &Registry) -> Self {
        let runs_ended = IntCounterVec::new(
            Opts::new(
                "tenantry_provisioning_runs_ended_total",
                "Provisioning runs that ended, by kind and outcome, whichever process ran them (the same figure on every server: aggregate with max, not sum)",
            ),
            &["kind", "outcome"],
        )
        .expect("metric definition");
        let runs_ended_seconds = CounterVec::new(
            Opts::new(
                "tenantry_provisioning_runs_ended_seconds_total",
                "Seconds the provisioning runs that ended took in all (creation to end), by kind and outcome",
            ),
            &["kind", "outcome"],
        )
        .expect("metric definition");
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "tenantry_db_pool_connections",
                "This server's database connections by state (in_use, idle)",
            ),
            &["state"],
        )
        .expect("metric definition");
        let pool_max = IntGauge::new(
            "tenantry_db_pool_max_connections",
            "The most connections this server's pool opens (database_pool_size)",
        )
        .expect("metric definition");
        let pool_waiting = IntGauge::new(
            "tenantry_db_pool_waiting",
            "Callers waiting for a database connection now",
        )
        .expect("metric definition");
        let pool_slow_checkouts = IntCounter::new(
            "tenantry_db_pool_waits_total",
            "Checkouts of a database connection that waited (1 ms or more) for one to be given back",
        )
        .expect("metric definition");
        let pool_wait_seconds = Counter::new(
            "tenantry_db_pool_wait_seconds_total",
            "Seconds callers waited for a database connection in all",
        )
        .expect("metric definition");
        let databases = IntGaugeVec::new(
            Opts::new(
                "tenantry_tenant_databases",
                "Tenant databases by the status of their last probe (up, slow, down, unsupported); the same figure on every server",
            ),
            &["status"],
        )
        .expect("metric definition");
        let probe_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tenantry_tenant_database_probe_seconds",
                "Round trips of the tenant database probes this server ran (connect and SELECT 1) that answered",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("metric definition");
        for status in ["up", "slow", "down", "unsupported"] {
            databases.with_label_values(&[status]);
        }
        let tenant_gauge = |name: &str, help: &str| {
            let gauge = prometheus::GaugeVec::new(Opts::new(name, help), &["tenant"])
                .expect("metric definition");
            registry
                .register(Box::new(gauge.clone()))
                .expect("register");
            gauge
        };
        let tenant_requests = tenant_gauge(
            "tenantry_tenant_requests_per_minute",
            "API requests a minute over the last 5 minutes, every server's, for the busiest tenants and those with an open traffic alert (alerts.per_tenant_series)",
        );
        let tenant_errors = tenant_gauge(
            "tenantry_tenant_error_ratio",
            "Share of a tenant's API requests answered 5xx over the last 5 minutes (the same tenants)",
        );
        let tenant_p95 = tenant_gauge(
            "tenantry_tenant_request_p95_seconds",
            "95th-percentile response time of a tenant's API requests over the last 5 minutes (the same tenants)",
        );
        registry
            .register(Box::new(databases.clone()))
            .expect("register");
        registry
            .register(Box::new(probe_seconds.clone()))
            .expect("register");
        for kind in [
            "provision",
            "suspend",
            "reactivate",
            "cancel",
            "purge",
            "apply",
        ] {
            for outcome in ["succeeded", "failed"] {
                runs_ended.with_label_values(&[kind, outcome]);
                runs_ended_seconds.with_label_values(&[kind, outcome]);
            }
        }
        for state in ["in_use", "idle"] {
            pool_connections.with_label_values(&[state]);
        }
        registry
            .register(Box::new(runs_ended.clone()))
            .expect("register");
        registry
            .register(Box::new(runs_ended_seconds.clone()))
            .expect("register");
        registry
            .register(Box::new(pool_connections.clone()))
            .expect("register");
        registry
            .register(Box::new(pool_max.clone()))
            .expect("register");
        registry
            .register(Box::new(pool_waiting.clone()))
            .expect("register");
        registry
            .register(Box::new(pool_slow_checkouts.clone()))
            .expect("register");
        registry
            .register(Box::new(pool_wait_seconds.clone()))
            .expect("register");
        let process = super::process::ProcessMetrics::new(registry);
        Self {
            runs_ended,
            runs_ended_seconds,
            pool_connections,
            pool_max,
            pool_waiting,
            pool_slow_checkouts,
            pool_wait_seconds,
            databases,
            probe_seconds,
            tenant_requests,
            tenant_errors,
            tenant_p95,
            process,
        }
    }

    /// Reads the process's CPU, memory and open files again.
    pub fn refresh_process(&self) {
        if let Some(process) = &self.process {
            process.refresh();
        }
    }

    /// Sets the per-tenant traffic series of a bounded set of tenants: (slug, requests a
    /// minute, error ratio, p95 seconds); the tenants of the last scrape that are not among
    /// them are dropped.
    pub fn set_tenant_traffic(&self, tenants: &[(String, f64, f64, f64)]) {
        for gauge in [&self.tenant_requests, &self.tenant_errors, &self.tenant_p95] {
            gauge.reset();
        }
        for (slug, rpm, errors, p95) in tenants {
            self.tenant_requests.with_label_values(&[slug]).set(*rpm);
            self.tenant_errors.with_label_values(&[slug]).set(*errors);
            self.tenant_p95.with_label_values(&[slug]).set(*p95);
        }
    }

    /// Sets the tenant database gauges from fresh counts of (status, databases).
    pub fn set_database_counts(&self, counts: &[(String, i64)]) {
        for status in ["up", "slow", "down", "unsupported"] {
            let n = counts
                .iter()
                .filter(|(s, _)| s == status)
                .map(|(_, n)| *n)
                .sum();
            self.databases.with_label_values(&[status]).set(n);
        }
    }

    /// Counts the round trip of an answered database probe.
    pub fn observe_probe(&self, seconds: f64) {
        self.probe_seconds.observe(seconds);
    }

    /// Sets the run counters from the totals in the database: (kind, outcome, runs, seconds).
    pub fn set_run_totals(&self, totals: &[(String, String, i64, f64)]) {
        for (kind, outcome, runs, seconds) in totals {
            let counter = self.runs_ended.with_label_values(&[kind, outcome]);
            counter.inc_by(raise_to(counter.get(), (*runs).max(0) as u64));
            let counter = self.runs_ended_seconds.with_label_values(&[kind, outcome]);
            let behind = seconds - counter.get();
            if behind > 0.0 {
                counter.inc_by(behind);
            }
        }
    }

    /// Sets the pool series from its state now.
    pub fn set_pool(&self, pool: &PoolStats) {
        let in_use = pool.size.saturating_sub(pool.idle);
        self.pool_connections
            .with_label_values(&["in_use"])
            .set(in_use as i64);
        self.pool_connections
            .with_label_values(&["idle"])
            .set(pool.idle as i64);
        self.pool_max.set(pool.max_size as i64);
        self.pool_waiting.set(pool.waiting as i64);
        let waits = &self.pool_slow_checkouts;
        waits.inc_by(raise_to(waits.get(), pool.slow_checkouts));
        let behind = pool.wait_seconds - self.pool_wait_seconds.get();
        if behind > 0.0 {
            self.pool_wait_seconds.inc_by(behind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_the_totals_up_and_never_down() {
        let registry = Registry::new();
        let metrics = ScrapedMetrics::new(&registry);
        let totals = |runs: i64, seconds: f64| {
            vec![("provision".to_owned(), "failed".to_owned(), runs, seconds)]
        };
        metrics.set_run_totals(&totals(3, 1.5));
        metrics.set_run_totals(&totals(5, 2.0));
        let failed = metrics
            .runs_ended
            .with_label_values(&["provision", "failed"]);
        assert_eq!(failed.get(), 5);
        metrics.set_run_totals(&totals(4, 1.0));
        assert_eq!(failed.get(), 5, "a counter never goes down");
        assert_eq!(
            metrics
                .runs_ended_seconds
                .with_label_values(&["provision", "failed"])
                .get(),
            2.0
        );
    }
}
