//! The `postgres` plugin against the real PostgreSQL of this machine, through the HTTP API: a
//! database per tenant made from its rendered connection, with the role, schemas and forced
//! row-level security; suspend, reactivate, drift, measure and purge; and a failure midway that
//! leaves nothing behind. The plugin's grant is a role with CREATEROLE and CREATEDB, not a
//! superuser, as the docs ask of an operator.

use std::time::{Duration, Instant};

use crate::common;
use crate::common::pg::{self, admin, url_as};
use crate::common::{Backend, TestApp, postgres_admin_url};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A name unique to this run.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn exists(query: &str) -> bool {
    let (client, connection) =
        tokio_postgres::connect(&postgres_admin_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    !client.query(query, &[]).await.unwrap().is_empty()
}

/// Connects as `user` to `database`.
async fn connect(
    user: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &url_as(user, Some("irrelevant-on-trusted-loopback"), database),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The server's role of the grant, and the app with the plugin enabled, granted and the
/// connection template in place. Dropped with [`Fixture::finish`].
struct Fixture {
    app: TestApp,
    server_role: String,
    tenants: Vec<(String, String)>,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_on("postgres").await
    }

    /// The plugin granted the server as its role, on `database` (the alias's own database).
    async fn start_on(database: &str) -> Fixture {
        let server_role = pg::server_role("tp_admin").await;
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.provisioning.backoff_base_ms = 50;
            c.provisioning.backoff_max_ms = 200;
        })
        .await;
        pg::grant_postgres_on(&app.ctx, &server_role, database).await;
        let (status, body) = app
            .post(
                "/api/v1/template",
                json!({
                    "name": "tenant-postgres",
                    "kind": "connection",
                    "body": "postgresql://{user}:{password}@{host}:{port}/{database_name}",
                    "placeholders": ["user", "password", "host", "port", "database_name"],
                    "tags": ["default"],
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Fixture {
            app,
            server_role,
            tenants: Vec::new(),
        }
    }

    /// Provisions a tenant whose role and database are `<name>_user` and `<name>_db`; the run.
    async fn provision(&mut self, slug: &str, name: &str, settings: Value) -> Value {
        let response = self.request(slug, name, settings).await;
        let status = response.status();
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        self.wait(accepted["url"].as_str().unwrap()).await
    }

    /// Asks to provision a tenant as [`Fixture::provision`] does; the answer.
    async fn request(&mut self, slug: &str, name: &str, settings: Value) -> reqwest::Response {
        let (role, database) = (format!("{name}_user"), format!("{name}_db"));
        self.tenants.push((role.clone(), database.clone()));
        self.app
            .request(Method::POST, "/api/v1/tenant/provision")
            .header("Idempotency-Key", format!("pg-{slug}"))
            .json(&json!({
                "tenant": {
                    "slug": slug,
                    "name": format!("Tenant {slug}"),
                    "oauth_issuer": "https://idp.example.com/oauth2/default",
                    "client_id": "pg-client",
                    "client_secret": "pg-client-secret",
                },
                "connection_template": {
                    "use_admin_template": true,
                    "template_name": "tenant-postgres",
                    "placeholders": {
                        "user": role,
                        "password": "s3cret'pass",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "database_name": database,
                    },
                },
                "tier": "starter",
                "backends": { "postgres": settings },
            }))
            .send()
            .await
            .unwrap()
    }

    async fn wait(&self, url: &str) -> Value {
        let started = Instant::now();
        loop {
            let (status, run) = self.app.get(url).await;
            assert_eq!(status, StatusCode::OK, "{run}");
            if !matches!(
                run["status"].as_str(),
                Some("queued" | "running" | "compensating")
            ) {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn lifecycle(&self, slug: &str, action: &str) -> Value {
        let (status, body) = self
            .app
            .post(
                &format!("/api/v1/tenant/{slug}/{action}"),
                json!({ "reason": format!("test {action}") }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, runs) = self
            .app
            .get(&format!("/api/v1/provisioning?tenant={slug}&limit=1"))
            .await;
        let run = self.wait(runs[0]["url"].as_str().unwrap()).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        run
    }

    async fn finish(self) {
        self.app.stop().await;
        for (role, database) in &self.tenants {
            admin(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .await;
            admin(&format!("DROP ROLE IF EXISTS \"{role}\"")).await;
        }
        pg::drop_role(&self.server_role).await;
    }
}

fn settings() -> Value {
    json!({
        "schema_prefix": "analytics",
        "rls": {
            "tables": [{
                "schema": "analytics_silver",
                "table": "orders",
                "column": "tenant_id",
                "columns": [
                    { "name": "id", "type": "int" },
                    { "name": "tenant_id", "type": "text", "not_null": true },
                    { "name": "amount", "type": "numeric(12,2)" },
                ],
            }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_per_tenant_is_made_isolated_kept_in_step_and_purged() {
    let mut f = Fixture::start().await;
    let (a, b) = (unique("pga"), unique("pgb"));
    let (slug_a, slug_b) = (a.replace('_', "-"), b.replace('_', "-"));
    let run = f.provision(&slug_a, &a, settings()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let run = f.provision(&slug_b, &b, settings()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let (role_a, db_a) = (format!("{a}_user"), format!("{a}_db"));
    let (role_b, db_b) = (format!("{b}_user"), format!("{b}_db"));

    // The role: a connection limit by tier (starter: 10), no superuser, no BYPASSRLS.
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{role_a}' AND rolconnlimit = 10 \
             AND NOT rolsuper AND NOT rolbypassrls AND rolcanlogin"
        ))
        .await
    );
    // The database: owned by the role, no CONNECT for PUBLIC.
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{db_a}' \
             AND pg_get_userbyid(datdba) = '{role_a}' \
             AND NOT has_database_privilege('public', datname, 'CONNECT')"
        ))
        .await
    );

    // As the tenant's role: its own schemas, and not the other's database.
    let client = connect(&role_a, &db_a).await.expect("the tenant logs in");
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'analytics_%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        schemas,
        ["analytics_bronze", "analytics_gold", "analytics_silver"]
    );
    let refused = connect(&role_a, &db_b).await.err().expect("refused");
    assert!(
        refused.to_string().contains("permission denied")
            || format!("{refused:?}").contains("permission denied"),
        "{refused:?}"
    );

    // Row-level security filters the owner too: rows of another tenant stay unseen, and
    // cannot be written.
    {
        let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
        url.set_path(&db_a);
        let mut conn = AsyncPgConnection::establish(url.as_str()).await.unwrap();
        conn.batch_execute(&format!(
            "INSERT INTO analytics_silver.orders VALUES (1, '{slug_a}', 10), (2, '{slug_b}', 20), (3, '{slug_a}', 30)"
        ))
        .await
        .unwrap();
    }
    let seen: Vec<i32> = client
        .query("SELECT id FROM analytics_silver.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, [1, 3], "the owner sees only its tenant's rows");
    let written = client
        .execute(
            "INSERT INTO analytics_silver.orders VALUES (4, 'someone-else', 1)",
            &[],
        )
        .await;
    assert!(
        written.is_err(),
        "a row of another tenant cannot be written"
    );
    let owner: String = client
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE tablename = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, role_a);

    // No drift; measured storage is the database's size.
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    assert_eq!(report["errors"], json!([]), "{report:#}");
    let (status, measured) = f
        .app
        .post(&format!("/api/v1/tenant/{slug_a}/usage/measure"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{measured}");
    let storage = measured["measured"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["plugin"] == "postgres" && m["metric"] == "storage_gb")
        .unwrap_or_else(|| panic!("{measured:#}"));
    let gb = storage["value"].as_f64().unwrap();
    assert!(gb > 0.001 && gb < 1.0, "{storage}");

    // Suspend: login refused, open sessions closed.
    f.lifecycle(&slug_a, "suspend").await;
    assert!(
        client.query("SELECT 1", &[]).await.is_err(),
        "the open session is closed"
    );
    let refused = connect(&role_a, &db_a).await.err().expect("login refused");
    assert!(
        format!("{refused:?}").contains("not permitted to log in"),
        "{refused:?}"
    );
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert_eq!(
        report["drift"],
        json!([]),
        "suspended is the expected state: {report:#}"
    );
    // Reactivate: it logs in again.
    f.lifecycle(&slug_a, "reactivate").await;
    let client = connect(&role_a, &db_a).await.expect("logs in again");
    client.query("SELECT 1", &[]).await.unwrap();
    drop(client);
    // Whether the role logs in is judged by the tenant's status, not by what the plugin last
    // heard: a stale mark of an earlier version (a restored tenant may carry one) shows no drift.
    let (_, tenant) = f.app.get(&format!("/api/v1/tenant/{slug_a}")).await;
    let id = tenant["id"].as_str().unwrap().to_owned();
    let mut conn = f.app.ctx.db.conn().await.unwrap();
    tenantry::store::plugins::state_put(
        &mut conn,
        "postgres",
        &id,
        "suspended",
        b"1",
        tenantry::clock::now(),
    )
    .await
    .unwrap();
    drop(conn);
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");

    // Drift: a policy dropped and a connection limit changed show.
    admin(&format!("ALTER ROLE {role_a} CONNECTION LIMIT 99")).await;
    {
        let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
        url.set_path(&db_a);
        let mut conn = AsyncPgConnection::establish(url.as_str()).await.unwrap();
        conn.batch_execute("DROP POLICY tenantry_tenant_rows ON analytics_silver.orders")
            .await
            .unwrap();
    }
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    let problems: Vec<String> = report["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                d["resource"].as_str().unwrap(),
                d["problem"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        problems.contains(&format!(
            "role {role_a}: changed: connection limit is 99, not 10 (tier starter)"
        )),
        "{problems:?}"
    );
    assert!(
        problems.contains(&format!(
            "policy on {db_a}.analytics_silver.orders: missing"
        )),
        "{problems:?}"
    );

    // Repaired with the grant the docs prescribe (CREATEROLE and CREATEDB, no superuser): the
    // role's limit and the policy come back, and nothing drifts any more.
    let reconcile = |slug: String| {
        let f = &f;
        async move {
            let (status, accepted) = f
                .app
                .post(&format!("/api/v1/tenant/{slug}/reconcile"), json!({}))
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
            f.wait(accepted["url"].as_str().unwrap()).await
        }
    };
    let run = reconcile(slug_a.clone()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["manual_follow_ups"], json!([]), "{run:#}");
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{role_a}' AND rolconnlimit = 10"
        ))
        .await
    );
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    let seen: Vec<i32> = connect(&role_a, &db_a)
        .await
        .unwrap()
        .query("SELECT id FROM analytics_silver.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, [1, 3], "the policy is back");

    // A role given BYPASSRLS: only a superuser can take it away, so the repair restores the
    // rest and leaves that, in words, as a follow-up; drift keeps showing it.
    admin(&format!("ALTER ROLE {role_a} BYPASSRLS CONNECTION LIMIT 5")).await;
    let run = reconcile(slug_a.clone()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let follow_ups = run["manual_follow_ups"].to_string();
    assert!(
        follow_ups.contains("only a superuser can take away")
            && follow_ups.contains(&format!(
                "ALTER ROLE \\\"{role_a}\\\" NOSUPERUSER NOBYPASSRLS"
            )),
        "{run:#}"
    );
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{role_a}' AND rolconnlimit = 10"
        ))
        .await
    );
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert!(
        report["drift"]
            .to_string()
            .contains("bypasses row-level security"),
        "{report:#}"
    );
    admin(&format!("ALTER ROLE {role_a} NOBYPASSRLS")).await;

    // Purge: database and role gone; the other tenant untouched.
    f.lifecycle(&slug_a, "cancel").await;
    let (status, body) = f
        .app
        .delete(&format!(
            "/api/v1/tenant/{slug_a}?hard=true&force=true&reason=test"
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, runs) = f.app.get("/api/v1/provisioning?limit=1").await;
    let purge = f.wait(runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(purge["kind"], "purge");
    assert_eq!(purge["status"], "succeeded", "{purge:#}");
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{db_a}'"
        ))
        .await
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{role_a}'"
        ))
        .await
    );
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{db_b}'"
        ))
        .await
    );
    connect(&role_b, &db_b)
        .await
        .expect("the other tenant is untouched");
    f.finish().await;
}

