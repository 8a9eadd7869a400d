//! The plan of a declarative spec: what would be created, changed and left, against the registry
//! and every backend (each plugin's `plan` and `observe`), and its application.

use super::super::request::{self, ProvisionRequest};
use super::super::{
    Provisioned, held_resources, pending_step, plugin_tenant, queued_run, resource_context,
    run_url, step_context,
};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::{PluginError, PluginTenant};
use crate::store::models::StepRow;
use crate::store::provisioning as sql;
use crate::tenants::input::ValidTenant;
use crate::tenants::{self, Tenant, TenantPatch, TenantStatus};
use crate::transaction;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// One line of a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanItem {
    /// `create`, `change` or `leave`.
    pub action: String,
    /// What: `tenant`, `tenant.tier`, `superset/role`…
    pub target: String,
    pub detail: String,
}

/// What applying a spec would do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplyPlan {
    pub tenant: String,
    /// Whether the tenant exists already.
    pub exists: bool,
    pub items: Vec<PlanItem>,
    /// Whether anything would change.
    pub changes: bool,
    #[serde(skip)]
    patch: Option<TenantPatch>,
    #[serde(skip)]
    steps: Vec<(String, crate::plugin_host::Step)>,
    /// The key of the database the request's connection names.
    #[serde(skip)]
    database_key: Option<String>,
}

pub(super) fn item(action: &str, target: impl Into<String>, detail: impl Into<String>) -> PlanItem {
    PlanItem {
        action: action.into(),
        target: target.into(),
        detail: detail.into(),
    }
}

