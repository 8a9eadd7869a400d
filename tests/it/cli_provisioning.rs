//! The command line's templates, provisioning and declarative tenants (`tenantry apply -f`),
//! with the real binary against SQLite and PostgreSQL; the backend is the `recorder` test
//! plugin's recording test double.

use std::path::Path;

use crate::common::Backend;
use crate::common::cli::Cli;
use crate::common::recorder::RecorderBackend;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn setup(cli: &Cli, double: &RecorderBackend) {
    let wasm = format!(
        "{}/recorder.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &wasm]).await;
    let host = double.url.trim_start_matches("http://").to_owned();
    cli.ok(&["plugin", "grant", "recorder", "--host", &host])
        .await;
    let url_file = cli.file("recorder-url", &double.url);
    cli.ok(&[
        "plugin",
        "grant",
        "recorder",
        "--secret",
        "recorder-url",
        "--value-file",
        path(&url_file),
    ])
    .await;
    let body = cli.file("pg.tmpl", "postgresql://{user}:{password}@{host}/{db}");
    let out = cli
        .ok(&[
            "template",
            "create",
            "pg",
            "--kind",
            "connection",
            "--body-file",
            path(&body),
            "--placeholder",
            "user",
            "--placeholder",
            "password",
            "--placeholder",
            "host",
            "--placeholder",
            "db",
            "--tag",
            "default",
        ])
        .await;
    assert!(out.contains("created pg version 1"), "{out}");
}

async fn templates_and_provisioning_from_the_command_line(backend: Backend) {
    let cli = Cli::new(backend).await;
    let double = RecorderBackend::start().await;
    setup(&cli, &double).await;

    let rendered = cli
        .ok(&[
            "template",
            "render",
            "pg",
            "--value",
            "user=u",
            "--value",
            "password=p@ss",
            "--value",
            "host=h",
            "--value",
            "db=d",
        ])
        .await;
    assert_eq!(rendered.trim(), "postgresql://u:p%40ss@h/d");
    let missing = cli
        .run(&["template", "render", "pg", "--value", "user=u"])
        .await;
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains("values.password"),
        "{}",
        missing.stderr
    );
    let new_body = cli.file(
        "pg2.tmpl",
        "postgresql://{user}:{password}@{host}/{db}?sslmode=require",
    );
    let out = cli
        .ok(&["template", "update", "pg", "--body-file", path(&new_body)])
        .await;
    assert!(out.contains("version 2"), "{out}");
    let versions = cli.json(&["template", "versions", "pg"]).await;
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let v1 = cli
        .json(&["template", "show", "pg", "--version", "1"])
        .await;
    assert!(!v1["body"].as_str().unwrap().contains("sslmode"));

    let request = cli.file(
        "acme.yaml",
        "tenant:\n  slug: cli-acme\n  name: CLI Acme\nconnection_template:\n  template_name: pg\n  placeholders: {user: u, password: pw, host: db, db: acme}\ntier: starter\nbackends:\n  recorder: {}\n",
    );
    let out = cli
        .ok(&[
            "tenant",
            "provision",
            "-f",
            path(&request),
            "--idempotency-key",
            "cli-acme-1",
        ])
        .await;
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("recorder/alpha"), "{out}");
    for step in ["alpha", "beta", "gamma"] {
        assert_eq!(double.creations(&format!("cli-acme-{step}")), 1);
    }
    // The same key again: the same run, nothing created twice.
    let again = cli
        .run(&[
            "tenant",
            "provision",
            "-f",
            path(&request),
            "--idempotency-key",
            "cli-acme-1",
        ])
        .await;
    assert!(again.ok, "{}", again.stderr);
    assert!(again.stderr.contains("used before"), "{}", again.stderr);
    assert_eq!(double.creations("cli-acme-alpha"), 1);
    let runs = cli.json(&["run", "list", "--tenant", "cli-acme"]).await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    // A server that ran none of it shows the CLI's run in its /metrics.
    let metrics = cli.server_metrics().await;
    assert!(
        metrics.contains(
            "tenantry_provisioning_runs_ended_total{kind=\"provision\",outcome=\"succeeded\"} 1"
        ),
        "{metrics}"
    );
    let resources = cli.ok(&["tenant", "resources", "cli-acme"]).await;
    assert!(
        resources.contains("recorder/alpha") && resources.contains("(from pg@2)"),
        "{resources}"
    );
    let drift = cli.ok(&["tenant", "drift", "cli-acme"]).await;
    assert!(drift.contains("no drift"), "{drift}");
    double.forget("cli-acme-gamma");
    let drift = cli.run(&["tenant", "drift", "cli-acme"]).await;
    assert!(!drift.ok, "drift exits non-zero");
    assert!(
        drift.stdout.contains("resource cli-acme-gamma — missing"),
        "{}",
        drift.stdout
    );
    // Health names the backend and what drifted, and exits non-zero.
    let health = cli.run(&["tenant", "health", "cli-acme"]).await;
    assert!(!health.ok, "{}", health.stdout);
    assert!(
        health
            .stdout
            .contains("backend recorder: drifted (3 resources")
            && health.stdout.contains("resource cli-acme-gamma — missing"),
        "{}",
        health.stdout
    );
    // Reconcile shows the plan first, and repairs only with --yes.
    let plan = cli.ok(&["tenant", "reconcile", "cli-acme"]).await;
    assert!(
        plan.contains("~ recorder/gamma") && !plan.contains("recorder/alpha"),
        "{plan}"
    );
    assert!(plan.contains("run again with --yes to repair"), "{plan}");
    assert!(!double.exists("cli-acme-gamma"), "the plan changed nothing");
    let repaired = cli.ok(&["tenant", "reconcile", "cli-acme", "--yes"]).await;
    assert!(repaired.contains("succeeded"), "{repaired}");
    assert!(double.exists("cli-acme-gamma"));
    assert_eq!(double.creations("cli-acme-alpha"), 1, "only what drifted");
    // (The command exits 1 all the same: the tenant's database, `db` in this test's template,
    // does not answer.)
    let health = cli
        .run(&["--output", "json", "tenant", "health", "cli-acme"])
        .await;
    let health: serde_json::Value = serde_json::from_str(&health.stdout).expect("the report");
    assert_eq!(health["database"]["status"], "unreachable", "{health}");
    assert_eq!(health["backends"]["status"], "healthy", "{health}");
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert_eq!(
        health["problems"],
        serde_json::json!(["database: unreachable"]),
        "{health}"
    );
    assert_eq!(
        health["backends"]["backends"][0]["plugin"], "recorder",
        "{health}"
    );
    // A newer template version: a repair asked for it renders the drifted step from it, with
    // the values the tenant was provisioned with.
    let v3 = cli.file(
        "pg3.tmpl",
        "postgresql://{user}:{password}@{host}/{db}?sslmode=verify-full",
    );
    cli.ok(&["template", "update", "pg", "--body-file", path(&v3)])
        .await;
    double.forget("cli-acme-alpha");
    let plan = cli.ok(&["tenant", "reconcile", "cli-acme"]).await;
    assert!(plan.contains("from template pg@2\n"), "{plan}");
    let plan = cli
        .ok(&["tenant", "reconcile", "cli-acme", "--current-templates"])
        .await;
    assert!(
        plan.contains("~ recorder/alpha") && plan.contains("from template pg@3 (made from @2)"),
        "{plan}"
    );
    assert!(
        !plan.contains("pw"),
        "no placeholder value is shown: {plan}"
    );
    let repaired = cli
        .ok(&[
            "tenant",
            "reconcile",
            "cli-acme",
            "--current-templates",
            "--yes",
        ])
        .await;
    assert!(repaired.contains("succeeded"), "{repaired}");
    let resources = cli.ok(&["tenant", "resources", "cli-acme"]).await;
    assert!(resources.contains("(from pg@3)"), "{resources}");

    // Lifecycle through the command line reaches the backend.
    cli.ok(&["tenant", "suspend", "cli-acme", "--reason", "unpaid"])
        .await;
    let runs = cli
        .json(&["run", "list", "--tenant", "cli-acme", "--limit", "1"])
        .await;
    let id = runs[0]["id"].as_str().unwrap().to_owned();
    let shown = cli.ok(&["run", "show", &id, "--wait"]).await;
    assert!(shown.contains("suspend of cli-acme): succeeded"), "{shown}");
    assert_eq!(double.events()[0]["change"], "suspend");

    // A provision that fails (its backend down) leaves the tenant failed; once the backend is
    // back, `tenant retry` provisions it again and it becomes active.
    double.set_down(true);
    let down = cli.file(
        "down.yaml",
        "tenant:\n  slug: cli-down\n  name: CLI Down\nconnection_template:\n  template_name: pg\n  placeholders: {user: u, password: pw, host: db, db: down}\ntier: starter\nbackends:\n  recorder: {}\n",
    );
    let failed = cli.run(&["tenant", "provision", "-f", path(&down)]).await;
    assert!(!failed.ok, "{}", failed.stdout);
    let tenant = cli.json(&["tenant", "show", "cli-down"]).await;
    assert_eq!(tenant["status"], "failed", "{tenant}");
    double.set_down(false);
    let retried = cli.ok(&["tenant", "retry", "cli-down"]).await;
    assert!(retried.contains("succeeded"), "{retried}");
    let tenant = cli.json(&["tenant", "show", "cli-down"]).await;
    assert_eq!(tenant["status"], "active", "{tenant}");
    let refused = cli.run(&["tenant", "retry", "cli-down"]).await;
    assert!(
        !refused.ok && refused.stderr.contains("not failed"),
        "{}",
        refused.stderr
    );
    cli.database.drop_database().await;
    double.stop().await;
}

