//! tenantry: a multi-tenant platform control plane.
//!
//! See `ARCHITECTURE.md` for the map of this crate.

pub mod alert_signals;
pub mod alerts;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bundles;
pub mod caches;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod context;
pub mod database_probes;
pub mod error;
pub mod http;
pub mod identity_providers;
pub mod jobs;
pub mod key_rotation;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod plugin_host;
pub mod plugin_registry;
pub mod provisioning;
pub mod quotas;
pub mod roles;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod tenant_health;
pub mod tenants;
pub mod throttle;
pub mod web;
pub mod words;
