//! The checks of an import, made before anything is written: the archive's parts, each part's
//! records, that the tenant's slug and id are free, that every sealed secret opens here, and
//! that every backend plugin the bundle names is enabled; and the plan of what it creates.

use super::{ImportPlan, PlanLine, REQUEST_PART};
use crate::bundles::Bundle;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::plugin_host::World;
use crate::provisioning::{self, resource_context};
use crate::store;
use crate::store::models::{
    ApiKeyRow, QuotaOverrideRow, ResourceRow, StatusChangeRow, TenantRow, UsageCounterRow,
};
use crate::store::tenant_requests::RequestRow;
use crate::tenants::{TenantSlug, TenantStatus};
use serde_json::json;

pub(super) struct Checked {
    pub(super) row: TenantRow,
    pub(super) history: Vec<StatusChangeRow>,
    pub(super) keys: Vec<ApiKeyRow>,
    pub(super) overrides: Vec<QuotaOverrideRow>,
    pub(super) counters: Vec<UsageCounterRow>,
    pub(super) resources: Vec<ResourceRow>,
    /// What the tenant was provisioned with, sealed (bundles of earlier versions have none).
    pub(super) request: Option<RequestRow>,
}

fn invalid(field: impl Into<String>, rule: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(field, rule, message)
}

