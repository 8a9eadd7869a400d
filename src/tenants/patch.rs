//! A tenant's PATCH: every field's rule checked at once, then applied in one transaction with its
//! audit records (a new client secret keeps the previous one for a rollback; `is_active`
//! suspends or reactivates through the lifecycle).

use super::input::{self, Checks};
use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::secrets::{Keyring, fingerprint};
use crate::store::Conn;
use crate::store::models::TenantRow;
use crate::transaction;
use serde_json::json;

use super::transitions::{apply_transition, illegal};
use super::{
    ADMIN_SLUG, Tenant, TenantPatch, TenantStatus, Tier, Transition, find_in, model, save,
    secret_context,
};

/// Applies a PATCH of a tenant's fields and OAuth settings (a new secret keeps the old one for
/// rollback), in one transaction with its audit record. A PATCH that sets `is_active` changes
/// the tenant's lifecycle, which must reach its backends too: the lifecycle service applies
/// such a PATCH (with [`apply_patch`] in its own transaction), and here it is refused.
pub async fn patch_fields(
    ctx: &Context,
    actor: &Actor,
    slug: &str,
    patch: &TenantPatch,
) -> AppResult<Tenant> {
    if patch.is_active.is_some() {
        return Err(AppError::internal(anyhow::anyhow!(
            "a PATCH with is_active is a lifecycle change; the lifecycle service applies it"
        )));
    }
    let checked = check_patch(patch, slug == ADMIN_SLUG)?;
    let (row, _) = transaction!(ctx.db, |tx| {
        apply_patch(tx, &ctx.keyring, actor, slug, checked).await
    })?;
    // A new tier changes the tenant's limits.
    ctx.alert_signals.mark(&row.id);
    Tenant::from_row(&row, ctx.config.retention_days)
}

/// Refuses a change, through the API, the portal or the CLI, of what the configuration's
/// `[admin_tenant]` section owns for the platform's own tenant (its name and sign-in): the next
/// start would put the configured values back.
pub fn refuse_configured_fields(slug: &str, patch: &TenantPatch) -> AppResult<()> {
    if slug != ADMIN_SLUG {
        return Ok(());
    }
    let owned = [
        ("name", patch.name.is_some()),
        ("oauth_issuer", patch.oauth_issuer.is_some()),
        ("client_id", patch.client_id.is_some()),
        ("client_secret", patch.client_secret.is_some()),
        ("scopes", patch.scopes.is_some()),
        ("db_uri", patch.db_uri.is_some()),
        ("default_schema", patch.default_schema.is_some()),
        ("role_mapping", patch.role_mapping.is_some()),
    ];
    let fields: Vec<&str> = owned.iter().filter(|f| f.1).map(|f| f.0).collect();
    if fields.is_empty() {
        return Ok(());
    }
    Err(AppError::conflict(
        "platform_tenant",
        format!(
            "the platform's own tenant `{ADMIN_SLUG}` takes {} from the configuration ([admin_tenant]); change it there and restart",
            fields.join(", ")
        ),
        json!({ "fields": fields }),
    ))
}

/// A PATCH whose fields passed their rules (see [`check_patch`]), ready for [`apply_patch`].
pub struct CheckedPatch<'a> {
    patch: &'a TenantPatch,
    name: Option<Option<String>>,
    tier: Option<Option<Tier>>,
    contact: Option<Option<model::Contact>>,
    issuer: Option<Option<Option<String>>>,
    client_id: Option<Option<Option<String>>>,
    secret: Option<Option<Option<String>>>,
    scopes: Option<Option<String>>,
    db_uri: Option<Option<Option<String>>>,
    schema: Option<Option<Option<String>>>,
    reason: Option<String>,
    role_mapping: Option<Option<Option<String>>>,
}

