//! tenantry's store: one portable schema on SQLite or PostgreSQL, every query of it, the change
//! feed that tells the caches what changed, and the keyring that seals secrets at rest.
//!
//! The modules of the foundation are re-exported here, so that a path reads `crate::clock`,
//! `crate::error` in this crate as in every crate above it.

pub use tenantry_foundation::{
    client, clock, config, error, metrics, net, roles, telemetry, words,
};

pub mod secrets;
pub mod store;
