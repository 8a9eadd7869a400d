//! The `superset` plugin against a real Apache Superset (started by `scripts/test` through
//! `scripts/backends/up`; SUPERSET_URL, SUPERSET_USERNAME, SUPERSET_PASSWORD) and the machine's
//! PostgreSQL (the tenant's data). Each step is applied through the plugin host the way the
//! provisioning saga calls it, and checked through Superset's own API.

use crate::common::superset::{self as ss, SupersetClient, asset_body};
use crate::common::{Backend, TestApp, postgres_admin_url};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::plugin_host::{
    Drift, LifecycleChange, Logged, Outcome, PluginError, PluginTenant, Step,
};
use tenantry::plugin_registry::{self as registry, Capability};

/// A PostgreSQL database holding a tenant's data: `orders(id int, tenant_id text)`.
struct TenantData {
    name: String,
}

impl TenantData {
    async fn create() -> TenantData {
        let name = format!("tenantry_t_ss_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is needed by this test: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the tenant's database");
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        let mut data = AsyncPgConnection::establish(url.as_str()).await.unwrap();
        data.batch_execute(
            "CREATE TABLE orders (id int, tenant_id text);
             INSERT INTO orders VALUES (1, 'a'), (2, 'b');",
        )
        .await
        .expect("create orders");
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

/// Grants the plugin Superset's host and credentials (`url` may differ from SUPERSET_URL).
async fn grant(app: &TestApp, url: &str) {
    let (_, username, password) = ss::env();
    let parsed = url::Url::parse(url).expect("SUPERSET_URL is a URL");
    let host = parsed.host_str().unwrap().to_string();
    // The manifest requests `127.0.0.1:8088`, `localhost:8088` and the bare local hosts.
    let pattern = match parsed.port_or_known_default() {
        Some(8088) => format!("{host}:8088"),
        _ => host,
    };
    let actor = Actor::system();
    registry::grant(&app.ctx, &actor, "superset", Capability::Host(pattern))
        .await
        .expect("grant host");
    registry::configure(
        &app.ctx,
        &actor,
        "superset",
        serde_json::json!({ "url": url, "username": username })
            .as_object()
            .unwrap()
            .clone(),
    )
    .await
    .expect("configure superset");
    registry::grant(
        &app.ctx,
        &actor,
        "superset",
        Capability::Secret {
            name: "superset-password".into(),
            value: password,
        },
    )
    .await
    .expect("grant secret");
    // Built-in backend plugins start disabled until an operator enables them.
    registry::set_enabled(&app.ctx, &actor, "superset", true, None)
        .await
        .expect("enable superset");
}

async fn tenant(app: &TestApp, slug: &str) -> PluginTenant {
    let t = app.create_tenant(slug).await;
    PluginTenant {
        id: t["id"].as_str().unwrap().into(),
        slug: t["slug"].as_str().unwrap().into(),
        name: t["name"].as_str().unwrap().into(),
        tier: t["tier"]
            .as_str()
            .unwrap_or("free")
            .parse()
            .expect("a tier"),
        status: t["status"].as_str().unwrap_or("active").into(),
    }
}

/// The plugin's answer, or a panic with its log lines.
fn ok<T>(what: &str, logged: Logged<T>) -> T {
    match logged.result {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => panic!(
            "{what}: the plugin refused: {err:?}\nlog: {:#?}",
            logged.log
        ),
        Err(err) => panic!("{what}: the call failed: {err}\nlog: {:#?}", logged.log),
    }
}

fn plugin_error<T: std::fmt::Debug>(what: &str, logged: Logged<T>) -> PluginError {
    match logged.result {
        Ok(Err(err)) => err,
        other => panic!(
            "{what}: expected a plugin error, got {other:?}\nlog: {:#?}",
            logged.log
        ),
    }
}

async fn plan(app: &TestApp, tenant: &PluginTenant, request: &Value) -> Vec<Step> {
    ok(
        "plan",
        app.ctx
            .plugins
            .plan_logged("superset", tenant, request.to_string())
            .await,
    )
}

/// Applies a step as the saga would: a transient failure (a busy Superset while the whole suite
/// runs) is retried a few times; anything else is returned as it is.
async fn apply(app: &TestApp, tenant: &PluginTenant, step: &Step) -> Logged<Outcome> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let logged = app
            .ctx
            .plugins
            .apply(
                "superset",
                tenant,
                step.clone(),
                format!("run-1:superset:{}", step.id),
            )
            .await;
        match &logged.result {
            Ok(Err(PluginError::Transient(message))) if attempt < 4 => {
                eprintln!("transient failure, retrying: {message}");
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            _ => return logged,
        }
    }
}

async fn observe(app: &TestApp, tenant: &PluginTenant, applied: &[(Step, Outcome)]) -> Vec<Drift> {
    ok(
        "observe",
        app.ctx
            .plugins
            .observe("superset", tenant, applied.to_vec())
            .await,
    )
}

async fn transition(app: &TestApp, tenant: &PluginTenant, change: LifecycleChange) -> Value {
    let outcome = ok(
        "transition",
        app.ctx
            .plugins
            .transition("superset", tenant, change, "test".into())
            .await,
    );
    serde_json::from_str(&outcome.output).unwrap()
}

fn request(tenant: &PluginTenant, uri: &str, with_assets: bool) -> Value {
    json!({
        "run": "run-1",
        "tenant": {
            "slug": tenant.slug, "name": tenant.name, "tier": tenant.tier,
            "default_schema": null, "contact": null, "trial_days": null
        },
        "connections": [{
            "name": "primary",
            "template": "postgresql-default",
            "version": 1,
            "fingerprint": "sha256:test",
            "uri": uri,
            "database": {
                "database_name": format!("{} Database", tenant.name),
                "expose_in_sqllab": true, "allow_ctas": false, "allow_cvas": false,
                "allow_dml": false, "allow_run_async": false
            }
        }],
        "assets": if with_assets {
            json!([{"name": "sales-dashboards", "version": 1, "tags": ["default"],
                    "fingerprint": "sha256:test", "body": asset_body(&tenant.slug)}])
        } else {
            json!([])
        },
        "asset_bundle": null,
        "settings": {"rls": {"table": "orders", "schema": "public", "column": "tenant_id"}}
    })
}

fn slug() -> String {
    format!("ss-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_plugin_provisions_observes_suspends_and_compensates_a_tenant() {
    let superset = SupersetClient::from_env().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let data = TenantData::create().await;
    grant(&app, &superset.url).await;
    let slug = slug();
    let tenant = tenant(&app, &slug).await;
    // The password holds `@` and `/`, percent-encoded (PostgreSQL here trusts loopback).
    let uri = format!(
        "postgresql://postgres:p%40ss%2Fw0rd@127.0.0.1:5432/{}",
        data.name
    );

    let steps = plan(&app, &tenant, &request(&tenant, &uri, true)).await;
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["database-primary", "role", "rls", "assets"]);
    for step in &steps {
        assert!(!step.description.contains("p%40ss"), "{}", step.description);
    }

    let mut applied = Vec::new();
    for step in &steps {
        let outcome = ok(
            &format!("apply {}", step.id),
            apply(&app, &tenant, step).await,
        );
        applied.push((step.clone(), outcome));
    }
    // Idempotent: the database step again finds the same connection.
    let again = ok("apply again", apply(&app, &tenant, &steps[0]).await);
    let first: Value = serde_json::from_str(&applied[0].1.output).unwrap();
    let second: Value = serde_json::from_str(&again.output).unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["created"], json!(false));
    assert!(!again.output.contains("p%40ss") && !again.output.contains("p@ss"));
    let db_name = format!("tenantry-{slug}-primary");
    assert_eq!(superset.databases_named(&db_name).await, 1);
    // The role step too (and it does not duplicate permissions).
    ok("apply role again", apply(&app, &tenant, &steps[1]).await);

