//! Which quota-policy plugin decides for a tenant: the tenant's own choice, else its tier's,
//! else `quotas.policy`. Choices live in the database and are read at every decision, so a
//! change binds without a restart (on every server once its kept decision is older than
//! `quotas.decision_ttl_seconds`; at once on the server that made it).

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::plugin_host::World;
use crate::plugin_registry;
use crate::store::{self, Conn};
use crate::tenants::{Tenant, Tier};
use crate::transaction;

/// The policy that decides for a tenant, and where that comes from.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyInForce {
    pub policy: String,
    /// `tenant`, `tier` or `default`.
    pub chosen_for: &'static str,
}

/// A choice of policy: a quota-policy plugin's name, or none to go back to the next choice.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyChoice {
    pub policy: Option<String>,
}

/// The default policy and each tier's choice.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyChoices {
    pub default: String,
    /// Tier → policy, for the tiers that have a choice.
    #[schema(value_type = Object)]
    pub tiers: std::collections::BTreeMap<String, String>,
}

fn tenant_scope(tenant: &Tenant) -> String {
    format!("tenant:{}", tenant.id)
}

fn tier_scope(tier: Tier) -> String {
    format!("tier:{tier}")
}

/// The policy that decides for `tenant`.
pub async fn in_force(ctx: &Context, conn: &mut Conn, tenant: &Tenant) -> AppResult<PolicyInForce> {
    let scopes = [tenant_scope(tenant), tier_scope(tenant.tier)];
    let chosen = store::usage::policy_choices(conn, &scopes).await?;
    let find = |scope: &str| {
        chosen
            .iter()
            .find(|(s, _)| s == scope)
            .map(|(_, p)| p.clone())
    };
    Ok(match (find(&scopes[0]), find(&scopes[1])) {
        (Some(policy), _) => PolicyInForce {
            policy,
            chosen_for: "tenant",
        },
        (None, Some(policy)) => PolicyInForce {
            policy,
            chosen_for: "tier",
        },
        (None, None) => PolicyInForce {
            policy: ctx.config.quotas.policy.clone(),
            chosen_for: "default",
        },
    })
}

/// The default and the tiers' choices.
pub async fn choices(ctx: &Context) -> AppResult<PolicyChoices> {
    let mut conn = ctx.db.conn().await?;
    let tiers = store::usage::tier_policy_choices(&mut conn)
        .await?
        .into_iter()
        .map(|(scope, policy)| (scope.trim_start_matches("tier:").to_owned(), policy))
        .collect();
    Ok(PolicyChoices {
        default: ctx.config.quotas.policy.clone(),
        tiers,
    })
}

/// Refuses a name that is not an installed, enabled quota-policy plugin.
async fn check_policy(ctx: &Context, name: &str) -> AppResult<()> {
    let plugin = match plugin_registry::get(ctx, name).await {
        Ok(plugin) => plugin,
        Err(AppError::NotFound { .. }) => {
            return Err(AppError::invalid(
                "policy",
                "installed",
                format!("`{name}` is not an installed plugin"),
            ));
        }
        Err(err) => return Err(err),
    };
    if plugin.world != World::QuotaPolicy {
        return Err(AppError::invalid(
            "policy",
            "world",
            format!("`{name}` is a {} plugin, not a quota policy", plugin.world),
        ));
    }
    if !plugin.enabled {
        return Err(AppError::invalid(
            "policy",
            "enabled",
            format!("`{name}` is disabled"),
        ));
    }
    Ok(())
}

async fn choose(
    ctx: &Context,
    actor: &Actor,
    scope: String,
    choice: &PolicyChoice,
    event: AuditEvent,
) -> AppResult<()> {
    if let Some(policy) = &choice.policy {
        check_policy(ctx, policy).await?;
    }
    let now = clock::now();
    transaction!(ctx.db, |tx| {
        let before =
            store::usage::choose_policy(tx, &scope, choice.policy.as_deref(), &actor.name, now)
                .await?;
        if before != choice.policy {
            let mut event = event.clone();
            event.details["from"] = json!(before);
            event.details["to"] = json!(choice.policy);
            audit::record(tx, actor, event).await?;
        }
        Ok(())
    })?;
    // A tier's tenants are evaluated at the next sweep; a tenant's own choice at once.
    if let Some(tenant_id) = scope.strip_prefix("tenant:") {
        ctx.alert_signals.mark(tenant_id);
    }
    Ok(())
}

/// Chooses the policy of one tenant (none: its tier's, or the default).
pub async fn choose_for_tenant(
    ctx: &Context,
    actor: &Actor,
    tenant: &Tenant,
    choice: &PolicyChoice,
) -> AppResult<PolicyInForce> {
    let event = AuditEvent::tenant(
        "quota.policy_chosen",
        &tenant.id,
        &tenant.slug,
        json!({ "for": "tenant" }),
    );
    // The decision's key names its policy: the next decision asks the new one (and a new one
    // that fails leaves the last decision in force).
    choose(ctx, actor, tenant_scope(tenant), choice, event).await?;
    let mut conn = ctx.db.conn().await?;
    in_force(ctx, &mut conn, tenant).await
}

/// Chooses the policy of every tenant of `tier` that has no choice of its own (none: the
/// default).
pub async fn choose_for_tier(
    ctx: &Context,
    actor: &Actor,
    tier: Tier,
    choice: &PolicyChoice,
) -> AppResult<PolicyChoices> {
    let event = AuditEvent::platform(
        "quota.policy_chosen",
        json!({ "for": "tier", "tier": tier }),
    );
    choose(ctx, actor, tier_scope(tier), choice, event).await?;
    choices(ctx).await
}
