//! The default quota policy: the tier table of `docs/quotas.md`, with a tenant's overrides
//! taking precedence. Warning at 80 %, critical at 95 %, blocked at 100 %;
//! a tenant is at risk above 90 % of any limit.

use tenantry_plugin_sdk::quota::{
    Decision, MetricDecision, PluginError, QuotaPolicy, Severity, Tenant, Usage,
};

struct TierQuota;

const WARNING: f64 = 80.0;
const CRITICAL: f64 = 95.0;
const BLOCKED: f64 = 100.0;
const AT_RISK: f64 = 90.0;

/// The default limit of `metric` on `tier`.
fn default_limit(tier: &str, metric: &str) -> Result<Option<u64>, PluginError> {
    let column = match tier {
        "free" => 0,
        "starter" => 1,
        "professional" => 2,
        "enterprise" => 3,
        "custom" => 4,
        other => return Err(PluginError::Permanent(format!("unknown tier `{other}`"))),
    };
    let row: [u64; 5] = match metric {
        "agents" => [10, 100, 1_000, 10_000, 50_000],
        "users" => [1, 10, 100, 1_000, 10_000],
        "api_calls_per_minute" => [100, 1_000, 10_000, 100_000, 100_000],
        "api_calls_per_month" => [100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000],
        "storage_gb" => [1, 10, 100, 10_000, 100_000],
        "llm_tokens_per_day" => [10_000, 100_000, 1_000_000, 10_000_000, 100_000_000],
        "concurrent_agents" => [2, 10, 50, 500, 1_000],
        "data_retention_days" => [30, 90, 365, 1_825, 3_650],
        _ => return Ok(None),
    };
    Ok(Some(row[column]))
}

fn severity(percent: f64) -> Severity {
    if percent >= BLOCKED {
        Severity::Blocked
    } else if percent >= CRITICAL {
        Severity::Critical
    } else if percent >= WARNING {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

impl QuotaPolicy for TierQuota {
    fn evaluate(tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError> {
        let mut metrics = Vec::with_capacity(usage.len());
        for item in usage {
            let limit = match item.override_limit {
                Some(limit) => Some(limit),
                None => default_limit(&tenant.tier, &item.metric)?,
            };
            let percent = match limit {
                Some(0) => {
                    if item.used > 0 {
                        f64::INFINITY
                    } else {
                        0.0
                    }
                }
                Some(limit) => item.used as f64 * 100.0 / limit as f64,
                None => 0.0,
            };
            metrics.push(MetricDecision {
                metric: item.metric,
                used: item.used,
                limit,
                percent: if percent.is_finite() {
                    (percent * 100.0).round() / 100.0
                } else {
                    100.0
                },
                severity: if limit.is_some() {
                    severity(percent)
                } else {
                    Severity::Ok
                },
            });
        }
        let allowed = metrics
            .iter()
            .all(|m| !matches!(m.severity, Severity::Blocked));
        let at_risk = metrics
            .iter()
            .any(|m| m.limit.is_some() && m.percent > AT_RISK);
        Ok(Decision {
            metrics,
            allowed,
            at_risk,
        })
    }
}

tenantry_plugin_sdk::register_quota_policy!(TierQuota);
