//! tenantry's plugin host: the only crate that knows wasmtime. It loads, checks and calls the
//! plugins (`plugin_host`), as the store holds them.
//!
//! The modules of the crates below are re-exported here, so that a path reads `crate::store`,
//! `crate::error` in this crate as in the server.

pub use tenantry_store::{
    client, clock, config, error, metrics, net, roles, secrets, store, telemetry, transaction,
    with_conn, words,
};

pub mod plugin_host;
