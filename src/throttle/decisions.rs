//! Tenants' quota decisions as their policies last gave them (this server's copy).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::MAX_TRACKED_KEYS;

/// The quota decisions of tenants as their policy last gave them, kept by each server so that
/// the policy is asked only when a tenant's tier, overrides or usage change, or when a decision
/// is older than its time to live.
#[derive(Default)]
pub struct QuotaDecisions {
    by_tenant: Mutex<HashMap<String, std::sync::Arc<CachedDecision>>>,
    /// Tenants whose policy is being asked in the background (one question at a time).
    refreshing: Mutex<std::collections::HashSet<String>>,
}

/// A policy's decision on a tenant.
#[derive(Debug, Clone)]
pub struct CachedDecision {
    /// What the decision was asked on: the policy, the tier and the overrides.
    pub key: String,
    /// The usage it was asked on (a fingerprint).
    pub usage: u64,
    pub decided_at: Instant,
    /// When a temporary override it was decided under ends: past it the decision is no longer
    /// the tenant's, whatever its age.
    pub valid_until: Option<Instant>,
    /// Each metric's limit without the tenant's overrides (the tier's default).
    pub defaults: HashMap<String, Option<u64>>,
    /// Whether each metric's quota is hard (refused past its limit).
    pub hard: HashMap<String, bool>,
    pub decision: crate::plugin_host::Decision,
}

impl QuotaDecisions {
    pub fn get(&self, tenant_id: &str) -> Option<std::sync::Arc<CachedDecision>> {
        self.by_tenant
            .lock()
            .expect("quota decisions")
            .get(tenant_id)
            .cloned()
    }

    pub fn put(&self, tenant_id: &str, decision: CachedDecision) -> std::sync::Arc<CachedDecision> {
        let decision = std::sync::Arc::new(decision);
        let mut map = self.by_tenant.lock().expect("quota decisions");
        if map.len() >= MAX_TRACKED_KEYS * 10 && !map.contains_key(tenant_id) {
            // Bounded: the oldest half goes (it is asked again when needed).
            let mut ages: Vec<(Instant, String)> =
                map.iter().map(|(k, v)| (v.decided_at, k.clone())).collect();
            ages.sort();
            for (_, key) in ages.into_iter().take(map.len() / 2) {
                map.remove(&key);
            }
        }
        map.insert(tenant_id.to_owned(), decision.clone());
        decision
    }

    /// Forgets every tenant's decision.
    pub fn forget_all(&self) {
        self.by_tenant.lock().expect("quota decisions").clear();
    }

    /// The hard limit of `metric` in the tenant's decision, if it has one.
    pub fn hard_limit(decision: &CachedDecision, metric: &str) -> Option<u64> {
        if !decision.hard.get(metric).copied().unwrap_or(true) {
            return None;
        }
        decision
            .decision
            .metrics
            .iter()
            .find(|m| m.metric == metric)
            .and_then(|m| m.limit)
    }

    /// Marks a background question to the tenant's policy as begun; false when one is already
    /// under way.
    pub fn begin_refresh(&self, tenant_id: &str) -> bool {
        self.refreshing
            .lock()
            .expect("quota refreshes")
            .insert(tenant_id.to_owned())
    }

    pub fn end_refresh(&self, tenant_id: &str) {
        self.refreshing
            .lock()
            .expect("quota refreshes")
            .remove(tenant_id);
    }

    /// Forgets a tenant's decision: the next use asks its policy.
    pub fn forget(&self, tenant_id: &str) {
        self.by_tenant
            .lock()
            .expect("quota decisions")
            .remove(tenant_id);
    }
}

impl CachedDecision {
    /// Whether a temporary override it was decided under has ended.
    pub fn outlived(&self) -> bool {
        self.valid_until
            .is_some_and(|until| Instant::now() >= until)
    }
}