/// Checks every field of a PATCH (`platform`: of the platform's own tenant), reporting every
/// broken rule at once. Nothing is read or written.
pub fn check_patch(patch: &TenantPatch, platform: bool) -> AppResult<CheckedPatch<'_>> {
    let mut checks = Checks::default();
    let name = patch.name.as_deref().map(|n| checks.name(n));
    let tier = patch.tier.as_deref().map(|t| checks.tier(t));
    let contact = patch
        .contact
        .as_ref()
        .map(|c| checks.contact(c.as_ref().unwrap_or(&model::Contact::default())));
    if let Some(metadata) = &patch.metadata {
        checks.metadata(metadata);
    }
    let issuer = patch
        .oauth_issuer
        .as_ref()
        .map(|i| i.as_deref().map(|i| checks.issuer(i)));
    let client_id = patch
        .client_id
        .as_ref()
        .map(|c| c.as_deref().map(|c| checks.text("client_id", c, 255)));
    let secret = patch.client_secret.as_ref().map(|s| {
        s.as_deref().map(|s| {
            input::check_secret("client_secret", s)
                .map_err(|e| checks.push(e))
                .ok()
        })
    });
    let scopes = patch.scopes.as_ref().map(|s| checks.scopes(s));
    let db_uri = patch
        .db_uri
        .as_ref()
        .map(|u| u.as_deref().map(|u| checks.db_uri(u)));
    let schema = patch
        .default_schema
        .as_ref()
        .map(|s| s.as_deref().map(|s| checks.schema(s)));
    let reason = match &patch.reason {
        Some(r) => checks.text("reason", r, 500),
        None => None,
    };
    let role_mapping = patch
        .role_mapping
        .as_ref()
        .map(|m| m.as_ref().map(|m| checks.role_mapping(m, platform)));
    checks.finish()?;
    Ok(CheckedPatch {
        patch,
        name,
        tier,
        contact,
        issuer,
        client_id,
        secret,
        scopes,
        db_uri,
        schema,
        reason,
        role_mapping,
    })
}

