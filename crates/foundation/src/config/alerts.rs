//! The `[alerts]` section: how the server watches tenants, and how it tells operators'
//! webhooks.

use serde::{Deserialize, Serialize};

/// Alerts on tenants' quotas and traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An open alert resolves once what it watches falls this many percent below the line it
    /// crossed (80 % of a limit resolves below 76 %), so that a use hovering at a line does not
    /// flap.
    pub hysteresis_percent: f64,
    /// An alert stays open at least this many seconds after it was raised, so that a use that
    /// dips for a moment (a new minute of a per-minute rate) does not resolve and re-raise it.
    pub min_open_seconds: u64,
    /// Seconds between evaluations of every tenant with open alerts or recent traffic (a change
    /// of usage, limits or tier is evaluated within a second).
    pub evaluate_interval_seconds: u64,
    /// The window the error rate and response time of a tenant's API requests are judged over.
    pub traffic_window_minutes: u32,
    /// Fewer requests than this in the window say nothing about a tenant's error rate or
    /// response time.
    pub min_requests: u64,
    /// Error rate (responses 5xx, percent) that raises a warning, and a critical alert.
    pub error_rate_warning_percent: f64,
    pub error_rate_critical_percent: f64,
    /// 95th-percentile response time (milliseconds) that raises a warning, and a critical alert.
    pub latency_warning_ms: f64,
    pub latency_critical_ms: f64,
    /// Share of a tenant's API requests refused (429) at its API-call budget over the traffic
    /// window (percent of all it sent) that raises a `throttled` warning.
    pub throttled_warning_percent: f64,
    /// How many of the busiest tenants `/metrics` shows per-tenant traffic series for (beside
    /// those with an open error-rate, latency or throttling alert); 0: none.
    pub per_tenant_series: u32,
    /// Webhook deliveries.
    pub webhooks: WebhooksConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            hysteresis_percent: 5.0,
            min_open_seconds: 300,
            evaluate_interval_seconds: 60,
            traffic_window_minutes: 5,
            min_requests: 20,
            error_rate_warning_percent: 1.0,
            error_rate_critical_percent: 5.0,
            latency_warning_ms: 500.0,
            latency_critical_ms: 2000.0,
            throttled_warning_percent: 5.0,
            per_tenant_series: 20,
            webhooks: WebhooksConfig::default(),
        }
    }
}

/// How events reach the endpoints operators registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Attempts of a delivery before it is given up as failed.
    pub max_attempts: u32,
    /// The wait before the first retry, in milliseconds; each further retry waits twice as long
    /// (at most an hour), with jitter.
    pub retry_base_ms: u64,
    /// Seconds an endpoint has to answer.
    pub timeout_seconds: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base_ms: 10_000,
            timeout_seconds: 10,
        }
    }
}

impl AlertsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "invalid configuration: alerts.{name} must be a positive number"
            );
            Ok(())
        };
        anyhow::ensure!(
            self.hysteresis_percent.is_finite() && (0.0..50.0).contains(&self.hysteresis_percent),
            "invalid configuration: alerts.hysteresis_percent must be from 0 to 50"
        );
        anyhow::ensure!(
            self.min_open_seconds <= 86_400,
            "invalid configuration: alerts.min_open_seconds must be at most 86400"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.evaluate_interval_seconds),
            "invalid configuration: alerts.evaluate_interval_seconds must be from 1 to 3600"
        );
        anyhow::ensure!(
            (1..=60).contains(&self.traffic_window_minutes),
            "invalid configuration: alerts.traffic_window_minutes must be from 1 to 60"
        );
        positive(
            "error_rate_warning_percent",
            self.error_rate_warning_percent,
        )?;
        positive(
            "error_rate_critical_percent",
            self.error_rate_critical_percent,
        )?;
        positive("latency_warning_ms", self.latency_warning_ms)?;
        positive("latency_critical_ms", self.latency_critical_ms)?;
        positive("throttled_warning_percent", self.throttled_warning_percent)?;
        anyhow::ensure!(
            self.per_tenant_series <= 1000,
            "invalid configuration: alerts.per_tenant_series must be at most 1000"
        );
        anyhow::ensure!(
            self.error_rate_warning_percent < self.error_rate_critical_percent,
            "invalid configuration: alerts.error_rate_warning_percent must be below alerts.error_rate_critical_percent"
        );
        anyhow::ensure!(
            self.latency_warning_ms < self.latency_critical_ms,
            "invalid configuration: alerts.latency_warning_ms must be below alerts.latency_critical_ms"
        );
        let w = &self.webhooks;
        anyhow::ensure!(
            (1..=50).contains(&w.max_attempts),
            "invalid configuration: alerts.webhooks.max_attempts must be from 1 to 50"
        );
        anyhow::ensure!(
            (100..=3_600_000).contains(&w.retry_base_ms),
            "invalid configuration: alerts.webhooks.retry_base_ms must be from 100 to 3600000"
        );
        anyhow::ensure!(
            (1..=120).contains(&w.timeout_seconds),
            "invalid configuration: alerts.webhooks.timeout_seconds must be from 1 to 120"
        );
        Ok(())
    }
}
