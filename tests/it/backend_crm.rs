//! The `crm` plugin against a real BottleCRM (PyPI `django-crm` 1.35.0), started by
//! `scripts/test` through `scripts/backends/up` (CRM_URL, CRM_TOKEN, CRM_MAIL_DIR). Without it
//! these tests fail, saying to run `scripts/test`.
//!
//! Every call goes through the server's plugin host (the sandbox, its HTTP and its secrets), and
//! every claim is checked in BottleCRM itself through its API.

use crate::common::crm::CrmClient;
use crate::common::{Backend, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::plugin_host::{LifecycleChange, Logged, Outcome, PluginError, PluginTenant, Step};

const PLUGIN: &str = "crm";

/// A tenant created through the API (its name is `Tenant <slug>`).
async fn create_tenant(app: &TestApp, slug: &str) -> PluginTenant {
    let body = app.create_tenant(slug).await;
    PluginTenant {
        id: body["id"].as_str().expect("tenant id").to_owned(),
        slug: body["slug"].as_str().expect("tenant slug").to_owned(),
        name: body["name"].as_str().expect("tenant name").to_owned(),
        tier: body["tier"]
            .as_str()
            .unwrap_or("free")
            .parse()
            .expect("a tier"),
        status: body["status"].as_str().unwrap_or("active").to_owned(),
    }
}

/// A unique slug (BottleCRM's database lives as long as the test run, the organizations too).
fn unique_slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// The provisioning request of docs/provisioning.md, with the tenant's contact email.
fn request(tenant: &PluginTenant, email: &str) -> String {
    json!({
        "run": uuid::Uuid::now_v7().to_string(),
        "tenant": {
            "slug": tenant.slug, "name": tenant.name, "tier": tenant.tier,
            "default_schema": null,
            "contact": { "name": "Ops", "email": email },
            "trial_days": null,
        },
        "connections": [],
        "assets": [],
        "asset_bundle": null,
        "settings": {},
    })
    .to_string()
}

/// The result of a call that must succeed, with its log lines when it does not.
fn ok<T>(what: &str, logged: Logged<T>) -> T {
    match logged.result {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("{what}: the plugin refused: {e:?}\nlog: {:?}", logged.log),
        Err(e) => panic!("{what}: the call failed: {e}\nlog: {:?}", logged.log),
    }
}

/// The plugin's error of a call that must fail, and its log lines.
fn refused<T: std::fmt::Debug>(what: &str, logged: Logged<T>) -> PluginError {
    match logged.result {
        Ok(Err(e)) => e,
        Ok(Ok(value)) => panic!("{what}: succeeded: {value:?}"),
        Err(e) => panic!("{what}: the call failed: {e}\nlog: {:?}", logged.log),
    }
}

async fn plan(app: &TestApp, tenant: &PluginTenant, email: &str) -> Vec<Step> {
    ok(
        "plan",
        app.ctx
            .plugins
            .plan_logged(PLUGIN, tenant, request(tenant, email))
            .await,
    )
}

async fn apply(app: &TestApp, tenant: &PluginTenant, step: &Step, key: &str) -> Outcome {
    ok(
        &format!("apply {}", step.id),
        app.ctx
            .plugins
            .apply(PLUGIN, tenant, step.clone(), key.to_owned())
            .await,
    )
}

async fn transition(app: &TestApp, tenant: &PluginTenant, change: LifecycleChange) -> Outcome {
    ok(
        &format!("transition {change:?}"),
        app.ctx
            .plugins
            .transition(PLUGIN, tenant, change, "test".into())
            .await,
    )
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What the admin user's own token gets from an organization-bound endpoint.
async fn status_as(crm: &CrmClient, token: &str) -> StatusCode {
    crm.send(Method::GET, "/api/users/", token, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_suspends_reactivates_and_purges_in_a_real_bottlecrm() {
    let crm = CrmClient::from_env().await;
    let operator = crm.operator_email().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    crm.grant(&app).await;
    let slug = unique_slug("crm");
    let tenant = create_tenant(&app, &slug).await;
    let admin = format!("admin@{slug}.example.com");

    // plan: two stable steps, nothing created yet.
    let steps = plan(&app, &tenant, &admin).await;
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["organization", "admin-user"]);
    let org_name = json_of(&steps[0].input)["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(org_name, format!("Tenant {slug} - {slug}"));
    assert!(crm.organization_named(&org_name).await.is_none());
    let again = plan(&app, &tenant, &admin).await;
    assert_eq!(
        again.iter().map(|s| (&s.id, &s.input)).collect::<Vec<_>>(),
        steps.iter().map(|s| (&s.id, &s.input)).collect::<Vec<_>>(),
        "plan is stable"
    );

    // apply, each step twice with the same key: one organization, one user.
    let run = uuid::Uuid::now_v7();
    let key = |step: &Step| format!("{run}:crm:{}", step.id);
    let org_outcome = apply(&app, &tenant, &steps[0], &key(&steps[0])).await;
    let org_again = apply(&app, &tenant, &steps[0], &key(&steps[0])).await;
    let org_output = json_of(&org_outcome.output);
    assert_eq!(org_output["created"], true, "{org_output}");
    assert_eq!(json_of(&org_again.output)["created"], false);
    assert_eq!(
        json_of(&org_again.output)["organization"],
        org_output["organization"]
    );
    assert!(org_outcome.manual_follow_up.is_none());
    let org_id = org_output["organization"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let orgs = crm.organizations_named(&org_name).await;
    assert_eq!(orgs.len(), 1, "one organization: {orgs:?}");
    assert_eq!(orgs[0].id, org_id);

    let user_outcome = apply(&app, &tenant, &steps[1], &key(&steps[1])).await;
    let user_again = apply(&app, &tenant, &steps[1], &key(&steps[1])).await;
    let user_output = json_of(&user_outcome.output);
    assert_eq!(user_output["created"], true, "{user_output}");
    assert_eq!(json_of(&user_again.output)["created"], false);
    assert_eq!(user_output["user"]["email"], admin.as_str());
    assert_eq!(user_output["organization"]["id"], org_id.as_str());
    let users = crm.org_users(&org_id).await;
    let admins: Vec<_> = users.iter().filter(|u| u.email == admin).collect();
    assert_eq!(admins.len(), 1, "one admin user: {users:?}");
    assert_eq!(admins[0].role, "ADMIN");
    assert!(admins[0].active);
    assert_eq!(
        user_output["user"]["id"].as_str().unwrap(),
        admins[0].id.as_str()
    );

    // observe: no drift.
    let applied = vec![
        (steps[0].clone(), org_outcome.clone()),
        (steps[1].clone(), user_outcome.clone()),
    ];
    let observe = |applied: Vec<(Step, Outcome)>, tenant: PluginTenant| {
        let app = &app;
        async move {
            ok(
                "observe",
                app.ctx.plugins.observe(PLUGIN, &tenant, applied).await,
            )
        }
    };
    let drift = observe(applied.clone(), tenant.clone()).await;
    assert!(drift.is_empty(), "no drift: {drift:?}");

    // Other users of the tenant, added in BottleCRM: more than one page of its user list
    // (10 by default, 25 as the plugin reads it).
    let member = format!("member@{slug}.example.com");
    crm.add_user(&org_id, &member, "USER").await;
    let mut staff = Vec::new();
    for i in 0..26 {
        let email = format!("staff{i:02}@{slug}.example.com");
        crm.add_user(&org_id, &email, "USER").await;
        staff.push(email);
    }

    // Measure: the organization's active users (the operator aside).
    let measured = ok(
        "measure",
        app.ctx
            .plugins
            .measure(PLUGIN, &tenant, applied.clone())
            .await,
    );
    assert_eq!(measured.len(), 1);
    assert_eq!(
        (measured[0].metric.as_str(), measured[0].value),
        ("users", 28.0),
        "the admin, the member and 26 staff"
    );

    // Export the members; one deactivated behind the plugin's back is active again after the
    // import, and nobody is added twice.
    let part = ok(
        "export",
        app.ctx
            .plugins
            .export_tenant(PLUGIN, &tenant, applied.clone())
            .await,
    )
    .expect("a part");
    let exported = json_of(std::str::from_utf8(&part.data).unwrap());
    assert_eq!(
        exported["users"].as_array().unwrap().len(),
        28,
        "{exported}"
    );
    let member_user = crm.org_user(&org_id, &member).await.unwrap();
    crm.set_user_active(&org_id, &member_user.id, false).await;
    let restored = ok(
        "import",
        app.ctx.plugins.import_tenant(PLUGIN, &tenant, part).await,
    );
    assert_eq!(
        json_of(&restored.output)["added"],
        json!([]),
        "{}",
        restored.output
    );
    assert!(crm.org_user(&org_id, &member).await.unwrap().active);
    assert_eq!(
        crm.org_users(&org_id).await.len(),
        29,
        "28 and the operator"
    );

    // The admin signs in (magic link, code by mail) and works in the organization.
    let admin_token = crm.sign_in(&admin, &org_id).await;
    assert_eq!(status_as(&crm, &admin_token).await, StatusCode::OK);

    // suspend: every user but the operator inactive; the admin's token refused.
    let suspended = transition(&app, &tenant, LifecycleChange::Suspend).await;
    let output = json_of(&suspended.output);
    let mut deactivated: Vec<&str> = output["deactivated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    deactivated.sort();
    let mut expected = vec![admin.as_str(), member.as_str()];
    expected.extend(staff.iter().map(String::as_str));
    expected.sort();
    assert_eq!(deactivated, expected, "{output}");
    assert!(suspended.manual_follow_up.is_none());
    let users = crm.org_users(&org_id).await;
    assert_eq!(users.len(), expected.len() + 1, "{users:?}");
    for user in &users {
        assert_eq!(
            user.active,
            user.email == operator,
            "only the operator is active after suspend: {user:?}"
        );
    }
    assert!(
        crm.org_users(&org_id)
            .await
            .iter()
            .any(|u| u.active && u.role == "ADMIN"),
        "the operator stays the organization's active admin"
    );
    assert_eq!(
        status_as(&crm, &admin_token).await,
        StatusCode::FORBIDDEN,
        "a deactivated user's token is refused"
    );
    // Suspended: the inactive admin is expected, not drift.
    let mut suspended_tenant = tenant.clone();
    suspended_tenant.status = "suspended".into();
    let drift = observe(applied.clone(), suspended_tenant).await;
    assert!(drift.is_empty(), "no drift while suspended: {drift:?}");
    // Suspending twice changes nothing and forgets nobody.
    transition(&app, &tenant, LifecycleChange::Suspend).await;

    // reactivate: exactly those the suspensions deactivated.
    let reactivated = transition(&app, &tenant, LifecycleChange::Reactivate).await;
    let output = json_of(&reactivated.output);
    assert_eq!(
        output["reactivated"].as_array().unwrap().len(),
        expected.len(),
        "{output}"
    );
    for user in crm.org_users(&org_id).await {
        assert!(user.active, "{} active after reactivate", user.email);
    }
    assert_eq!(status_as(&crm, &admin_token).await, StatusCode::OK);

    // Drift: the admin deactivated behind the plugin's back. Then a user inactive before a
    // cancellation is not reactivated by it.
    let admin_user = crm.org_user(&org_id, &admin).await.unwrap();
    crm.set_user_active(&org_id, &admin_user.id, false).await;
    let drift = observe(applied.clone(), tenant.clone()).await;
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].resource, format!("admin user {admin}"));
    assert_eq!(drift[0].problem, "changed: inactive");
    crm.set_user_active(&org_id, &admin_user.id, true).await;
    let member_user = crm.org_user(&org_id, &member).await.unwrap();
    crm.set_user_active(&org_id, &member_user.id, false).await;
    transition(&app, &tenant, LifecycleChange::Cancel).await;
    transition(&app, &tenant, LifecycleChange::Reactivate).await;
    assert!(crm.org_user(&org_id, &admin).await.unwrap().active);
    assert!(
        !crm.org_user(&org_id, &member).await.unwrap().active,
        "a user inactive before the cancellation is not reactivated"
    );

    // purge: compensations in reverse order, then transition(purge).
    let logged = app
        .ctx
        .plugins
        .compensate(
            PLUGIN,
            &tenant,
            steps[1].clone(),
            user_outcome.clone(),
            key(&steps[1]),
        )
        .await;
    ok("compensate admin-user", logged);
    assert!(
        crm.org_user(&org_id, &admin).await.is_none(),
        "the admin user is removed"
    );
    // Undoing what is gone already succeeds.
    ok(
        "compensate admin-user again",
        app.ctx
            .plugins
            .compensate(
                PLUGIN,
                &tenant,
                steps[1].clone(),
                user_outcome.clone(),
                key(&steps[1]),
            )
            .await,
    );
    let logged = app
        .ctx
        .plugins
        .compensate(
            PLUGIN,
            &tenant,
            steps[0].clone(),
            org_outcome.clone(),
            key(&steps[0]),
        )
        .await;
    let undone = ok("compensate organization", logged);
    let follow_up = undone
        .manual_follow_up
        .expect("the organization left behind is the compensation's manual follow-up");
    assert!(follow_up.contains(&org_id), "{follow_up}");
    assert_eq!(
        crm.organizations_named(&org_name).await.len(),
        1,
        "BottleCRM's API cannot delete an organization"
    );

    let purged = transition(&app, &tenant, LifecycleChange::Purge).await;
    let follow_up = purged
        .manual_follow_up
        .clone()
        .expect("purge leaves the organization as a manual follow-up");
    assert!(
        follow_up.contains(&org_name) && follow_up.contains(&org_id),
        "{follow_up}"
    );
    let output = json_of(&purged.output);
    assert_eq!(output["organization_deleted"], false, "{output}");
    let left = crm.org_users(&org_id).await;
    assert_eq!(left.len(), 1, "only the operator is left: {left:?}");
    assert_eq!(left[0].email, operator);

    // observe after the purge: the admin user is missing.
    let drift = observe(applied, tenant.clone()).await;
    assert!(
        drift
            .iter()
            .any(|d| d.resource == format!("admin user {admin}") && d.problem == "missing"),
        "{drift:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_permanent_with_the_crm_message_and_outages_transient() {
    let crm = CrmClient::from_env().await;
    let app = TestApp::spawn(Backend::Sqlite).await;
    crm.grant(&app).await;
    let slug = unique_slug("dup");
    let tenant = create_tenant(&app, &slug).await;
    let steps = plan(&app, &tenant, &format!("admin@{slug}.example.com")).await;
    let org_name = json_of(&steps[0].input)["name"]
        .as_str()
        .unwrap()
        .to_owned();

    // No admin email: plan refuses, permanently.
    let mut no_contact: Value = serde_json::from_str(&request(&tenant, "x@y.z")).unwrap();
    no_contact["tenant"]["contact"] = Value::Null;
    let error = refused(
        "plan without an admin",
        app.ctx
            .plugins
            .plan_logged(PLUGIN, &tenant, no_contact.to_string())
            .await,
    );
    assert!(
        matches!(&error, PluginError::Permanent(m) if m.contains("admin_email")),
        "{error:?}"
    );

    // The organization's name taken behind the plugin's back, by someone the operator is not:
    // a user of another organization creates it.
    let other_slug = unique_slug("other");
    let (status, body) = crm
        .create_organization(&format!("Other - {other_slug}"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let other_org = body["org"]["id"].as_str().unwrap().to_owned();
    let stranger = format!("stranger@{other_slug}.example.com");
    crm.add_user(&other_org, &stranger, "ADMIN").await;
    let stranger_token = crm.sign_in(&stranger, &other_org).await;
    let (status, body) = crm
        .send(
            Method::POST,
            "/api/org/",
            &stranger_token,
            Some(json!({ "name": org_name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let error = refused(
        "apply organization with its name taken",
        app.ctx
            .plugins
            .apply(
                PLUGIN,
                &tenant,
                steps[0].clone(),
                format!("run:crm:{}", steps[0].id),
            )
            .await,
    );
    match &error {
        PluginError::Permanent(message) => {
            assert!(
                message.contains("Organization already exists with this name"),
                "the CRM's own message: {message}"
            );
            assert!(!message.contains(&crm.token), "no token in errors");
        }
        other => panic!("a duplicate name is permanent: {other:?}"),
    }

    // BottleCRM down (a granted port nothing listens on): transient, for every call.
    crm.grant_with_url(&app, "http://127.0.0.1:8001").await;
    let error = refused(
        "apply with BottleCRM down",
        app.ctx
            .plugins
            .apply(
                PLUGIN,
                &tenant,
                steps[0].clone(),
                format!("run:crm:{}", steps[0].id),
            )
            .await,
    );
    match &error {
        PluginError::Transient(message) => {
            assert!(message.contains("cannot reach BottleCRM"), "{message}");
            assert!(!message.contains(&crm.token), "no token in errors");
        }
        other => panic!("an unreachable CRM is transient: {other:?}"),
    }
    let error = refused(
        "suspend with BottleCRM down",
        app.ctx
            .plugins
            .transition(PLUGIN, &tenant, LifecycleChange::Suspend, "test".into())
            .await,
    );
    assert!(matches!(error, PluginError::Transient(_)), "{error:?}");

    // A token BottleCRM does not accept: permanent, and it says which secret to look at.
    let actor = tenantry::audit::Actor::system();
    tenantry::plugin_registry::configure(
        &app.ctx,
        &actor,
        PLUGIN,
        json!({ "url": crm.url }).as_object().unwrap().clone(),
    )
    .await
    .unwrap();
    tenantry::plugin_registry::grant(
        &app.ctx,
        &actor,
        PLUGIN,
        tenantry::plugin_registry::Capability::Secret {
            name: "crm-token".into(),
            value: "not-a-token-at-all".into(),
        },
    )
    .await
    .unwrap();
    let error = refused(
        "apply with a bad token",
        app.ctx
            .plugins
            .apply(
                PLUGIN,
                &tenant,
                steps[0].clone(),
                format!("run:crm:{}", steps[0].id),
            )
            .await,
    );
    match &error {
        PluginError::Permanent(message) => {
            assert!(message.contains("crm-token"), "{message}");
            assert!(!message.contains("not-a-token-at-all"), "{message}");
        }
        other => panic!("a refused token is permanent: {other:?}"),
    }
    app.stop().await;
}