/// Compares the request with what exists; changes nothing.
pub async fn plan(ctx: &Context, req: &ProvisionRequest) -> AppResult<ApplyPlan> {
    let slug = req.tenant.slug.clone();
    let existing = match tenants::get(ctx, &slug).await {
        Ok(t) => Some(t),
        Err(AppError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let prepared = request::prepare(ctx, req).await?;
    let Some(tenant) = existing else {
        return plan_new(ctx, slug, &prepared).await;
    };
    if tenant.status == TenantStatus::Provisioning {
        return Err(AppError::conflict(
            "run_in_progress",
            format!(
                "tenant `{slug}` is still being provisioned; apply again when its run has finished"
            ),
            json!({}),
        ));
    }
    let mut items = Vec::new();
    let patch = field_changes(req, &tenant, &prepared.tenant, &mut items);
    let steps = backend_changes(ctx, &prepared, &tenant, &mut items).await?;
    let changes = patch.is_some() || !steps.is_empty();
    Ok(ApplyPlan {
        tenant: slug,
        exists: true,
        items,
        changes,
        patch,
        steps,
        database_key: prepared.database_key.clone(),
    })
}

/// A new tenant: everything is created by one provisioning run.
async fn plan_new(
    ctx: &Context,
    slug: String,
    prepared: &request::Prepared,
) -> AppResult<ApplyPlan> {
    // A new tenant: everything is created by one provisioning run.
    let mut items = vec![item(
        "create",
        "tenant",
        format!(
            "{} ({}, tier {})",
            slug,
            prepared.tenant.name,
            prepared.tenant.tier.as_str()
        ),
    )];
    let ptenant = PluginTenant {
        id: "(new)".into(),
        slug: slug.clone(),
        name: prepared.tenant.name.clone(),
        tier: prepared.tenant.tier,
        status: crate::tenants::TenantStatus::Provisioning.to_string(),
    };
    for plugin in &prepared.backends {
        for step in plan_steps(ctx, prepared, plugin, &ptenant).await? {
            items.push(item(
                "create",
                format!("{plugin}/{}", step.id),
                step.description,
            ));
        }
    }
    return Ok(ApplyPlan {
        tenant: slug,
        exists: false,
        items,
        changes: true,
        patch: None,
        steps: Vec::new(),
        database_key: prepared.database_key.clone(),
    });
}

/// The tenant's fields the spec changes, each as a plan item; the PATCH that applies them,
/// when there is one. Secrets are compared by fingerprint and never shown.
fn field_changes(
    req: &ProvisionRequest,
    tenant: &Tenant,
    v: &ValidTenant,
    items: &mut Vec<PlanItem>,
) -> Option<TenantPatch> {
    let mut patch = TenantPatch::default();
    let mut changed_fields = false;
    let mut field = |name: &str, now: String, wanted: String| {
        if now != wanted {
            items.push(item(
                "change",
                format!("tenant.{name}"),
                format!("{now} → {wanted}"),
            ));
            true
        } else {
            false
        }
    };
    if field("name", tenant.name.clone(), v.name.clone()) {
        patch.name = Some(v.name.clone());
        changed_fields = true;
    }
    if field("tier", tenant.tier.as_str().into(), v.tier.as_str().into()) {
        patch.tier = Some(v.tier.as_str().into());
        changed_fields = true;
    }
    if req.tenant.contact.is_some()
        && field(
            "contact",
            json!(tenant.contact).to_string(),
            json!(v.contact).to_string(),
        )
    {
        patch.contact = Some(Some(v.contact.clone()));
        changed_fields = true;
    }
    if req.tenant.metadata.is_some()
        && field(
            "metadata",
            json!(tenant.metadata).to_string(),
            json!(v.metadata).to_string(),
        )
    {
        patch.metadata = Some(v.metadata.clone());
        changed_fields = true;
    }
    let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "(none)".into());
    if req.tenant.oauth_issuer.is_some()
        && field(
            "oauth_issuer",
            show(&tenant.oauth_issuer),
            show(&v.oauth.issuer),
        )
    {
        patch.oauth_issuer = Some(v.oauth.issuer.clone());
        changed_fields = true;
    }
    if req.tenant.client_id.is_some()
        && field(
            "client_id",
            show(&tenant.client_id),
            show(&v.oauth.client_id),
        )
    {
        patch.client_id = Some(v.oauth.client_id.clone());
        changed_fields = true;
    }
    if req.tenant.scopes.is_some()
        && field(
            "scopes",
            tenant.scopes.join(","),
            crate::tenants::model::split_scopes(&v.oauth.scopes).join(","),
        )
    {
        patch.scopes = req.tenant.scopes.clone();
        changed_fields = true;
    }
    if req.tenant.default_schema.is_some()
        && field(
            "default_schema",
            show(&tenant.default_schema),
            show(&v.default_schema),
        )
    {
        patch.default_schema = Some(v.default_schema.clone());
        changed_fields = true;
    }
    changed_fields |= secret_changes(tenant, v, items, &mut patch);
    changed_fields.then_some(patch)
}

/// The tenant's secrets the spec changes, compared by fingerprint and never shown; true when
/// one changes.
fn secret_changes(
    tenant: &Tenant,
    v: &ValidTenant,
    items: &mut Vec<PlanItem>,
    patch: &mut TenantPatch,
) -> bool {
    let mut changed = false;
    if let Some(secret) = &v.oauth.client_secret
        && tenant.client_secret.fingerprint.as_deref() != Some(&crate::secrets::fingerprint(secret))
    {
        items.push(item(
            "change",
            "tenant.client_secret",
            "(secret: a new value)",
        ));
        patch.client_secret = Some(Some(secret.clone()));
        changed = true;
    }
    if let Some(uri) = &v.db_uri
        && tenant.db_uri.fingerprint.as_deref() != Some(&crate::secrets::fingerprint(uri))
    {
        items.push(item("change", "tenant.db_uri", "(secret: a new value)"));
        patch.db_uri = Some(Some(uri.clone()));
        changed = true;
    }
    changed
}

/// The steps of each backend's plan that are new or whose inputs changed, each as a plan item;
/// what the tenant holds that the spec no longer names is left, and said so.
async fn backend_changes(
    ctx: &Context,
    prepared: &request::Prepared,
    tenant: &Tenant,
    items: &mut Vec<PlanItem>,
) -> AppResult<Vec<(String, crate::plugin_host::Step)>> {
    let held = held_resources(ctx, tenant).await?;
    let ptenant = PluginTenant {
        tier: prepared.tenant.tier,
        ..plugin_tenant(tenant)
    };
    let mut steps = Vec::new();
    let mut planned_keys = Vec::new();
    for plugin in &prepared.backends {
        for step in plan_steps(ctx, prepared, plugin, &ptenant).await? {
            planned_keys.push((plugin.clone(), step.id.clone()));
            let existing = held
                .iter()
                .find(|r| &r.plugin == plugin && r.step_id == step.id);
            match existing {
                None => {
                    items.push(item(
                        "create",
                        format!("{plugin}/{}", step.id),
                        step.description.clone(),
                    ));
                    steps.push((plugin.clone(), step));
                }
                Some(r) => {
                    let before = ctx
                        .keyring
                        .open(&r.input, &resource_context(&tenant.id, plugin, &step.id))
                        .map_err(AppError::internal)?;
                    if same_json(&before, &step.input) {
                        continue;
                    }
                    let detail = match (&r.template, r.template_version) {
                        (Some(t), Some(ver)) => format!(
                            "{} (made from {t}@{ver}; its inputs changed)",
                            step.description
                        ),
                        _ => format!("{} (its inputs changed)", step.description),
                    };
                    items.push(item("change", format!("{plugin}/{}", step.id), detail));
                    steps.push((plugin.clone(), step));
                }
            }
        }
    }
    for r in &held {
        if !planned_keys.contains(&(r.plugin.clone(), r.step_id.clone())) {
            items.push(item(
                "leave",
                format!("{}/{}", r.plugin, r.step_id),
                format!(
                    "{} — not in the spec; left as it is (purge the tenant to remove everything)",
                    r.description
                ),
            ));
        }
    }
    Ok(steps)
}

pub(super) fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub(crate) async fn plan_steps(
    ctx: &Context,
    prepared: &request::Prepared,
    plugin: &str,
    tenant: &crate::plugin_host::PluginTenant,
) -> AppResult<Vec<crate::plugin_host::Step>> {
    let request = prepared.plan_request("(plan)", plugin).to_string();
    match ctx
        .plugins
        .plan_logged(plugin, tenant, request)
        .await
        .result
    {
        Ok(Ok(steps)) => Ok(steps),
        Ok(Err(PluginError::Permanent(m))) | Ok(Err(PluginError::Transient(m))) => {
            Err(AppError::invalid(
                format!("backends.{plugin}"),
                "plan",
                format!("plugin `{plugin}` cannot plan this tenant: {m}"),
            ))
        }
        Err(err) => Err(AppError::Unavailable(format!(
            "planning with plugin `{plugin}` failed: {err}"
        ))),
    }
}

/// What applying did: the run that carries it out, if any.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Applied {
    pub tenant: String,
    /// The run that converges the backends (`/api/v1/provisioning/{id}`).
    pub run: Option<String>,
    pub url: Option<String>,
    pub changed_fields: bool,
}