/// A table `rls` creates is described by typed columns, never SQL: the columns text of earlier
/// versions (which went into `CREATE TABLE` as the granted role, so that `… AS SELECT` read
/// what that role reads) and any type outside the list are refused before anything is made,
/// naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_is_made_from_typed_columns_never_from_sql_text() {
    let mut f = Fixture::start().await;
    let table = |columns: Value| {
        json!({
            "schema_prefix": "analytics",
            "rls": { "tables": [{
                "schema": "analytics_silver",
                "table": "orders",
                "columns": columns,
            }] },
        })
    };
    let attempts = [
        (
            json!("tenant_id text) AS SELECT rolname FROM pg_catalog.pg_roles --"),
            "typed column definitions",
        ),
        (
            json!([
                { "name": "tenant_id", "type": "text" },
                { "name": "x", "type": "int) AS SELECT rolname FROM pg_catalog.pg_roles --" },
            ]),
            "settings.rls.tables[0].columns[1].type",
        ),
        (
            json!([{ "name": "id", "type": "bigint" }]),
            "has no column `tenant_id`",
        ),
    ];
    for (i, (columns, expected)) in attempts.into_iter().enumerate() {
        let name = unique(&format!("pgcol{i}"));
        let response = f
            .request(&name.replace('_', "-"), &name, table(columns))
            .await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body.contains(expected), "{expected}: {body}");
        assert!(
            !exists(&format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}_db'"
            ))
            .await,
            "nothing is made"
        );
    }
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_midway_removes_everything_made_and_a_taken_name_is_never_adopted() {
    let mut f = Fixture::start().await;
    // A table listed for row-level security that does not exist, with nothing to create it:
    // the run fails at `rls`, after role, database and schemas were made.
    let name = unique("pgfail");
    let slug = name.replace('_', "-");
    let run = f
        .provision(
            &slug,
            &name,
            json!({
                "schemas": ["raw"],
                "rls": { "tables": [{ "schema": "raw", "table": "missing" }] },
            }),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let text = run.to_string();
    assert!(
        text.contains("table raw.missing does not exist"),
        "the error names the table: {run:#}"
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}_db'"
        ))
        .await
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{name}_user'"
        ))
        .await
    );

    // A role of that name that is not the tenant's: a permanent failure, and it stays as it was.
    let taken = unique("pgtaken");
    admin(&format!(
        "CREATE ROLE {taken}_user LOGIN CONNECTION LIMIT 3"
    ))
    .await;
    let slug = taken.replace('_', "-");
    let run = f.provision(&slug, &taken, json!({})).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run.to_string()
            .contains(&format!("the role `{taken}_user` exists and is not tenant")),
        "{run:#}"
    );
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{taken}_user' AND rolconnlimit = 3"
        ))
        .await,
        "not taken over"
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{taken}_db'"
        ))
        .await
    );
    // No password reaches the run.
    assert!(!run.to_string().contains("s3cret"), "{run:#}");
    f.finish().await;
}

