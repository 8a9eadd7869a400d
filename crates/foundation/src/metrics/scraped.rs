//! Series set when `/metrics` is scraped from what every process can see, so that each server
//! shows the same fleet-wide figures whoever did the work (a server or the CLI): the provisioning
//! runs that ended, from the run totals the ending transaction writes. And the series of this
//! process alone: its connection pool and, on Linux, its CPU and memory.

use prometheus::{
    Counter, CounterVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use super::define::{self, Def, registered};

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

const RUNS_ENDED: Def = Def {
    name: "tenantry_provisioning_runs_ended_total",
    help: "Provisioning runs that ended, by kind and outcome, whichever process ran them (the same figure on every server: aggregate with max, not sum)",
    labels: &["kind", "outcome"],
};

const RUNS_ENDED_SECONDS: Def = Def {
    name: "tenantry_provisioning_runs_ended_seconds_total",
    help: "Seconds the provisioning runs that ended took in all (creation to end), by kind and outcome",
    labels: &["kind", "outcome"],
};

const POOL_CONNECTIONS: Def = Def {
    name: "tenantry_db_pool_connections",
    help: "This server's database connections by state (in_use, idle)",
    labels: &["state"],
};

const POOL_MAX: Def = Def {
    name: "tenantry_db_pool_max_connections",
    help: "The most connections this server's pool opens (database_pool_size)",
    labels: &[],
};

const POOL_WAITING: Def = Def {
    name: "tenantry_db_pool_waiting",
    help: "Callers waiting for a database connection now",
    labels: &[],
};

const POOL_SLOW_CHECKOUTS: Def = Def {
    name: "tenantry_db_pool_waits_total",
    help: "Checkouts of a database connection that waited (1 ms or more) for one to be given back",
    labels: &[],
};

const POOL_WAIT_SECONDS: Def = Def {
    name: "tenantry_db_pool_wait_seconds_total",
    help: "Seconds callers waited for a database connection in all",
    labels: &[],
};

const DATABASES: Def = Def {
    name: "tenantry_tenant_databases",
    help: "Tenant databases by the status of their last probe (up, slow, down, unsupported); the same figure on every server",
    labels: &["status"],
};

const PROBE_SECONDS: Def = Def {
    name: "tenantry_tenant_database_probe_seconds",
    help: "Round trips of the tenant database probes this server ran (connect and SELECT 1) that answered",
    labels: &[],
};

const TENANT_REQUESTS: Def = Def {
    name: "tenantry_tenant_requests_per_minute",
    help: "API requests a minute over the last 5 minutes, every server's, for the busiest tenants and those with an open traffic alert (alerts.per_tenant_series)",
    labels: &["tenant"],
};

const TENANT_ERRORS: Def = Def {
    name: "tenantry_tenant_error_ratio",
    help: "Share of a tenant's API requests answered 5xx over the last 5 minutes (the same tenants)",
    labels: &["tenant"],
};

const TENANT_P95: Def = Def {
    name: "tenantry_tenant_request_p95_seconds",
    help: "95th-percentile response time of a tenant's API requests over the last 5 minutes (the same tenants)",
    labels: &["tenant"],
};

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
        let runs_ended = registered(registry, define::counters(&RUNS_ENDED));
        let runs_ended_seconds = registered(registry, define::float_counters(&RUNS_ENDED_SECONDS));
        let pool_connections = registered(registry, define::gauges(&POOL_CONNECTIONS));
        let pool_max = registered(registry, define::gauge(&POOL_MAX));
        let pool_waiting = registered(registry, define::gauge(&POOL_WAITING));
        let pool_slow_checkouts = registered(registry, define::counter(&POOL_SLOW_CHECKOUTS));
        let pool_wait_seconds = registered(registry, define::float_counter(&POOL_WAIT_SECONDS));
        let databases = registered(registry, define::gauges(&DATABASES));
        let probe_seconds = registered(
            registry,
            define::histogram(
                &PROBE_SECONDS,
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
        );
        let tenant_requests = registered(registry, define::float_gauges(&TENANT_REQUESTS));
        let tenant_errors = registered(registry, define::float_gauges(&TENANT_ERRORS));
        let tenant_p95 = registered(registry, define::float_gauges(&TENANT_P95));
        // Exported at zero from the start, so that a rule on them has a series to watch.
        for status in ["up", "slow", "down", "unsupported"] {
            databases.with_label_values(&[status]);
        }
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
