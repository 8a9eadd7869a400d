//! The `[quotas]` section: the policy deciding limits, what happens when it fails, and the
//! operator's own metrics beside the built-in ones.

use serde::{Deserialize, Serialize};

/// Quotas and usage metering.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// The quota-policy plugin that decides every tenant's limits.
    pub policy: String,
    /// What a tenant gets while its policy fails and no earlier decision of it is known:
    /// `open` admits what is reported, `closed` refuses it (an earlier decision stays in force
    /// either way).
    pub on_policy_failure: FailMode,
    /// Seconds a decision is reused before the policy is asked again (a change of tier or of an
    /// override asks it at once).
    pub decision_ttl_seconds: u64,
    /// How often a server writes the API calls it counted to the database, in milliseconds (at
    /// most 5000): a crash loses at most this much of the API-call counts, never a reported
    /// event.
    pub flush_interval_ms: u64,
    /// Operators' own metrics, beside the built-in catalogue.
    pub metrics: Vec<MetricConfig>,
    /// Meter and limit every authenticated tenant request as `api_calls_per_minute` and
    /// `api_calls_per_month` (the default). Off when a gateway in front of the server does it:
    /// those counters then stay at zero.
    pub meter_api_calls: bool,
    /// How often every active tenant that holds resources in a backend is measured there
    /// (`measure`), in seconds; 0 turns the schedule off (measuring on demand stays).
    pub measure_interval_seconds: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            policy: "tier-quota".into(),
            on_policy_failure: FailMode::Open,
            decision_ttl_seconds: 30,
            flush_interval_ms: 5000,
            metrics: Vec::new(),
            meter_api_calls: true,
            measure_interval_seconds: 3600,
        }
    }
}

/// What to do when the thing that decides cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    Closed,
}

/// How a metric counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// Use over a window: the current minute, day or calendar month.
    Rate,
    /// A current value, as last reported.
    Gauge,
    /// Use since the period (day or calendar month) began, reset each period.
    Counter,
}

/// The window of a rate, or the period of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Day,
    Month,
}

/// An operator's metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// Lowercase letters, digits and `_`, starting with a letter (at most 63).
    pub name: String,
    pub kind: MetricKind,
    /// Required for a rate (`minute`, `day` or `month`) and a counter (`day` or `month`); none
    /// for a gauge.
    #[serde(default)]
    pub window: Option<Window>,
    /// Hard (the default): use past the limit is refused. Soft: it is counted and alerted on.
    #[serde(default = "hard_by_default")]
    pub hard: bool,
    #[serde(default)]
    pub description: String,
    /// The largest value a backend's measurement of this gauge may have; one past it is not
    /// recorded (default 1,000,000,000).
    #[serde(default = "default_max_value")]
    pub max_value: u64,
}

fn hard_by_default() -> bool {
    true
}

/// The bound of a metric whose configuration names none, and of the built-in ones.
pub const DEFAULT_MAX_VALUE: u64 = 1_000_000_000;

fn default_max_value() -> u64 {
    DEFAULT_MAX_VALUE
}

/// A built-in metric.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinMetric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub window: Option<Window>,
    /// Counted by the server itself (operators cannot report it).
    pub metered: bool,
    pub description: &'static str,
}

const fn builtin(
    name: &'static str,
    kind: MetricKind,
    window: Option<Window>,
    metered: bool,
    description: &'static str,
) -> BuiltinMetric {
    BuiltinMetric {
        name,
        kind,
        window,
        metered,
        description,
    }
}

/// The built-in catalogue: the tier table's metrics and the monthly API calls.
pub const BUILTIN_METRICS: &[BuiltinMetric] = &[
    builtin(
        "agents",
        MetricKind::Gauge,
        None,
        false,
        "Agents the tenant has",
    ),
    builtin(
        "users",
        MetricKind::Gauge,
        None,
        true,
        "Distinct users who have logged in",
    ),
    builtin(
        "api_calls_per_minute",
        MetricKind::Rate,
        Some(Window::Minute),
        true,
        "Authenticated API requests in the current minute",
    ),
    builtin(
        "api_calls_per_month",
        MetricKind::Rate,
        Some(Window::Month),
        true,
        "Authenticated API requests this calendar month",
    ),
    builtin(
        "storage_gb",
        MetricKind::Gauge,
        None,
        false,
        "Storage used, in GB",
    ),
    builtin(
        "llm_tokens_per_day",
        MetricKind::Rate,
        Some(Window::Day),
        false,
        "LLM tokens used today",
    ),
    builtin(
        "concurrent_agents",
        MetricKind::Gauge,
        None,
        false,
        "Agents running at once",
    ),
    builtin(
        "data_retention_days",
        MetricKind::Gauge,
        None,
        false,
        "Days of data the tenant keeps",
    ),
];

/// Whether `name` can name a metric.
pub fn valid_metric_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl QuotasConfig {
    /// Checks the section.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.policy.trim().is_empty(),
            "invalid configuration: quotas.policy must name a quota-policy plugin"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.decision_ttl_seconds),
            "invalid configuration: quotas.decision_ttl_seconds must be from 1 to 3600"
        );
        anyhow::ensure!(
            (100..=5000).contains(&self.flush_interval_ms),
            "invalid configuration: quotas.flush_interval_ms must be from 100 to 5000"
        );
        let mut seen: Vec<&str> = Vec::new();
        for m in &self.metrics {
            let name = m.name.as_str();
            anyhow::ensure!(
                valid_metric_name(name),
                "invalid configuration: quotas.metrics: `{name}` is not a metric name (lowercase letters, digits and _, starting with a letter, at most 63)"
            );
            anyhow::ensure!(
                !BUILTIN_METRICS.iter().any(|b| b.name == name),
                "invalid configuration: quotas.metrics: `{name}` is a built-in metric"
            );
            anyhow::ensure!(
                !seen.contains(&name),
                "invalid configuration: quotas.metrics: `{name}` is defined twice"
            );
            seen.push(name);
            match (m.kind, m.window) {
                (MetricKind::Gauge, None)
                | (MetricKind::Rate, Some(_))
                | (MetricKind::Counter, Some(Window::Day | Window::Month)) => {}
                (MetricKind::Gauge, Some(_)) => anyhow::bail!(
                    "invalid configuration: quotas.metrics: `{name}` is a gauge, which has no window"
                ),
                (MetricKind::Rate, None) => anyhow::bail!(
                    "invalid configuration: quotas.metrics: the rate `{name}` needs a window (minute, day or month)"
                ),
                (MetricKind::Counter, _) => anyhow::bail!(
                    "invalid configuration: quotas.metrics: the counter `{name}` needs a period (window = day or month)"
                ),
            }
        }
        Ok(())
    }
}