async fn apply_shows_a_plan_converges_and_is_idempotent(backend: Backend) {
    let mut cli = Cli::new(backend).await;
    let double = RecorderBackend::start().await;
    setup(&cli, &double).await;
    cli.env
        .push(("ACME_DB_PASSWORD".into(), "s3cret-pw".into()));
    let spec = |tier: &str, host: &str| {
        format!(
            "apiVersion: tenantry/v1\nkind: Tenant\nmetadata:\n  slug: spec-acme\n  name: Spec Acme\nspec:\n  tier: {tier}\n  contact: {{name: Ops, email: ops@acme.example}}\n  connection_template:\n    template_name: pg\n    placeholders: {{user: acme, host: {host}, db: acme}}\n    placeholders_env: {{password: ACME_DB_PASSWORD}}\n  backends:\n    recorder: {{steps: [alpha, beta]}}\n"
        )
    };
    let file = cli.file("tenant.yaml", &spec("professional", "db1"));

    // The plan of a new tenant, and nothing done without --yes.
    let plan = cli.ok(&["apply", "-f", path(&file)]).await;
    assert!(
        plan.contains("+ tenant — spec-acme (Spec Acme, tier professional)"),
        "{plan}"
    );
    assert!(
        plan.contains("+ recorder/alpha") && plan.contains("+ recorder/beta"),
        "{plan}"
    );
    assert!(plan.contains("--yes"), "{plan}");
    assert!(!plan.contains("s3cret-pw"));
    assert!(double.names().is_empty(), "a plan changes nothing");
    let missing = cli.run(&["tenant", "show", "spec-acme"]).await;
    assert!(!missing.ok);

    let out = cli.ok(&["apply", "-f", path(&file), "--yes"]).await;
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(double.names(), vec!["spec-acme-alpha", "spec-acme-beta"]);

    // Applying the same file again changes nothing.
    let plan = cli.ok(&["apply", "-f", path(&file), "--yes"]).await;
    assert!(plan.contains("tenant spec-acme: no changes"), "{plan}");
    assert_eq!(double.creations("spec-acme-alpha"), 1);
    let runs = cli.json(&["run", "list", "--tenant", "spec-acme"]).await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "no new run");

    // A new tier and another database host: the tenant field and the step that used the
    // connection change; the other step is left as it is.
    std::fs::write(&file, spec("enterprise", "db2")).unwrap();
    let plan = cli.json(&["apply", "-f", path(&file)]).await;
    let items: Vec<(String, String)> = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["action"].as_str().unwrap().to_owned(),
                i["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            ("change".to_owned(), "tenant.tier".to_owned()),
            ("change".to_owned(), "recorder/alpha".to_owned()),
        ],
        "{plan}"
    );
    assert!(
        plan["items"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("made from pg@1")
    );
    let out = cli.ok(&["apply", "-f", path(&file), "--yes"]).await;
    assert!(
        out.contains("run ") && out.contains("(apply of spec-acme): succeeded"),
        "{out}"
    );
    let tenant = cli.json(&["tenant", "show", "spec-acme"]).await;
    assert_eq!(tenant["tier"], "enterprise", "{tenant}");
    let plan = cli.ok(&["apply", "-f", path(&file)]).await;
    assert!(plan.contains("no changes"), "{plan}");
    assert_eq!(double.duplicates(), vec![]);

    // A spec that breaks a rule changes nothing and says which field.
    let bad = cli.file(
        "bad.yaml",
        "apiVersion: tenantry/v1\nkind: Tenant\nmetadata: {slug: Bad_Slug, name: x}\nspec: {tier: platinum}\n",
    );
    let run = cli.run(&["apply", "-f", path(&bad), "--yes"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("tenant.slug"), "{}", run.stderr);
    let unknown = cli.file(
        "unknown.yaml",
        "apiVersion: tenantry/v1\nkind: Tenant\nmetadata: {slug: x-co, name: x}\nspec: {colour: red}\n",
    );
    let run = cli.run(&["apply", "-f", path(&unknown)]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("colour"), "{}", run.stderr);

    // An Airflow tenant config is named as such, and `spec convert` writes the spec it
    // stands for, saying what it changed or left out.
    let guide = cli.file(
        "guide.yaml",
        "tenant:\n  name: guide-co\n  display_name: Guide Co\n  tier: standard\n  environment: staging\n  contacts:\n    technical:\n      - {name: Ops, email: ops@guide.example}\nresources:\n  kubernetes:\n    quotas:\n      requests: {cpu: \"4\"}\n",
    );
    let run = cli.run(&["apply", "-f", path(&guide)]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("Airflow tenant config")
            && run.stderr.contains("tenantry spec convert"),
        "{}",
        run.stderr
    );
    let converted = cli.run(&["spec", "convert", path(&guide)]).await;
    assert!(converted.ok, "{}", converted.stderr);
    assert!(
        converted.stdout.contains("apiVersion: tenantry/v1")
            && converted.stdout.contains("slug: guide-co")
            && converted.stdout.contains("environment: staging"),
        "{}",
        converted.stdout
    );
    assert!(
        converted
            .stderr
            .contains("note: tenant.tier `standard` is `professional`"),
        "{}",
        converted.stderr
    );

    // Labels and annotations land in the tenant's metadata; a spec without `backends` uses
    // every enabled backend plugin, as a provisioning request without them does.
    let meta = cli.file(
        "meta.yaml",
        "apiVersion: tenantry/v1\nkind: Tenant\nmetadata:\n  slug: meta-co\n  name: Meta Co\n  labels: {environment: staging, cost-centre: \"4711\"}\n  annotations: {sla: {uptime: 99.9}}\nspec:\n  tier: starter\n",
    );
    let plan = cli.ok(&["apply", "-f", path(&meta)]).await;
    assert!(plan.contains("recorder/"), "every enabled backend: {plan}");
    cli.ok(&["apply", "-f", path(&meta), "--yes"]).await;
    let shown = cli.json(&["tenant", "show", "meta-co"]).await;
    assert_eq!(
        shown["metadata"]["labels"]["environment"], "staging",
        "{shown}"
    );
    assert_eq!(shown["metadata"]["labels"]["cost-centre"], "4711");
    assert_eq!(shown["metadata"]["sla"]["uptime"], 99.9);
    cli.database.drop_database().await;
    double.stop().await;
}

backend_tests!(
    templates_and_provisioning_from_the_command_line,
    apply_shows_a_plan_converges_and_is_idempotent,
);