/// Converges the tenant to the request: creates it through a provisioning run, or patches its
/// fields and queues an `apply` run with the steps to create or change.
pub async fn apply(
    ctx: &Context,
    actor: &Actor,
    req: &ProvisionRequest,
    plan: &ApplyPlan,
) -> AppResult<Applied> {
    if !plan.exists {
        let body = serde_json::to_value(SpecDigest::of(req)).map_err(AppError::internal)?;
        // The key makes a re-run of the same apply (after an interrupted command) join its run.
        let key = format!("apply-{}-{}", req.tenant.slug, digest(&body));
        return match super::super::provision(ctx, actor, req.clone(), &body, Some(&key)).await? {
            Provisioned::Queued(a) | Provisioned::Replayed(a) => Ok(Applied {
                tenant: a.tenant,
                run: Some(a.run.clone()),
                url: Some(a.url),
                changed_fields: true,
            }),
        };
    }
    if let Some(patch) = &plan.patch {
        tenants::patch_fields(ctx, actor, &req.tenant.slug, patch).await?;
    }
    let tenant = tenants::get(ctx, &req.tenant.slug).await?;
    transaction!(ctx.db, |tx| {
        super::super::desired::record_in(
            tx,
            &ctx.keyring,
            &tenant.id,
            req,
            plan.database_key.as_deref(),
        )
        .await
    })?;
    if plan.steps.is_empty() {
        return Ok(Applied {
            tenant: plan.tenant.clone(),
            run: None,
            url: None,
            changed_fields: plan.patch.is_some(),
        });
    }
    let run_id = queue_apply(ctx, actor, &tenant, &plan.steps, "tenant.apply").await?;
    Ok(Applied {
        tenant: tenant.slug,
        url: Some(run_url(&run_id)),
        run: Some(run_id),
        changed_fields: plan.patch.is_some(),
    })
}

