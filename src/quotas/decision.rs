//! Asking a tenant's quota policy for its decision, and keeping it.
//!
//! The policy is asked when the tenant's tier or overrides change (the decision's key), when a
//! summary needs severities for usage the decision has not seen, and when the decision is older
//! than `quotas.decision_ttl_seconds`. Admission only needs the limits: a change of usage alone
//! does not ask the policy on the request path. A policy that fails leaves its last good decision in force; a tenant with
//! none gets what `quotas.on_policy_failure` says.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::FailMode;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{Decision, LogLine, MetricDecision, Severity, Usage};
use crate::store::models::QuotaOverrideRow;
use crate::tenants::Tenant;
use crate::throttle::CachedDecision;

use super::catalogue::Metric;

/// What the caller needs the decision for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Limits only (admission): usage changes alone do not ask the policy again.
    Limits,
    /// Limits and severities for the usage given (summaries).
    Severities,
}

/// When the first temporary override among `overrides` ends, as an instant of this process.
fn valid_until(overrides: &[QuotaOverrideRow]) -> Option<Instant> {
    let now = crate::clock::now();
    overrides
        .iter()
        .filter_map(|o| o.expires_at)
        .min()
        .map(|at| Instant::now() + (at - now).to_std().unwrap_or_default())
}

/// The decision of `tenant`'s policy on `usage` (metric → use) under `overrides`.
pub async fn decide(
    ctx: &Context,
    tenant: &Tenant,
    metrics: &[Metric],
    overrides: &[QuotaOverrideRow],
    usage: &HashMap<String, u64>,
    need: Need,
) -> AppResult<Arc<CachedDecision>> {
    let policy = {
        let mut conn = ctx.db.conn().await?;
        super::policy::in_force(ctx, &mut conn, tenant)
            .await?
            .policy
    };
    let policy = &policy;
    let key = decision_key(policy, tenant, overrides);
    let usage_fp = fingerprint(usage);
    let ttl = Duration::from_secs(ctx.config.quotas.decision_ttl_seconds);
    let cached = ctx.quota_decisions.get(&tenant.id);
    if let Some(cached) = &cached {
        let age = cached.decided_at.elapsed();
        let usage_ok = need == Need::Limits || cached.usage == usage_fp;
        if cached.key == key && age < ttl && usage_ok && !cached.outlived() {
            return Ok(cached.clone());
        }
    }
    match ask(ctx, policy, tenant, metrics, overrides, usage, None).await {
        Ok((decision, defaults)) => {
            ctx.alert_signals.policy_answered(&tenant.id);
            Ok(ctx.quota_decisions.put(
                &tenant.id,
                CachedDecision {
                    key,
                    usage: usage_fp,
                    decided_at: Instant::now(),
                    valid_until: valid_until(overrides),
                    defaults,
                    hard: hardness(metrics, overrides),
                    decision,
                },
            ))
        }
        Err(reason) => {
            ctx.alert_signals.policy_failed(
                &tenant.id,
                crate::alert_signals::PolicyFailure {
                    policy: policy.clone(),
                    reason: reason.clone(),
                },
            );
            ctx.metrics
                .quota_policy_failures
                .with_label_values(&[policy.as_str()])
                .inc();
            tracing::warn!(tenant = %tenant.slug, policy = %policy, "quota policy failing: {reason}");
            match (cached, ctx.config.quotas.on_policy_failure) {
                (Some(last), _) => Ok(last),
                (None, FailMode::Open) => Ok(Arc::new(unlimited(metrics, usage))),
                (None, FailMode::Closed) => Err(AppError::Unavailable(format!(
                    "the quota policy `{policy}` is failing and {} has no decision yet: nothing is admitted until it answers",
                    tenant.slug
                ))),
            }
        }
    }
}

