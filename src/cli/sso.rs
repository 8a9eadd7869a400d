//! `tenantry tenant sso …` (a tenant's single sign-on settings, test connection, setup links)
//! and `tenantry tenant session …` (its users' sessions).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;

use super::{Output, app_error, print, read_secret_file, table};
use crate::audit::Actor;
use crate::auth::sso::{self, ConnectionTest, SsoSettings, SsoUpdate, TenantUrls};
use crate::auth::{self, TenantScope};
use crate::context::Context;
use crate::identity_providers::ConnectionReport;
use crate::roles::RoleMapping;
use crate::tenants::input::Scopes;
use crate::tenants::{self, Tenant};

#[derive(Debug, Subcommand)]
pub enum SsoCommand {
    /// A tenant's SSO settings and the redirect URIs to register at its provider.
    Show { slug: String },
    /// Change a tenant's SSO settings; the next login uses them.
    Set {
        slug: String,
        #[arg(long)]
        oauth_issuer: Option<String>,
        #[arg(long)]
        client_id: Option<String>,
        /// File holding the new client secret (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        client_secret_file: Option<PathBuf>,
        /// Comma- or space-separated scopes (must include openid).
        #[arg(long)]
        scopes: Option<String>,
        /// The claim whose values decide the role (with --role-map / --default-role).
        #[arg(long)]
        role_claim: Option<String>,
        /// `VALUE=ROLE`: users with this claim value get this role (repeatable).
        #[arg(long = "role-map", value_name = "VALUE=ROLE")]
        role_map: Vec<String>,
        /// Role of users without a mapped value (`none`: they cannot sign in).
        #[arg(long)]
        default_role: Option<String>,
        /// Remove issuer, client id and secret (kept for a rollback): the tenant's users can no
        /// longer sign in.
        #[arg(long, conflicts_with_all = ["oauth_issuer", "client_id", "client_secret_file"])]
        disable: bool,
    },
    /// Fetch the provider's discovery document and keys and report what was found (saves
    /// nothing); exits 1 when something is wrong.
    Test {
        slug: String,
        /// Test this issuer instead of the saved one.
        #[arg(long)]
        oauth_issuer: Option<String>,
    },
    /// A single-use link for the tenant's IT administrator to set up SSO; printed once.
    SetupLink {
        slug: String,
        /// Hours the link works (1–168; default auth.setup_link_hours).
        #[arg(long)]
        expires_in_hours: Option<u32>,
    },
    /// The tenant's setup links (never their tokens).
    SetupLinks { slug: String },
    /// Revoke a setup link.
    RevokeLink { slug: String, id: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// The live sessions of a tenant's users.
    List { slug: String },
    /// Sign a user out (end one session).
    Revoke { slug: String, handle: String },
}

async fn scope(ctx: &Context, slug: &str) -> anyhow::Result<(Tenant, TenantScope)> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let scope = tenant.scope();
    Ok((tenant, scope))
}

/// The tenant's addresses as the server announces them (`public_url`, else the bind address).
fn urls(ctx: &Context, slug: &str) -> TenantUrls {
    TenantUrls::new(&ctx.config, slug, &format!("http://{}", ctx.config.bind))
}

fn settings_text(s: &SsoSettings) -> String {
    let mapping = &s.role_mapping;
    let values: Vec<String> = mapping
        .values
        .iter()
        .map(|(v, r)| format!("{v} → {r}"))
        .collect();
    format!(
        "tenant {}: SSO {}\nissuer:        {}\nclient id:     {}\nclient secret: {}\nscopes:        {}\nroles:         claim `{}`{}; everyone else {}\nredirect URIs: {}\npost-logout:   {}",
        s.tenant,
        if s.configured {
            "configured"
        } else {
            "not configured"
        },
        s.oauth_issuer.as_deref().unwrap_or("—"),
        s.client_id.as_deref().unwrap_or("—"),
        match (&s.client_secret.set, &s.client_secret.fingerprint) {
            (true, Some(fp)) => format!("set ({fp})"),
            _ => "not set".into(),
        },
        s.scopes.join(" "),
        mapping.claim,
        if values.is_empty() {
            String::new()
        } else {
            format!(", {}", values.join(", "))
        },
        mapping.default_role.as_deref().unwrap_or("member"),
        s.redirect_uris.join("  "),
        s.post_logout_redirect_uris.join("  "),
    )
}

