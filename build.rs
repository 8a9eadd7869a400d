//! Builds the plugins workspace (`plugins/`) for `wasm32-wasip2` as part of the normal build, so
//! that the server can embed its built-in plugins and the tests can load the test plugins.
//!
//! Each plugin is built by its own `cargo build -p` so that the SDK is compiled with that
//! plugin's one world (cargo would otherwise unify the SDK's world features across plugins).
//! The output directory is exported to the crate as `BUILT_PLUGINS_WASM_DIR`.
//!
//! rustup installs the targets named in `rust-toolchain.toml` only when it installs the toolchain
//! itself; a machine that already has the pinned toolchain without `wasm32-wasip2` would fail
//! here with "can't find crate for `core`". So the build adds the target to the toolchain it is
//! being built with, through rustup, before building the plugins, and says what to do where
//! rustup is not there.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

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
    "flat-quota",
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
    ensure_wasm_target();

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
    let wasm_dir = wasm_target_dir.join(WASM_TARGET).join("release");
    println!(
        "cargo:rustc-env=BUILT_PLUGINS_WASM_DIR={}",
        wasm_dir.display()
    );
    println!("cargo:rerun-if-changed=plugins");
    println!("cargo:rerun-if-changed=wit");
    // The migrations are embedded (`embed_migrations!`), which does not tell Cargo to look at
    // them: a migration added later would otherwise not reach an incremental build.
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=build.rs");
}

/// Makes sure the compiler this build runs with has the standard library for [`WASM_TARGET`],
/// adding it through rustup when it is missing.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .unwrap_or_else(|| panic!("`{rustc} --print sysroot` failed"));
    let installed = |sysroot: &Path| {
        sysroot
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .join("lib")
            .is_dir()
    };
    if installed(&sysroot) {
        return;
    }
    // The toolchain is the sysroot's directory under rustup's `toolchains/` (a pinned toolchain
    // that is a link to another one resolves to the real directory, which is what rustup must
    // change).
    let toolchain = std::fs::canonicalize(&sysroot)
        .ok()
        .filter(|path| path.parent().and_then(Path::file_name) == Some("toolchains".as_ref()))
        .and_then(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .or_else(|| std::env::var("RUSTUP_TOOLCHAIN").ok());
    let rustup = std::env::var("RUSTUP").unwrap_or_else(|_| "rustup".into());
    let Some(toolchain) = toolchain else {
        panic!(
            "the Rust standard library for {WASM_TARGET} is not installed in {} and this toolchain \
             is not managed by rustup; install the {WASM_TARGET} target for this compiler (with \
             rustup: `rustup target add {WASM_TARGET}`) and build again",
            sysroot.display()
        );
    };
    let status = Command::new(&rustup)
        .args(["target", "add", WASM_TARGET, "--toolchain", &toolchain])
        .status();
    match status {
        Ok(status) if status.success() && installed(&sysroot) => println!(
            "cargo:warning=added the Rust target {WASM_TARGET} to toolchain {toolchain} (the built-in plugins are built for it)"
        ),
        Ok(status) => panic!(
            "`{rustup} target add {WASM_TARGET} --toolchain {toolchain}` failed ({status}); the \
             built-in plugins need that target: add it by hand and build again"
        ),
        Err(err) => panic!(
            "the Rust standard library for {WASM_TARGET} is not installed in {} and rustup could \
             not be run ({err}); install rustup, or the {WASM_TARGET} target for this compiler, \
             and build again",
            sysroot.display()
        ),
    }
}
