//! WIT versions side by side: a plugin built against `tenantry:plugin@0.2.0` (configuration, a
//! typed compensation, `measure`, `export-tenant`, `import-tenant`, `sql`) and plugins built
//! against the frozen 0.1.0 (from `wit/v0.1.0`, with wit-bindgen alone, as a third party's
//! plugin from before 0.2.0 is) load and run in one host, beside the built-ins on 0.2.0.

use crate::common;

use crate::common::{Backend, TestApp};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::plugin_host::{BundlePart, Outcome, PluginError, Step};
use tenantry::plugin_registry as registry;

fn wasm(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_plugin_and_0_1_plugins_run_side_by_side() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let actor = Actor::system();
    let v2 = registry::install(&app.ctx, &actor, wasm("provisioner_v2"))
        .await
        .expect("a 0.2.0 plugin installs");
    assert_eq!(v2.wit_version, "0.2.0");
    let v1 = registry::install(&app.ctx, &actor, wasm("provisioner_v1"))
        .await
        .expect("a 0.1.0 plugin installs");
    assert_eq!(v1.wit_version, "0.1.0");
    let host = &app.ctx.plugins;
    let tenant = common::plugin_acme();

    // Configuration: the schema's defaults, as JSON text; a key without a default is absent.
    let steps = host
        .plan("provisioner-v2", &tenant, "{}".into())
        .await
        .unwrap()
        .unwrap();
    let input: Value = serde_json::from_str(&steps[0].input).unwrap();
    assert_eq!(input["config"], json!([["seats", "3"]]), "{input}");
    let applied = host
        .apply("provisioner-v2", &tenant, steps[0].clone(), "k".into())
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(applied.output, r#"{"seats":3}"#);

    // A typed compensation.
    let undone = host
        .compensate(
            "provisioner-v2",
            &tenant,
            steps[0].clone(),
            applied.clone(),
            "k".into(),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(
        undone.manual_follow_up.as_deref(),
        Some("return the seat licences of acme by hand")
    );

    // `measure`, and `sql` on a database that was not granted.
    let measured = host.measure("provisioner-v2", &tenant, Vec::new()).await;
    let figures = measured.result.unwrap().unwrap();
    assert_eq!(figures.len(), 5);
    assert_eq!(
        (figures[0].metric.as_str(), figures[0].value),
        ("users", 3.0)
    );
    assert!(
        measured.log.iter().any(|l| l.message.contains(
            "NotGranted(\"no database `warehouse` is granted to plugin `provisioner-v2`\")"
        )),
        "{:?}",
        measured.log
    );

    // `export-tenant` and `import-tenant`.
    let part = host
        .export_tenant("provisioner-v2", &tenant, vec![(steps[0].clone(), applied)])
        .await
        .result
        .unwrap()
        .unwrap()
        .expect("a part");
    assert_eq!(part.media_type, "application/json");
    assert_eq!(part.instance_specific, vec!["/tenant".to_owned()]);
    let restored = host
        .import_tenant("provisioner-v2", &tenant, part)
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&restored.output).unwrap()["restored"]["seats"],
        3
    );

    // The 0.1.0 plugin: its compensation's follow-up comes from its `manual follow-up:` lines.
    let step = Step {
        id: "db".into(),
        description: "create resource acme-db".into(),
        input: json!({ "name": "acme-db", "follow_up_on_undo": true }).to_string(),
    };
    let undone = host
        .compensate(
            "provisioner-v1",
            &tenant,
            step.clone(),
            Outcome {
                output: "{}".into(),
                manual_follow_up: None,
            },
            "k".into(),
        )
        .await
        .result
        .unwrap()
        .unwrap();
    assert_eq!(
        undone.manual_follow_up.as_deref(),
        Some("archive the audit trail of acme-db by hand")
    );
    // It measures nothing, and cannot export: said, never taken for "nothing to export".
    let measured = host
        .measure("provisioner-v1", &tenant, Vec::new())
        .await
        .result
        .unwrap()
        .unwrap();
    assert!(measured.is_empty());
    match host
        .export_tenant("provisioner-v1", &tenant, Vec::new())
        .await
        .result
        .unwrap()
    {
        Err(PluginError::Permanent(message)) => {
            assert!(message.contains("WIT 0.1.0"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match host
        .import_tenant(
            "provisioner-v1",
            &tenant,
            BundlePart {
                media_type: "application/json".into(),
                data: b"{}".to_vec(),
                instance_specific: Vec::new(),
            },
        )
        .await
        .result
        .unwrap()
    {
        Err(PluginError::Permanent(message)) => {
            assert!(message.contains("WIT 0.1.0"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

/// `plugin check` names the version and what a 0.1.0 plugin lacks.
#[test]
fn plugin_check_names_what_a_0_1_plugin_lacks() {
    let check = |name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["plugin", "check"])
            .arg(format!(
                "{}/{name}.wasm",
                tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let old = check("provisioner_v1");
    assert!(old.contains("WIT 0.1.0"), "{old}");
    assert!(
        old.contains("built against WIT 0.1.0, which lacks (rebuild against 0.2.0 for them)"),
        "{old}"
    );
    assert!(old.contains("`measure` (usage for quotas)"), "{old}");
    let new = check("provisioner_v2");
    assert!(new.contains("world provisioner, WIT 0.2.0"), "{new}");
    assert!(!new.contains("lacks"), "{new}");
    // The probe reaches for sockets and files: what it will not get is named.
    let probe = check("probe");
    assert!(
        probe.contains("imports what it will not get")
            && probe.contains("\n  - wasi:sockets/")
            && probe.contains("\n  - wasi:filesystem/"),
        "{probe}"
    );
    assert!(!new.contains("will not get"), "{new}");
}

/// `plugin call --file` runs a component straight from its file, with grants and configuration
/// given on the command line: no install, no configured database, no server, and nothing left
/// behind.
#[test]
fn plugin_call_runs_a_component_from_its_file_with_nothing_installed() {
    let home = tempfile::tempdir().unwrap();
    let wasm = format!(
        "{}/provisioner_v2.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("TMPDIR", home.path())
            .output()
            .unwrap()
    };
    let out = run(&[
        "--output", "json", "plugin", "call", "--file", &wasm, "--set", "seats=9", "measure",
        "--tenant", "acme",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let figures: serde_json::Value = serde_json::from_str(&stdout).expect(&stdout);
    assert_eq!(
        figures["users"], 9.0,
        "configured from the command line: {figures}"
    );
    // A field the plugin does not take is refused, naming it.
    let out = run(&[
        "plugin",
        "call",
        "--file",
        &wasm,
        "--set",
        "colour=red",
        "describe",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--set colour: plugin `provisioner-v2` has no such field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The scratch installations are gone.
    let left: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tenantry-plugin-call-")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `plugin check` takes a manifest alone, before any build (a JavaScript build takes long): a
/// string field named for a secret is refused there, naming it; a limit named for tokens is not.
#[test]
fn plugin_check_refuses_a_bad_manifest_before_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("tenantry-plugin.toml");
        std::fs::write(&path, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["plugin", "check"])
            .arg(&path)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let head = "name = \"llm-quota\"\nversion = \"0.1.0\"\nworld = \"quota-policy\"\nwit_version = \"0.2.0\"\n";
    let good = check(&format!(
        "{head}\n[config_schema]\ntype = \"object\"\n[config_schema.properties.tokens]\ntype = \"integer\"\n"
    ));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("ok: llm-quota 0.1.0"));
    let bad = check(&format!(
        "{head}\n[config_schema]\ntype = \"object\"\n[config_schema.properties.api_token]\ntype = \"string\"\n"
    ));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("config_schema.properties.api_token: a secret is not configuration"),
        "{stderr}"
    );
}