/// Applies a checked PATCH to tenant `slug` in `tx`, with its audit records; the row as saved
/// and the lifecycle transition it made (`is_active`), to be carried into the backends.
pub async fn apply_patch(
    tx: &mut Conn,
    keyring: &Keyring,
    actor: &Actor,
    slug: &str,
    checked: CheckedPatch<'_>,
) -> AppResult<(TenantRow, Option<(Transition, String)>)> {
    {
        let mut row = find_in(tx, slug).await?;
        let mut changed: Vec<&str> = Vec::new();
        let mut set = |field: &'static str, changed_now: bool| {
            if changed_now {
                changed.push(field);
            }
        };
        if let Some(Some(name)) = checked.name {
            set("name", row.name != name);
            row.name = name;
        }
        if let Some(Some(tier)) = checked.tier {
            set("tier", row.tier != tier);
            row.tier = tier;
        }
        if let Some(Some(contact)) = checked.contact {
            let contact = serde_json::to_string(&contact).map_err(AppError::internal)?;
            set("contact", row.contact != contact);
            row.contact = contact;
        }
        if let Some(metadata) = &checked.patch.metadata {
            let metadata = serde_json::Value::Object(metadata.clone()).to_string();
            set("metadata", row.metadata != metadata);
            row.metadata = metadata;
        }
        if let Some(issuer) = checked.issuer {
            let issuer = issuer.flatten();
            set("oauth_issuer", row.oauth_issuer != issuer);
            row.oauth_issuer = issuer;
        }
        if let Some(client_id) = checked.client_id {
            let client_id = client_id.flatten();
            set("client_id", row.client_id != client_id);
            row.client_id = client_id;
        }
        if let Some(scopes) = checked.scopes.flatten() {
            set("scopes", row.scopes != scopes);
            row.scopes = scopes;
        }
        if let Some(schema) = checked.schema {
            let schema = schema.flatten();
            set("default_schema", row.default_schema != schema);
            row.default_schema = schema;
        }
        if let Some(mapping) = checked.role_mapping {
            let mapping = mapping.flatten();
            set("role_mapping", row.role_mapping != mapping);
            row.role_mapping = mapping;
        }
        if let Some(uri) = checked.db_uri {
            match uri.flatten() {
                Some(uri) => {
                    let fp = fingerprint(&uri);
                    set("db_uri", row.db_uri_fp.as_deref() != Some(&fp));
                    row.db_uri = Some(keyring.seal(&uri, &secret_context(&row.id, "db_uri")));
                    row.db_uri_fp = Some(fp);
                }
                None => {
                    set("db_uri", row.db_uri.is_some());
                    row.db_uri = None;
                    row.db_uri_fp = None;
                }
            }
        }
        let mut secret_rotated = None;
        if let Some(secret) = checked.secret {
            match secret.flatten() {
                Some(secret) => {
                    let fp = fingerprint(&secret);
                    if row.client_secret_fp.as_deref() != Some(&fp) {
                        secret_rotated = Some((row.client_secret_fp.clone(), fp.clone()));
                        rotate_secret(keyring, &mut row, &secret)?;
                    }
                }
                None => {
                    set("client_secret", row.client_secret.is_some());
                    row.client_secret_previous = row.client_secret.take();
                    row.client_secret_previous_fp = row.client_secret_fp.take();
                }
            }
        }
        if row.client_secret.is_some() && row.client_id.is_none() {
            return Err(AppError::invalid(
                "client_id",
                "required",
                "is required when client_secret is set",
            ));
        }
        if row.client_id.is_some() && row.oauth_issuer.is_none() {
            return Err(AppError::invalid(
                "oauth_issuer",
                "required",
                "is required when client_id is set",
            ));
        }

        let transition = match checked.patch.is_active {
            Some(false) if row.status.is_active() => Some(Transition::Suspend),
            Some(true) if row.status == TenantStatus::Suspended => Some(Transition::Reactivate),
            Some(active) if active != row.status.is_active() => {
                return Err(illegal(
                    &row,
                    if active {
                        Transition::Reactivate
                    } else {
                        Transition::Suspend
                    },
                ));
            }
            _ => None,
        };

        if !changed.is_empty() || secret_rotated.is_some() {
            row.updated_at = clock::now();
            row.version += 1;
            save(tx, &row).await?;
            let mut details = json!({ "changed": changed });
            if let Some((from, to)) = &secret_rotated {
                details["client_secret"] = json!({ "rotated": true, "from": from, "to": to });
            }
            audit::record(
                tx,
                actor,
                AuditEvent::tenant("tenant.update", &row.id, &row.slug, details),
            )
            .await?;
        }
        if let Some(transition) = transition {
            let reason = checked.reason.clone().unwrap_or_else(|| {
                format!(
                    "is_active set to {} by PATCH",
                    transition == Transition::Reactivate
                )
            });
            row = apply_transition(tx, actor, row, transition, &reason).await?;
            return Ok((row, Some((transition, reason))));
        }
        Ok((row, None))
    }
}

/// Moves the current client secret to `previous` and seals `secret` as the current one.
fn rotate_secret(keyring: &Keyring, row: &mut TenantRow, secret: &str) -> AppResult<()> {
    let context = secret_context(&row.id, "client_secret");
    row.client_secret_previous = row.client_secret.take();
    row.client_secret_previous_fp = row.client_secret_fp.take();
    row.client_secret = Some(keyring.seal(secret, &context));
    row.client_secret_fp = Some(fingerprint(secret));
    Ok(())
}

/// Swaps the client secret with the one kept from before the last rotation.
pub async fn rollback_client_secret(ctx: &Context, actor: &Actor, slug: &str) -> AppResult<Tenant> {
    let row = transaction!(ctx.db, |tx| {
        let mut row = find_in(tx, slug).await?;
        if row.client_secret_previous.is_none() {
            return Err(AppError::conflict(
                "no_previous_secret",
                format!("tenant `{slug}` has no previous client secret to roll back to"),
                json!({}),
            ));
        }
        std::mem::swap(&mut row.client_secret, &mut row.client_secret_previous);
        std::mem::swap(
            &mut row.client_secret_fp,
            &mut row.client_secret_previous_fp,
        );
        row.updated_at = clock::now();
        row.version += 1;
        save(tx, &row).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::tenant(
                "tenant.client_secret_rollback",
                &row.id,
                &row.slug,
                json!({ "from": row.client_secret_previous_fp, "to": row.client_secret_fp }),
            ),
        )
        .await?;
        Ok(row)
    })?;
    Tenant::from_row(&row, ctx.config.retention_days)
}
