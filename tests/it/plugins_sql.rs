//! The `sql` capability (WIT 0.2.0) against the real PostgreSQL of this machine: a database
//! granted to a plugin by alias, statements with typed parameters, the role of the grant,
//! limits on time and size, and a URL that never shows.

use crate::common;

use crate::common::{Backend, TestApp, TestDatabase};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// What the plugin's statements answered.
async fn run(app: &TestApp, statements: Value) -> Vec<Value> {
    let steps = app
        .ctx
        .plugins
        .plan(
            "provisioner-v2",
            &common::plugin_acme(),
            json!({ "sql": statements }).to_string(),
        )
        .await
        .unwrap()
        .unwrap();
    let input: Value = serde_json::from_str(&steps[0].input).unwrap();
    input["sql"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_database_runs_the_plugins_statements_as_the_grants_role() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = TestDatabase::create(Backend::Postgres, dir.path()).await;
    let role = format!("wh_{}", uuid::Uuid::new_v4().simple());
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    {
        let mut admin = AsyncPgConnection::establish(&warehouse.url).await.unwrap();
        let database = url::Url::parse(&warehouse.url).unwrap().path()[1..].to_owned();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{password}'; \
                 ALTER DATABASE {database} OWNER TO {role}; \
                 ALTER SCHEMA public OWNER TO {role};"
            ))
            .await
            .unwrap();
    }
    let mut url = url::Url::parse(&warehouse.url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(&password)).unwrap();
    let url = url.to_string();

    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.plugins.sql_statement_timeout_ms = 500;
        c.plugins.sql_max_rows = 100;
    })
    .await;
    app.install_test_plugin("provisioner_v2").await;

    // Not granted yet: refused, naming the alias.
    let answers = run(&app, json!([{ "query": "select 1" }])).await;
    assert!(
        answers[0]["error"]
            .as_str()
            .unwrap()
            .contains("no database `warehouse` is granted to plugin `provisioner-v2`"),
        "{answers:?}"
    );
    // Only what the manifest requests can be granted, and only a PostgreSQL URL.
    let (status, body) = app
        .post(
            "/api/v1/plugin/provisioner-v2/grants",
            json!({ "kind": "database", "name": "ledger", "value": url }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("does not request database `ledger`")
    );
    let (status, body) = app
        .post(
            "/api/v1/plugin/provisioner-v2/grants",
            json!({ "kind": "database", "name": "warehouse", "value": "mysql://x@y/z" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, granted) = app
        .post(
            "/api/v1/plugin/provisioner-v2/grants",
            json!({ "kind": "database", "name": "warehouse", "value": url }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["effective"]["databases"], json!(["warehouse"]));
    assert!(
        !granted.to_string().contains(&password),
        "the URL is never shown"
    );

    // Statements with typed parameters; rows come back typed; the grant's role runs them.
    let answers = run(
        &app,
        json!([
            { "execute": "create table seats (tenant text, n int, ratio float8, ok bool, data bytea)" },
            { "execute": "insert into seats values ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)",
              "params": ["acme", 5, 0.5, true, null, "other", 7, 1.5, false, null] },
            { "query": "select tenant, n, ratio, ok, data from seats where tenant = $1", "params": ["acme"] },
            { "query": "select current_user as who" },
            { "query": "select now() as at" },
            { "execute": "insert into nowhere values (1)" },
            { "query": "select pg_sleep(2)::text" },
            { "query": "select g from generate_series(1, 101) g" },
            { "query": "select 1", "alias": "ledger" },
        ]),
    )
    .await;
    assert_eq!(answers[0], json!({ "changed": 0 }));
    assert_eq!(answers[1], json!({ "changed": 2 }));
    assert_eq!(
        answers[2],
        json!({ "columns": ["tenant", "n", "ratio", "ok", "data"], "rows": [["acme", 5, 0.5, true, null]] })
    );
    assert_eq!(answers[3]["rows"], json!([[role]]));
    assert!(
        answers[4]["error"]
            .as_str()
            .unwrap()
            .contains("cast it in the query"),
        "{}",
        answers[4]
    );
    assert!(
        answers[5]["error"].as_str().unwrap().contains("42P01"),
        "the SQLSTATE and the message: {}",
        answers[5]
    );
    assert_eq!(
        answers[6]["error"], "SqlError::Timeout",
        "stopped at the statement timeout"
    );
    assert_eq!(
        answers[7]["error"], "SqlError::TooLarge",
        "more rows than allowed"
    );
    assert!(
        answers[8]["error"]
            .as_str()
            .unwrap()
            .contains("database `ledger` is not requested"),
        "{}",
        answers[8]
    );
    let (_, plugin) = app.get("/api/v1/plugin/provisioner-v2").await;
    let (_, audit) = app.get("/api/v1/audit?action=plugin.grant").await;
    assert!(!plugin.to_string().contains(&password));
    assert!(!audit.to_string().contains(&password));

    // Revoked: refused again.
    let (status, _) = app
        .delete("/api/v1/plugin/provisioner-v2/grants/database/warehouse")
        .await;
    assert_eq!(status, StatusCode::OK);
    let answers = run(&app, json!([{ "query": "select 1" }])).await;
    assert!(
        answers[0]["error"].as_str().unwrap().contains("is granted"),
        "{answers:?}"
    );
    app.stop().await;
    warehouse.drop_database().await;
    let mut admin = AsyncPgConnection::establish(&common::postgres_admin_url())
        .await
        .unwrap();
    let _ = admin
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
}
