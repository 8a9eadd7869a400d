//! The `airflow` plugin against a real Apache Airflow 3.3.2 (started by `scripts/test` through
//! `scripts/backends/up`; its settings arrive as AIRFLOW_URL, AIRFLOW_USERNAME,
//! AIRFLOW_PASSWORD — a test that needs them fails, never skips, when they are missing), and
//! against a Kubernetes API test double (`common::kube`: no cluster can run here).
//!
//! Each test provisions a tenant of its own (a random slug), so the tests run in parallel and
//! leave nothing behind in Airflow.

use std::net::TcpListener;

use crate::common::airflow::{
    AirflowClient, configure, enable, grant_airflow, grant_host, grant_secret,
};
use crate::common::kube::KubeDouble;
use crate::common::{Backend, TestApp};
use serde_json::{Value, json};
use tenantry::plugin_host::{LifecycleChange, Outcome, PluginError, PluginTenant, Step};

/// A tenant of this test, created through the API.
/// Runs, in the real Airflow, a DAG tagged with the tenant's slug whose two tasks use its pool
/// (`airflow dags test`, through `scripts/backends/airflow run-dag`).
async fn run_tenant_dag(slug: &str, pool: &str) {
    let state = std::env::var("AIRFLOW_STATE").expect("AIRFLOW_STATE (scripts/test sets it)");
    let dags = tempfile::tempdir().unwrap();
    let dag_id = format!("probe_{}", slug.replace('-', "_"));
    let file = dags.path().join("probe.py");
    std::fs::write(
        &file,
        format!(
            r#"from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG("{dag_id}", start_date=datetime(2026, 1, 1), schedule=None, tags=["{slug}"]) as dag:
    EmptyOperator(task_id="extract", pool="{pool}") >> EmptyOperator(task_id="load", pool="{pool}")
"#
        ),
    )
    .unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/backends/airflow");
    let out = tokio::process::Command::new(script)
        .arg("run-dag")
        .arg(&state)
        .arg(&file)
        .arg(&dag_id)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "airflow dags test: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn create_tenant(app: &TestApp, tier: &str) -> PluginTenant {
    let slug = format!("af-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let (status, body) = app
        .post(
            "/api/v1/tenant",
            json!({
                "slug": slug,
                "name": "Acme Airflow Corp",
                "tier": tier,
                "contact": {"name": "Ops", "email": "ops@acme.example"},
            }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let field = |name: &str| {
        body[name]
            .as_str()
            .unwrap_or_else(|| panic!("tenant JSON has {name}: {body}"))
            .to_string()
    };
    PluginTenant {
        id: field("id"),
        slug: field("slug"),
        name: field("name"),
        tier: field("tier").parse().expect("a tier"),
        status: field("status"),
    }
}

/// A provisioning request as docs/provisioning.md describes it.
fn request(tenant: &PluginTenant, connections: Value, settings: Value) -> String {
    json!({
        "run": uuid::Uuid::now_v7().to_string(),
        "tenant": {
            "slug": tenant.slug, "name": tenant.name, "tier": tenant.tier,
            "default_schema": "acme_schema",
            "contact": {"name": "Ops", "email": "ops@acme.example"},
            "trial_days": null,
        },
        "connections": connections,
        "assets": [],
        "asset_bundle": null,
        "settings": settings,
    })
    .to_string()
}

async fn plan(app: &TestApp, tenant: &PluginTenant, request: String) -> Vec<Step> {
    let logged = app
        .ctx
        .plugins
        .plan_logged("airflow", tenant, request)
        .await;
    logged
        .result
        .expect("the plan call runs")
        .unwrap_or_else(|e| panic!("plan refused: {e:?}"))
}

/// Applies a step as the saga would: a transient failure (Airflow's SQLite metadata database
/// answers 5xx when it is busy, e.g. with the whole suite running) is retried a few times.
async fn try_apply(
    app: &TestApp,
    tenant: &PluginTenant,
    step: &Step,
) -> Result<Outcome, PluginError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let logged = app
            .ctx
            .plugins
            .apply(
                "airflow",
                tenant,
                step.clone(),
                format!("run-1:airflow:{}", step.id),
            )
            .await;
        match logged.result.expect("the apply call runs") {
            Err(PluginError::Transient(message)) if attempt < 4 => {
                eprintln!("transient failure, retrying: {message}");
                tokio::time::sleep(std::time::Duration::from_millis(500 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Applies a step; returns its outcome and its output as JSON.
async fn apply(app: &TestApp, tenant: &PluginTenant, step: &Step) -> (Outcome, Value) {
    let outcome = try_apply(app, tenant, step)
        .await
        .unwrap_or_else(|e| panic!("apply {} failed: {e:?}", step.id));
    let output = serde_json::from_str(&outcome.output).expect("the output is JSON");
    (outcome, output)
}

async fn compensate(app: &TestApp, tenant: &PluginTenant, step: &Step, outcome: &Outcome) {
    let logged = app
        .ctx
        .plugins
        .compensate(
            "airflow",
            tenant,
            step.clone(),
            outcome.clone(),
            format!("run-1:airflow:{}", step.id),
        )
        .await;
    logged
        .result
        .expect("the compensate call runs")
        .unwrap_or_else(|e| panic!("compensate {} failed: {e:?}", step.id));
}

/// The drift as `(resource, problem)` pairs.
async fn observe(
    app: &TestApp,
    tenant: &PluginTenant,
    applied: &[(Step, Outcome)],
) -> Vec<(String, String)> {
    let logged = app
        .ctx
        .plugins
        .observe("airflow", tenant, applied.to_vec())
        .await;
    logged
        .result
        .expect("the observe call runs")
        .unwrap_or_else(|e| panic!("observe failed: {e:?}"))
        .into_iter()
        .map(|d| (d.resource, d.problem))
        .collect()
}

async fn transition(app: &TestApp, tenant: &PluginTenant, change: LifecycleChange) -> Value {
    let logged = app
        .ctx
        .plugins
        .transition("airflow", tenant, change, "test".into())
        .await;
    let outcome = logged
        .result
        .expect("the transition call runs")
        .unwrap_or_else(|e| panic!("transition {change:?} failed: {e:?}"));
    serde_json::from_str(&outcome.output).expect("the output is JSON")
}

fn step<'a>(steps: &'a [Step], id: &str) -> &'a Step {
    steps
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no step {id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_plugin_provisions_observes_suspends_and_compensates_in_a_real_airflow() {
    let airflow = AirflowClient::from_env().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    grant_airflow(&app.ctx, &airflow.settings).await;
    let tenant = create_tenant(&app, "professional").await;
    let (slug, ks) = (tenant.slug.clone(), tenant.slug.replace('-', "_"));
    let pool = format!("tenant-{slug}");
    let conn_id = format!("tenant_{ks}_primary");

    // The plan: stable ids, the password decoded in the connection's input, nothing applied.
    let steps = plan(
        &app,
        &tenant,
        request(
            &tenant,
            json!([{
                "name": "primary", "template": "postgresql-default", "version": 2,
                "fingerprint": "sha256:00",
                "uri": "postgresql://acme_user:p%40ss%2Fw0rd@db.acme.example:5432/acme_db",
                "database": null,
            }]),
            json!({"variables": {"region": "eu-west-1", "max_retries": 3}}),
        ),
    )
    .await;
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["pool", "connection:primary", "variables", "kubernetes"]
    );
    let conn_input: Value =
        serde_json::from_str(&step(&steps, "connection:primary").input).unwrap();
    assert_eq!(conn_input["connection"]["password"], "p@ss/w0rd");
    assert!(
        steps.iter().all(|s| !s.description.contains("p@ss")),
        "no password in a description"
    );
    assert!(airflow.pool(&pool).await.is_none(), "plan changes nothing");

    // Apply every step; the pool twice (idempotent).
    let mut applied: Vec<(Step, Outcome)> = Vec::new();
    let (_, out) = apply(&app, &tenant, step(&steps, "pool")).await;
    assert_eq!(out["action"], "created");
    let (outcome, out) = apply(&app, &tenant, step(&steps, "pool")).await;
    assert_eq!(out["action"], "unchanged", "a second apply finds the pool");
    assert_eq!(airflow.pool_names(&pool).await, [pool.clone()], "one pool");
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 16);
    applied.push((step(&steps, "pool").clone(), outcome));

    // A tier change reaches the pool: the recorded step applied again for the tenant with its
    // new tier (what a tier change's run does) gives the new tier's slots, and drift is judged
    // against the tier the tenant has now.
    let enterprise = PluginTenant {
        tier: tenantry::tenants::Tier::Enterprise,
        ..tenant.clone()
    };
    let drifted = observe(&app, &enterprise, &applied).await;
    assert!(
        drifted
            .iter()
            .any(|(r, p)| r.contains(&pool) && p == "changed: slots 64 → 16"),
        "{drifted:?}"
    );
    let (_, out) = apply(&app, &enterprise, step(&steps, "pool")).await;
    assert_eq!(out["action"], "updated", "{out}");
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 64);
    assert!(
        observe(&app, &enterprise, &applied).await.is_empty(),
        "in step with its tier"
    );
    apply(&app, &tenant, step(&steps, "pool")).await;
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 16, "and back");

    let (outcome, out) = apply(&app, &tenant, step(&steps, "connection:primary")).await;
    assert_eq!(out["action"], "created");
    assert!(
        !outcome.output.contains("p@ss"),
        "no password in the output"
    );
    let (outcome, out) = apply(&app, &tenant, step(&steps, "connection:primary")).await;
    assert_eq!(
        out["action"], "updated",
        "a second apply rewrites the connection"
    );
    assert_eq!(airflow.connection_ids(&conn_id).await, [conn_id.clone()]);
    let conn = airflow
        .connection(&conn_id)
        .await
        .expect("the connection exists");
    // Airflow masks passwords in its answers ("***"): the decoded password is checked in the
    // plan's input above; here what Airflow shows.
    assert_eq!(conn["conn_type"], "postgres");
    assert_eq!(conn["host"], "db.acme.example");
    assert_eq!(conn["port"], 5432);
    assert_eq!(conn["login"], "acme_user");
    assert_eq!(conn["schema"], "acme_db");
    assert!(conn["password"].as_str().is_some_and(|p| !p.is_empty()));
    applied.push((step(&steps, "connection:primary").clone(), outcome));

    let (outcome, _) = apply(&app, &tenant, step(&steps, "variables")).await;
    for (key, value) in [
        ("slug", slug.as_str()),
        ("name", "Acme Airflow Corp"),
        ("tier", "professional"),
        ("schema", "acme_schema"),
        ("region", "eu-west-1"),
        ("max_retries", "3"),
    ] {
        assert_eq!(
            airflow
                .variable_value(&format!("tenant_{ks}_{key}"))
                .await
                .as_deref(),
            Some(value),
            "variable {key}"
        );
    }
    applied.push((step(&steps, "variables").clone(), outcome));
    // The tier's variable follows a tier change as the pool does.
    let tier_drift = observe(&app, &enterprise, &applied).await;
    assert!(
        tier_drift
            .iter()
            .any(|(r, p)| r.ends_with(&format!("tenant_{ks}_tier")) && p == "changed: value"),
        "{tier_drift:?}"
    );
    apply(&app, &enterprise, step(&steps, "variables")).await;
    assert_eq!(
        airflow
            .variable_value(&format!("tenant_{ks}_tier"))
            .await
            .as_deref(),
        Some("enterprise")
    );
    apply(&app, &tenant, step(&steps, "variables")).await;

    // Measure: the task runs of today in the tenant's pool and the DAGs tagged with its slug.
    let measured = |applied: Vec<(Step, Outcome)>| {
        let app = &app;
        let tenant = &tenant;
        async move {
            let logged = app.ctx.plugins.measure("airflow", tenant, applied).await;
            let figures = logged
                .result
                .expect("the measure call runs")
                .unwrap_or_else(|e| panic!("measure refused: {e:?}: {:?}", logged.log));
            figures
                .into_iter()
                .map(|m| (m.metric, m.value))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        measured(applied.clone()).await,
        [("task_runs".to_owned(), 0.0), ("dags".to_owned(), 0.0)]
    );
    run_tenant_dag(&slug, &pool).await;
    assert_eq!(
        measured(applied.clone()).await,
        [("task_runs".to_owned(), 2.0), ("dags".to_owned(), 1.0)],
        "the DAG run's two tasks in the tenant's pool, today"
    );
    assert!(
        measured(Vec::new()).await.is_empty(),
        "nothing applied, nothing measured"
    );

    // Export: the pool, the variables and the connection (without its password), naming what
    // may hold a secret — each variable's value, the connection's `extra` — for the bundle to
    // seal; a changed variable and a deleted connection are restored by the import, the
    // connection without its password, which the outcome says.
    let part = app
        .ctx
        .plugins
        .export_tenant("airflow", &tenant, applied.clone())
        .await
        .result
        .unwrap()
        .unwrap()
        .expect("a part");
    assert_eq!(part.media_type, "application/json");
    let data: Value = serde_json::from_slice(&part.data).unwrap();
    assert_eq!(data["pool"]["slots"], 16, "{data}");
    assert_eq!(data["connections"][0]["connection_id"], conn_id, "{data}");
    assert!(
        !String::from_utf8_lossy(&part.data).contains("p@ss"),
        "no password in a part"
    );
    let sealed: Vec<&str> = data["sealed"]
        .as_array()
        .expect("the sealed list")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for (i, v) in data["variables"].as_array().unwrap().iter().enumerate() {
        assert!(
            sealed.contains(&format!("/variables/{i}/value").as_str()),
            "{v} is sealed: {sealed:?}"
        );
    }
    assert!(sealed.contains(&"/connections/0/extra"), "{sealed:?}");
    assert!(
        data["variables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["key"] == format!("tenant_{ks}_region") && v["value"] == "eu-west-1"),
        "{data}"
    );
    airflow
        .set_variable(&format!("tenant_{ks}_region"), "us-east-1")
        .await;
    airflow.delete_connection(&conn_id).await;
    let restored = app
        .ctx
        .plugins
        .import_tenant("airflow", &tenant, part)
        .await
        .result
        .unwrap()
        .unwrap_or_else(|e| panic!("import refused: {e:?}"));
    assert_eq!(
        airflow
            .variable_value(&format!("tenant_{ks}_region"))
            .await
            .as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(
        airflow.connection(&conn_id).await.unwrap()["host"],
        "db.acme.example"
    );
    assert!(
        restored
            .manual_follow_up
            .as_deref()
            .is_some_and(|f| f.contains(&conn_id) && f.contains("password")),
        "{restored:?}"
    );
    // Provisioning again puts the password back, as the follow-up says.
    let (outcome, _) = apply(&app, &tenant, step(&steps, "connection:primary")).await;
    applied[1] = (step(&steps, "connection:primary").clone(), outcome);

    // Kubernetes without a Kubernetes API: rendered, not applied, not a failure.
    let (outcome, out) = apply(&app, &tenant, step(&steps, "kubernetes")).await;
    assert_eq!(out["applied"], false);
    assert_eq!(
        out["note"],
        "rendered, not applied: no Kubernetes API configured"
    );
    assert!(outcome.manual_follow_up.is_none());
    let kinds: Vec<&str> = out["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ResourceQuota",
            "LimitRange",
            "NetworkPolicy",
            "ServiceAccount",
            "Role",
            "RoleBinding"
        ]
    );
    assert_eq!(
        out["artifacts"][0]["metadata"]["name"],
        format!("airflow-{slug}")
    );
    assert_eq!(
        out["artifacts"][0]["metadata"]["labels"]["tier"],
        "professional"
    );
    assert_eq!(out["artifacts"][1]["spec"]["hard"]["requests.cpu"], "4");

    // No drift; then drift made behind the plugin's back.
    assert_eq!(observe(&app, &tenant, &applied).await, []);
    airflow.set_pool_slots(&pool, 4).await;
    airflow
        .delete_variable(&format!("tenant_{ks}_region"))
        .await;
    let drift = observe(&app, &tenant, &applied).await;
    assert!(
        drift.contains(&(
            format!("Airflow pool {pool}"),
            "changed: slots 16 → 4".into()
        )),
        "{drift:?}"
    );
    assert!(
        drift.contains(&(
            format!("Airflow variable tenant_{ks}_region"),
            "missing".into()
        )),
        "{drift:?}"
    );
    assert_eq!(drift.len(), 2, "{drift:?}");
    // Applying again repairs it (PATCH of the slots, the variable created again).
    let (_, out) = apply(&app, &tenant, step(&steps, "pool")).await;
    assert_eq!(out["action"], "updated");
    apply(&app, &tenant, step(&steps, "variables")).await;
    assert_eq!(observe(&app, &tenant, &applied).await, []);

    // Suspend: no slots, the flag set; the suspended pool is no drift. Reactivate: back to 16.
    let out = transition(&app, &tenant, LifecycleChange::Suspend).await;
    assert_eq!(out["previous_slots"], 16);
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 0);
    let flag = format!("tenant_{ks}_suspended");
    assert_eq!(airflow.variable_value(&flag).await.as_deref(), Some("true"));
    transition(&app, &tenant, LifecycleChange::Suspend).await;
    assert_eq!(observe(&app, &tenant, &applied).await, []);
    transition(&app, &tenant, LifecycleChange::Reactivate).await;
    assert_eq!(
        airflow.pool(&pool).await.unwrap()["slots"],
        16,
        "suspending twice keeps 16"
    );
    assert_eq!(airflow.variable(&flag).await, None);
    // Cancel is a suspension; leave the tenant canceled for the compensation below.
    transition(&app, &tenant, LifecycleChange::Cancel).await;
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 0);
    // A pool applied again while the tenant is suspended stays at 0 slots.
    let (_, out) = apply(&app, &tenant, step(&steps, "pool")).await;
    assert_eq!(out["slots"], 0, "{out}");
    assert_eq!(airflow.pool(&pool).await.unwrap()["slots"], 0);

    // Kubernetes through the API test double: every object created, a second apply finds them.
    let kube = KubeDouble::start(Some("kube-test-token")).await;
    grant_host(&app.ctx, &format!("127.0.0.1:{}", kube.port)).await;
    // Granted under its WIT 0.1.0 name, as an installation from before configuration has it:
    // it still serves while `kubernetes_url` is not configured.
    grant_secret(&app.ctx, "kubernetes-url", &kube.url).await;
    grant_secret(&app.ctx, "kubernetes-token", "kube-test-token").await;
    let (outcome, out) = apply(&app, &tenant, step(&steps, "kubernetes")).await;
    assert_eq!(out["applied"], true, "{out}");
    assert!(!outcome.output.contains("kube-test-token"));
    assert_eq!(
        kube.kinds(),
        [
            "LimitRange",
            "Namespace",
            "NetworkPolicy",
            "ResourceQuota",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    let ns = format!("airflow-{slug}");
    let quota = kube
        .object(&format!(
            "/api/v1/namespaces/{ns}/resourcequotas/tenant-quota"
        ))
        .expect("the quota");
    assert_eq!(quota["spec"]["hard"]["pods"], "25");
    assert!(
        kube.object(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/airflow-worker-binding"
        ))
        .is_some()
    );
    let (outcome, out) = apply(&app, &tenant, step(&steps, "kubernetes")).await;
    assert!(
        out["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "exists"),
        "{out}"
    );
    assert_eq!(kube.objects().len(), 7);
    applied.push((step(&steps, "kubernetes").clone(), outcome));
    assert_eq!(observe(&app, &tenant, &applied).await, []);

    // A tier change reaches the namespace: drift is judged against the tenant's tier now, and
    // the recorded step applied for the tenant as it is (a tier change's run) patches the quota
    // and the namespace's tier label in place.
    let kube_drift = |drift: Vec<(String, String)>| -> Vec<(String, String)> {
        drift
            .into_iter()
            .filter(|(r, _)| r.starts_with("Kubernetes"))
            .collect()
    };
    let quota_path = format!("/api/v1/namespaces/{ns}/resourcequotas/tenant-quota");
    let drifted = kube_drift(observe(&app, &enterprise, &applied).await);
    assert_eq!(drifted.len(), 2, "{drifted:?}");
    assert_eq!(drifted[0].0, "Kubernetes Namespace ".to_string() + &ns);
    assert_eq!(drifted[0].1, "changed: labels");
    assert_eq!(drifted[1].0, "Kubernetes ResourceQuota tenant-quota");
    assert!(
        drifted[1].1.starts_with("changed: ")
            && drifted[1].1.contains("pods 50 → 25")
            && drifted[1].1.contains("requests.cpu 8 → 4"),
        "{drifted:?}"
    );
    let (_, out) = apply(&app, &enterprise, step(&steps, "kubernetes")).await;
    let results: Vec<(&str, &str)> = out["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("Namespace", "updated"),
            ("ResourceQuota", "updated"),
            ("LimitRange", "exists"),
            ("NetworkPolicy", "exists"),
            ("ServiceAccount", "exists"),
            ("Role", "exists"),
            ("RoleBinding", "exists"),
        ],
        "{out}"
    );
    let quota = kube.object(&quota_path).expect("the quota");
    assert_eq!(quota["spec"]["hard"]["pods"], "50");
    assert_eq!(quota["spec"]["hard"]["limits.memory"], "64Gi");
    assert_eq!(
        kube.object(&format!("/api/v1/namespaces/{ns}")).unwrap()["metadata"]["labels"]["tier"],
        "enterprise"
    );
    assert_eq!(out["artifacts"][1]["spec"]["hard"]["pods"], "50", "{out}");
    assert_eq!(kube_drift(observe(&app, &enterprise, &applied).await), []);
    assert!(
        kube.requests().contains(&format!("PATCH {quota_path}")),
        "patched in place, not deleted and created: {:?}",
        kube.requests()
    );
    // An edit by hand (a quota entry changed, one added) is drift, and apply puts it back.
    kube.edit(&quota_path, |q| {
        q["spec"]["hard"]["pods"] = "500".into();
        q["spec"]["hard"]["count/jobs.batch"] = "3".into();
    });
    let drifted = kube_drift(observe(&app, &enterprise, &applied).await);
    assert_eq!(
        drifted,
        [(
            "Kubernetes ResourceQuota tenant-quota".to_string(),
            "changed: count/jobs.batch none → 3, pods 50 → 500".to_string()
        )]
    );
    // And back down to the tenant's own tier.
    apply(&app, &tenant, step(&steps, "kubernetes")).await;
    let quota = kube.object(&quota_path).expect("the quota");
    assert_eq!(quota["spec"]["hard"]["pods"], "25");
    assert_eq!(quota["spec"]["hard"].get("count/jobs.batch"), None);
    assert_eq!(observe(&app, &tenant, &applied).await, []);
    assert!(kube.remove(&format!(
        "/api/v1/namespaces/{ns}/limitranges/tenant-limits"
    )));
    assert_eq!(
        observe(&app, &tenant, &applied).await,
        [(
            "Kubernetes LimitRange tenant-limits".to_string(),
            "missing".to_string()
        )]
    );

    // Compensation in reverse: everything gone, the namespace deleted; a second time is fine.
    for (step, outcome) in applied.iter().rev() {
        compensate(&app, &tenant, step, outcome).await;
    }
    assert!(
        kube.requests()
            .contains(&format!("DELETE /api/v1/namespaces/{ns}"))
    );
    assert!(kube.objects().is_empty(), "{:?}", kube.objects());
    assert_eq!(airflow.pool(&pool).await, None);
    assert_eq!(airflow.connection(&conn_id).await, None);
    assert_eq!(
        airflow.variable_keys(&format!("tenant_{ks}_")).await,
        Vec::<String>::new()
    );
    for (step, outcome) in applied.iter().rev() {
        compensate(&app, &tenant, step, outcome).await;
    }
    let out = transition(&app, &tenant, LifecycleChange::Purge).await;
    assert_eq!(out["purged"], true);
    assert_eq!(
        out["note"],
        "nothing left in Airflow: every applied step was compensated"
    );

    kube.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_refusals_are_permanent_and_carry_no_secret() {
    let airflow = AirflowClient::from_env().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    grant_airflow(&app.ctx, &airflow.settings).await;
    let tenant = create_tenant(&app, "starter").await;

    // Airflow refuses a connection id it cannot take (422): permanent, with Airflow's reason,
    // without the password.
    let bad = Step {
        id: "connection:bad".into(),
        description: "a connection Airflow refuses".into(),
        input: json!({"name": "bad", "connection": {
            "connection_id": "tenant bad id", "conn_type": "postgres", "host": "db",
            "port": 5432, "login": "u", "password": "hunter2-secret", "schema": "s",
            "extra": null, "description": null,
        }})
        .to_string(),
    };
    match try_apply(&app, &tenant, &bad).await {
        Err(PluginError::Permanent(message)) => {
            assert!(message.contains("connection_id"), "{message}");
            assert!(!message.contains("hunter2-secret"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }

    // A URI that does not parse is refused by the plan, without quoting it.
    let logged = app
        .ctx
        .plugins
        .plan_logged(
            "airflow",
            &tenant,
            request(
                &tenant,
                json!([{"name": "primary", "uri": "postgresql://u:hunter2-secret@db:notaport/x"}]),
                json!({}),
            ),
        )
        .await;
    match logged.result.expect("the plan call runs") {
        Err(PluginError::Permanent(message)) => {
            assert!(message.contains("port"), "{message}");
            assert!(!message.contains("hunter2-secret"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }

    // Wrong credentials: permanent, naming the secrets, not their values.
    grant_secret(&app.ctx, "airflow-password", "not-the-password").await;
    let steps = plan(&app, &tenant, request(&tenant, json!([]), json!({}))).await;
    match try_apply(&app, &tenant, step(&steps, "pool")).await {
        Err(PluginError::Permanent(message)) => {
            assert!(message.contains("airflow-password"), "{message}");
            assert!(!message.contains("not-the-password"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(
        airflow
            .pool(&format!("tenant-{}", tenant.slug))
            .await
            .is_none()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airflow_on_a_closed_port_is_a_transient_failure() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    enable(&app.ctx).await;
    // A loopback port nothing listens on (bound, then released).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    grant_host(&app.ctx, &format!("127.0.0.1:{port}")).await;
    configure(&app.ctx, &format!("http://127.0.0.1:{port}"), "admin").await;
    grant_secret(&app.ctx, "airflow-password", "closed-port-password").await;
    let tenant = create_tenant(&app, "free").await;
    let steps = plan(&app, &tenant, request(&tenant, json!([]), json!({}))).await;
    let pool_input: Value = serde_json::from_str(&step(&steps, "pool").input).unwrap();
    assert_eq!(pool_input["slots"], 1, "free tier: 1 slot");
    match try_apply(&app, &tenant, step(&steps, "pool")).await {
        Err(PluginError::Transient(message)) => {
            assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            assert!(!message.contains("closed-port-password"), "{message}");
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    app.stop().await;
}
