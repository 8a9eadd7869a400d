//! The request each tenant was last provisioned or applied with — its connection template and
//! placeholder values, asset tags and values, database settings and backends — kept sealed
//! (the values hold passwords), and the steps it plans today: a repair asked to use the current
//! template versions re-plans from it.

use serde_json::{Value, json};

use super::request::{self, ProvisionRequest};
use super::spec::plan_steps;
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::Step;
use crate::secrets::Keyring;
use crate::store::{self, Conn};
use crate::tenants::Tenant;

/// Where a tenant's recorded request is bound.
pub fn request_context(tenant_id: &str) -> String {
    format!("tenant-request:{tenant_id}")
}

/// What of `req` is kept: what its steps are planned from. The tenant's own fields (its name,
/// tier, schema and database URI) are taken from the registry when it is planned again; the
/// template version is not kept (the recorded one is in each resource's inputs).
fn kept(req: &ProvisionRequest) -> Value {
    json!({
        "tenant": {
            "slug": req.tenant.slug,
            "name": req.tenant.name,
        },
        "connection_template": req.connection_template.as_ref().map(|c| json!({
            "template_name": c.template_name,
            "name": c.name,
            "placeholders": c.placeholders,
        })),
        "database": req.database,
        "assets": req.assets.as_ref().map(|a| json!({
            "use_admin_templates": a.use_admin_templates,
            "template_tags": a.template_tags,
            "placeholders": a.placeholders,
            "bundle_base64": a.bundle_base64,
            "overwrite": a.overwrite,
        })),
        "backends": req.backends,
    })
}

/// Records `req` as what `tenant_id` is provisioned with, sealed, in `tx`, with the key of the
/// database its connection names.
pub(crate) async fn record_in(
    tx: &mut Conn,
    keyring: &Keyring,
    tenant_id: &str,
    req: &ProvisionRequest,
    database_key: Option<&str>,
) -> AppResult<()> {
    let sealed = keyring.seal(&kept(req).to_string(), &request_context(tenant_id));
    store::tenant_requests::put(tx, tenant_id, &sealed, database_key, clock::now()).await
}

/// `tenant`'s recorded request, opened; None when it has none.
async fn recorded(ctx: &Context, tenant: &Tenant) -> AppResult<Option<ProvisionRequest>> {
    let sealed = {
        let mut conn = ctx.db.conn().await?;
        store::tenant_requests::get(&mut conn, &tenant.id).await?
    };
    let Some(recorded) = sealed else {
        return Ok(None);
    };
    let text = ctx
        .keyring
        .open(&recorded.request, &request_context(&tenant.id))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(AppError::internal)
}

/// Whether `tenant` was provisioned with a connection rendered from a connection template.
pub async fn has_provisioned_connection(ctx: &Context, tenant: &Tenant) -> AppResult<bool> {
    Ok(recorded(ctx, tenant)
        .await?
        .is_some_and(|req| req.connection_template.is_some()))
}

/// The URI of the connection `tenant` was provisioned with from a connection template, as the
/// backends got it: the template, at the version its resources were made from (its newest when
/// none records one), rendered again with the recorded values and the tenant's fields. None
/// when it was not provisioned from a template.
pub async fn provisioned_connection(ctx: &Context, tenant: &Tenant) -> AppResult<Option<String>> {
    let Some(req) = recorded(ctx, tenant).await? else {
        return Ok(None);
    };
    let Some(connection) = req.connection_template else {
        return Ok(None);
    };
    let version = {
        let mut conn = ctx.db.conn().await?;
        store::provisioning::resources(&mut conn, &tenant.id)
            .await?
            .into_iter()
            .filter(|r| r.template.as_deref() == Some(connection.template_name.as_str()))
            .filter_map(|r| r.template_version)
            .max()
    };
    let declared = super::templates::get(ctx, &connection.template_name, version)
        .await?
        .placeholders;
    let fields = request::tenant_values(
        tenant.slug.as_str(),
        &tenant.name,
        tenant.tier.as_str(),
        tenant.default_schema.as_deref(),
        None,
    );
    let values = request::with_tenant_values(&connection.placeholders, &declared, &fields, true);
    let rendered = super::templates::render(
        ctx,
        "connection_template.placeholders",
        &connection.template_name,
        version,
        &values,
    )
    .await?;
    Ok(Some(rendered.text))
}

/// The steps `tenant`'s recorded request plans today, by plugin and step, with the newest
/// version of each template it names rendered with the recorded values.
pub(crate) async fn current_steps(
    ctx: &Context,
    tenant: &Tenant,
) -> AppResult<Vec<(String, Step)>> {
    let Some(mut req) = recorded(ctx, tenant).await? else {
        return Err(AppError::conflict(
            "no_recorded_request",
            format!(
                "tenant `{}` has no recorded provisioning request (it was imported, or provisioned by an earlier version): repair it with the recorded template versions, or apply its spec again",
                tenant.slug
            ),
            json!({}),
        ));
    };
    req.tenant.name = tenant.name.clone();
    req.tenant.tier = Some(tenant.tier.as_str().to_owned());
    req.tenant.default_schema = tenant.default_schema.clone();
    req.tenant.db_uri = database_uri(ctx, tenant).await?;
    let prepared = request::prepare(ctx, &req).await?;
    let ptenant = super::plugin_tenant(tenant);
    let mut steps = Vec::new();
    for plugin in &prepared.backends {
        for step in plan_steps(ctx, &prepared, plugin, &ptenant).await? {
            steps.push((plugin.clone(), step));
        }
    }
    Ok(steps)
}

/// The tenant's database URI as the registry holds it now (opened), if it has one.
async fn database_uri(ctx: &Context, tenant: &Tenant) -> AppResult<Option<String>> {
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::find_by_slug(&mut conn, &tenant.slug)
            .await?
            .ok_or_else(|| AppError::not_found("tenant", &tenant.slug))?
    };
    row.db_uri
        .map(|sealed| {
            ctx.keyring
                .open(&sealed, &crate::tenants::secret_context(&row.id, "db_uri"))
        })
        .transpose()
}