    // Everything is in Superset.
    let db = superset.database_named(&db_name).await.expect("database");
    let db_id = db["id"].as_i64().unwrap();
    let role_name = format!("tenant-{slug}");
    let role = superset.role_named(&role_name).await.expect("role");
    let role_id = role["id"].as_i64().unwrap();
    let access = format!("[{db_name}].(id:{db_id})");
    let permissions = superset.role_permissions(role_id).await;
    assert_eq!(permissions.len(), 1, "{permissions:?}");
    assert_eq!(permissions[0]["permission_name"], "database_access");
    assert_eq!(permissions[0]["view_menu_name"], access.as_str());
    let rls = superset
        .rls_named(&format!("tenantry-{slug}-rls"))
        .await
        .expect("RLS filter");
    assert_eq!(rls["clause"], format!("tenant_id = '{slug}'"));
    assert_eq!(rls["filter_type"], "Regular");
    assert_eq!(rls["roles"][0]["id"], role_id);
    assert_eq!(rls["tables"][0]["table_name"], "orders");
    let dashboard = superset
        .dashboard_titled(&format!("Sales of {slug}"))
        .await
        .expect("dashboard");
    let chart = superset
        .chart_named(&format!("Orders of {slug}"))
        .await
        .expect("chart");
    let datasets = superset.datasets_of(db_id).await;
    assert_eq!(datasets.len(), 1, "one dataset on orders: {datasets:?}");
    let assets: Value = serde_json::from_str(&applied[3].1.output).unwrap();
    assert_eq!(assets["dashboards"][0]["id"], dashboard["id"]);
    assert_eq!(assets["charts"][0]["id"], chart["id"]);
    // The tenant got its own UUIDs, not the template's.
    assert_ne!(
        assets["dashboards"][0]["uuid"],
        "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"
    );

