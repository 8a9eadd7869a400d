//! Prometheus metrics. Request counters are updated by the HTTP middleware; tenant gauges are
//! read from the database when `/metrics` is scraped (one indexed GROUP BY, not a scan per tenant).

pub mod define;
mod process;
mod refusals;
mod scraped;

pub use refusals::{Refusals, Throttle};
pub use scraped::{PoolStats, ScrapedMetrics};

use define::{Def, registered};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, TextEncoder,
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

// The server's own metrics, one definition each.

const HTTP_REQUESTS: Def = Def {
    name: "tenantry_http_requests_total",
    help: "HTTP requests by route, method and status",
    labels: &["route", "method", "status"],
};

const HTTP_DURATION: Def = Def {
    name: "tenantry_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labels: &["route", "method"],
};

const TENANTS: Def = Def {
    name: "tenantry_tenants",
    help: "Tenants by status and tier",
    labels: &["status", "tier"],
};

const JOB_RUNS: Def = Def {
    name: "tenantry_job_runs_total",
    help: "Scheduled job runs by job and outcome (succeeded or failed), on this server",
    labels: &["job", "outcome"],
};

const BACKEND_CHECKS: Def = Def {
    name: "tenantry_backend_checks_total",
    help: "Checks of a tenant's resources in a backend (observe) by plugin and status: healthy, drifted or unreachable",
    labels: &["plugin", "status"],
};

const PLUGIN_DEADLINES: Def = Def {
    name: "tenantry_plugin_deadline_hits_total",
    help: "Plugin calls stopped at their deadline, by plugin (also counted as failed calls)",
    labels: &["plugin"],
};

const PROVISIONING_RUNS: Def = Def {
    name: "tenantry_provisioning_runs",
    help: "Provisioning runs not finished, by status (queued, running, compensating): the queue",
    labels: &["status"],
};

const PLUGIN_CALLS: Def = Def {
    name: "tenantry_plugin_calls_total",
    help: "Plugin calls by plugin and outcome (ok or failed)",
    labels: &["plugin", "outcome"],
};

const PLUGIN_DURATION: Def = Def {
    name: "tenantry_plugin_call_duration_seconds",
    help: "Plugin call duration by plugin",
    labels: &["plugin"],
};

const PROVISIONING_DURATION: Def = Def {
    name: "tenantry_provisioning_duration_seconds",
    help: "Duration of finished provisioning runs (creation to end) by kind and outcome",
    labels: &["kind", "outcome"],
};

const STEP_FAILURES: Def = Def {
    name: "tenantry_provisioning_step_failures_total",
    help: "Failed attempts of provisioning steps by plugin and kind (transient or permanent)",
    labels: &["plugin", "kind"],
};

const AUTH_ATTEMPTS: Def = Def {
    name: "tenantry_auth_attempts_total",
    help: "Authentication attempts by tenant and method (oidc: a login callback; api_key: a request with a key)",
    labels: &["tenant", "method"],
};

const AUTH_FAILURES: Def = Def {
    name: "tenantry_auth_failures_total",
    help: "Refused authentication attempts by tenant, method and reason",
    labels: &["tenant", "method", "reason"],
};

const QUOTA_REJECTIONS: Def = Def {
    name: "tenantry_quota_rejections_total",
    help: "Uses refused at a hard quota limit, by metric and tier",
    labels: &["metric", "tier"],
};

const QUOTA_POLICY_FAILURES: Def = Def {
    name: "tenantry_quota_policy_failures_total",
    help: "Quota policy calls that failed (the last good decision stays in force)",
    labels: &["policy"],
};

const ALERTS_RAISED: Def = Def {
    name: "tenantry_alerts_raised_total",
    help: "Alerts raised (or raised again after they resolved), by kind and severity",
    labels: &["kind", "severity"],
};

const ALERTS_OPEN: Def = Def {
    name: "tenantry_alerts_open",
    help: "Open alerts by severity",
    labels: &["severity"],
};

const TENANT_QUOTA_USE: Def = Def {
    name: "tenantry_tenant_quota_use_ratio",
    help: "Use of a quota as a fraction of its limit, only for tenants with an open quota alert (warning or above), so that series stay bounded",
    labels: &["tenant", "metric"],
};

const WEBHOOK_DELIVERIES: Def = Def {
    name: "tenantry_webhook_deliveries_total",
    help: "Webhook delivery attempts by result (delivered, retry, failed: every attempt spent)",
    labels: &["result"],
};

