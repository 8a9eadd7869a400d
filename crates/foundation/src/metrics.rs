//! Prometheus metrics. Request counters are updated by the HTTP middleware; tenant gauges are
//! read from the database when `/metrics` is scraped (one indexed GROUP BY, not a scan per tenant).

mod process;
mod refusals;
mod scraped;

pub use refusals::{Refusals, Throttle};
pub use scraped::{PoolStats, ScrapedMetrics};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `method` label of a request: one of the methods the server answers, or `other`. A label
/// takes whatever a client sends otherwise, and every distinct value is a series kept for ever.
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub tenants: IntGaugeVec,
    pub plugin_calls: IntCounterVec,
    pub job_runs: IntCounterVec,
    pub backend_checks: IntCounterVec,
    pub plugin_deadlines: IntCounterVec,
    pub provisioning_runs: IntGaugeVec,
    pub plugin_duration: HistogramVec,
    pub provisioning_duration: HistogramVec,
    pub step_failures: IntCounterVec,
    pub auth_attempts: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub quota_rejections: IntCounterVec,
    pub quota_policy_failures: IntCounterVec,
    pub alerts_raised: IntCounterVec,
    pub alerts_open: IntGaugeVec,
    pub tenant_quota_use: GaugeVec,
    pub webhook_deliveries: IntCounterVec,
    pub redis_up: IntGauge,
    pub redis_errors: IntCounter,
    pub redis_roundtrip: Histogram,
    pub redis_leased: IntCounter,
    pub cache_lookups: IntCounterVec,
    pub change_feed_live: IntGauge,
    /// Series set at scrape from the database and the process.
    pub scraped: ScrapedMetrics,
    /// Requests refused with 429, by reason.
    pub refusals: Refusals,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "tenantry_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("metric definition");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantry_http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )
        .expect("metric definition");
        let tenants = IntGaugeVec::new(
            Opts::new("tenantry_tenants", "Tenants by status and tier"),
            &["status", "tier"],
        )
        .expect("metric definition");
        let job_runs = IntCounterVec::new(
            Opts::new(
                "tenantry_job_runs_total",
                "Scheduled job runs by job and outcome (succeeded or failed), on this server",
            ),
            &["job", "outcome"],
        )
        .expect("metric definition");
        let backend_checks = IntCounterVec::new(
            Opts::new(
                "tenantry_backend_checks_total",
                "Checks of a tenant's resources in a backend (observe) by plugin and status: healthy, drifted or unreachable",
            ),
            &["plugin", "status"],
        )
        .expect("metric definition");
        let plugin_deadlines = IntCounterVec::new(
            Opts::new(
                "tenantry_plugin_deadline_hits_total",
                "Plugin calls stopped at their deadline, by plugin (also counted as failed calls)",
            ),
            &["plugin"],
        )
        .expect("metric definition");
        let provisioning_runs = IntGaugeVec::new(
            Opts::new(
                "tenantry_provisioning_runs",
                "Provisioning runs not finished, by status (queued, running, compensating): the queue",
            ),
            &["status"],
        )
        .expect("metric definition");
        let plugin_calls = IntCounterVec::new(
            Opts::new(
                "tenantry_plugin_calls_total",
                "Plugin calls by plugin and outcome (ok or failed)",
            ),
            &["plugin", "outcome"],
        )
        .expect("metric definition");
        let plugin_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantry_plugin_call_duration_seconds",
                "Plugin call duration by plugin",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                30.0,
            ]),
            &["plugin"],
        )
        .expect("metric definition");
        let provisioning_duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantry_provisioning_duration_seconds",
                "Duration of finished provisioning runs (creation to end) by kind and outcome",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ]),
            &["kind", "outcome"],
        )
        .expect("metric definition");
        let step_failures = IntCounterVec::new(
            Opts::new(
                "tenantry_provisioning_step_failures_total",
                "Failed attempts of provisioning steps by plugin and kind (transient or permanent)",
            ),
            &["plugin", "kind"],
        )
        .expect("metric definition");
        let auth_attempts = IntCounterVec::new(
            Opts::new(
                "tenantry_auth_attempts_total",
                "Authentication attempts by tenant and method (oidc: a login callback; api_key: a request with a key)",
            ),
            &["tenant", "method"],
        )
        .expect("metric definition");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "tenantry_auth_failures_total",
                "Refused authentication attempts by tenant, method and reason",
            ),
            &["tenant", "method", "reason"],
        )
        .expect("metric definition");
        let quota_rejections = IntCounterVec::new(
            Opts::new(
                "tenantry_quota_rejections_total",
                "Uses refused at a hard quota limit, by metric and tier",
            ),
            &["metric", "tier"],
        )
        .expect("metric definition");
        let quota_policy_failures = IntCounterVec::new(
            Opts::new(
                "tenantry_quota_policy_failures_total",
                "Quota policy calls that failed (the last good decision stays in force)",
            ),
            &["policy"],
        )
        .expect("metric definition");
        let alerts_raised = IntCounterVec::new(
            Opts::new(
                "tenantry_alerts_raised_total",
                "Alerts raised (or raised again after they resolved), by kind and severity",
            ),
            &["kind", "severity"],
        )
        .expect("metric definition");
        let alerts_open = IntGaugeVec::new(
            Opts::new("tenantry_alerts_open", "Open alerts by severity"),
            &["severity"],
        )
        .expect("metric definition");
        let tenant_quota_use = GaugeVec::new(
            Opts::new(
                "tenantry_tenant_quota_use_ratio",
                "Use of a quota as a fraction of its limit, only for tenants with an open quota alert (warning or above), so that series stay bounded",
            ),
            &["tenant", "metric"],
        )
        .expect("metric definition");
        let webhook_deliveries = IntCounterVec::new(
            Opts::new(
                "tenantry_webhook_deliveries_total",
                "Webhook delivery attempts by result (delivered, retry, failed: every attempt spent)",
            ),
            &["result"],
        )
        .expect("metric definition");
        let redis_up = IntGauge::new(
            "tenantry_redis_up",
            "Whether the last round trip to the Redis of the shared rate limits succeeded (1) or not (0); absent without redis_url",
        )
        .expect("metric definition");
        let redis_errors = IntCounter::new(
            "tenantry_redis_errors_total",
            "Rate-limit checks that Redis did not answer in time (decided by redis_on_failure)",
        )
        .expect("metric definition");
        let redis_roundtrip = Histogram::with_opts(
            HistogramOpts::new(
                "tenantry_redis_roundtrip_seconds",
                "Round-trip time of the shared rate-limit checks",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5,
            ]),
        )
        .expect("metric definition");
        let redis_leased = IntCounter::new(
            "tenantry_redis_leased_admissions_total",
            "Requests admitted from per-minute budget this server had leased from Redis, without a round trip",
        )
        .expect("metric definition");
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "tenantry_cache_lookups_total",
                "Lookups of the caches of API keys, sessions and tenants by result (hit, miss; bypass while changes made elsewhere cannot be heard)",
            ),
            &["cache", "result"],
        )
        .expect("metric definition");
        let change_feed_live = IntGauge::new(
            "tenantry_change_feed_live",
            "Whether this server hears the changes other servers make to cached rows (1), or bypasses its caches (0)",
        )
        .expect("metric definition");
        for cache in ["key", "session", "tenant"] {
            for result in ["hit", "miss", "bypass"] {
                cache_lookups.with_label_values(&[cache, result]);
            }
        }
        registry
            .register(Box::new(cache_lookups.clone()))
            .expect("register");
        registry
            .register(Box::new(change_feed_live.clone()))
            .expect("register");
        // Exported at zero from the start, so that a rule on them has a series to watch.
        for result in ["delivered", "retry", "failed"] {
            webhook_deliveries.with_label_values(&[result]);
        }
        for m in [&alerts_raised, &webhook_deliveries] {
            registry.register(Box::new(m.clone())).expect("register");
        }
        registry
            .register(Box::new(alerts_open.clone()))
            .expect("register");
        registry
            .register(Box::new(tenant_quota_use.clone()))
            .expect("register");
        registry
            .register(Box::new(quota_rejections.clone()))
            .expect("register");
        registry
            .register(Box::new(quota_policy_failures.clone()))
            .expect("register");
        registry
            .register(Box::new(auth_attempts.clone()))
            .expect("register");
        registry
            .register(Box::new(auth_failures.clone()))
            .expect("register");
        registry
            .register(Box::new(provisioning_duration.clone()))
            .expect("register");
        registry
            .register(Box::new(step_failures.clone()))
            .expect("register");
        registry
            .register(Box::new(plugin_calls.clone()))
            .expect("register");
        registry
            .register(Box::new(job_runs.clone()))
            .expect("register");
        registry
            .register(Box::new(backend_checks.clone()))
            .expect("register");
        registry
            .register(Box::new(plugin_deadlines.clone()))
            .expect("register");
        registry
            .register(Box::new(provisioning_runs.clone()))
            .expect("register");
        registry
            .register(Box::new(plugin_duration.clone()))
            .expect("register");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("register");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("register");
        registry
            .register(Box::new(tenants.clone()))
            .expect("register");
        let scraped = ScrapedMetrics::new(&registry);
        let refusals = Refusals::new(&registry);
        Self {
            scraped,
            refusals,
            registry,
            http_requests,
            http_duration,
            tenants,
            plugin_calls,
            job_runs,
            backend_checks,
            plugin_deadlines,
            provisioning_runs,
            plugin_duration,
            provisioning_duration,
            step_failures,
            auth_attempts,
            auth_failures,
            quota_rejections,
            quota_policy_failures,
            alerts_raised,
            alerts_open,
            tenant_quota_use,
            webhook_deliveries,
            redis_up,
            redis_errors,
            redis_roundtrip,
            redis_leased,
            cache_lookups,
            change_feed_live,
        }
    }

    /// Exports the quota and alert series at zero for every known label value — each tier and
    /// metric, the default policy, each kind and severity of alert — so that rules and
    /// dashboards have a series to watch before the first event.
    pub fn initialise_quota_series(&self, tiers: &[&str], metrics: &[&str], policy: &str) {
        for tier in tiers {
            for metric in metrics {
                self.quota_rejections.with_label_values(&[metric, tier]);
            }
        }
        self.quota_policy_failures.with_label_values(&[policy]);
        for kind in [
            "quota",
            "at_risk",
            "policy_failing",
            "error_rate",
            "latency",
            "trial_ending",
            "job_failing",
            "throttled",
            "database_down",
            "database_slow",
        ] {
            for severity in ["warning", "critical", "blocked"] {
                self.alerts_raised.with_label_values(&[kind, severity]);
            }
        }
    }

    /// Exports the Redis metrics (a server without `redis_url` has none).
    pub fn register_redis(&self) {
        let _ = self.registry.register(Box::new(self.redis_up.clone()));
        let _ = self.registry.register(Box::new(self.redis_errors.clone()));
        let _ = self
            .registry
            .register(Box::new(self.redis_roundtrip.clone()));
        let _ = self.registry.register(Box::new(self.redis_leased.clone()));
    }

    /// Sets the open-alert gauges from fresh counts by severity (every severity is exported,
    /// zero when none is open) and the per-tenant quota use of the tenants with an open quota
    /// alert: (tenant slug, metric, percent).
    pub fn set_alert_state(&self, open: &[(String, i64)], quota_use: &[(String, String, f64)]) {
        for severity in ["warning", "critical", "blocked"] {
            let n = open
                .iter()
                .filter(|(s, _)| s == severity)
                .map(|(_, n)| *n)
                .sum();
            self.alerts_open.with_label_values(&[severity]).set(n);
        }
        self.tenant_quota_use.reset();
        for (tenant, metric, percent) in quota_use {
            self.tenant_quota_use
                .with_label_values(&[tenant, metric])
                .set(percent / 100.0);
        }
    }

    /// Exports the operations series at zero — each job's runs, each kind of run's durations,
    /// the queue — so that rules and dashboards have a series before the first event.
    pub fn initialise_operations_series(&self, jobs: &[&str]) {
        for job in jobs {
            for outcome in ["succeeded", "failed"] {
                self.job_runs.with_label_values(&[job, outcome]);
            }
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
                self.provisioning_duration
                    .with_label_values(&[kind, outcome]);
            }
        }
        for status in ["queued", "running", "compensating"] {
            self.provisioning_runs.with_label_values(&[status]);
        }
    }

    /// Exports an enabled plugin's series at zero: its calls and deadline hits, and for a
    /// provisioner its step failures and backend checks.
    pub fn initialise_plugin_series(&self, plugin: &str, provisioner: bool) {
        for outcome in ["ok", "failed"] {
            self.plugin_calls.with_label_values(&[plugin, outcome]);
        }
        self.plugin_duration.with_label_values(&[plugin]);
        self.plugin_deadlines.with_label_values(&[plugin]);
        if provisioner {
            for kind in ["transient", "permanent"] {
                self.step_failures.with_label_values(&[plugin, kind]);
            }
            for status in ["healthy", "drifted", "unreachable"] {
                self.backend_checks.with_label_values(&[plugin, status]);
            }
        }
    }

    /// Sets the queue gauge from fresh counts of unfinished runs by status.
    pub fn set_run_counts(&self, counts: &[(String, i64)]) {
        for status in ["queued", "running", "compensating"] {
            let n = counts
                .iter()
                .filter(|(s, _)| s == status)
                .map(|(_, n)| *n)
                .sum();
            self.provisioning_runs.with_label_values(&[status]).set(n);
        }
    }

    /// Sets the tenant gauges from fresh counts of (status, tier, tenants); the registry gives
    /// every known pair, zero when it has none.
    pub fn set_tenant_counts(&self, counts: &[(String, String, i64)]) {
        for (status, tier, n) in counts {
            self.tenants.with_label_values(&[status, tier]).set(*n);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory");
        String::from_utf8(buffer).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