pub fn report_text(r: &ConnectionReport) -> String {
    let mut lines = vec![format!(
        "{} {}",
        if r.ok { "ok:" } else { "problems:" },
        r.issuer
    )];
    lines.push(format!(
        "discovery: {} in {} ms ({})",
        match (r.discovery.reachable, r.discovery.status) {
            (true, Some(status)) => format!("HTTP {status}"),
            _ => "unreachable".into(),
        },
        r.discovery.response_time_ms,
        r.discovery.url
    ));
    if let Some(jwks) = &r.jwks {
        lines.push(format!(
            "keys: {} in {} ms, {} key(s): {}",
            match (jwks.reachable, jwks.status) {
                (true, Some(status)) => format!("HTTP {status}"),
                _ => "unreachable".into(),
            },
            jwks.response_time_ms,
            r.key_ids.len(),
            r.key_ids
                .iter()
                .map(|k| k.clone().unwrap_or_else(|| "(no kid)".into()))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for problem in &r.problems {
        lines.push(format!("- {problem}"));
    }
    lines.join("\n")
}

pub async fn sso_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: SsoCommand,
) -> anyhow::Result<()> {
    match cmd {
        SsoCommand::Show { slug } => {
            let (tenant, _) = scope(ctx, &slug).await?;
            let settings = SsoSettings::of(&tenant, &urls(ctx, &slug));
            print(out, &settings, || settings_text(&settings))
        }
        SsoCommand::Set {
            slug,
            oauth_issuer,
            client_id,
            client_secret_file,
            scopes,
            role_claim,
            role_map,
            default_role,
            disable,
        } => {
            let (tenant, _) = scope(ctx, &slug).await?;
            let mut change = SsoUpdate {
                oauth_issuer: oauth_issuer.map(Some),
                client_id: client_id.map(Some),
                client_secret: client_secret_file
                    .as_deref()
                    .map(read_secret_file)
                    .transpose()?
                    .map(Some),
                scopes: scopes.map(Scopes::Text),
                role_mapping: None,
            };
            if disable {
                change.oauth_issuer = Some(None);
                change.client_id = Some(None);
                change.client_secret = Some(None);
            }
            if role_claim.is_some() || !role_map.is_empty() || default_role.is_some() {
                let current = tenant.role_mapping.clone();
                let mut values = if role_map.is_empty() {
                    current.values.clone()
                } else {
                    BTreeMap::new()
                };
                for entry in &role_map {
                    let (value, role) = entry.rsplit_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--role-map `{entry}` must read VALUE=ROLE")
                    })?;
                    values.insert(value.trim().to_owned(), role.trim().to_owned());
                }
                change.role_mapping = Some(Some(RoleMapping {
                    claim: role_claim.unwrap_or(current.claim),
                    values,
                    default_role: default_role.or(current.default_role),
                }));
            }
            let tenant = sso::update(ctx, actor, &slug, &change)
                .await
                .map_err(app_error)?;
            let settings = SsoSettings::of(&tenant, &urls(ctx, &slug));
            print(out, &settings, || settings_text(&settings))
        }
        SsoCommand::Test { slug, oauth_issuer } => {
            let (tenant, _) = scope(ctx, &slug).await?;
            let report = sso::test_connection(
                ctx,
                &tenant,
                &ConnectionTest {
                    oauth_issuer,
                    scopes: None,
                },
                None,
            )
            .await
            .map_err(app_error)?;
            print(out, &report, || report_text(&report))?;
            anyhow::ensure!(report.ok, "the identity provider of {slug} has problems");
            Ok(())
        }
        SsoCommand::SetupLink {
            slug,
            expires_in_hours,
        } => {
            let (_, scope) = scope(ctx, &slug).await?;
            let link =
                sso::create_setup_link(ctx, actor, &scope, expires_in_hours, &urls(ctx, &slug))
                    .await
                    .map_err(app_error)?;
            print(out, &link, || {
                format!(
                    "{}\n(works once, until {}; shown once — send it to the tenant's IT administrator)",
                    link.url,
                    link.info.expires_at.to_rfc3339()
                )
            })
        }
        SsoCommand::SetupLinks { slug } => {
            let (_, scope) = scope(ctx, &slug).await?;
            let links = sso::list_setup_links(ctx, &scope)
                .await
                .map_err(app_error)?;
            print(out, &links, || {
                let rows = links.iter().map(|l| {
                    vec![
                        l.id.clone(),
                        l.status.to_string(),
                        l.expires_at.to_rfc3339(),
                        l.created_by.clone(),
                    ]
                });
                table(
                    &["ID", "STATE", "EXPIRES", "CREATED BY"],
                    rows.collect(),
                    "no setup links",
                )
            })
        }
        SsoCommand::RevokeLink { slug, id } => {
            let (_, scope) = scope(ctx, &slug).await?;
            sso::revoke_setup_link(ctx, actor, &scope, &id)
                .await
                .map_err(app_error)?;
            print(out, &serde_json::json!({ "revoked": id }), || {
                format!("setup link {id} of {slug} revoked")
            })
        }
    }
}

pub async fn session_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: SessionCommand,
) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::List { slug } => {
            let (_, scope) = scope(ctx, &slug).await?;
            let sessions = auth::list_tenant_sessions(ctx, &scope)
                .await
                .map_err(app_error)?;
            print(out, &sessions, || {
                let rows = sessions.iter().map(|s| {
                    vec![
                        s.handle.clone(),
                        s.email.clone().unwrap_or_else(|| s.user.clone()),
                        s.role.as_str().to_owned(),
                        s.created_at.to_rfc3339(),
                        s.source_ip.clone().unwrap_or_else(|| "—".into()),
                    ]
                });
                table(
                    &["HANDLE", "USER", "ROLE", "SIGNED IN", "FROM"],
                    rows.collect(),
                    &format!("no live sessions in {slug}"),
                )
            })
        }
        SessionCommand::Revoke { slug, handle } => {
            let (_, scope) = scope(ctx, &slug).await?;
            auth::revoke_tenant_session(ctx, actor, &scope, &handle)
                .await
                .map_err(app_error)?;
            print(out, &serde_json::json!({ "revoked": handle }), || {
                format!("session {handle} of {slug} ended")
            })
        }
    }
}