/// Checks every part against this installation; changes nothing.
pub(super) async fn check(ctx: &Context, bundle: &Bundle) -> AppResult<Checked> {
    let row: TenantRow = bundle.json("registry/tenant.json")?;
    let checked = Checked {
        history: bundle.json("registry/status_history.json")?,
        keys: bundle.json("registry/api_keys.json")?,
        overrides: bundle.json("registry/quota_overrides.json")?,
        counters: bundle.json("registry/usage_counters.json")?,
        resources: bundle.json("provisioning/resources.json")?,
        request: if bundle.parts.contains_key(REQUEST_PART) {
            bundle.json(REQUEST_PART)?
        } else {
            None
        },
        row,
    };
    let row = &checked.row;
    let mut errors = Vec::new();
    if row.id != bundle.manifest.tenant_id || row.slug != bundle.manifest.tenant_slug {
        errors.push(invalid(
            "registry/tenant.json",
            "manifest",
            "is not the tenant the manifest names",
        ));
    }
    if let Err(mut e) = TenantSlug::parse(&row.slug, true) {
        e.field = "registry/tenant.json/slug".into();
        errors.push(e);
    }
    // A tier or status outside its words does not read at all (the part's parse names it).
    if row.status == TenantStatus::Provisioning {
        errors.push(invalid(
            "registry/tenant.json/status",
            "one_of",
            "is not a status a tenant can be restored in",
        ));
    }
    let foreign = |id: Option<&str>| id != Some(row.id.as_str());
    for (part, wrong) in [
        (
            "registry/status_history.json",
            checked.history.iter().any(|h| foreign(Some(&h.tenant_id))),
        ),
        (
            "registry/api_keys.json",
            checked.keys.iter().any(|k| foreign(k.tenant_id.as_deref())),
        ),
        (
            "registry/quota_overrides.json",
            checked
                .overrides
                .iter()
                .any(|o| foreign(Some(&o.tenant_id))),
        ),
        (
            "registry/usage_counters.json",
            checked.counters.iter().any(|c| foreign(Some(&c.tenant_id))),
        ),
        (
            "provisioning/resources.json",
            checked
                .resources
                .iter()
                .any(|r| foreign(Some(&r.tenant_id))),
        ),
    ] {
        if wrong {
            errors.push(invalid(
                part,
                "tenant_id",
                "holds records of another tenant",
            ));
        }
    }
    // Every sealed value opens with this installation's keys.
    let key_of = |sealed: &str| sealed.split(':').nth(1).unwrap_or("?").to_owned();
    errors.extend(crate::tenants::record::unopenable_secrets(
        ctx,
        row,
        "registry/tenant.json/",
        "export with --recipient-key for this installation",
    ));
    for part in bundle.manifest.parts.iter().filter(|p| p.plugin.is_some()) {
        let plugin = part.plugin.as_deref().unwrap_or_default();
        let Some(data) = bundle.parts.get(&part.path) else {
            continue;
        };
        let mut unopened = Vec::new();
        let opened = crate::bundles::sealed_fields::map(data, |pointer, value| {
            if ctx
                .keyring
                .open(
                    value,
                    &crate::bundles::sealed_fields::context(&row.id, plugin, pointer),
                )
                .is_err()
            {
                unopened.push((pointer.to_owned(), key_of(value)));
            }
            Ok(String::new())
        });
        if let Err(err) = opened {
            errors.push(invalid(
                part.path.clone(),
                "sealed",
                format!("names its sealed values wrongly: {err}"),
            ));
        }
        for (pointer, key) in unopened {
            errors.push(invalid(
                format!("{}{pointer}", part.path),
                "sealed_key",
                format!("is sealed with master key {key}, which this server has not loaded"),
            ));
        }
    }
    for r in &checked.resources {
        if ctx
            .keyring
            .open(
                &r.input,
                &resource_context(&r.tenant_id, &r.plugin, &r.step_id),
            )
            .is_err()
        {
            errors.push(invalid(
                format!("provisioning/resources.json/{}/{}", r.plugin, r.step_id),
                "sealed_key",
                format!(
                    "is sealed with master key {}, which this server has not loaded",
                    key_of(&r.input)
                ),
            ));
        }
    }
    if let Some(r) = &checked.request
        && ctx
            .keyring
            .open(&r.request, &provisioning::request_context(&row.id))
            .is_err()
    {
        errors.push(invalid(
            format!("{REQUEST_PART}/request"),
            "sealed_key",
            format!(
                "is sealed with master key {}, which this server has not loaded",
                key_of(&r.request)
            ),
        ));
    }
    // The backends it names are here.
    let enabled = ctx.plugins.enabled(World::Provisioner).await?;
    let mut named: Vec<&str> = checked
        .resources
        .iter()
        .map(|r| r.plugin.as_str())
        .collect();
    named.extend(
        bundle
            .manifest
            .parts
            .iter()
            .filter_map(|p| p.plugin.as_deref()),
    );
    named.sort();
    named.dedup();
    for plugin in named {
        if !enabled.contains(plugin) {
            errors.push(invalid(
                format!("backends/{plugin}"),
                "plugin",
                format!("the tenant is in the backend of plugin `{plugin}`, which is not installed and enabled here"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let mut conn = ctx.db.conn().await?;
    let taken = store::tenants::find_by_slug(&mut conn, &row.slug)
        .await?
        .is_some()
        || store::tenants::find_by_id(&mut conn, &row.id)
            .await?
            .is_some();
    if taken {
        return Err(AppError::conflict(
            "slug_taken",
            format!(
                "a tenant with slug `{}` or id `{}` already exists",
                row.slug, row.id
            ),
            json!({ "field": "slug", "slug": row.slug }),
        ));
    }
    Ok(checked)
}

pub(super) fn plan_of(bundle: &Bundle, c: &Checked) -> ImportPlan {
    let mut lines = vec![
        PlanLine {
            what: "tenant".into(),
            count: 1,
            detail: format!(
                "{} ({}, {}), with its SSO settings",
                c.row.slug, c.row.name, c.row.status
            ),
        },
        PlanLine {
            what: "status history".into(),
            count: c.history.len() as u64,
            detail: "status changes, as they were".into(),
        },
        PlanLine {
            what: "api keys".into(),
            count: c.keys.len() as u64,
            detail: "by their hashes: the same keys work again".into(),
        },
        PlanLine {
            what: "quota overrides".into(),
            count: c.overrides.len() as u64,
            detail: String::new(),
        },
        PlanLine {
            what: "usage counters".into(),
            count: c.counters.len() as u64,
            detail: String::new(),
        },
        PlanLine {
            what: "resources".into(),
            count: c.resources.len() as u64,
            detail: "re-applied in their backends with the recorded inputs".into(),
        },
        PlanLine {
            what: "provisioning request".into(),
            count: u64::from(c.request.is_some()),
            detail: "sealed: what a repair with the current template versions renders from".into(),
        },
    ];
    for part in bundle.manifest.parts.iter().filter(|p| p.plugin.is_some()) {
        lines.push(PlanLine {
            what: part.path.clone(),
            count: 1,
            detail: format!(
                "imported by plugin `{}` ({}, {} bytes)",
                part.plugin.as_deref().unwrap_or_default(),
                part.media_type,
                part.bytes
            ),
        });
    }
    lines.push(PlanLine {
        what: "audit records".into(),
        count: bundle
            .manifest
            .parts
            .iter()
            .find(|p| p.path == "audit/records.json")
            .and_then(|p| p.items)
            .unwrap_or(0),
        detail: "kept in the bundle as evidence; this installation's log records the import".into(),
    });
    ImportPlan {
        tenant: c.row.slug.clone(),
        tenant_id: c.row.id.clone(),
        status: c.row.status,
        exported_at: bundle.manifest.exported_at.clone(),
        lines,
        excluded: bundle.manifest.excluded.clone(),
    }
}
