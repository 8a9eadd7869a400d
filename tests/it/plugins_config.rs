//! A plugin's configuration: declared by its manifest, set by the operator through the API and
//! the CLI, checked against each field, and read by the plugin through `config` (WIT 0.2.0).

use crate::common;

use crate::common::cli::Cli;
use crate::common::{Backend, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};

backend_tests!(
    configuration_is_set_through_the_api_checked_per_field_and_read_by_the_plugin,
    configuration_is_set_from_the_cli,
);

/// The configuration the plugin sees, from the input of the step it plans.
async fn seen_by_the_plugin(app: &TestApp) -> Value {
    let steps = app
        .ctx
        .plugins
        .plan("provisioner-v2", &common::plugin_acme(), "{}".into())
        .await
        .unwrap()
        .unwrap();
    let input: Value = serde_json::from_str(&steps[0].input).unwrap();
    input["config"].clone()
}

async fn configuration_is_set_through_the_api_checked_per_field_and_read_by_the_plugin(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    app.install_test_plugin("provisioner_v2").await;
    let (status, plugin) = app.get("/api/v1/plugin/provisioner-v2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        plugin["config"],
        json!({ "seats": 3 }),
        "the default: {plugin}"
    );
    assert_eq!(plugin["config_set"], json!([]));
    assert_eq!(plugin["config_fields"][1]["name"], "seats");
    assert_eq!(plugin["config_fields"][1]["type"], "integer");
    assert_eq!(
        plugin["config_fields"][1]["description"],
        "Seats each tenant gets."
    );
    assert_eq!(seen_by_the_plugin(&app).await, json!([["seats", "3"]]));

    // Refusals name the field and the rule, and change nothing.
    let (status, body) = app
        .put(
            "/api/v1/plugin/provisioner-v2/config",
            json!({ "seats": "many", "colour": "red" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let errors = body["error"]["details"]["fields"]
        .as_array()
        .expect("field errors");
    let named: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(named, [("colour", "known"), ("seats", "type")], "{body}");
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("(plan, seats, unreachable)"),
        "{body}"
    );
    let (_, unchanged) = app.get("/api/v1/plugin/provisioner-v2").await;
    assert_eq!(unchanged["config"], json!({ "seats": 3 }));

    // Set: the plugin reads it at its next call, through the change feed.
    let (status, configured) = app
        .put(
            "/api/v1/plugin/provisioner-v2/config",
            json!({ "seats": 5, "plan": "gold" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{configured}");
    assert_eq!(configured["config"], json!({ "seats": 5, "plan": "gold" }));
    assert_eq!(configured["config_set"], json!(["plan", "seats"]));
    assert_eq!(
        seen_by_the_plugin(&app).await,
        json!([["plan", "\"gold\""], ["seats", "5"]])
    );
    // A field left out goes back to its default.
    let (_, reset) = app
        .put(
            "/api/v1/plugin/provisioner-v2/config",
            json!({ "plan": "gold" }),
        )
        .await;
    assert_eq!(reset["config"], json!({ "seats": 3, "plan": "gold" }));

    // Audited with the values.
    let (_, audit) = app.get("/api/v1/audit?action=plugin.configure").await;
    let records = audit["items"].as_array().expect("audit items");
    assert_eq!(records.len(), 2, "two settings, no refusal: {audit}");
    assert!(audit.to_string().contains("gold"), "{audit}");

    // A plugin without configuration takes none.
    let (status, body) = app
        .put("/api/v1/plugin/tier-quota/config", json!({ "x": 1 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.to_string()
            .contains("the plugin takes no configuration"),
        "{body}"
    );
    app.stop().await;
}

async fn configuration_is_set_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    let wasm = format!(
        "{}/provisioner_v2.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &wasm]).await;
    let shown = cli
        .ok(&[
            "plugin",
            "configure",
            "provisioner-v2",
            "--set",
            "seats=7",
            "--set",
            "plan=silver",
        ])
        .await;
    assert!(shown.contains("seats = 7\n"), "{shown}");
    assert!(shown.contains("plan = \"silver\""), "{shown}");
    let unset = cli
        .json(&["plugin", "configure", "provisioner-v2", "--unset", "seats"])
        .await;
    assert_eq!(unset["config"], json!({ "seats": 3, "plan": "silver" }));
    let refused = cli
        .run(&[
            "plugin",
            "configure",
            "provisioner-v2",
            "--set",
            "seats=lots",
        ])
        .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("--set seats: must be an integer"),
        "{}",
        refused.stderr
    );
    let unknown = cli
        .run(&[
            "plugin",
            "configure",
            "provisioner-v2",
            "--set",
            "colour=red",
        ])
        .await;
    assert!(
        unknown
            .stderr
            .contains("has no such field (plan, seats, unreachable)"),
        "{}",
        unknown.stderr
    );
    let file = cli.file("config.json", r#"{"seats": 9}"#);
    let replaced = cli
        .json(&[
            "plugin",
            "configure",
            "provisioner-v2",
            "-f",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(replaced["config"], json!({ "seats": 9 }));
    let inspected = cli.ok(&["plugin", "inspect", "provisioner-v2"]).await;
    assert!(inspected.contains("seats = 9"), "{inspected}");
    assert!(inspected.contains("plan = (not set)"), "{inspected}");
    // A database grant shows in the listing and the inspection (by alias, never its URL).
    let url = cli.file(
        "warehouse.url",
        "postgresql://reader:never-shown@db.example/warehouse",
    );
    cli.ok(&[
        "plugin",
        "grant",
        "provisioner-v2",
        "--database",
        "warehouse",
        "--url-file",
        url.to_str().unwrap(),
    ])
    .await;
    let listed = cli.ok(&["plugin", "list"]).await;
    let row = listed
        .lines()
        .find(|l| l.starts_with("provisioner-v2"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("database warehouse"), "{listed}");
    let inspected = cli.ok(&["plugin", "inspect", "provisioner-v2"]).await;
    assert!(
        inspected.contains("databases: requested warehouse | granted warehouse"),
        "{inspected}"
    );
    assert!(!listed.contains("never-shown") && !inspected.contains("never-shown"));
    // The plugin sees it.
    let plan = cli
        .json(&[
            "plugin",
            "call",
            "provisioner-v2",
            "plan",
            "--tenant",
            "acme",
        ])
        .await;
    assert_eq!(plan[0]["input"]["config"], json!([["seats", "9"]]));
}
