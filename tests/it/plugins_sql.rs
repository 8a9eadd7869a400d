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
            { "execute": "create table public.seats (tenant text, n int, ratio float8, ok bool, data bytea)" },
            { "execute": "insert into public.seats values ($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10)",
              "params": ["acme", 5, 0.5, true, null, "other", 7, 1.5, false, null] },
            { "query": "select tenant, n, ratio, ok, data from public.seats where tenant = $1", "params": ["acme"] },
            { "query": "select current_user as who" },
            { "query": "select now() as at" },
            { "execute": "insert into public.nowhere values (1)" },
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

/// A plugin that means harm cannot get past the limits of `sql`: it sets the server's
/// `statement_timeout` to 0 and sleeps (the host's own clock stops it), asks for a hundred
/// million rows (they are never read past the cap, so neither the time nor the memory goes),
/// and names a database after another on one grant (a call opens only so many connections).
/// Its names resolve in the catalogue only (`search_path`): an unqualified table is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_cannot_escape_the_sql_limits() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = TestDatabase::create(Backend::Postgres, dir.path()).await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        // Long enough that the cross join's first rows come in time on a loaded machine.
        c.plugins.sql_statement_timeout_ms = 1500;
        c.plugins.sql_max_rows = 100;
        c.plugins.sql_max_connections_per_call = 3;
    })
    .await;
    app.install_test_plugin("provisioner_v2").await;
    let (status, body) = app
        .post(
            "/api/v1/plugin/provisioner-v2/grants",
            json!({ "kind": "database", "name": "warehouse", "value": warehouse.url }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let database = url::Url::parse(&warehouse.url).unwrap().path()[1..].to_owned();

    let started = std::time::Instant::now();
    let answers = run(
        &app,
        json!([
            { "execute": "set statement_timeout = 0" },
            { "query": "select pg_sleep(8)::text" },
            { "execute": "set statement_timeout = 0" },
            { "query": "select 1 from generate_series(1, 10000) a, generate_series(1, 10000) b" },
            { "query": "select 1 as one" },
            { "execute": "create table planted (x int)" },
            { "query": "show search_path" },
        ]),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(answers[1]["error"], "SqlError::Timeout", "{answers:?}");
    assert_eq!(answers[3]["error"], "SqlError::TooLarge", "{answers:?}");
    assert_eq!(
        answers[4]["rows"],
        json!([[1]]),
        "a new connection serves the next: {answers:?}"
    );
    assert!(
        answers[5]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("42501"),
        "an unqualified table would go to pg_catalog: {answers:?}"
    );
    assert_eq!(
        answers[6]["rows"],
        json!([["pg_catalog, pg_temp"]]),
        "{answers:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(8),
        "stopped by the host's clock and the row cap, not the plugin's: {took:?}"
    );
    // The sleeping statement was cancelled on the server, not left running.
    let mut admin = AsyncPgConnection::establish(&common::postgres_admin_url())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let running: Vec<Count> = diesel_async::RunQueryDsl::load(
            diesel::sql_query(format!(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '{database}' \
                 AND (query LIKE '%pg_sleep(4)%' OR query LIKE '%generate_series(1, 10000)%') \
                 AND state = 'active'"
            )),
            &mut admin,
        )
        .await
        .unwrap();
        if running[0].n == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the statements still run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Three connections a call, however many databases it names.
    let answers = run(
        &app,
        json!([
            { "query": "select 1", "alias": format!("warehouse/{database}") },
            { "query": "select 1", "alias": "warehouse/postgres" },
            { "query": "select 1", "alias": "warehouse/template1" },
            { "query": "select 1", "alias": "warehouse/no_such_database" },
        ]),
    )
    .await;
    assert_eq!(answers[0]["rows"], json!([[1]]), "{answers:?}");
    assert!(
        answers[3]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 3 database connections"),
        "{answers:?}"
    );
    app.stop().await;
    warehouse.drop_database().await;
}
