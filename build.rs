//! Builds the plugins workspace (`plugins/`) for `wasm32-wasip2` as part of the normal build, so
//! that the server can embed its built-in plugins and the tests can load the test plugins.
//!
//! Each plugin is built by its own `cargo build -p` so that the SDK is compiled with that
//! plugin's one world (cargo would otherwise unify the SDK's world features across plugins).
//! The output directory is exported to the crate as `BUILT_PLUGINS_WASM_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins built with the server: the built-ins, then the test plugins.
const PLUGINS: &[&str] = &[
    "template-renderer",
    "tier-quota",
    "superset",
    "airflow",
    "crm",
    "probe",
    "renderer-old-wit",
    "recorder",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // <target>/<profile>/build/<package>-<hash>/out → <target>
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let wasm_target_dir = target_dir.join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    for plugin in PLUGINS {
        let status = Command::new(&cargo)
            .current_dir(root.join("plugins"))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--package",
                plugin,
            ])
            .arg("--target-dir")
            .arg(&wasm_target_dir)
            // The outer build's settings are not the plugins' settings.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .status()
            .unwrap_or_else(|e| panic!("running {cargo} for plugin {plugin}: {e}"));
        assert!(
            status.success(),
            "building plugin {plugin} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    let wasm_dir = wasm_target_dir.join("wasm32-wasip2").join("release");
    println!(
        "cargo:rustc-env=BUILT_PLUGINS_WASM_DIR={}",
        wasm_dir.display()
    );
    println!("cargo:rerun-if-changed=plugins");
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-changed=build.rs");
}