/// The request as hashed for the apply's idempotency key (secrets included, never shown).
#[derive(Serialize)]
pub(super) struct SpecDigest {
    request: Value,
}

impl SpecDigest {
    fn of(req: &ProvisionRequest) -> SpecDigest {
        SpecDigest {
            request: json!({
                "tenant": {
                    "slug": req.tenant.slug, "name": req.tenant.name, "tier": req.tenant.tier,
                    "trial_days": req.tenant.trial_days, "contact": req.tenant.contact,
                    "oauth_issuer": req.tenant.oauth_issuer, "client_id": req.tenant.client_id,
                    "client_secret": req.tenant.client_secret, "db_uri": req.tenant.db_uri,
                    "default_schema": req.tenant.default_schema,
                },
                "connection_template": req.connection_template.as_ref().map(|c| json!({
                    "template_name": c.template_name, "version": c.version, "name": c.name,
                    "placeholders": c.placeholders,
                })),
                "database": req.database,
                "assets": req.assets.as_ref().map(|a| json!({ "tags": a.template_tags, "placeholders": a.placeholders })),
                "backends": req.backends,
            }),
        }
    }
}

pub(super) fn digest(value: &Value) -> String {
    let d = Sha256::digest(value.to_string().as_bytes());
    hex::encode(&d[..8])
}

/// Queues a run of kind `apply` for an existing tenant: the given steps, applied in order (no
/// compensation on failure: they change live resources), audited as `audit_action`.
pub(crate) async fn queue_apply(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    steps: &[(String, crate::plugin_host::Step)],
    audit_action: &'static str,
) -> AppResult<String> {
    let now = clock::now();
    let run_id = uuid::Uuid::now_v7().to_string();
    let ptenant = plugin_tenant(tenant);
    let mut backends: Vec<String> = Vec::new();
    let rows: Vec<StepRow> = steps
        .iter()
        .enumerate()
        .map(|(i, (plugin, step))| {
            if !backends.contains(plugin) {
                backends.push(plugin.clone());
            }
            pending_step(
                &run_id,
                i as i64,
                plugin,
                &step.id,
                super::super::StepAction::Apply,
                step.description.clone(),
                ctx.keyring
                    .seal(&step.input, &step_context(&run_id, plugin, &step.id)),
                "[]".into(),
            )
        })
        .collect();
    let run = queued_run(
        &run_id,
        super::super::RunKind::Apply,
        &ptenant,
        &backends,
        actor,
        now,
    );
    transaction!(ctx.db, |tx| {
        super::super::refuse_open_run(tx, tenant).await?;
        sql::insert_run(tx, &run, &rows).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                audit_action,
                &tenant.id,
                &tenant.slug,
                json!({ "run": run_id, "steps": rows.iter().map(|s| format!("{}/{}", s.plugin, s.step_id)).collect::<Vec<_>>() }),
            ),
        )
        .await?;
        Ok(())
    })?;
    ctx.runs_queued.notify_one();
    Ok(run_id)
}
