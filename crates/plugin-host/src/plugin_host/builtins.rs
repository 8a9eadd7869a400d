//! The plugins built into the server, compiled by `build.rs` — the backends for
//! `wasm32-wasip2`, the renderer and the quota policy for `wasm32-unknown-unknown` (made
//! components with `wit-component`) — and embedded in the binary. The database records them
//! like installed plugins (enabled flags, grants) but holds no bytes for them.

/// Where the build put every plugin component it built: the built-ins, and the test plugins the
/// tests load from here.
pub const BUILT_PLUGINS_WASM_DIR: &str = env!("BUILT_PLUGINS_WASM_DIR");

/// Name → component bytes.
pub const BUILTINS: &[(&str, &[u8])] = &[
    (
        "template-renderer",
        include_bytes!(concat!(
            env!("BUILT_PLUGINS_WASM_DIR"),
            "/template_renderer.wasm"
        )),
    ),
    (
        "tier-quota",
        include_bytes!(concat!(env!("BUILT_PLUGINS_WASM_DIR"), "/tier_quota.wasm")),
    ),
    (
        "superset",
        include_bytes!(concat!(env!("BUILT_PLUGINS_WASM_DIR"), "/superset.wasm")),
    ),
    (
        "airflow",
        include_bytes!(concat!(env!("BUILT_PLUGINS_WASM_DIR"), "/airflow.wasm")),
    ),
    (
        "crm",
        include_bytes!(concat!(env!("BUILT_PLUGINS_WASM_DIR"), "/crm.wasm")),
    ),
    (
        "postgres",
        include_bytes!(concat!(env!("BUILT_PLUGINS_WASM_DIR"), "/postgres.wasm")),
    ),
];

/// The bytes of the built-in plugin `name`.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
