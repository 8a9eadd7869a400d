//! tenantry: a multi-tenant platform control plane.
//!
//! See `ARCHITECTURE.md` for the map of this crate.
//!
//! The layers below the server are crates of their own (`crates/`): the foundation, the store
//! and the plugin host. Their modules are re-exported here, so that a path reads
//! `crate::store::…` or `tenantry::plugin_host::…` wherever it is written.

pub use tenantry_plugin_host::{
    client, clock, config, error, metrics, net, plugin_host, roles, secrets, store, telemetry,
    transaction, with_conn, words,
};

pub mod alert_signals;
pub mod alerts;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod bundles;
pub mod caches;
pub mod cli;
pub mod context;
pub mod database_probes;
pub mod http;
pub mod identity_providers;
pub mod jobs;
pub mod key_rotation;
pub mod lifecycle;
pub mod plugin_registry;
pub mod provisioning;
pub mod quotas;
pub mod tenant_health;
pub mod tenants;
pub mod throttle;
pub mod web;