    // No drift.
    let drift = observe(&app, &tenant, &applied).await;
    assert!(drift.is_empty(), "{drift:?}");

    // Suspend takes the role's permissions away; reactivate gives them back.
    let suspended = transition(&app, &tenant, LifecycleChange::Suspend).await;
    assert_eq!(
        suspended["permissions_removed"].as_array().unwrap().len(),
        1
    );
    assert!(superset.role_permissions(role_id).await.is_empty());
    // Suspending twice keeps what is to be restored.
    transition(&app, &tenant, LifecycleChange::Suspend).await;
    let drift = observe(&app, &tenant, &applied).await;
    assert!(drift.is_empty(), "{drift:?}");
    transition(&app, &tenant, LifecycleChange::Reactivate).await;
    let restored = superset.role_permissions(role_id).await;
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0]["view_menu_name"], access.as_str());
    let drift = observe(&app, &tenant, &applied).await;
    assert!(drift.is_empty(), "{drift:?}");

    // The database deleted behind the plugin's back is drift.
    superset.delete_database(&db_name).await;
    let drift = observe(&app, &tenant, &applied).await;
    assert!(
        drift
            .iter()
            .any(|d| d.resource == format!("database connection {db_name}")
                && d.problem == "missing"),
        "{drift:?}"
    );

    // Compensation in reverse order removes everything (what is already gone is a success).
    for (step, outcome) in applied.iter().rev() {
        ok(
            &format!("compensate {}", step.id),
            app.ctx
                .plugins
                .compensate(
                    "superset",
                    &tenant,
                    step.clone(),
                    outcome.clone(),
                    format!("run-1:superset:{}", step.id),
                )
                .await,
        );
    }
    assert!(superset.database_named(&db_name).await.is_none());
    assert!(superset.role_named(&role_name).await.is_none());
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
    assert!(
        superset
            .chart_named(&format!("Orders of {slug}"))
            .await
            .is_none()
    );
    // Purge after compensation: nothing left to remove, still a success.
    let purged = transition(&app, &tenant, LifecycleChange::Purge).await;
    assert_eq!(purged["deleted"], json!(false));

    data.drop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superset_plugin_tells_permanent_from_transient_failures() {
    let superset = SupersetClient::from_env().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    grant(&app, &superset.url).await;
    let tenant = tenant(&app, &slug()).await;

    // A database that does not exist: Superset refuses the connection (permanent, its message,
    // never the password).
    let missing = format!(
        "postgresql://postgres:s3cr%40t%2Fpw@127.0.0.1:5432/tenantry_t_ss_missing_{}",
        uuid::Uuid::new_v4().simple()
    );
    let steps = plan(&app, &tenant, &request(&tenant, &missing, false)).await;
    let err = plugin_error("apply", apply(&app, &tenant, &steps[0]).await);
    let PluginError::Permanent(message) = err else {
        panic!("expected permanent, got {err:?}");
    };
    assert!(message.contains("Superset answered 4"), "{message}");
    assert!(
        message.contains("CONNECTION_UNKNOWN_DATABASE_ERROR") || message.contains("does not exist"),
        "{message}"
    );
    assert!(!message.contains("s3cr"), "{message}");
    assert!(
        superset
            .database_named(&format!("tenantry-{}-primary", tenant.slug))
            .await
            .is_none()
    );

    // Superset unreachable (a closed port): transient.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    grant(&app, &format!("http://127.0.0.1:{closed}")).await;
    let err = plugin_error("apply", apply(&app, &tenant, &steps[0]).await);
    assert!(
        matches!(&err, PluginError::Transient(m) if m.contains("cannot reach Superset")),
        "{err:?}"
    );
    app.stop().await;
}