const REDIS_UP: Def = Def {
    name: "tenantry_redis_up",
    help: "Whether the last round trip to the Redis of the shared rate limits succeeded (1) or not (0); absent without redis_url",
    labels: &[],
};

const REDIS_ERRORS: Def = Def {
    name: "tenantry_redis_errors_total",
    help: "Rate-limit checks that Redis did not answer in time (decided by redis_on_failure)",
    labels: &[],
};

const REDIS_ROUNDTRIP: Def = Def {
    name: "tenantry_redis_roundtrip_seconds",
    help: "Round-trip time of the shared rate-limit checks",
    labels: &[],
};

const REDIS_LEASED: Def = Def {
    name: "tenantry_redis_leased_admissions_total",
    help: "Requests admitted from per-minute budget this server had leased from Redis, without a round trip",
    labels: &[],
};

const CACHE_LOOKUPS: Def = Def {
    name: "tenantry_cache_lookups_total",
    help: "Lookups of the caches of API keys, sessions and tenants by result (hit, miss; bypass while changes made elsewhere cannot be heard)",
    labels: &["cache", "result"],
};

const CHANGE_FEED_LIVE: Def = Def {
    name: "tenantry_change_feed_live",
    help: "Whether this server hears the changes other servers make to cached rows (1), or bypasses its caches (0)",
    labels: &[],
};

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
        let r = &registry;
        let http_requests = registered(r, define::counters(&HTTP_REQUESTS));
        let http_duration = registered(
            r,
            define::histograms(
                &HTTP_DURATION,
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            ),
        );
        let tenants = registered(r, define::gauges(&TENANTS));
        let job_runs = registered(r, define::counters(&JOB_RUNS));
        let backend_checks = registered(r, define::counters(&BACKEND_CHECKS));
        let plugin_deadlines = registered(r, define::counters(&PLUGIN_DEADLINES));
        let provisioning_runs = registered(r, define::gauges(&PROVISIONING_RUNS));
        let plugin_calls = registered(r, define::counters(&PLUGIN_CALLS));
        let plugin_duration = registered(
            r,
            define::histograms(
                &PLUGIN_DURATION,
                &[
                    0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
                    30.0,
                ],
            ),
        );
        let provisioning_duration = registered(
            r,
            define::histograms(
                &PROVISIONING_DURATION,
                &[
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                ],
            ),
        );
        let step_failures = registered(r, define::counters(&STEP_FAILURES));
        let auth_attempts = registered(r, define::counters(&AUTH_ATTEMPTS));
        let auth_failures = registered(r, define::counters(&AUTH_FAILURES));
        let quota_rejections = registered(r, define::counters(&QUOTA_REJECTIONS));
        let quota_policy_failures = registered(r, define::counters(&QUOTA_POLICY_FAILURES));
        let alerts_raised = registered(r, define::counters(&ALERTS_RAISED));
        let alerts_open = registered(r, define::gauges(&ALERTS_OPEN));
        let tenant_quota_use = registered(r, define::float_gauges(&TENANT_QUOTA_USE));
        let webhook_deliveries = registered(r, define::counters(&WEBHOOK_DELIVERIES));
        let redis_up = define::gauge(&REDIS_UP);
        let redis_errors = define::counter(&REDIS_ERRORS);
        let redis_roundtrip = define::histogram(
            &REDIS_ROUNDTRIP,
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5,
            ],
        );
        let redis_leased = define::counter(&REDIS_LEASED);
        let cache_lookups = registered(r, define::counters(&CACHE_LOOKUPS));
        let change_feed_live = registered(r, define::gauge(&CHANGE_FEED_LIVE));
        // Exported at zero from the start, so that a rule on them has a series to watch.
        for cache in ["key", "session", "tenant"] {
            for result in ["hit", "miss", "bypass"] {
                cache_lookups.with_label_values(&[cache, result]);
            }
        }
        for result in ["delivered", "retry", "failed"] {
            webhook_deliveries.with_label_values(&[result]);
        }
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
    pub fn initialise_quota_series(
        &self,
        tiers: &[&str],
        metrics: &[&str],
        policy: &str,
        alerts: (&[&str], &[&str]),
    ) {
        for tier in tiers {
            for metric in metrics {
                self.quota_rejections.with_label_values(&[metric, tier]);
            }
        }
        self.quota_policy_failures.with_label_values(&[policy]);
        let (kinds, severities) = alerts;
        for kind in kinds {
            for severity in severities {
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
