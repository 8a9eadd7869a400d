//! Builds the plugins workspace (`plugins/`) as part of the normal build, so that the plugin host
//! can embed the built-in plugins and the tests can load the test plugins.
//!
//! The plugins are built in a few `cargo build` runs, each of several packages at once (so that
//! cargo builds them in parallel): one run per world of the guest SDK, since cargo unifies a
//! package's features across the packages of one run, and the SDK must be compiled with each
//! plugin's one world. Plugins that do not use the SDK go with any run.
//!
//! The built-in plugins of the pure worlds (the template renderer and the tier quota policy) are
//! built lean: for `wasm32-unknown-unknown`, then made components here with `wit-component`.
//! Without WASI, a component is one core instance (a WASI build is three, and imports twenty
//! functions it never calls), and the SDK's arena allocator starts in the initial memory, so a
//! call never grows it; together that is most of what instantiating one costs, and a pure
//! plugin is instantiated on every call. Every other plugin is built for `wasm32-wasip2`, as a
//! plugin author builds theirs. All components are gathered in one directory, exported to the
//! crate as `BUILT_PLUGINS_WASM_DIR`.
//!
//! rustup installs the targets named in `rust-toolchain.toml` only when it installs the toolchain
//! itself; a machine that already has the pinned toolchain without the wasm targets would fail
//! here with "can't find crate for `core`". So the build adds the targets to the toolchain it is
//! being built with, through rustup, before building the plugins, and says what to do where
//! rustup is not there.

use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";
const LEAN_TARGET: &str = "wasm32-unknown-unknown";

/// The pure-world plugins built lean (see above), grouped by SDK world: the built-ins, and the
/// `shout-renderer` test plugin with the renderer.
const LEAN_PLUGINS: &[&[&str]] = &[&["template-renderer", "shout-renderer"], &["tier-quota"]];

/// Plugins built for WASI, by SDK world: the other built-ins, then the test plugins. The last
/// three use wit-bindgen alone, so they go with the provisioners.
const PLUGINS: &[&[&str]] = &[
    &[
        "superset",
        "airflow",
        "crm",
        "postgres",
        "probe",
        "recorder",
        "renderer-old-wit",
        "provisioner-v1",
        "provisioner-v2",
    ],
    &["flat-quota"],
];

fn main() {
    // The repository's root: this crate is `crates/plugin-host`.
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest
        .ancestors()
        .nth(2)
        .expect("the crate sits two levels below the repository's root")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // <target>/<profile>/build/<package>-<hash>/out → <target>
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let wasm_target_dir = target_dir.join("wasm-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target(WASM_TARGET);

    ensure_target(LEAN_TARGET);
    let components = wasm_target_dir.join("components");
    std::fs::create_dir_all(&components).expect("creating the components directory");
    // Builds `plugins` (one SDK world) for `target`; the built file of each, and where its
    // component goes.
    let build = |target: &str, plugins: &[&str]| -> Vec<(String, PathBuf, PathBuf)> {
        let mut command = Command::new(&cargo);
        command
            .current_dir(root.join("plugins"))
            .args(["build", "--release", "--target", target])
            .arg("--target-dir")
            .arg(&wasm_target_dir)
            // The outer build's settings are not the plugins' settings.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CARGO_BUILD_RUSTFLAGS");
        for plugin in plugins {
            command.args(["--package", plugin]);
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("running {cargo} for plugins {plugins:?}: {e}"));
        assert!(
            status.success(),
            "building plugins {plugins:?} for {target} failed (is the target installed? `rustup target add {target}`)"
        );
        plugins
            .iter()
            .map(|plugin| {
                let file = format!("{}.wasm", plugin.replace('-', "_"));
                (
                    plugin.to_string(),
                    wasm_target_dir.join(target).join("release").join(&file),
                    components.join(file),
                )
            })
            .collect()
    };
    for group in LEAN_PLUGINS {
        for (plugin, module, component) in build(LEAN_TARGET, group) {
            let bytes = std::fs::read(&module).expect("reading the built module");
            let encoded = wit_component::ComponentEncoder::default()
                .module(&bytes)
                .and_then(|encoder| encoder.validate(true).encode())
                .unwrap_or_else(|e| panic!("making plugin {plugin} a component: {e:#}"));
            write_if_changed(&component, &encoded);
        }
    }
    for group in PLUGINS {
        for (_, built, component) in build(WASM_TARGET, group) {
            write_if_changed(
                &component,
                &std::fs::read(&built).expect("reading the built component"),
            );
        }
    }
    println!(
        "cargo:rustc-env=BUILT_PLUGINS_WASM_DIR={}",
        components.display()
    );
    write_sdk_files(&root, &out_dir);
    println!("cargo:rerun-if-changed={}", root.join("plugins").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed=build.rs");
}

/// `$OUT_DIR/sdk_files.rs`: the guest SDK's sources, the WIT and the plugins' lock file, which
/// `tenantry plugin new` writes into the crate it makes (so that it builds anywhere).
fn write_sdk_files(root: &Path, out_dir: &Path) {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let list = |base: &Path, under: &str, ext: &str| -> String {
        let mut found = Vec::new();
        walk(&base.join(under), &mut found);
        found
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .map(|p| {
                let relative = p.strip_prefix(base).expect("under the base");
                format!(
                    "    ({:?}, include_str!({:?})),\n",
                    relative.to_string_lossy(),
                    p.to_string_lossy()
                )
            })
            .collect()
    };
    let sdk = root.join("plugins/sdk");
    let text = format!(
        "/// The guest SDK's sources, by path under its crate.\n\
         pub const SDK_SOURCES: &[(&str, &str)] = &[\n{}];\n\
         /// The WIT packages, by path under the repository.\n\
         pub const WIT_FILES: &[(&str, &str)] = &[\n{}];\n\
         /// The plugins' lock file (the versions the SDK is built and tested with).\n\
         pub const PLUGINS_LOCK: &str = include_str!({:?});\n",
        list(&sdk, "src", "rs"),
        list(root, "wit", "wit"),
        root.join("plugins/Cargo.lock").to_string_lossy()
    );
    write_if_changed(&out_dir.join("sdk_files.rs"), text.as_bytes());
}

/// Writes `bytes` to `path` unless it holds them already (an unchanged plugin keeps its file's
/// time, so what embeds it is not rebuilt).
fn write_if_changed(path: &Path, bytes: &[u8]) {
    if std::fs::read(path).ok().as_deref() != Some(bytes) {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Makes sure the compiler this build runs with has the standard library for `target`, adding
/// it through rustup when it is missing.
fn ensure_target(target: &str) {
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
            .join(target)
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
            "the Rust standard library for {target} is not installed in {} and this toolchain \
             is not managed by rustup; install the {target} target for this compiler (with \
             rustup: `rustup target add {target}`) and build again",
            sysroot.display()
        );
    };
    let status = Command::new(&rustup)
        .args(["target", "add", target, "--toolchain", &toolchain])
        .status();
    match status {
        Ok(status) if status.success() && installed(&sysroot) => println!(
            "cargo:warning=added the Rust target {target} to toolchain {toolchain} (the built-in plugins are built for it)"
        ),
        Ok(status) => panic!(
            "`{rustup} target add {target} --toolchain {toolchain}` failed ({status}); the \
             built-in plugins need that target: add it by hand and build again"
        ),
        Err(err) => panic!(
            "the Rust standard library for {target} is not installed in {} and rustup could \
             not be run ({err}); install rustup, or the {target} target for this compiler, \
             and build again",
            sysroot.display()
        ),
    }
}
