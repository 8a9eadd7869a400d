//! A third-party quota policy for tests: every metric's limit is 3 whatever the tier (an
//! override still wins), blocked at 3 and a warning from 2. For a tenant whose slug starts with
//! `loop` it never returns, so that the host's deadline stops it; for `slow-N` it spins for N
//! milliseconds (reading the clock, through WASI) before it answers. Built for `wasm32-wasip2`
//! the scaffold's default way, it also does what such a build makes easy: for `print-…` it
//! prints a line to stdout, for `sleep-N` it sleeps N milliseconds (WASI poll), and for
//! `panic-…` it panics (which prints to stderr, then traps).

use tenantry_plugin_sdk::log;
use tenantry_plugin_sdk::quota::{
    Decision, MetricDecision, PluginError, QuotaPolicy, Severity, Tenant, Usage,
};

struct FlatQuota;

const LIMIT: u64 = 3;

impl QuotaPolicy for FlatQuota {
    fn evaluate(tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError> {
        log::debug(&format!("a flat limit of {LIMIT} for {}", tenant.slug));
        if tenant.slug.starts_with("loop") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if tenant.slug.starts_with("print") {
            println!("evaluating {}", tenant.slug);
        }
        if tenant.slug.starts_with("panic") {
            panic!("a policy that panics for {}", tenant.slug);
        }
        if let Some(ms) = tenant
            .slug
            .strip_prefix("sleep-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if let Some(ms) = tenant
            .slug
            .strip_prefix("slow-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            let started = std::time::Instant::now();
            while started.elapsed() < std::time::Duration::from_millis(ms) {
                std::hint::spin_loop();
            }
        }
        let metrics: Vec<MetricDecision> = usage
            .into_iter()
            .map(|u| {
                let limit = u.override_limit.unwrap_or(LIMIT);
                let percent = if limit == 0 {
                    if u.used > 0 { 100.0 } else { 0.0 }
                } else {
                    u.used as f64 * 100.0 / limit as f64
                };
                MetricDecision {
                    severity: if u.used >= limit {
                        Severity::Blocked
                    } else if u.used + 1 >= limit {
                        Severity::Warning
                    } else {
                        Severity::Ok
                    },
                    metric: u.metric,
                    used: u.used,
                    limit: Some(limit),
                    percent,
                }
            })
            .collect();
        Ok(Decision {
            allowed: metrics
                .iter()
                .all(|m| !matches!(m.severity, Severity::Blocked)),
            at_risk: metrics.iter().any(|m| m.percent > 90.0),
            metrics,
        })
    }
}

tenantry_plugin_sdk::register_quota_policy!(FlatQuota);
