//! Defining a metric: its name, help and labels ([`Def`], a constant beside the metrics it
//! names) and a histogram's buckets, and registering it in the same step where it is exported
//! from the start.

use prometheus::core::Collector;
use prometheus::{
    Counter, CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// A metric's name, help and labels (none for a single series).
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// `metric`, registered in `registry`.
pub fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("a metric is registered once");
    metric
}

pub fn counter(def: &Def) -> IntCounter {
    IntCounter::new(def.name, def.help).expect("metric definition")
}

pub fn counters(def: &Def) -> IntCounterVec {
    IntCounterVec::new(Opts::new(def.name, def.help), def.labels).expect("metric definition")
}

pub fn float_counter(def: &Def) -> Counter {
    Counter::new(def.name, def.help).expect("metric definition")
}

pub fn float_counters(def: &Def) -> CounterVec {
    CounterVec::new(Opts::new(def.name, def.help), def.labels).expect("metric definition")
}

pub fn gauge(def: &Def) -> IntGauge {
    IntGauge::new(def.name, def.help).expect("metric definition")
}

pub fn gauges(def: &Def) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(def.name, def.help), def.labels).expect("metric definition")
}

pub fn float_gauges(def: &Def) -> GaugeVec {
    GaugeVec::new(Opts::new(def.name, def.help), def.labels).expect("metric definition")
}

pub fn histogram(def: &Def, buckets: &[f64]) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(def.name, def.help).buckets(buckets.to_vec()))
        .expect("metric definition")
}

pub fn histograms(def: &Def, buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(def.name, def.help).buckets(buckets.to_vec()),
        def.labels,
    )
    .expect("metric definition")
}
