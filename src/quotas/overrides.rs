//! A tenant's quota overrides: read from a `PUT …/quotas` body and stored with one
//! `quota.updated` audit record of what changed.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store;
use crate::store::models::QuotaOverrideRow;
use crate::tenants::Tenant;
use crate::transaction;

use super::{QuotaView, catalogue, metrics, quotas};

/// A change of one override: a new limit and/or hardness, or none to clear the override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideChange {
    pub limit: Option<u64>,
    pub hard: Option<bool>,
}

/// Reads a `PUT …/quotas` body: `{"metric": limit | null | {"limit": …, "hard": …}}`. A null
/// clears the override; a number sets the limit (keeping its hardness).
pub fn parse_overrides(
    ctx: &Context,
    body: &serde_json::Map<String, Value>,
) -> AppResult<BTreeMap<String, Option<OverrideChange>>> {
    let metrics = metrics(ctx);
    let mut errors = Vec::new();
    let mut changes = BTreeMap::new();
    if body.is_empty() {
        return Err(AppError::invalid(
            "body",
            "required",
            "name at least one metric, e.g. {\"agents\": 500}",
        ));
    }
    for (name, value) in body {
        if let Err(err) = catalogue::metric(&metrics, name, name) {
            errors.extend(err.field_errors().iter().cloned());
            continue;
        }
        let limit = |field: &str, v: &Value| -> Result<u64, FieldError> {
            v.as_u64().filter(|l| *l <= i64::MAX as u64).ok_or_else(|| {
                FieldError::new(
                    field,
                    "limit",
                    format!("must be a whole number from 0 to {}", i64::MAX),
                )
            })
        };
        match value {
            Value::Null => {
                changes.insert(name.clone(), None);
            }
            Value::Number(_) => match limit(name, value) {
                Ok(l) => {
                    changes.insert(
                        name.clone(),
                        Some(OverrideChange {
                            limit: Some(l),
                            hard: None,
                        }),
                    );
                }
                Err(e) => errors.push(e),
            },
            Value::Object(fields) => {
                let mut change = OverrideChange {
                    limit: None,
                    hard: None,
                };
                for (key, v) in fields {
                    let field = format!("{name}.{key}");
                    match key.as_str() {
                        "limit" if v.is_null() => {}
                        "limit" => match limit(&field, v) {
                            Ok(l) => change.limit = Some(l),
                            Err(e) => errors.push(e),
                        },
                        "hard" => match v.as_bool() {
                            Some(h) => change.hard = Some(h),
                            None => {
                                errors.push(FieldError::new(field, "type", "must be true or false"))
                            }
                        },
                        _ => errors.push(FieldError::new(
                            field,
                            "unknown_field",
                            "unknown field (expected `limit` or `hard`)",
                        )),
                    }
                }
                changes.insert(name.clone(), Some(change));
            }
            _ => errors.push(FieldError::new(
                name.as_str(),
                "type",
                "must be a limit (a whole number), null to clear, or {\"limit\": …, \"hard\": …}",
            )),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(AppError::Validation(errors))
    }
}

/// Sets or clears `tenant`'s overrides, with one `quota.updated` audit record of what changed
/// (old and new values), and returns its quotas as they are now.
pub async fn set_overrides(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    changes: &BTreeMap<String, Option<OverrideChange>>,
) -> AppResult<Vec<QuotaView>> {
    let metrics = metrics(ctx);
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        let existing = store::usage::overrides(tx, &tenant.id).await?;
        let mut changed = Vec::new();
        for (metric, change) in changes {
            let before = existing.iter().find(|o| &o.metric == metric);
            let shown = |o: Option<&QuotaOverrideRow>| {
                o.map(|o| json!({ "limit": o.limit_value, "hard": o.hard }))
            };
            match change {
                None => {
                    if store::usage::delete_override(tx, &tenant.id, metric).await? {
                        changed
                            .push(json!({ "metric": metric, "from": shown(before), "to": null }));
                    }
                }
                Some(change) => {
                    let default_hard = metrics
                        .iter()
                        .find(|m| &m.name == metric)
                        .is_none_or(|m| m.hard);
                    let row = QuotaOverrideRow {
                        tenant_id: tenant.id.clone(),
                        metric: metric.clone(),
                        limit_value: change.limit.map(|l| l as i64),
                        hard: change
                            .hard
                            .or(before.map(|b| b.hard))
                            .unwrap_or(default_hard),
                        updated_by: actor.name.clone(),
                        updated_at: now,
                    };
                    let same = before
                        .is_some_and(|b| b.limit_value == row.limit_value && b.hard == row.hard);
                    if !same {
                        store::usage::put_override(tx, &row).await?;
                        changed.push(json!({
                            "metric": metric,
                            "from": shown(before),
                            "to": shown(Some(&row)),
                        }));
                    }
                }
            }
        }
        if !changed.is_empty() {
            audit::record(
                tx,
                actor,
                AuditEvent::tenant(
                    "quota.updated",
                    &tenant.id,
                    &tenant.slug,
                    json!({ "changes": changed }),
                ),
            )
            .await?;
        }
        Ok(())
    })?;
    ctx.quota_decisions.forget(&tenant.id);
    ctx.alerting.mark(&tenant.id);
    quotas(ctx, tenant).await
}
