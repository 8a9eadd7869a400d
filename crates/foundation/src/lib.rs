//! tenantry's foundation: what every layer above stands on and nothing here imports from them —
//! the stored words and how they are declared, the clock, the one error type, roles, the
//! client a request came from, network rules, the configuration, the metrics and telemetry.
//!
//! The map of the whole code base is `ARCHITECTURE.md` at the repository's root.

pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod metrics;
pub mod net;
pub mod roles;
pub mod telemetry;
pub mod words;
