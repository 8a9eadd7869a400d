//! `tenantry plugin call`: every world's exports called from the command line, with the real
//! binary, its answers on stdout and the plugin's log lines on stderr.

use crate::common::Backend;
use crate::common::cli::Cli;
use serde_json::{Value, json};

backend_tests!(every_world_is_called_from_the_cli);

async fn every_world_is_called_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    let recorder = format!(
        "{}/recorder.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &recorder]).await;

    // A renderer.
    let template = cli.file(
        "template.json",
        r#"{"body": "postgresql://{user}@db/{database}", "placeholders": ["user", "database"], "format": "uri"}"#,
    );
    let values = cli.file("values.json", r#"{"user": "a b", "database": "acme"}"#);
    let rendered = cli
        .ok(&[
            "plugin",
            "call",
            "template-renderer",
            "render",
            "--template",
            template.to_str().unwrap(),
            "--values",
            values.to_str().unwrap(),
        ])
        .await;
    assert_eq!(rendered.trim(), "postgresql://a%20b@db/acme");
    let missing = cli.file("missing.json", r#"{"user": "x"}"#);
    let refused = cli
        .run(&[
            "plugin",
            "call",
            "template-renderer",
            "render",
            "--template",
            template.to_str().unwrap(),
            "--values",
            missing.to_str().unwrap(),
        ])
        .await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("values missing for: database"),
        "{}",
        refused.stderr
    );

    // A provisioner, for a tenant the registry does not have (made up, and said so).
    let described = cli.json(&["plugin", "call", "recorder", "describe"]).await;
    assert_eq!(described["name"], "recorder");
    let request = cli.file("request.json", r#"{"settings": {"steps": ["db"]}}"#);
    let plan = cli
        .run(&[
            "--output",
            "json",
            "plugin",
            "call",
            "recorder",
            "plan",
            "--tenant",
            "acme",
            "--request",
            request.to_str().unwrap(),
        ])
        .await;
    assert!(plan.ok, "{}", plan.stderr);
    assert!(
        plan.stderr.contains("no tenant `acme` in this database"),
        "{}",
        plan.stderr
    );
    assert!(
        plan.stderr.contains("[info] planning 1 steps for acme"),
        "the plugin's log lines: {}",
        plan.stderr
    );
    // The made-up tenant is the same one at every call (a second `apply` can test that the
    // plugin converges).
    let made_up = |stderr: &str| {
        stderr
            .split("(id ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("the note names the id: {stderr}"))
    };
    let again = cli
        .run(&[
            "plugin",
            "call",
            "recorder",
            "plan",
            "--tenant",
            "acme",
            "--request",
            request.to_str().unwrap(),
        ])
        .await;
    assert_eq!(made_up(&plan.stderr), made_up(&again.stderr));
    assert!(uuid::Uuid::parse_str(&made_up(&plan.stderr)).is_ok());
    let steps: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(steps[0]["id"], "db");
    assert_eq!(
        steps[0]["input"]["name"], "acme-db",
        "input as JSON: {steps}"
    );

    // What `plan` prints is what `apply` reads; what `apply` prints, `compensate` reads.
    let step = cli.file("step.json", &steps[0].to_string());
    let outcome = cli
        .json(&[
            "plugin",
            "call",
            "recorder",
            "apply",
            "--tenant",
            "acme",
            "--step",
            step.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        outcome["output"],
        json!({ "name": "acme-db", "recorded": false })
    );
    let outcome_file = cli.file("outcome.json", &outcome.to_string());
    let compensated = cli
        .json(&[
            "plugin",
            "call",
            "recorder",
            "compensate",
            "--tenant",
            "acme",
            "--step",
            step.to_str().unwrap(),
            "--outcome",
            outcome_file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(compensated["compensated"], "db");
    let applied = cli.file(
        "applied.json",
        &json!([{ "step": steps[0], "outcome": outcome }]).to_string(),
    );
    let drift = cli
        .json(&[
            "plugin",
            "call",
            "recorder",
            "observe",
            "--tenant",
            "acme",
            "--applied",
            applied.to_str().unwrap(),
        ])
        .await;
    assert!(drift.is_array(), "{drift}");
    let transition = cli
        .ok(&[
            "plugin",
            "call",
            "recorder",
            "transition",
            "--tenant",
            "acme",
            "--change",
            "suspend",
        ])
        .await;
    assert!(
        transition.contains(r#"done: {"change":"suspend"}"#),
        "{transition}"
    );

    // A file that is not a step is refused before any call, naming what it should be.
    let bad = cli.file("bad.json", r#"{"name": "x"}"#);
    let refused = cli
        .run(&[
            "plugin",
            "call",
            "recorder",
            "apply",
            "--tenant",
            "acme",
            "--step",
            bad.to_str().unwrap(),
        ])
        .await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("not a step"), "{}", refused.stderr);
    // A quota policy's decision on a tenant of the registry, with what the policy logged.
    let flat = format!(
        "{}/flat_quota.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &flat]).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    let evaluated = cli
        .run(&[
            "plugin",
            "call",
            "flat-quota",
            "evaluate",
            "--tenant",
            "acme",
        ])
        .await;
    assert!(evaluated.ok, "{}", evaluated.stderr);
    assert!(
        evaluated.stdout.starts_with("flat-quota on acme: allowed"),
        "{}",
        evaluated.stdout
    );
    assert!(
        evaluated
            .stderr
            .contains("[debug] a flat limit of 3 for acme"),
        "{}",
        evaluated.stderr
    );

    // WIT 0.2.0's exports: what `export` prints is what `import` reads.
    let v2 = format!(
        "{}/provisioner_v2.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &v2]).await;
    let part = cli
        .json(&[
            "plugin",
            "call",
            "provisioner-v2",
            "export",
            "--tenant",
            "acme",
        ])
        .await;
    assert_eq!(part["media_type"], "application/json", "{part}");
    assert_eq!(part["instance_specific"], json!(["/tenant"]));
    let part_file = cli.file("part.json", &part.to_string());
    let restored = cli
        .json(&[
            "plugin",
            "call",
            "provisioner-v2",
            "import",
            "--tenant",
            "acme",
            "--part",
            part_file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(restored["output"]["restored"]["seats"], 3, "{restored}");
    let measured = cli
        .json(&[
            "plugin",
            "call",
            "provisioner-v2",
            "measure",
            "--tenant",
            "acme",
        ])
        .await;
    assert_eq!(measured["storage_gb"], 1.5, "{measured}");

    // A world's function asked of another world's plugin is refused.
    let wrong = cli
        .run(&["plugin", "call", "template-renderer", "describe"])
        .await;
    assert!(!wrong.ok);
    assert!(
        wrong
            .stderr
            .contains("is a renderer plugin, not a provisioner"),
        "{}",
        wrong.stderr
    );
}
