//! End to end through the HTTP API against the real backends that `scripts/test` starts (Apache
//! Superset, Apache Airflow, BottleCRM): a tenant is provisioned with one request, every resource
//! is checked through the backend's own API, suspended and reactivated, purged, and checked gone.
//! Failure paths with the real backends: a backend that refuses a step makes the saga compensate
//! the earlier steps in the other backend, and a backend that is down is retried, then the earlier
//! steps are compensated.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::airflow::{self as af, AirflowClient, AirflowSettings};
use crate::common::crm::CrmClient;
use crate::common::superset::{SupersetClient, asset_body};
use crate::common::{Backend, TestApp, postgres_admin_url};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::plugin_registry::{self as registry, Capability};

/// A PostgreSQL database with the tenant's data: `orders(id int, tenant_id text)`.
struct TenantData {
    name: String,
}

impl TenantData {
    async fn create() -> TenantData {
        let name = format!("tenantry_t_e2e_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        let mut data = AsyncPgConnection::establish(url.as_str()).await.unwrap();
        data.batch_execute("CREATE TABLE orders (id int, tenant_id text)")
            .await
            .unwrap();
        TenantData { name }
    }

    async fn drop(self) {
        if let Ok(mut conn) = AsyncPgConnection::establish(&postgres_admin_url()).await {
            let _ = conn
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| {
        // Real backends can be slow to answer while the whole suite runs: a few patient retries.
        c.provisioning.backoff_base_ms = 300;
        c.provisioning.backoff_max_ms = 2_000;
        c.provisioning.max_attempts = 4;
        c.provisioning.poll_interval_ms = 100;
        // Superset tests a database connection when it is created; give it time.
        c.plugins.provisioner_deadline_ms = 60_000;
    })
    .await
}

async fn grant_superset(app: &TestApp, superset: &SupersetClient) {
    let actor = Actor::system();
    registry::set_enabled(&app.ctx, &actor, "superset", true, None)
        .await
        .unwrap();
    let url = url::Url::parse(&superset.url).unwrap();
    let host = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    registry::grant(&app.ctx, &actor, "superset", Capability::Host(host))
        .await
        .unwrap();
    // Granted under the names a WIT 0.1.0 Superset plugin read them by, as an installation that
    // predates configuration has them: they still serve while `url` and `username` are not
    // configured (the plugin warns in its log how to move them).
    for (name, value) in [
        ("superset-url", superset.url.clone()),
        ("superset-username", superset.username.clone()),
        ("superset-password", superset.password.clone()),
    ] {
        registry::grant(
            &app.ctx,
            &actor,
            "superset",
            Capability::Secret {
                name: name.into(),
                value,
            },
        )
        .await
        .unwrap();
    }
}

/// The platform's templates: a PostgreSQL connection and a Superset asset bundle.
async fn templates(app: &TestApp) {
    let (status, body) = app
        .post(
            "/api/v1/template",
            json!({
                "name": "tenant-postgres",
                "kind": "connection",
                "body": "postgresql://{user}:{password}@{host}:{port}/{database}",
                "placeholders": ["user", "password", "host", "port", "database"],
                "tags": ["default"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The plugin's asset format with the tenant's slug as a placeholder; literal braces doubled.
    let body = asset_body("\u{0}SLUG")
        .replace("{}", "{{}}")
        .replace("\u{0}SLUG", "{tenant_slug}");
    let (status, created) = app
        .post(
            "/api/v1/template",
            json!({
                "name": "sales-dashboards",
                "kind": "asset",
                "format": "yaml",
                "body": body,
                "placeholders": ["tenant_slug"],
                "tags": ["default"],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
}

fn slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn underscored(slug: &str) -> String {
    slug.replace('-', "_")
}

async fn wait_run(app: &TestApp, url: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, run) = app.get(url).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if !matches!(
            run["status"].as_str(),
            Some("queued" | "running" | "compensating")
        ) {
            return run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "run did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a lifecycle action and waits for the run that carries it into the backends.
async fn lifecycle(app: &TestApp, slug: &str, action: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/v1/tenant/{slug}/{action}"),
            json!({ "reason": format!("e2e {action}") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, runs) = app
        .get(&format!("/api/v1/provisioning?tenant={slug}&limit=1"))
        .await;
    let run = wait_run(app, runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    run
}

/// Purges a canceled tenant (hard delete, forced) and waits for the purge run, which succeeds.
async fn purge(app: &TestApp, slug: &str) -> Value {
    let (status, _) = app
        .delete(&format!(
            "/api/v1/tenant/{slug}?hard=true&force=true&reason=e2e"
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, runs) = app.get("/api/v1/provisioning?limit=1").await;
    let purge = wait_run(app, runs[0]["url"].as_str().unwrap()).await;
    assert_eq!(purge["status"], "succeeded", "{purge:#}");
    purge
}

fn request(slug: &str, data: &TenantData, backends: Value) -> Value {
    json!({
        "tenant": {
            "slug": slug,
            "name": format!("E2E {slug}"),
            "oauth_issuer": "https://idp.example.com/oauth2/default",
            "client_id": "e2e-client",
            "client_secret": "e2e-client-secret",
            "default_schema": "public",
        },
        "connection_template": {
            "use_admin_template": true,
            "template_name": "tenant-postgres",
            "placeholders": {
                "user": "postgres",
                // `@` and `/` percent-encoded into the URI; loopback PostgreSQL trusts anyway.
                "password": "p@ss/w0rd",
                "host": "127.0.0.1",
                "port": 5432,
                "database": data.name,
            },
        },
        "assets": { "use_admin_templates": true, "template_tags": ["default"] },
        "tier": "professional",
        "contact": { "name": "Ops", "email": format!("ops+{slug}@example.com") },
        "backends": backends,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_and_airflow_tenant_is_provisioned_suspended_reactivated_and_purged() {
    let superset = SupersetClient::from_env().await;
    let airflow = AirflowClient::from_env().await;
    let app = spawn().await;
    grant_superset(&app, &superset).await;
    af::grant_airflow(&app.ctx, &AirflowSettings::from_env()).await;
    templates(&app).await;
    let data = TenantData::create().await;
    let slug = slug("e2e");
    let u = underscored(&slug);

    let response = app
        .request(Method::POST, "/api/v1/tenant/provision")
        .header("Idempotency-Key", format!("e2e-{slug}"))
        .json(&request(
            &slug,
            &data,
            json!({
                "superset": { "rls": { "table": "orders", "schema": "public", "column": "tenant_id" } },
                "airflow": { "variables": { "region": "eu-west" } },
            }),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // The run ended by checking that each backend holds what it created.
    let validated: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "validate")
        .map(|s| {
            assert_eq!(s["state"], "done", "{s}");
            s["plugin"].as_str().unwrap()
        })
        .collect();
    assert_eq!(validated.len(), 2, "{run:#}");
    let (_, tenant) = app.get(&format!("/api/v1/tenant/{slug}")).await;
    assert_eq!(tenant["status"], "active");

    // Superset holds the database, the role with access to it, the RLS rule and the dashboard.
    let database = superset
        .database_named(&format!("tenantry-{slug}-primary"))
        .await
        .expect("database connection in Superset");
    assert_eq!(
        superset
            .databases_named(&format!("tenantry-{slug}-primary"))
            .await,
        1
    );
    let role = superset
        .role_named(&format!("tenant-{slug}"))
        .await
        .expect("role in Superset");
    let role_id = role["id"].as_i64().unwrap();
    assert!(!superset.role_permissions(role_id).await.is_empty());
    let rls = superset
        .rls_named(&format!("tenantry-{slug}-rls"))
        .await
        .expect("RLS filter in Superset");
    assert_eq!(rls["clause"], format!("tenant_id = '{slug}'"));
    assert!(
        superset
            .dashboard_titled(&format!("Sales of {slug}"))
            .await
            .is_some(),
        "dashboard imported from the asset template"
    );
    // Airflow holds the pool sized by tier, the connection and the variables.
    let pool = airflow
        .pool(&format!("tenant-{slug}"))
        .await
        .expect("pool in Airflow");
    assert_eq!(pool["slots"], 16, "{pool}");
    let connection = airflow
        .connection(&format!("tenant_{u}_primary"))
        .await
        .expect("connection in Airflow");
    assert_eq!(connection["host"], "127.0.0.1");
    assert_eq!(connection["schema"], data.name);
    assert_eq!(
        airflow
            .variable_value(&format!("tenant_{u}_tier"))
            .await
            .as_deref(),
        Some("professional")
    );
    // Each resource records the template version that produced it; no drift.
    let (_, resources) = app.get(&format!("/api/v1/tenant/{slug}/resources")).await;
    let db_step = resources
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["plugin"] == "superset" && r["step"] == "database-primary")
        .expect("superset database resource");
    assert_eq!(db_step["template"], "tenant-postgres");
    assert_eq!(db_step["template_version"], 1);
    let (_, report) = app.get(&format!("/api/v1/tenant/{slug}/drift")).await;
    assert_eq!(report["drift"], json!([]), "{report:#}");
    assert_eq!(report["errors"], json!([]), "{report:#}");

    // Drift seen through the backends.
    airflow.set_pool_slots(&format!("tenant-{slug}"), 4).await;
    let (_, report) = app.get(&format!("/api/v1/tenant/{slug}/drift")).await;
    assert!(
        report["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["plugin"] == "airflow" && d["problem"].as_str().unwrap().contains("16 → 4")),
        "{report:#}"
    );
    // Drift in Superset too: the row-level-security filter deleted by hand.
    let rls_id = rls["id"].as_i64().unwrap();
    superset.delete("rowlevelsecurity", rls_id).await;
    let (status, health) = app
        .get(&format!("/api/v1/tenant/{slug}/health/backends"))
        .await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "drifted", "{health:#}");
    for backend in health["backends"].as_array().unwrap() {
        assert_eq!(backend["status"], "drifted", "{health:#}");
        assert!(backend["observed_at"].is_string(), "{backend}");
    }
    // The repair plan names exactly the drifted steps; the repair re-applies them.
    let (status, plan) = app
        .post(
            &format!("/api/v1/tenant/{slug}/reconcile?dry_run=true"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let mut planned: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["plugin"].as_str().unwrap(),
                s["step"].as_str().unwrap()
            )
        })
        .collect();
    planned.sort();
    assert_eq!(planned, ["airflow/pool", "superset/rls"], "{plan:#}");
    assert_eq!(plan["unattributed"], json!([]), "{plan:#}");
    let (status, repaired) = app
        .post(&format!("/api/v1/tenant/{slug}/reconcile"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{repaired}");
    let run = wait_run(&app, repaired["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        airflow.pool(&format!("tenant-{slug}")).await.unwrap()["slots"],
        16
    );
    let rls = superset
        .rls_named(&format!("tenantry-{slug}-rls"))
        .await
        .expect("RLS filter made again");
    assert_eq!(rls["clause"], format!("tenant_id = '{slug}'"));
    let (_, health) = app
        .get(&format!("/api/v1/tenant/{slug}/health/backends"))
        .await;
    assert_eq!(health["status"], "healthy", "{health:#}");

    // Suspend takes access away in both backends; reactivate gives it back.
    lifecycle(&app, &slug, "suspend").await;
    assert!(superset.role_permissions(role_id).await.is_empty());
    assert_eq!(
        airflow.pool(&format!("tenant-{slug}")).await.unwrap()["slots"],
        0
    );
    lifecycle(&app, &slug, "reactivate").await;
    assert!(!superset.role_permissions(role_id).await.is_empty());
    assert_eq!(
        airflow.pool(&format!("tenant-{slug}")).await.unwrap()["slots"],
        16
    );

    // Purge undoes everything in both backends.
    lifecycle(&app, &slug, "cancel").await;
    let purge = purge(&app, &slug).await;
    assert_eq!(purge["kind"], "purge");
    let _ = database;
    assert!(
        superset
            .database_named(&format!("tenantry-{slug}-primary"))
            .await
            .is_none()
    );
    assert!(
        superset
            .role_named(&format!("tenant-{slug}"))
            .await
            .is_none()
    );
    assert!(
        superset
            .rls_named(&format!("tenantry-{slug}-rls"))
            .await
            .is_none()
    );
    assert!(
        superset
            .dashboard_titled(&format!("Sales of {slug}"))
            .await
            .is_none()
    );
    assert!(airflow.pool(&format!("tenant-{slug}")).await.is_none());
    assert!(
        airflow
            .connection(&format!("tenant_{u}_primary"))
            .await
            .is_none()
    );
    assert!(
        airflow
            .variable_keys(&format!("tenant_{u}_"))
            .await
            .is_empty()
    );
    data.drop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_superset_refuses_compensates_what_airflow_was_given() {
    let superset = SupersetClient::from_env().await;
    let airflow = AirflowClient::from_env().await;
    let app = spawn().await;
    grant_superset(&app, &superset).await;
    af::grant_airflow(&app.ctx, &AirflowSettings::from_env()).await;
    templates(&app).await;
    let data = TenantData::create().await;
    let slug = slug("refused");
    let u = underscored(&slug);
    // Airflow first (done), then Superset: its connection test fails on a database that does
    // not exist — a refusal, not an outage.
    let mut body = request(&slug, &data, json!({ "airflow": {}, "superset": {} }));
    body["connection_template"]["placeholders"]["database"] = json!("tenantry_no_such_database");
    body["assets"] = Value::Null;
    let (status, accepted) = app.post("/api/v1/tenant/provision", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let steps = run["steps"].as_array().unwrap();
    let failed = steps
        .iter()
        .find(|s| s["state"] == "failed")
        .expect("a failed step");
    assert_eq!(failed["plugin"], "superset");
    assert_eq!(failed["attempts"], 1, "a refusal is not retried");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("tenantry_no_such_database"),
        "Superset's reason: {failed}"
    );
    assert!(!failed["error"].as_str().unwrap().contains("p@ss"));
    for s in steps
        .iter()
        .filter(|s| s["plugin"] == "airflow" && s["action"] == "apply")
    {
        assert_eq!(s["state"], "compensated", "{s}");
    }
    assert!(airflow.pool(&format!("tenant-{slug}")).await.is_none());
    assert!(
        airflow
            .connection(&format!("tenant_{u}_primary"))
            .await
            .is_none()
    );
    assert!(
        airflow
            .variable_keys(&format!("tenant_{u}_"))
            .await
            .is_empty()
    );
    let (_, tenant) = app.get(&format!("/api/v1/tenant/{slug}")).await;
    assert_eq!(tenant["status"], "failed");
    data.drop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_airflow_that_is_down_is_retried_then_superset_is_compensated() {
    let superset = SupersetClient::from_env().await;
    let app = spawn().await;
    grant_superset(&app, &superset).await;
    // Airflow's address points at a port where nothing listens: the backend is down.
    let down = AirflowSettings {
        url: "http://127.0.0.1:9".into(),
        ..AirflowSettings::from_env()
    };
    af::grant_airflow(&app.ctx, &down).await;
    templates(&app).await;
    let data = TenantData::create().await;
    let slug = slug("down");
    let mut body = request(&slug, &data, json!({ "superset": {}, "airflow": {} }));
    body["assets"] = Value::Null;
    let (status, accepted) = app.post("/api/v1/tenant/provision", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let steps = run["steps"].as_array().unwrap();
    let failed = steps.iter().find(|s| s["state"] == "failed").unwrap();
    assert_eq!(failed["plugin"], "airflow");
    assert_eq!(failed["attempts"], 4, "retried up to max_attempts");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 4 attempts"),
        "{run:#}"
    );
    for s in steps
        .iter()
        .filter(|s| s["plugin"] == "superset" && s["action"] == "apply")
    {
        assert_eq!(s["state"], "compensated", "{s}");
    }
    assert!(
        superset
            .database_named(&format!("tenantry-{slug}-primary"))
            .await
            .is_none()
    );
    assert!(
        superset
            .role_named(&format!("tenant-{slug}"))
            .await
            .is_none()
    );
    data.drop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_organization_and_admin_follow_the_tenant_and_purge_leaves_a_follow_up() {
    let crm = CrmClient::from_env().await;
    let app = spawn().await;
    crm.grant(&app).await;
    let slug = slug("crm");
    let email = format!("admin+{slug}@example.com");
    let (status, accepted) = app
        .post(
            "/api/v1/tenant/provision",
            json!({
                "tenant": { "slug": slug, "name": "Crm Co" },
                "backends": { "crm": { "admin_email": email } },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let org_name = format!("Crm Co - {slug}");
    let org = crm
        .organization_named(&org_name)
        .await
        .expect("organization in BottleCRM");
    let admin = crm
        .org_user(&org.id, &email)
        .await
        .expect("admin user in BottleCRM");
    assert!(admin.active);

    lifecycle(&app, &slug, "suspend").await;
    assert!(!crm.org_user(&org.id, &email).await.unwrap().active);
    lifecycle(&app, &slug, "reactivate").await;
    assert!(crm.org_user(&org.id, &email).await.unwrap().active);

    lifecycle(&app, &slug, "cancel").await;
    let purge = purge(&app, &slug).await;
    // BottleCRM's API cannot delete an organization: the run says so, never "done".
    let follow_ups = purge["manual_follow_ups"].as_array().unwrap();
    assert!(
        follow_ups
            .iter()
            .any(|f| f.as_str().unwrap().contains(&org_name)),
        "{purge:#}"
    );
    let user = crm.org_user(&org.id, &email).await;
    assert!(
        user.is_none() || !user.unwrap().active,
        "the admin can no longer sign in"
    );
    app.stop().await;
}

/// The `postgres` plugin and Superset in one request: the database the connection template
/// describes is made first (whatever order the request names the backends in), then Superset
/// registers it, its row-level-security dataset on the table the postgres plugin made, and the
/// tenant's dashboard; both measure and export; purge removes everything in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_makes_the_database_that_superset_registers_in_one_request() {
    let superset = SupersetClient::from_env().await;
    let app = spawn().await;
    grant_superset(&app, &superset).await;
    templates(&app).await;
    let server_role = common::pg::server_role("tp_e2e").await;
    common::pg::grant_postgres(&app.ctx, &server_role).await;
    let admin = postgres_admin_url();

    let slug = slug("pgss");
    let u = underscored(&slug);
    let data = TenantData {
        name: format!("{u}_db"),
    };
    let role = format!("{u}_user");
    let mut body = request(
        &slug,
        &data,
        json!({
            "superset": { "rls": { "table": "orders", "schema": "public", "column": "tenant_id" } },
            "postgres": { "rls": { "tables": [{
                "schema": "public",
                "table": "orders",
                "columns": [
                    { "name": "id", "type": "int" },
                    { "name": "tenant_id", "type": "text", "not_null": true },
                ],
            }] } },
        }),
    );
    body["connection_template"]["placeholders"]["user"] = json!(role);
    let (status, accepted) = app.post("/api/v1/tenant/provision", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let plugins: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "apply")
        .map(|s| s["plugin"].as_str().unwrap())
        .collect();
    let last_postgres = plugins.iter().rposition(|p| *p == "postgres").unwrap();
    let first_superset = plugins.iter().position(|p| *p == "superset").unwrap();
    assert!(last_postgres < first_superset, "{plugins:?}");
    assert!(
        superset
            .database_named(&format!("tenantry-{slug}-primary"))
            .await
            .is_some(),
        "Superset registered the database the postgres plugin made"
    );
    assert!(
        superset
            .dashboard_titled(&format!("Sales of {slug}"))
            .await
            .is_some()
    );

    // Both backends measure: Superset's dashboards and charts of the tenant's database, the
    // database's size.
    let (status, measured) = app
        .post(&format!("/api/v1/tenant/{slug}/usage/measure"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{measured}");
    assert_eq!(measured["failures"], json!([]), "{measured:#}");
    let value = |plugin: &str, metric: &str| -> f64 {
        measured["measured"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["plugin"] == plugin && m["metric"] == metric)
            .unwrap_or_else(|| panic!("no {plugin} {metric}: {measured:#}"))["value"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(value("superset", "dashboards"), 1.0);
    assert!(value("superset", "charts") >= 1.0);
    assert!(value("postgres", "storage_gb") > 0.0);

    // Superset hands over the tenant's dashboard as its export ZIP, and takes it back.
    let tenant = tenantry::tenants::get(&app.ctx, &slug).await.unwrap();
    let ptenant = tenantry::provisioning::plugin_tenant(&tenant);
    let mut applied = tenantry::provisioning::applied_steps(&app.ctx, &tenant)
        .await
        .unwrap();
    let part = app
        .ctx
        .plugins
        .export_tenant("superset", &ptenant, applied.remove("superset").unwrap())
        .await
        .result
        .unwrap()
        .unwrap()
        .expect("the tenant's dashboard");
    assert_eq!(part.media_type, "application/zip");
    assert!(part.data.starts_with(b"PK"), "a ZIP");
    let imported = app
        .ctx
        .plugins
        .import_tenant("superset", &ptenant, part)
        .await;
    let outcome = imported
        .result
        .unwrap()
        .unwrap_or_else(|e| panic!("{e:?}: {:?}", imported.log));
    assert!(outcome.output.contains("dashboard"), "{}", outcome.output);
    // Imported over itself, not twice (the lookup asserts there is one).
    assert!(
        superset
            .dashboard_titled(&format!("Sales of {slug}"))
            .await
            .is_some()
    );

    // Purge: Superset's side and the database and role are gone.
    lifecycle(&app, &slug, "cancel").await;
    purge(&app, &slug).await;
    assert!(
        superset
            .database_named(&format!("tenantry-{slug}-primary"))
            .await
            .is_none()
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let left = client
        .query(
            "SELECT 1 FROM pg_database WHERE datname = $1 UNION ALL SELECT 1 FROM pg_roles WHERE rolname = $2",
            &[&data.name, &role],
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "database and role dropped");
    data.drop().await;
    common::pg::drop_role(&role).await;
    common::pg::drop_role(&server_role).await;
    app.stop().await;
}

async fn bundle_of(app: &TestApp, slug: &str) -> (Vec<u8>, tenantry::bundles::Bundle) {
    let response = app
        .request(Method::GET, &format!("/api/v1/tenant/{slug}/bundle"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-tar"
    );
    let bytes = response.bytes().await.unwrap().to_vec();
    let bundle = tenantry::bundles::Bundle::from_tar(&bytes).expect("a valid bundle");
    (bytes, bundle)
}

/// A tenant as one bundle across the real Superset and Airflow: exported, purged from both,
/// imported (its resources made again, each backend's part restored), and exported again —
/// the two bundles are the same apart from what their manifests name as instance-specific.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_round_trip_through_superset_and_airflow_is_equal() {
    let superset = SupersetClient::from_env().await;
    let airflow = AirflowClient::from_env().await;
    let app = spawn().await;
    grant_superset(&app, &superset).await;
    af::grant_airflow(&app.ctx, &AirflowSettings::from_env()).await;
    templates(&app).await;
    let data = TenantData::create().await;
    let slug = slug("bndl");
    let u = underscored(&slug);
    let (status, accepted) = app
        .post(
            "/api/v1/tenant/provision",
            request(
                &slug,
                &data,
                json!({
                    "superset": { "rls": { "table": "orders", "schema": "public", "column": "tenant_id" } },
                    "airflow": { "variables": { "region": "eu-west" } },
                }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let run = wait_run(&app, accepted["url"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    // Something of the tenant's own in Airflow, beyond what provisioning made.
    airflow
        .set_variable(&format!("tenant_{u}_region"), "us-east")
        .await;

    let (first_bytes, first) = bundle_of(&app, &slug).await;
    let plugins: Vec<&str> = first
        .manifest
        .parts
        .iter()
        .filter_map(|p| p.plugin.as_deref())
        .collect();
    assert_eq!(plugins, ["airflow", "superset"], "{:#?}", first.manifest);
    assert!(
        !String::from_utf8_lossy(&first_bytes).contains("e2e-client-secret"),
        "secrets stay sealed"
    );
    assert!(
        !String::from_utf8_lossy(&first_bytes).contains("us-east"),
        "what a backend part names as possibly secret (an Airflow variable's value) is sealed"
    );

    lifecycle(&app, &slug, "cancel").await;
    purge(&app, &slug).await;
    assert!(airflow.pool(&format!("tenant-{slug}")).await.is_none());
    assert!(
        superset
            .database_named(&format!("tenantry-{slug}-primary"))
            .await
            .is_none()
    );

    // A dry run first: what would be created.
    let response = app
        .request(Method::POST, "/api/v1/tenant/bundle?dry_run=true")
        .header("Content-Type", "application/x-tar")
        .body(first_bytes.clone())
        .send()
        .await
        .unwrap();
    let (status, plan) = common::into_json(response).await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["dry_run"], true);
    let (status, _) = app.get(&format!("/api/v1/tenant/{slug}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a dry run creates nothing");

    let response = app
        .request(Method::POST, "/api/v1/tenant/bundle")
        .header("Content-Type", "application/x-tar")
        .body(first_bytes)
        .send()
        .await
        .unwrap();
    let (status, outcome) = common::into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{outcome:#}");
    assert_eq!(outcome["ok"], true, "{outcome:#}");
    assert_eq!(outcome["run_status"], "succeeded", "{outcome:#}");
    // Both backends hold the tenant again, with what was its own.
    assert_eq!(
        airflow.pool(&format!("tenant-{slug}")).await.unwrap()["slots"],
        16
    );
    assert_eq!(
        airflow
            .variable_value(&format!("tenant_{u}_region"))
            .await
            .as_deref(),
        Some("us-east")
    );
    assert!(
        superset
            .dashboard_titled(&format!("Sales of {slug}"))
            .await
            .is_some()
    );
    assert!(
        superset
            .rls_named(&format!("tenantry-{slug}-rls"))
            .await
            .is_some()
    );

    let (_, second) = bundle_of(&app, &slug).await;
    let differences = tenantry::bundles::differences(&first, &second);
    assert!(differences.is_empty(), "{differences:#?}");
    // Compared for real: the same steps, descriptions, templates and fingerprints in the
    // resources, the same registry records, and each backend's part without what the plugin
    // names instance-specific.
    let resources = |b: &tenantry::bundles::Bundle| -> Vec<(String, String)> {
        let rows: Value = b.json("provisioning/resources.json").unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["plugin"].as_str().unwrap().to_owned(),
                    r["step_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(resources(&first), resources(&second));
    assert!(resources(&first).len() >= 6, "{:?}", resources(&first));

    lifecycle(&app, &slug, "cancel").await;
    purge(&app, &slug).await;
    data.drop().await;
    app.stop().await;
}