/// Asks `policy` once for its decision on `tenant` with `usage` and `overrides`, keeping
/// nothing (what `tenantry plugin call … evaluate` shows), with the lines the policy logged.
pub async fn evaluate_once(
    ctx: &Context,
    policy: &str,
    tenant: &Tenant,
    standing: &super::Standing,
) -> (AppResult<Decision>, Vec<LogLine>) {
    let super::Standing {
        metrics,
        overrides,
        usage,
    } = standing;
    let lines = std::sync::Mutex::new(Vec::new());
    let answer = ask(ctx, policy, tenant, metrics, overrides, usage, Some(&lines))
        .await
        .map(|(decision, _)| decision)
        .map_err(|reason| {
            AppError::Unavailable(format!("the quota policy `{policy}` failed: {reason}"))
        });
    (answer, lines.into_inner().unwrap_or_default())
}

/// Calls the policy with and, where overrides set limits, without them (for the defaults).
async fn ask(
    ctx: &Context,
    policy: &str,
    tenant: &Tenant,
    metrics: &[Metric],
    overrides: &[QuotaOverrideRow],
    usage: &HashMap<String, u64>,
    log: Option<&std::sync::Mutex<Vec<LogLine>>>,
) -> Result<(Decision, HashMap<String, Option<u64>>), String> {
    let plugin_tenant = crate::provisioning::plugin_tenant(tenant);
    let input = |with_overrides: bool| -> Vec<Usage> {
        metrics
            .iter()
            .map(|m| Usage {
                metric: m.name.clone(),
                used: usage.get(&m.name).copied().unwrap_or(0),
                override_limit: if with_overrides {
                    overrides
                        .iter()
                        .find(|o| o.metric == m.name)
                        .and_then(|o| o.limit_value)
                        .map(|l| l.max(0) as u64)
                } else {
                    None
                },
            })
            .collect()
    };
    let call = |usage: Vec<Usage>| async {
        let logged = ctx
            .plugins
            .evaluate_logged(policy, &plugin_tenant, usage)
            .await;
        if let Some(log) = log {
            log.lock().expect("log lock").extend(logged.log);
        }
        match logged.result {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(err)) => Err(format!("{err:?}")),
            Err(err) => Err(err.to_string()),
        }
    };
    let decision = call(input(true)).await?;
    let defaults = if overrides.iter().any(|o| o.limit_value.is_some()) {
        call(input(false)).await?
    } else {
        decision.clone()
    };
    let defaults = defaults
        .metrics
        .into_iter()
        .map(|m| (m.metric, m.limit))
        .collect();
    Ok((decision, defaults))
}

/// A decision with no limits, for a tenant whose policy fails open before it ever answered.
fn unlimited(metrics: &[Metric], usage: &HashMap<String, u64>) -> CachedDecision {
    CachedDecision {
        key: String::new(),
        usage: 0,
        decided_at: Instant::now(),
        valid_until: None,
        defaults: metrics.iter().map(|m| (m.name.clone(), None)).collect(),
        hard: metrics.iter().map(|m| (m.name.clone(), m.hard)).collect(),
        decision: Decision {
            metrics: metrics
                .iter()
                .map(|m| MetricDecision {
                    metric: m.name.clone(),
                    used: usage.get(&m.name).copied().unwrap_or(0),
                    limit: None,
                    percent: 0.0,
                    severity: Severity::Ok,
                })
                .collect(),
            allowed: true,
            at_risk: false,
        },
    }
}

/// Whether each metric's quota is hard: the override's word, else the metric's.
pub fn hardness(metrics: &[Metric], overrides: &[QuotaOverrideRow]) -> HashMap<String, bool> {
    metrics
        .iter()
        .map(|m| {
            let hard = overrides
                .iter()
                .find(|o| o.metric == m.name)
                .map_or(m.hard, |o| o.hard);
            (m.name.clone(), hard)
        })
        .collect()
}

fn decision_key(policy: &str, tenant: &Tenant, overrides: &[QuotaOverrideRow]) -> String {
    let mut key = format!("{policy}|{}", tenant.tier);
    for o in overrides {
        key.push_str(&format!("|{}={:?}/{}", o.metric, o.limit_value, o.hard));
    }
    key
}

fn fingerprint(usage: &HashMap<String, u64>) -> u64 {
    let mut items: Vec<_> = usage.iter().collect();
    items.sort();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    items.hash(&mut hasher);
    hasher.finish()
}
