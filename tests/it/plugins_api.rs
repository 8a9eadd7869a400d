//! Managing plugins through the API and the CLI, and a plugin written from `plugin new`.

use crate::common;

use std::process::Command;

use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/{name}.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    ))
    .expect("test plugin built")
}

backend_tests!(
    install_grant_enable_and_disable_through_the_api_are_audited,
    the_platforms_own_plugins_cannot_be_disabled,
);

/// Every template is rendered by `template-renderer` and quotas default to `tier-quota`:
/// disabling either would break the platform, so it is refused and they stay enabled.
async fn the_platforms_own_plugins_cannot_be_disabled(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for name in ["template-renderer", "tier-quota"] {
        let (status, body) = app
            .post(&format!("/api/v1/plugin/{name}/disable"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "required_plugin");
        let (_, plugin) = app.get(&format!("/api/v1/plugin/{name}")).await;
        assert_eq!(plugin["enabled"], true, "{plugin}");
    }
    app.stop().await;
}

async fn install_grant_enable_and_disable_through_the_api_are_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (status, plugins) = app.get("/api/v1/plugin").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = plugins
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "airflow",
            "crm",
            "postgres",
            "superset",
            "template-renderer",
            "tier-quota"
        ],
        "the built-ins"
    );
    assert_eq!(plugins[4]["world"], "renderer");
    assert_eq!(plugins[4]["wit_version"], "0.2.0");
    assert_eq!(plugins[4]["builtin"], true);

    let response = app
        .request(reqwest::Method::POST, "/api/v1/plugin/check")
        .header("content-type", "application/wasm")
        .body(wasm("probe"))
        .send()
        .await
        .unwrap();
    let (status, checked) = common::into_json(response).await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert_eq!(
        checked["manifest"]["capabilities"]["secrets"],
        json!(["probe-token", "other-token"])
    );
    let (status, _) = app.get("/api/v1/plugin/probe").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "check installs nothing");

    let response = app
        .request(reqwest::Method::POST, "/api/v1/plugin")
        .header("content-type", "application/wasm")
        .body(wasm("probe"))
        .send()
        .await
        .unwrap();
    let (status, installed) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{installed}");
    assert_eq!(
        installed["requested"]["hosts"],
        json!(["127.0.0.1", "localhost"])
    );
    assert_eq!(installed["granted"]["hosts"], json!([]));
    assert_eq!(installed["deadline_ms"], 30000);

    let (status, body) = app
        .post(
            "/api/v1/plugin/probe/grants",
            json!({ "kind": "host", "name": "example.com" }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "not requested: {body}"
    );
    let (status, granted) = app
        .post(
            "/api/v1/plugin/probe/grants",
            json!({ "kind": "secret", "name": "probe-token", "value": "tok-123456" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["effective"]["secrets"], json!(["probe-token"]));
    assert!(
        !granted.to_string().contains("tok-123456"),
        "a granted secret is never shown"
    );
    let (status, _) = app
        .post(
            "/api/v1/plugin/probe/grants",
            json!({ "kind": "host", "name": "127.0.0.1" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, revoked) = app
        .delete("/api/v1/plugin/probe/grants/host/127.0.0.1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revoked["granted"]["hosts"], json!([]));

    let (status, enabled) = app
        .post(
            "/api/v1/plugin/probe/enable",
            json!({ "deadline_ms": 2500 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(enabled["deadline_ms"], 2500);
    // Reading a plugin gives the deadline in force, as setting it did: its own, or its world's.
    let (_, read) = app.get("/api/v1/plugin/probe").await;
    assert_eq!(read["deadline_ms"], 2500, "{read}");
    let (_, policy) = app.get("/api/v1/plugin/tier-quota").await;
    assert_eq!(policy["deadline_ms"], 100, "{policy}");
    let (status, disabled) = app.post("/api/v1/plugin/probe/disable", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disabled["enabled"], false);
    let refused = app
        .ctx
        .plugins
        .describe("probe")
        .await
        .expect_err("a disabled plugin is not called");
    assert!(refused.to_string().contains("disabled"), "{refused}");

    let response = app
        .request(reqwest::Method::POST, "/api/v1/plugin")
        .header("content-type", "application/wasm")
        .body(b"not wasm".to_vec())
        .send()
        .await
        .unwrap();
    let (status, body) = common::into_json(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not WebAssembly"),
        "{body}"
    );

    let (_, audit) = app.get("/api/v1/audit?action=plugin.").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .take(6)
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "plugin.disable",
            "plugin.enable",
            "plugin.revoke",
            "plugin.grant",
            "plugin.grant",
            "plugin.install"
        ]
    );
    assert!(!audit.to_string().contains("tok-123456"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_then_build_then_install_yields_a_plugin_the_server_calls() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("shout");
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["plugin", "new", "shout", "--world", "renderer", "--dir"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("cargo build --release --target wasm32-wasip2")
    );
    // The crate carries the SDK and the WIT: nothing points back at this machine's source
    // tree, so it builds after being moved anywhere.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(r#"path = "vendor/tenantry-plugin-sdk""#),
        "{manifest}"
    );
    assert!(!manifest.contains(env!("CARGO_MANIFEST_DIR")), "{manifest}");
    assert!(crate_dir.join("wit/v0.2.0/worlds.wit").is_file());
    let moved = dir.path().join("elsewhere/shout");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&crate_dir, &moved).unwrap();
    let crate_dir = moved;
    // The name, version and description are written once, in Cargo.toml: the manifest takes
    // them from the crate.
    let plugin_manifest = std::fs::read_to_string(crate_dir.join("tenantry-plugin.toml")).unwrap();
    assert!(
        !plugin_manifest.contains("\nversion =") && !plugin_manifest.contains("\nname ="),
        "{plugin_manifest}"
    );
    let cargo = std::fs::read_to_string(crate_dir.join("Cargo.toml"))
        .unwrap()
        .replace(r#"version = "0.1.0""#, r#"version = "0.3.1""#)
        .replace(
            r#"description = "A tenantry renderer plugin.""#,
            r#"description = "Shouts its placeholders.""#,
        );
    std::fs::write(crate_dir.join("Cargo.toml"), cargo).unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["plugin", "check"])
        .arg(crate_dir.join("tenantry-plugin.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("ok: shout 0.3.1 — world renderer"),
        "the manifest alone, with its crate beside it: {text}{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The same target directory as build.rs: the SDK and wit-bindgen are compiled already.
    let target_dir = std::path::Path::new(tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR)
        .parent()
        .unwrap()
        .to_path_buf();
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the scaffold builds as is: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm_path = target_dir.join("wasm32-wasip2/release/shout.wasm");

    let check = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["plugin", "check"])
        .arg(&wasm_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("ok: shout 0.3.1 — world renderer, WIT 0.2.0"),
        "{text}"
    );

    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .request(reqwest::Method::POST, "/api/v1/plugin")
        .header("content-type", "application/wasm")
        .body(std::fs::read(&wasm_path).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let installed = app.ctx.plugins.manifest("shout").await.unwrap();
    assert_eq!(
        (installed.version.as_str(), installed.description.as_str()),
        ("0.3.1", "Shouts its placeholders."),
        "the crate's own"
    );
    let rendered = app
        .ctx
        .plugins
        .render(
            "shout",
            tenantry::plugin_host::Template {
                name: "greeting".into(),
                body: "hello {who}".into(),
                placeholders: vec!["who".into()],
                format: "text".into(),
            },
            vec![("who".into(), "world".into())],
        )
        .await
        .expect("called")
        .expect("rendered");
    assert_eq!(rendered, "hello world");
    app.stop().await;
}

/// The scaffold's quota policy, built as `plugin new` says (a default `wasm32-wasip2` build, so
/// it imports WASI) with a `println!` added: its calls answer, and what it prints reaches the
/// call's log, never the server's stdout or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaffolds_quota_policy_with_a_println_answers_and_its_output_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("limits");
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args([
            "plugin",
            "new",
            "limits",
            "--world",
            "quota-policy",
            "--dir",
        ])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited = source.replace(
        "fn evaluate(_tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError> {",
        "fn evaluate(tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError> {\n        println!(\"evaluating {}\", tenant.slug);",
    );
    assert_ne!(edited, source, "the scaffold's evaluate was found");
    std::fs::write(&lib, edited).unwrap();
    let target_dir = std::path::Path::new(tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR)
        .parent()
        .unwrap()
        .to_path_buf();
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = std::fs::read(target_dir.join("wasm32-wasip2/release/limits.wasm")).unwrap();

    let app = TestApp::spawn(Backend::Sqlite).await;
    tenantry::plugin_registry::install(&app.ctx, &tenantry::audit::Actor::system(), wasm)
        .await
        .expect("installs");
    let tenant = tenantry::plugin_host::PluginTenant {
        id: "id-acme".into(),
        slug: "acme".into(),
        name: "Acme".into(),
        tier: tenantry::tenants::Tier::Free,
        status: "active".into(),
    };
    let usage = vec![tenantry::plugin_host::Usage {
        metric: "users".into(),
        used: 3,
        override_limit: Some(10),
    }];
    for _ in 0..2 {
        let logged = app
            .ctx
            .plugins
            .evaluate_logged("limits", &tenant, usage.clone())
            .await;
        let decision = logged.result.expect("answered").expect("decided");
        assert!(decision.allowed);
        assert_eq!(decision.metrics[0].percent, 30.0);
        assert!(
            logged
                .log
                .iter()
                .any(|l| l.level == "stdout" && l.message == "evaluating acme"),
            "{:?}",
            logged.log
        );
    }
    app.stop().await;
}
