//! `tenantry tenant api-key …`, `tenantry admin token rotate` and `tenantry key find`.

use clap::{Subcommand, ValueEnum};

use super::{Output, app_error, print};
use crate::audit::Actor;
use crate::auth::{self, ApiTokenInfo, KeySpec, NewApiToken, Role, TenantScope};
use crate::context::Context;
use crate::tenants;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TenantRole {
    TenantAdmin,
    Member,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key of a tenant; it is printed once.
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = TenantRole::Member)]
        role: TenantRole,
        /// Days until the key stops working (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Requests per minute the key may make (per server).
        #[arg(long)]
        rate_limit_per_minute: Option<u32>,
    },
    /// A tenant's keys (never their secrets).
    List { slug: String },
    /// Revoke a key at once.
    Revoke { slug: String, id: String },
    /// Replace a key by a new one (printed once); the old one works for the grace period.
    Rotate {
        slug: String,
        id: String,
        #[arg(long, default_value_t = 60)]
        grace_minutes: u32,
    },
}

async fn scope(ctx: &Context, slug: &str) -> anyhow::Result<TenantScope> {
    Ok(tenants::get(ctx, slug).await.map_err(app_error)?.scope())
}

pub fn new_key_text(key: &NewApiToken) -> String {
    format!(
        "{}\n(key `{}`, role {}; shown once — store it now)",
        key.token,
        key.info.name,
        key.info.role.as_str()
    )
}

pub fn keys_text(keys: &[ApiTokenInfo]) -> String {
    let mut lines = vec![format!(
        "{:<36} {:<20} {:<10} {:<14} {:<8} {}",
        "ID", "NAME", "PREFIX", "ROLE", "STATE", "LAST USED"
    )];
    lines.extend(keys.iter().map(|k| {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if !k.live {
            "expired"
        } else if k.replaced_by.is_some() {
            "grace"
        } else {
            "live"
        };
        format!(
            "{:<36} {:<20} {:<10} {:<14} {:<8} {}",
            k.id,
            k.name,
            k.prefix,
            k.role.as_str(),
            state,
            k.last_used_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "never".into())
        )
    }));
    lines.join("\n")
}

pub async fn api_key_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: ApiKeyCommand,
) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Create {
            slug,
            name,
            role,
            expires_in_days,
            rate_limit_per_minute,
        } => {
            let scope = scope(ctx, &slug).await?;
            let key = auth::create_key(
                ctx,
                actor,
                Some(&scope),
                &KeySpec {
                    name,
                    role: match role {
                        TenantRole::TenantAdmin => Role::TenantAdmin,
                        TenantRole::Member => Role::Member,
                    },
                    expires_in_days,
                    rate_limit_per_minute,
                },
            )
            .await
            .map_err(app_error)?;
            print(out, &key, || new_key_text(&key))
        }
        ApiKeyCommand::List { slug } => {
            let scope = scope(ctx, &slug).await?;
            let keys = auth::list_tenant_keys(ctx, &scope)
                .await
                .map_err(app_error)?;
            print(out, &keys, || keys_text(&keys))
        }
        ApiKeyCommand::Revoke { slug, id } => {
            let scope = scope(ctx, &slug).await?;
            auth::revoke_key(ctx, actor, &scope, &id)
                .await
                .map_err(app_error)?;
            print(out, &serde_json::json!({ "revoked": id }), || {
                format!("key {id} of {slug} revoked")
            })
        }
        ApiKeyCommand::Rotate {
            slug,
            id,
            grace_minutes,
        } => {
            let scope = scope(ctx, &slug).await?;
            let key = auth::rotate_key(ctx, actor, Some(&scope), &id, grace_minutes)
                .await
                .map_err(app_error)?;
            print(out, &key, || {
                format!(
                    "{}\n(the old key works for {grace_minutes} more minutes)",
                    new_key_text(&key)
                )
            })
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Whose key is this: the tenant (or the platform) a key belongs to, from its prefix
    /// (`tny_abcd1234`) or the whole token (only its prefix is read).
    Find {
        /// `tny_abcd1234`, `abcd1234`, or a whole token.
        key: String,
    },
}

pub async fn key_command(ctx: &Context, out: Output, cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Find { key } => {
            let owner = crate::auth::key_owner::find(ctx, &key)
                .await
                .map_err(app_error)?;
            print(out, &owner, || {
                let k = &owner.key;
                let state = if k.live {
                    "live"
                } else if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "expired"
                };
                let whose = match &owner.tenant {
                    Some(t) => format!(
                        "tenant {} ({}, {}, id {})",
                        t.slug,
                        t.name,
                        t.status.as_str(),
                        t.id
                    ),
                    None if k.tenant_id.is_some() => "a tenant that no longer exists".to_owned(),
                    None => "the platform (an API token)".to_owned(),
                };
                format!(
                    "tny_{} is `{}` of {whose}\nrole {}, {state}, created {} by {}, last used {}",
                    k.prefix,
                    k.name,
                    k.role.as_str(),
                    k.created_at.to_rfc3339(),
                    k.created_by,
                    k.last_used_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
                )
            })
        }
    }
}