/// The CVE-2018-1058 pattern: where `public` of the server alias's database is writable by
/// everyone (PostgreSQL 14 and earlier by default, and clusters upgraded from them), a tenant
/// that holds its own role's password plants `public.shobj_description(oid, text)` there; an
/// unqualified call from the plugin, which runs as the granted role (a member of every tenant
/// role), would run it with that role's rights. The host pins `search_path` on every plugin
/// connection and the plugin qualifies its catalogue calls, so the planted function is never
/// called: here it would make tenant A a member of tenant B's role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_a_tenant_plants_in_a_writable_public_schema_is_never_run_by_the_plugin() {
    let server_db = unique("tp_srv");
    admin(&format!("CREATE DATABASE {server_db}")).await;
    {
        // The state of a cluster from before PostgreSQL 15: `public` writable by PUBLIC.
        let mut conn = AsyncPgConnection::establish(&url_as("postgres", None, &server_db))
            .await
            .unwrap();
        conn.batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
            .await
            .unwrap();
    }
    let mut f = Fixture::start_on(&server_db).await;
    let (a, b) = (unique("pgplanta"), unique("pgplantb"));
    let (slug_a, slug_b) = (a.replace('_', "-"), b.replace('_', "-"));
    for (slug, name) in [(&slug_a, &a), (&slug_b, &b)] {
        let run = f.provision(slug, name, json!({})).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let (role_a, role_b) = (format!("{a}_user"), format!("{b}_user"));
    // Tenant A, with its own credentials, on the server alias's database.
    let planted = connect(&role_a, &server_db)
        .await
        .expect("tenant A logs in");
    planted
        .batch_execute(&format!(
            "CREATE FUNCTION public.shobj_description(oid, text) RETURNS text \
             LANGUAGE plpgsql AS $$ BEGIN \
               EXECUTE 'GRANT {role_b} TO {role_a}'; \
               RETURN pg_catalog.shobj_description($1, $2::name); \
             END $$"
        ))
        .await
        .expect("tenant A plants its function");
    // Any member of tenant A may look for drift; the plugin reads the roles' marks.
    let (status, report) = f.app.get(&format!("/api/v1/tenant/{slug_a}/drift")).await;
    assert_eq!(status, StatusCode::OK, "{report:#}");
    let (status, report) = f
        .app
        .get(&format!("/api/v1/tenant/{slug_a}/health/backends"))
        .await;
    assert!(status.is_success(), "{report:#}");
    assert!(
        !exists(&format!(
            "SELECT 1 WHERE pg_has_role('{role_a}', '{role_b}', 'MEMBER')"
        ))
        .await,
        "tenant A took tenant B's role through the plugin"
    );
    // Tenant A's function goes with the database, before the roles are dropped.
    admin(&format!("DROP DATABASE IF EXISTS {server_db} WITH (FORCE)")).await;
    f.finish().await;
}

