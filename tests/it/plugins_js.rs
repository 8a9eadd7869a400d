//! A plugin in a second language: a quota policy in JavaScript, scaffolded by
//! `tenantry plugin new --lang js`, built with the pinned componentize-js (installed by
//! `scripts/install-test-deps` into tests/js-plugin, as a plugin author's `npm install` would),
//! installed, configured and chosen for a tenant — the server's decisions then follow it.

use crate::common;

use std::path::Path;
use std::process::Command;

use crate::common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn tenantry(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tenantry {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Scaffolds the JavaScript plugin `name` of `world` in `dir` and builds it; its component.
fn build(dir: &Path, name: &str, world: &str) -> Vec<u8> {
    build_edited(dir, name, world, |_| {})
}

/// Scaffolds the JavaScript plugin `name` of `world` in `dir`, lets `edit` change its directory,
/// and builds it; its component.
fn build_edited(dir: &Path, name: &str, world: &str, edit: impl FnOnce(&Path)) -> Vec<u8> {
    let crate_dir = dir.join(name);
    let created = tenantry(&[
        "plugin",
        "new",
        name,
        "--world",
        world,
        "--lang",
        "js",
        "--dir",
        crate_dir.to_str().unwrap(),
    ]);
    assert!(
        created.contains("npm install && npm run build"),
        "{created}"
    );
    assert!(crate_dir.join("wit/v0.2.0/worlds.wit").is_file());
    // The pinned toolchain, installed once for the suite (what `npm install` would fetch).
    let toolchain = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js-plugin/node_modules");
    assert!(
        toolchain.join("@bytecodealliance/componentize-js").is_dir(),
        "run scripts/install-test-deps"
    );
    std::os::unix::fs::symlink(&toolchain, crate_dir.join("node_modules")).unwrap();
    edit(&crate_dir);
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(crate_dir.join("package.json")).unwrap())
            .unwrap();
    assert_eq!(
        package["devDependencies"]["@bytecodealliance/componentize-js"],
        tenantry::plugin_host::scaffold::COMPONENTIZE_JS_VERSION,
        "the scaffold pins the version the tests build with"
    );
    assert_eq!(
        package["devDependencies"]["@bytecodealliance/preview2-shim"],
        tenantry::plugin_host::scaffold::PREVIEW2_SHIM_VERSION,
    );
    let built = Command::new("npm")
        .args(["run", "build"])
        .current_dir(&crate_dir)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "npm run build: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = crate_dir.join(format!("{name}.wasm"));
    let checked = tenantry(&["plugin", "check", wasm.to_str().unwrap()]);
    // The name and version are package.json's: the manifest does not repeat them.
    assert!(
        checked.contains(&format!("ok: {name} 0.1.0 — world {world}, WIT 0.2.0")),
        "{checked}"
    );
    std::fs::read(wasm).unwrap()
}

async fn quota(app: &TestApp, slug: &str, metric: &str) -> Value {
    let (status, quotas) = app.get(&format!("/api/v1/tenant/{slug}/quotas")).await;
    assert_eq!(status, StatusCode::OK, "{quotas}");
    quotas
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} in {quotas}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_quota_policy_decides_for_the_tenant_it_is_chosen_for() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = build(dir.path(), "js-quota", "quota-policy");

    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .request(Method::POST, "/api/v1/plugin")
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .unwrap();
    let (status, installed) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{installed}");
    assert_eq!(installed["world"], "quota-policy");
    assert_eq!(installed["wit_version"], "0.2.0");
    assert_eq!(
        installed["description"], "A tenantry quota-policy plugin in JavaScript.",
        "package.json's description: {installed}"
    );
    assert_eq!(
        installed["enabled"], true,
        "a third-party plugin is enabled at install"
    );

    app.create_tenant("acme").await;
    app.create_tenant("globex").await;
    assert_eq!(
        quota(&app, "acme", "agents").await["limit"],
        10,
        "tier-quota"
    );
    let (status, chosen) = app
        .call(
            Method::PUT,
            "/api/v1/tenant/acme/quota-policy",
            Some(json!({ "policy": "js-quota" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{chosen}");
    // The policy's default limit (its configuration schema says 5).
    assert_eq!(quota(&app, "acme", "agents").await["limit"], 5);
    assert_eq!(quota(&app, "globex", "agents").await["limit"], 10);

    // Configured, the decisions follow: a limit of 2, blocked at 2.
    let (status, body) = app
        .put("/api/v1/plugin/js-quota/config", json!({ "limit": 2 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/tenant/acme/usage",
            json!({ "id": "a1", "metric": "agents", "value": 1 }),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let agents = quota(&app, "acme", "agents").await;
    assert_eq!(agents["limit"], 2, "{agents}");
    assert_eq!(agents["severity"], "ok", "{agents}");
    let (status, _) = app
        .post(
            "/api/v1/tenant/acme/usage",
            json!({ "id": "a2", "metric": "agents", "value": 2 }),
        )
        .await;
    assert!(status.is_success());
    let agents = quota(&app, "acme", "agents").await;
    assert_eq!(agents["severity"], "blocked", "{agents}");
    // One more agent is not admitted at the limit the JavaScript policy set.
    let (status, answer) = app
        .post(
            "/api/v1/tenant/acme/quotas/check",
            json!({ "metric": "agents", "increment": 1 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["limit"], 2, "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_renderer_renders_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    // A provisioner, or the Rust SDK, is not for JavaScript: refused, nothing written.
    for extra in [
        &["--world", "provisioner"][..],
        &["--world", "renderer", "--sdk", "."],
    ] {
        let target = dir.path().join("refused");
        let out = Command::new(env!("CARGO_BIN_EXE_tenantry"))
            .args(["plugin", "new", "refused", "--lang", "js", "--dir"])
            .arg(&target)
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("write a provisioner in Rust")
                || err.contains("a JavaScript plugin takes none"),
            "{err}"
        );
        assert!(!target.exists(), "nothing written");
    }
    let wasm = build(dir.path(), "js-render", "renderer");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let actor = tenantry::audit::Actor::system();
    tenantry::plugin_registry::install(&app.ctx, &actor, wasm)
        .await
        .expect("installs");
    let template = tenantry::plugin_host::Template {
        name: "greeting".into(),
        body: "hello {who}, from {where}".into(),
        placeholders: vec!["who".into(), "where".into()],
        format: "text".into(),
    };
    let rendered = app
        .ctx
        .plugins
        .render(
            "js-render",
            template.clone(),
            vec![("who".into(), "acme".into()), ("where".into(), "js".into())],
        )
        .await
        .unwrap();
    assert_eq!(rendered.unwrap(), "hello acme, from js");
    let missing = app
        .ctx
        .plugins
        .render("js-render", template, vec![("who".into(), "acme".into())])
        .await
        .unwrap();
    match missing {
        Err(tenantry::plugin_host::RenderError::Missing(names)) => assert_eq!(names, ["where"]),
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

/// A JavaScript policy whose manifest says its calls share nothing (as the scaffold's does) is
/// called in an instance kept from an earlier call, so its engine starts once rather than per
/// call; a global counter, which such a plugin must not keep, shows it. Without the flag every
/// call starts from a fresh instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_whose_calls_share_nothing_runs_in_a_kept_instance() {
    const COUNTING: &str = r#"import { write } from 'tenantry:plugin/log@0.2.0';
let calls = 0;
export const policy = {
  evaluate(tenant, usage) {
    calls += 1;
    write('info', `call ${calls} for ${tenant.slug}`);
    return { metrics: [], allowed: true, atRisk: false };
  },
};
"#;
    let dir = tempfile::tempdir().unwrap();
    let counting = |crate_dir: &Path| {
        std::fs::write(crate_dir.join("src/plugin.js"), COUNTING).unwrap();
    };
    let kept = build_edited(dir.path(), "js-kept", "quota-policy", counting);
    let fresh = build_edited(dir.path(), "js-fresh", "quota-policy", |crate_dir| {
        counting(crate_dir);
        let manifest = crate_dir.join("tenantry-plugin.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.contains("reuse_instances = true"), "{text}");
        std::fs::write(&manifest, text.replace("reuse_instances = true", "")).unwrap();
    });
    let app = TestApp::spawn(Backend::Sqlite).await;
    let actor = tenantry::audit::Actor::system();
    for wasm in [kept, fresh] {
        tenantry::plugin_registry::install(&app.ctx, &actor, wasm)
            .await
            .expect("installs");
    }
    let lines = |plugin: &'static str| {
        let ctx = app.ctx.clone();
        async move {
            let mut seen = Vec::new();
            for slug in ["acme", "globex", "initech"] {
                let tenant = tenantry::plugin_host::PluginTenant {
                    id: format!("id-{slug}"),
                    slug: slug.into(),
                    name: slug.into(),
                    tier: tenantry::tenants::Tier::Free,
                    status: "active".into(),
                };
                let logged = ctx
                    .plugins
                    .evaluate_logged(plugin, &tenant, Vec::new())
                    .await;
                assert!(logged.result.unwrap().unwrap().allowed);
                seen.extend(logged.log.into_iter().map(|l| l.message));
            }
            seen
        }
    };
    assert_eq!(
        lines("js-kept").await,
        ["call 1 for acme", "call 2 for globex", "call 3 for initech"],
        "one instance, kept between calls, each call with its own tenant"
    );
    assert_eq!(
        lines("js-fresh").await,
        ["call 1 for acme", "call 1 for globex", "call 1 for initech"],
        "a fresh instance for every call"
    );
    app.stop().await;
}
