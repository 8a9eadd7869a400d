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
    /// Why (required for a temporary override).
    pub reason: Option<String>,
    /// When it ends by itself; none: until changed.
    pub expires_at: Option<chrono::NaiveDateTime>,
}

/// The longest a temporary override may last (a year).
pub const MAX_TEMPORARY_HOURS: u64 = 24 * 366;

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
                            reason: None,
                            expires_at: None,
                        }),
                    );
                }
                Err(e) => errors.push(e),
            },
            Value::Object(fields) => {
                let mut change = OverrideChange {
                    limit: None,
                    hard: None,
                    reason: None,
                    expires_at: None,
                };
                let now = clock::now();
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
                        "reason" => match v.as_str().map(str::trim) {
                            Some(r) if !r.is_empty() && r.chars().count() <= 500 => {
                                change.reason = Some(r.to_owned())
                            }
                            _ => errors.push(FieldError::new(
                                field,
                                "length",
                                "must be 1 to 500 characters",
                            )),
                        },
                        "expires_in_hours" => match v.as_u64() {
                            Some(h) if (1..=MAX_TEMPORARY_HOURS).contains(&h) => {
                                change.expires_at = Some(now + chrono::Duration::hours(h as i64))
                            }
                            _ => errors.push(FieldError::new(
                                field,
                                "range",
                                format!("must be a whole number of hours from 1 to {MAX_TEMPORARY_HOURS}"),
                            )),
                        },
                        "expires_at" => match v
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.naive_utc())
                        {
                            Some(at)
                                if at > now
                                    && at
                                        <= now + chrono::Duration::hours(MAX_TEMPORARY_HOURS as i64) =>
                            {
                                change.expires_at = Some(at)
                            }
                            Some(_) => errors.push(FieldError::new(
                                field,
                                "range",
                                format!("must lie in the future, at most {MAX_TEMPORARY_HOURS} hours ahead"),
                            )),
                            None => errors.push(FieldError::new(
                                field,
                                "format",
                                "must be an RFC 3339 time (2026-12-31T18:00:00Z)",
                            )),
                        },
                        _ => errors.push(FieldError::new(
                            field,
                            "unknown_field",
                            "unknown field (expected `limit`, `hard`, `reason`, `expires_in_hours` or `expires_at`)",
                        )),
                    }
                }
                if fields.contains_key("expires_in_hours") && fields.contains_key("expires_at") {
                    errors.push(FieldError::new(
                        format!("{name}.expires_at"),
                        "exclusive",
                        "give expires_at or expires_in_hours, not both",
                    ));
                }
                if change.expires_at.is_some() && change.reason.is_none() {
                    errors.push(FieldError::new(
                        format!("{name}.reason"),
                        "required",
                        "a temporary override says why (it is audited when set and when it ends)",
                    ));
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
                o.map(|o| {
                    let mut shown = json!({ "limit": o.limit_value, "hard": o.hard });
                    if let Some(at) = o.expires_at {
                        shown["expires_at"] = json!(clock::rfc3339(at));
                    }
                    if let Some(reason) = &o.reason {
                        shown["reason"] = json!(reason);
                    }
                    shown
                })
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
                        reason: change.reason.clone(),
                        expires_at: change.expires_at,
                    };
                    let same = before.is_some_and(|b| {
                        b.limit_value == row.limit_value
                            && b.hard == row.hard
                            && b.expires_at == row.expires_at
                            && b.reason == row.reason
                    });
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
    ctx.alert_signals.mark(&tenant.id);
    quotas(ctx, tenant).await
}

/// Ends the temporary overrides whose time has come: each removed with a `quota.override_expired`
/// audit record of what it was, as `actor`. How many ended.
pub async fn end_expired(ctx: &Context, actor: &Actor) -> AppResult<usize> {
    let now = clock::now();
    let expired = {
        let mut conn = ctx.db.conn().await?;
        store::usage::expired_overrides(&mut conn, now).await?
    };
    let mut ended = 0;
    for row in expired {
        let slug = crate::tenants::get_by_id(ctx, &row.tenant_id)
            .await?
            .map(|t| t.slug)
            .unwrap_or_default();
        let removed = transaction!(ctx.db, |tx| {
            if !store::usage::delete_expired_override(tx, &row.tenant_id, &row.metric, now).await? {
                return Ok(false);
            }
            audit::record(
                tx,
                actor,
                AuditEvent::tenant(
                    "quota.override_expired",
                    &row.tenant_id,
                    &slug,
                    json!({
                        "metric": row.metric,
                        "limit": row.limit_value,
                        "hard": row.hard,
                        "reason": row.reason,
                        "set_by": row.updated_by,
                        "expired_at": row.expires_at.map(clock::rfc3339),
                    }),
                ),
            )
            .await?;
            Ok(true)
        })?;
        if removed {
            ctx.quota_decisions.forget(&row.tenant_id);
            ctx.alert_signals.mark(&row.tenant_id);
            ended += 1;
        }
    }
    Ok(ended)
}

/// What a reset did: the counter, its period, and what it held.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageReset {
    pub metric: String,
    pub period: String,
    /// What the counter held before (0 when it held nothing).
    pub from: i64,
    pub to: i64,
}

/// Sets `tenant`'s counter or rate `metric` of the current period back to zero (the operators'
/// "manually reset if needed"), with a `quota.usage_reset` audit record of what it held and why.
/// A gauge is measured, not counted: it is refused. This server forgets what it counted of the
/// period, and the shared budget of a per-minute rate is cleared; another server's calls not yet
/// written (a few seconds' worth) are added after the reset.
pub async fn reset_usage(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    metric: &str,
    reason: &str,
) -> AppResult<UsageReset> {
    let metrics = metrics(ctx);
    // The metric is the address's: one the catalogue lacks is not found.
    let found = catalogue::metric(&metrics, "metric", metric)
        .map_err(|_| AppError::not_found("metric", metric))?;
    if found.is_gauge() {
        return Err(AppError::invalid(
            "metric",
            "gauge",
            format!("{metric} is a gauge: it is measured, not counted; report a new value instead"),
        ));
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(AppError::invalid(
            "reason",
            "length",
            "must be 1 to 500 characters",
        ));
    }
    let period = found.period(clock::now());
    let from = transaction!(ctx.db, |tx| {
        let from = store::usage::reset_counter(tx, &tenant.id, metric, &period)
            .await?
            .unwrap_or(0);
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "quota.usage_reset",
                &tenant.id,
                &tenant.slug,
                json!({ "metric": metric, "period": period, "from": from, "to": 0, "reason": reason }),
            ),
        )
        .await?;
        Ok(from)
    })?;
    ctx.api_calls.reset(&tenant.id, metric, &period);
    if metric == "api_calls_per_minute"
        && let Some(shared) = &ctx.limits.shared
    {
        let key = ctx
            .limits
            .shared_key(&format!("calls:{}:{period}", tenant.id));
        if let Err(err) = shared.clear(&key).await {
            tracing::warn!(tenant = %tenant.slug, "cannot clear the shared minute budget: {err}");
        }
    }
    ctx.quota_decisions.forget(&tenant.id);
    ctx.alert_signals.mark(&tenant.id);
    Ok(UsageReset {
        metric: metric.to_owned(),
        period,
        from,
        to: 0,
    })
}
