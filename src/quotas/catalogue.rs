//! The catalogue of metrics: the built-in ones and the operator's, each with how it counts, and
//! the period a use falls in.

use chrono::{Datelike, NaiveDateTime, Timelike};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{BUILTIN_METRICS, MetricKind, QuotasConfig, Window};
use crate::error::{AppError, AppResult};
use crate::store::usage::GAUGE_PERIOD;

/// One metric of the catalogue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// The window of a rate or the period of a counter; none for a gauge.
    pub window: Option<Window>,
    /// Counted by the server itself; operators cannot report it.
    pub metered: bool,
    /// Whether use past the limit is refused (hard) or only alerted on (soft), unless an
    /// override says otherwise.
    pub hard: bool,
    pub description: String,
    /// The largest value a backend's measurement of it may have: one past it is not recorded.
    pub max_value: u64,
}

impl Metric {
    /// The period a use at `at` counts in: `2026-12-04T09:15` for a minute, `2026-12-04` for a
    /// day, `2026-12` for a calendar month, `current` for a gauge.
    pub fn period(&self, at: NaiveDateTime) -> String {
        period_of(self.window, at)
    }

    pub fn is_gauge(&self) -> bool {
        self.kind == MetricKind::Gauge
    }
}

/// The period a use at `at` counts in, for a metric of `window` (none: a gauge).
pub fn period_of(window: Option<Window>, at: NaiveDateTime) -> String {
    match window {
        None => GAUGE_PERIOD.to_owned(),
        Some(Window::Minute) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Some(Window::Day) => format!("{:04}-{:02}-{:02}", at.year(), at.month(), at.day()),
        Some(Window::Month) => format!("{:04}-{:02}", at.year(), at.month()),
    }
}

/// Every metric the server knows, built-in ones first.
pub fn catalogue(config: &QuotasConfig) -> Vec<Metric> {
    BUILTIN_METRICS
        .iter()
        .map(|b| Metric {
            name: b.name.to_owned(),
            kind: b.kind,
            window: b.window,
            metered: b.metered,
            hard: true,
            description: b.description.to_owned(),
            max_value: crate::config::DEFAULT_MAX_VALUE,
        })
        .chain(config.metrics.iter().map(|m| Metric {
            name: m.name.clone(),
            kind: m.kind,
            window: m.window,
            metered: false,
            hard: m.hard,
            description: m.description.clone(),
            max_value: m.max_value,
        }))
        .collect()
}

/// The metric `name`, or a 422 on `field` that names it and the known ones.
pub fn metric<'a>(metrics: &'a [Metric], field: &str, name: &str) -> AppResult<&'a Metric> {
    metrics.iter().find(|m| m.name == name).ok_or_else(|| {
        AppError::invalid(
            field,
            "metric",
            format!(
                "`{name}` is not a metric (known: {})",
                metrics
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_use_counts_in_its_minute_day_month_or_the_gauge() {
        let at = NaiveDate::from_ymd_opt(2026, 3, 7)
            .unwrap()
            .and_hms_opt(9, 5, 59)
            .unwrap();
        let metrics = catalogue(&QuotasConfig::default());
        let period = |name: &str| metric(&metrics, "metric", name).unwrap().period(at);
        assert_eq!(period("api_calls_per_minute"), "2026-03-07T09:05");
        assert_eq!(period("llm_tokens_per_day"), "2026-03-07");
        assert_eq!(period("api_calls_per_month"), "2026-03");
        assert_eq!(period("agents"), "current");
        let err = metric(&metrics, "events[0].metric", "widgets").unwrap_err();
        assert_eq!(err.field_errors()[0].field, "events[0].metric");
        assert!(err.to_string().contains("`widgets` is not a metric"));
    }
}