/// A connection template names the tenant's database after the tenant: `{tenant_slug}` (like
/// the tenant's other fields) is filled from the tenant when the request leaves it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_template_names_the_database_after_the_tenant() {
    let mut f = Fixture::start().await;
    let (status, body) = f
        .app
        .post(
            "/api/v1/template",
            json!({
                "name": "per-tenant",
                "kind": "connection",
                "body": "postgresql://{tenant_slug}_user:{password}@127.0.0.1:5432/{tenant_slug}_db",
                "placeholders": ["tenant_slug", "password"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let slug = unique("pgt").replace('_', "-");
    let (role, database) = (format!("{slug}_user"), format!("{slug}_db"));
    f.tenants.push((role.clone(), database.clone()));
    let response = f
        .app
        .request(Method::POST, "/api/v1/tenant/provision")
        .json(&json!({
            "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
            "connection_template": {
                "template_name": "per-tenant",
                "placeholders": { "password": "s3cret'pass" },
            },
            "tier": "starter",
            "backends": { "postgres": settings() },
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = f.wait(accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{database}' \
             AND pg_get_userbyid(datdba) = '{role}'"
        ))
        .await,
        "the tenant's database, named after it"
    );
    // Its database health is checked through the connection it was provisioned with.
    let (status, health) = f
        .app
        .get(&format!("/api/v1/tenant/{slug}/health/database"))
        .await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "connected", "{health}");
    assert!(!health.to_string().contains("s3cret"), "{health}");
    let (_, public) = f.app.get(&format!("/t/{slug}/health")).await;
    assert_eq!(public["database"], "configured", "{public}");

    // Another tenant whose connection names this tenant's database as its user is refused
    // before anything is made, naming the field and whose it is.
    let other = unique("pgo").replace('_', "-");
    let response = f
        .app
        .request(Method::POST, "/api/v1/tenant/provision")
        .json(&json!({
            "tenant": { "slug": format!("{other}-2"), "name": "Intruder" },
            "connection_template": {
                "template_name": "tenant-postgres",
                "placeholders": {
                    "user": role,
                    "password": "another",
                    "host": "127.0.0.1",
                    "port": 5432,
                    "database_name": database,
                },
            },
            "tier": "starter",
            "backends": { "postgres": settings() },
        }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let refused: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let field = &refused["error"]["details"]["fields"][0];
    assert_eq!(field["field"], "connection_template", "{refused}");
    assert_eq!(field["rule"], "unique", "{refused}");
    assert!(
        field["message"]
            .as_str()
            .unwrap()
            .contains(&format!("tenant `{slug}`")),
        "{refused}"
    );
    let (status, _) = f.app.get(&format!("/api/v1/tenant/{other}-2")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");
    f.finish().await;
}

/// A tier change reaches the backend: the tenant's role gets the new tier's connection limit
/// (starter 10 → enterprise 100 → free 5), through a run queued with the change, and drift is
/// judged against the tier the tenant has now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_change_reaches_the_role_and_drift_follows_the_tier() {
    let mut f = Fixture::start().await;
    let name = unique("pgtier");
    let slug = name.replace('_', "-");
    let run = f.provision(&slug, &name, settings()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let role = format!("{name}_user");
    let limit = |expected: i64| {
        let role = role.clone();
        async move {
            exists(&format!(
                "SELECT 1 FROM pg_roles WHERE rolname = '{role}' AND rolconnlimit = {expected}"
            ))
            .await
        }
    };
    assert!(limit(10).await, "starter");
    for (tier, expected) in [("enterprise", 100), ("free", 5)] {
        let (status, body) = f
            .app
            .patch(&format!("/api/v1/tenant/{slug}"), json!({ "tier": tier }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, runs) = f
            .app
            .get(&format!("/api/v1/provisioning?tenant={slug}&limit=1"))
            .await;
        let run = f.wait(runs[0]["url"].as_str().unwrap()).await;
        assert_eq!(run["kind"], "apply", "{run:#}");
        assert_eq!(run["status"], "succeeded", "{run:#}");
        assert!(limit(expected).await, "{tier}: {run:#}");
        let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug}/drift")).await;
        assert_eq!(report["drift"], json!([]), "{tier}: {report:#}");
    }
    // Set by hand to the old tier's limit: drift, against the tier it has now.
    admin(&format!("ALTER ROLE {role} CONNECTION LIMIT 100")).await;
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{slug}/drift")).await;
    assert!(
        report["drift"]
            .to_string()
            .contains("connection limit is 100, not 5 (tier free)"),
        "{report:#}"
    );
    f.finish().await;
}

/// A schema per tenant in one shared database (`isolation = "schema"`), with the documented
/// grant plus CREATE and CONNECT (WITH GRANT OPTION) on that database: each tenant's role owns only its schema,
/// works in it by default (its `search_path` is pinned), cannot reach the other's; drift,
/// repair, suspension and purge hold as for a database per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_per_tenant_in_a_shared_database_keeps_each_to_its_own() {
    let mut f = Fixture::start().await;
    let shared = unique("pgshared");
    admin(&format!("CREATE DATABASE {shared}")).await;
    admin(&format!("REVOKE CONNECT ON DATABASE {shared} FROM PUBLIC")).await;
    admin(&format!(
        "GRANT CREATE, CONNECT ON DATABASE {shared} TO {} WITH GRANT OPTION",
        f.server_role
    ))
    .await;
    let mut tenants = Vec::new();
    for prefix in ["pgsa", "pgsb"] {
        let name = unique(prefix);
        let slug = name.replace('_', "-");
        let role = format!("{name}_user");
        f.tenants.push((role.clone(), shared.clone()));
        let response = f
            .app
            .request(Method::POST, "/api/v1/tenant/provision")
            .json(&json!({
                "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
                "connection_template": {
                    "template_name": "tenant-postgres",
                    "placeholders": {
                        "user": role,
                        "password": "s3cret'pass",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "database_name": shared,
                    },
                },
                "tier": "starter",
                "backends": { "postgres": { "isolation": "schema" } },
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let run = f.wait(accepted["url"].as_str().unwrap()).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        tenants.push((slug, role));
    }
    let (a_slug, a_role) = tenants[0].clone();
    let (b_slug, b_role) = tenants[1].clone();

    // Each works in its own schema by default, and cannot reach the other's.
    let a = connect(&a_role, &shared).await.expect("a logs in");
    a.batch_execute("CREATE TABLE notes (id int, body text); INSERT INTO notes VALUES (1, 'mine')")
        .await
        .unwrap();
    let schema: String = a
        .query_one(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'notes'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schema, a_role, "the table went to its own schema");
    let b = connect(&b_role, &shared).await.expect("b logs in");
    let refused = b
        .query(&format!("SELECT * FROM \"{a_role}\".notes"), &[])
        .await
        .expect_err("the other tenant's schema is refused");
    assert!(
        format!("{refused:?}").contains("permission denied for schema"),
        "{refused:?}"
    );
    drop(b);

    // No drift; measured storage is the schema's.
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    let (status, measured) = f
        .app
        .post(&format!("/api/v1/tenant/{a_slug}/usage/measure"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{measured}");
    assert!(measured.to_string().contains("storage_gb"), "{measured}");

    // A grant to PUBLIC shows as drift, and a repair takes it away.
    admin_on(
        &shared,
        &format!("GRANT USAGE ON SCHEMA \"{a_role}\" TO PUBLIC"),
    )
    .await;
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert!(
        report["drift"].to_string().contains("PUBLIC may use it"),
        "{report:#}"
    );
    let (status, repair) = f
        .app
        .post(&format!("/api/v1/tenant/{a_slug}/reconcile"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repair}");
    let run = f.wait(repair["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");

    // Suspended: no login; reactivated: back.
    f.lifecycle(&a_slug, "suspend").await;
    drop(a);
    assert!(connect(&a_role, &shared).await.is_err(), "login refused");
    f.lifecycle(&a_slug, "reactivate").await;
    connect(&a_role, &shared).await.expect("logs in again");

    // Purged: its schema and role go, the shared database and the other tenant stay.
    let a_bundle = bundle_of(&f, &a_slug).await;
    f.lifecycle(&a_slug, "cancel").await;
    let (status, body) = f
        .app
        .delete(&format!(
            "/api/v1/tenant/{a_slug}?hard=true&force=true&reason=test"
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, runs) = f.app.get("/api/v1/provisioning?limit=1").await;
    let purge = f.wait(runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(purge["status"], "succeeded", "{purge:#}");
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{a_role}'"
        ))
        .await,
        "the role is gone"
    );
    let b = connect(&b_role, &shared).await.expect("b is untouched");
    let left: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'pgs%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only b's schema is left");
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{b_slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    drop(b);
    // Its bundle brings its schema back, with its table and row.
    import_bundle(&f, a_bundle).await;
    let a = connect(&a_role, &shared).await.expect("a logs in again");
    let body: String = a
        .query_one("SELECT body FROM notes WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "mine");
    drop(a);
    f.finish().await;
}

/// Runs `statement` as the test server's superuser in `database`.
async fn admin_on(database: &str, statement: &str) {
    let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
    url.set_path(database);
    let mut conn = AsyncPgConnection::establish(url.as_str()).await.unwrap();
    conn.batch_execute(statement).await.unwrap();
}

/// Tenants' rows in tables every tenant shares (`isolation = "shared"`), the tables the
/// operator's (owned by the plugin's role): each tenant's role reads and writes only the rows
/// of its tenant column, row-level security forced; drift, repair and purge (its rows deleted)
/// hold, and the other tenant's rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_database_keeps_each_tenant_to_its_rows() {
    let mut f = Fixture::start().await;
    let shared = unique("pgrows");
    admin(&format!("CREATE DATABASE {shared}")).await;
    admin(&format!("REVOKE CONNECT ON DATABASE {shared} FROM PUBLIC")).await;
    admin(&format!(
        "GRANT CREATE, CONNECT ON DATABASE {shared} TO {} WITH GRANT OPTION",
        f.server_role
    ))
    .await;
    let names = [unique("pgra"), unique("pgrb")];
    let slugs: Vec<String> = names.iter().map(|n| n.replace('_', "-")).collect();
    admin_on(
        &shared,
        &format!(
            "CREATE SCHEMA app AUTHORIZATION {server}; \
             CREATE TABLE app.orders (id int, tenant text, amount int); \
             ALTER TABLE app.orders OWNER TO {server}; \
             INSERT INTO app.orders VALUES (1, '{a}', 10), (2, '{b}', 20), (3, '{a}', 30)",
            server = f.server_role,
            a = slugs[0],
            b = slugs[1]
        ),
    )
    .await;
    let settings = json!({
        "isolation": "shared",
        "rls": { "tables": [{ "schema": "app", "table": "orders", "column": "tenant" }] },
    });
    for (name, slug) in names.iter().zip(&slugs) {
        let role = format!("{name}_user");
        f.tenants.push((role.clone(), shared.clone()));
        let response = f
            .app
            .request(Method::POST, "/api/v1/tenant/provision")
            .json(&json!({
                "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
                "connection_template": {
                    "template_name": "tenant-postgres",
                    "placeholders": {
                        "user": role,
                        "password": "s3cret'pass",
                        "host": "127.0.0.1",
                        "port": 5432,
                        "database_name": shared,
                    },
                },
                "tier": "starter",
                "backends": { "postgres": settings },
            }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        let run = f.wait(accepted["url"].as_str().unwrap()).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let (a_role, a_slug, b_slug) = (format!("{}_user", names[0]), &slugs[0], &slugs[1]);

    // Its rows only, and no row of another tenant written.
    let a = connect(&a_role, &shared).await.expect("a logs in");
    let ids: Vec<i32> = a
        .query("SELECT id FROM app.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 3], "only its tenant's rows");
    a.execute(
        &format!("INSERT INTO app.orders VALUES (4, '{a_slug}', 40)"),
        &[],
    )
    .await
    .expect("its own row is written");
    let written = a
        .execute(
            &format!("INSERT INTO app.orders VALUES (5, '{b_slug}', 50)"),
            &[],
        )
        .await;
    assert!(written.is_err(), "a row of another tenant is refused");
    drop(a);

    // No drift; a dropped policy shows, and a repair brings it back.
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    admin_on(
        &shared,
        &format!("DROP POLICY \"tenant_{a_role}\" ON app.orders"),
    )
    .await;
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert!(
        report["drift"].to_string().contains("missing"),
        "{report:#}"
    );
    let (status, repair) = f
        .app
        .post(&format!("/api/v1/tenant/{a_slug}/reconcile"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repair}");
    let run = f.wait(repair["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let (_, report) = f.app.get(&format!("/api/v1/tenant/{a_slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    let (status, measured) = f
        .app
        .post(&format!("/api/v1/tenant/{a_slug}/usage/measure"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{measured}");
    assert!(measured.to_string().contains("storage_gb"), "{measured}");

    // Purged: its rows and role go; the other tenant's rows stay.
    let a_bundle = bundle_of(&f, a_slug).await;
    f.lifecycle(a_slug, "cancel").await;
    let (status, body) = f
        .app
        .delete(&format!(
            "/api/v1/tenant/{a_slug}?hard=true&force=true&reason=test"
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, runs) = f.app.get("/api/v1/provisioning?limit=1").await;
    let purge = f.wait(runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(purge["status"], "succeeded", "{purge:#}");
    let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
    url.set_path(&shared);
    let (client, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let left: Vec<String> = client
        .query("SELECT tenant FROM app.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        [b_slug.clone()],
        "only the other tenant's rows are left: {purge:#}"
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{a_role}'"
        ))
        .await,
        "the role is gone"
    );
    // Its bundle brings its rows back, beside the other tenant's.
    import_bundle(&f, a_bundle).await;
    let back: Vec<(i32, String)> = client
        .query("SELECT id, tenant FROM app.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        back,
        [
            (1, a_slug.clone()),
            (2, b_slug.clone()),
            (3, a_slug.clone()),
            (4, a_slug.clone())
        ]
    );
    drop(client);
    f.finish().await;
}

type Item = (
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
);

/// The rows of `items`, every column as it reads back.
async fn items(client: &tokio_postgres::Client) -> Vec<Item> {
    client
        .query(
            "SELECT id, name, price::text, at::text, doc::text, blob FROM items ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

/// The tenant's bundle (tar).
async fn bundle_of(f: &Fixture, slug: &str) -> Vec<u8> {
    let response = f
        .app
        .request(Method::GET, &format!("/api/v1/tenant/{slug}/bundle"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// Imports `bundle`; the import's outcome, which must be whole and verified.
async fn import_bundle(f: &Fixture, bundle: Vec<u8>) -> Value {
    let response = f
        .app
        .request(Method::POST, "/api/v1/tenant/bundle")
        .header("Content-Type", "application/x-tar")
        .body(bundle)
        .send()
        .await
        .unwrap();
    let (status, outcome) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome:#}");
    assert_eq!(outcome["ok"], true, "{outcome:#}");
    outcome
}

/// Purges `slug` (canceled first, then hard-deleted) and waits for the purge run.
async fn purge(f: &Fixture, slug: &str) {
    f.lifecycle(slug, "cancel").await;
    let (status, body) = f
        .app
        .delete(&format!(
            "/api/v1/tenant/{slug}?hard=true&force=true&reason=test"
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, runs) = f.app.get("/api/v1/provisioning?limit=1").await;
    let run = f.wait(runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
}

/// A tenant's data travels in its bundle: a table of several types with a serial id, exported,
/// the tenant purged (its database gone), imported — the same rows back, readable by its role,
/// the serial going on where it stood, and the import verified against the bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_database_travels_in_its_bundle() {
    let mut f = Fixture::start().await;
    let name = unique("pgdump");
    let slug = name.replace('_', "-");
    let run = f.provision(&slug, &name, json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let (role, database) = (format!("{name}_user"), format!("{name}_db"));
    let client = connect(&role, &database).await.expect("logs in");
    client
        .batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, \
             price numeric(20,2), at timestamptz, doc jsonb, blob bytea); \
             INSERT INTO items (name, price, at, doc, blob) VALUES \
             ('first', 123456789012345678.99, '2026-12-07 10:00:00+00', '{\"a\": [1, 2]}', '\\x00ff'), \
             ('it''s', NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap();
    let before = items(&client).await;
    assert_eq!(before.len(), 2);
    drop(client);

    let response = f
        .app
        .request(Method::GET, &format!("/api/v1/tenant/{slug}/bundle"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bundle = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bundle)
    );
    purge(&f, &slug).await;
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{database}'"
        ))
        .await,
        "purged"
    );

    let response = f
        .app
        .request(Method::POST, "/api/v1/tenant/bundle")
        .header("Content-Type", "application/x-tar")
        .body(bundle)
        .send()
        .await
        .unwrap();
    let (status, outcome) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome:#}");
    assert_eq!(outcome["ok"], true, "{outcome:#}");
    let client = connect(&role, &database).await.expect("logs in again");
    assert_eq!(items(&client).await, before, "the same rows back");
    let next: i32 = client
        .query_one(
            "INSERT INTO items (name) VALUES ('third') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 3, "the serial goes on where it stood");
    drop(client);
    f.finish().await;
}

/// In a shared database, a schema of the tenant's name that is not its own is never taken
/// over, and a provision that cannot finish (a shared table missing) is undone: the role it
/// made is dropped, the operator's schema and rows stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_patterns_never_adopt_and_undo_a_failed_provision() {
    let mut f = Fixture::start().await;
    let shared = unique("pgundo");
    admin(&format!("CREATE DATABASE {shared}")).await;
    admin(&format!(
        "GRANT CREATE, CONNECT ON DATABASE {shared} TO {} WITH GRANT OPTION",
        f.server_role
    ))
    .await;
    let name = unique("pgtaken");
    let role = format!("{name}_user");
    let other = unique("pgmiss");
    let other_role = format!("{other}_user");
    f.tenants.push((role.clone(), shared.clone()));
    f.tenants.push((other_role.clone(), shared.clone()));
    // Someone else's schema already has the name the tenant's would take.
    admin_on(
        &shared,
        &format!("CREATE SCHEMA \"{role}\"; CREATE TABLE \"{role}\".theirs (x int); INSERT INTO \"{role}\".theirs VALUES (7)"),
    )
    .await;
    let provision = |slug: String, role: String, settings: Value| {
        let f = &f;
        let shared = shared.clone();
        async move {
            let response = f
                .app
                .request(Method::POST, "/api/v1/tenant/provision")
                .json(&json!({
                    "tenant": { "slug": slug, "name": "Taken" },
                    "connection_template": {
                        "template_name": "tenant-postgres",
                        "placeholders": {
                            "user": role,
                            "password": "pw",
                            "host": "127.0.0.1",
                            "port": 5432,
                            "database_name": shared,
                        },
                    },
                    "tier": "starter",
                    "backends": { "postgres": settings },
                }))
                .send()
                .await
                .unwrap();
            let accepted: Value = response.json().await.unwrap();
            f.wait(accepted["url"].as_str().expect("queued")).await
        }
    };
    let run = provision(
        name.replace('_', "-"),
        role.clone(),
        json!({ "isolation": "schema" }),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("exists and is not tenant"),
        "{run:#}"
    );
    assert!(
        !exists(&format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'")).await,
        "the role it made is undone"
    );
    let mut url = url::Url::parse(&postgres_admin_url()).unwrap();
    url.set_path(&shared);
    let (client, connection) = tokio_postgres::connect(url.as_str(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let kept: i32 = client
        .query_one(&format!("SELECT x FROM \"{role}\".theirs"), &[])
        .await
        .expect("the other schema is untouched")
        .get(0);
    assert_eq!(kept, 7);

    // Shared tables, one of them missing: refused in the backend, undone.
    let run = provision(
        other.replace('_', "-"),
        other_role.clone(),
        json!({
            "isolation": "shared",
            "rls": { "tables": [{ "schema": "app", "table": "missing", "column": "tenant" }] },
        }),
    )
    .await;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "{run:#}"
    );
    assert!(
        !exists(&format!(
            "SELECT 1 FROM pg_roles WHERE rolname = '{other_role}'"
        ))
        .await,
        "the role it made is undone"
    );
    drop(client);
    f.finish().await;
}
