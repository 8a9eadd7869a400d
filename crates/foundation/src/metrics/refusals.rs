//! Requests refused by a limit (429; 403 for a hard quota), by why: each reason's counter resolved once, so that counting a
//! refusal is one atomic add.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Why a request was answered 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// An API key's own requests-per-minute limit.
    KeyLimit,
    /// The tenant's API-call budget (a minute's or a month's).
    TenantBudget,
    /// An abuse limit: failed key attempts from an address or against a key, login starts.
    AbuseBlock,
    /// A hard quota refused a reported use.
    Quota,
}

impl Throttle {
    pub const ALL: [Throttle; 4] = [
        Throttle::KeyLimit,
        Throttle::TenantBudget,
        Throttle::AbuseBlock,
        Throttle::Quota,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Throttle::KeyLimit => "key_limit",
            Throttle::TenantBudget => "tenant_budget",
            Throttle::AbuseBlock => "abuse_block",
            Throttle::Quota => "quota",
        }
    }
}

pub struct Refusals {
    counters: [IntCounter; 4],
}

impl Refusals {
    pub fn new(registry: &Registry) -> Self {
        let vec = IntCounterVec::new(
            Opts::new(
                "tenantry_refusals_total",
                "Requests refused by a limit, by reason: key_limit, tenant_budget and abuse_block (429), quota (403)",
            ),
            &["reason"],
        )
        .expect("metric definition");
        registry.register(Box::new(vec.clone())).expect("register");
        Self {
            counters: Throttle::ALL.map(|t| vec.with_label_values(&[t.as_str()])),
        }
    }

    pub fn count(&self, why: Throttle) {
        self.counters[why as usize].inc();
    }
}
