//! `tenantry admin …`: the bootstrap administrator's password and the platform's API tokens.

use crate::audit::Actor;
use crate::auth::{self, Role};
use crate::context::Context;
use clap::{Subcommand, ValueEnum};
use std::io::{BufRead as _, IsTerminal as _};

use super::{Output, app_error, print, table};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the bootstrap administrator's password (read from the terminal or standard input).
    SetPassword,
    /// Manage platform API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = CliRole::PlatformAdmin)]
        role: CliRole,
        /// Days until the token stops working (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
    /// Replace a token by a new one (printed once); the old one works for the grace period.
    Rotate {
        id: String,
        #[arg(long, default_value_t = 60)]
        grace_minutes: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliRole {
    PlatformAdmin,
    PlatformViewer,
}

impl From<CliRole> for Role {
    fn from(role: CliRole) -> Self {
        match role {
            CliRole::PlatformAdmin => Role::PlatformAdmin,
            CliRole::PlatformViewer => Role::PlatformViewer,
        }
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password for admin: ")?;
        let second = rpassword::prompt_password("Repeat it: ")?;
        anyhow::ensure!(first == second, "the two passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    }
}

pub(super) async fn admin_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: AdminCommand,
) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::SetPassword => {
            let password = read_password()?;
            auth::set_admin_password(ctx, actor, &password)
                .await
                .map_err(app_error)?;
            print(
                out,
                &serde_json::json!({ "username": auth::BOOTSTRAP_ADMIN, "password_set": true }),
                || "password of `admin` set".into(),
            )
        }
        AdminCommand::Token(TokenCommand::Create {
            name,
            role,
            expires_in_days,
        }) => {
            let token =
                auth::create_platform_token(ctx, actor, &name, role.into(), expires_in_days)
                    .await
                    .map_err(app_error)?;
            print(out, &token, || {
                format!(
                    "{}\n(token `{}`, role {}; shown once — store it now)",
                    token.token,
                    token.info.name,
                    token.info.role.as_str()
                )
            })
        }
        AdminCommand::Token(TokenCommand::List) => {
            let tokens = auth::list_platform_tokens(ctx).await.map_err(app_error)?;
            print(out, &tokens, || {
                let rows = tokens.iter().map(|t| {
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                        "expired"
                    } else {
                        "live"
                    };
                    let role = t.role.as_str();
                    // When it last authenticated a request (written at most once a minute),
                    // so that unused tokens can be found and revoked.
                    let last_used = t.last_used_at.map_or_else(
                        || "never".to_owned(),
                        |at| crate::clock::rfc3339(at.naive_utc()),
                    );
                    [&t.id, &t.name, &t.prefix, role, state, &last_used]
                        .map(String::from)
                        .to_vec()
                });
                table(
                    &["ID", "NAME", "PREFIX", "ROLE", "STATE", "LAST USED"],
                    rows.collect(),
                    "no tokens",
                )
            })
        }
        AdminCommand::Token(TokenCommand::Rotate { id, grace_minutes }) => {
            let token = auth::rotate_key(ctx, actor, None, &id, grace_minutes)
                .await
                .map_err(app_error)?;
            print(out, &token, || {
                format!(
                    "{}\n(the old token works for {grace_minutes} more minutes)",
                    super::keys::new_key_text(&token)
                )
            })
        }
        AdminCommand::Token(TokenCommand::Revoke { id_or_name }) => {
            let token = auth::revoke_platform_token(ctx, actor, &id_or_name)
                .await
                .map_err(app_error)?;
            print(out, &token, || format!("token `{}` revoked", token.name))
        }
    }
}
