//! `tenantry tenant …`: the registry and the lifecycle from the command line (create, list, show,
//! update, suspend, reactivate, cancel, delete, restore, purge, export, import, health, secret
//! rollback).

use crate::audit::Actor;
use crate::context::Context;
use crate::tenants::input::Scopes;
use crate::tenants::model::Contact;
use crate::tenants::{self, NewTenant, Tenant, TenantPatch, TenantQuery, Transition};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::PathBuf;

use super::{Output, app_error, print, read_secret_file, table};

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(CreateArgs),
    /// List tenants (filtered, a page at a time).
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        tier: Option<String>,
        /// Substring of the slug or the name, or a whole tenant id.
        #[arg(long)]
        search: Option<String>,
        /// Page size (1–200).
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Continue after this cursor (the `next_cursor` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one tenant with its status history.
    Show { slug: String },
    /// Change a tenant's fields or OAuth settings.
    Update(UpdateArgs),
    /// Suspend a trial or active tenant.
    Suspend(ReasonArgs),
    /// Reactivate a suspended tenant.
    Reactivate(ReasonArgs),
    /// Cancel a tenant (its retention period starts).
    Cancel(ReasonArgs),
    /// Soft-delete a tenant, or purge it with --hard.
    Delete {
        slug: String,
        /// Purge for good (only canceled/deleted/failed tenants, after retention unless --force).
        #[arg(long)]
        hard: bool,
        /// With --hard: purge before the retention period has passed.
        #[arg(long, requires = "hard")]
        force: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Restore a canceled or deleted tenant.
    Restore(ReasonArgs),
    /// Convert a trial into an active tenant (its trial ends now).
    Convert(ReasonArgs),
    /// Roll the OAuth client secret back to the one before the last rotation.
    RollbackSecret { slug: String },
    /// Check a tenant: whether it is serving, its identity provider, a round trip to its own
    /// database, and each backend it holds resources in (`observe`: drift, or why it cannot be
    /// asked). Exit 1 when anything is not healthy.
    Health { slug: String },
    /// Export a tenant as a bundle: by default a tar archive of the whole tenant (its registry
    /// record with sealed secrets, status history, keys, overrides, usage, and each backend's
    /// part, its data included); `--format json` for the record and history only.
    Export {
        slug: String,
        /// Write the bundle to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Re-seal the bundle's secrets to this master key (a file holding its base64), for
        /// another installation.
        #[arg(long, value_name = "FILE")]
        recipient_key: Option<PathBuf>,
        /// `tar`: the whole tenant across every system (the default); `json`: the registry
        /// record and its status history only (the bundle of earlier versions).
        #[arg(long, default_value = "tar", value_parser = ["tar", "json"])]
        format: String,
    },
    /// Restore a tenant from a bundle: the registry (all or nothing), its resources re-applied
    /// in its backends, each backend's own part imported, the content verified (exit 1 on any
    /// difference).
    Import {
        /// The bundle (`-` for standard input): a `.tar` bundle or a JSON one.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Show what would be created; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Provision a tenant into its backends from a request file (JSON or YAML, the shape of
    /// `POST /api/v1/tenant/provision`), and wait for the run.
    Provision {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Makes the command safe to repeat: the same key and file give the same run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Queue the run and return without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Manage a tenant's API keys.
    #[command(subcommand)]
    ApiKey(super::keys::ApiKeyCommand),
    /// A tenant's single sign-on: settings, test connection, setup links.
    #[command(subcommand)]
    Sso(super::sso::SsoCommand),
    /// The sessions of a tenant's users.
    #[command(subcommand)]
    Session(super::sso::SessionCommand),
    /// What a tenant holds in each backend.
    Resources { slug: String },
    /// Ask each backend whether the tenant's resources are as provisioned (exit 1 on drift).
    Drift { slug: String },
    /// Repair drift: show which steps drifted, then (with --yes) re-apply exactly those, with
    /// the inputs they were applied with, and wait for the run.
    Reconcile {
        slug: String,
        /// Re-apply without asking; without it the plan is only shown.
        #[arg(long)]
        yes: bool,
        /// Render the drifted steps from their templates' newest versions (with the values the
        /// tenant was provisioned with) instead of the versions they were applied with.
        #[arg(long)]
        current_templates: bool,
    },
    /// Provision a `failed` tenant again, from the request it was provisioned with (each
    /// template's newest version), and wait for the run: it becomes active (or trial) when the
    /// run succeeds, and stays failed, with what was made undone, when it does not.
    Retry {
        slug: String,
        /// Queue the run and return without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// What a tenant used and may use: each metric's use, limit and severity.
    Usage { slug: String },
    /// A tenant's limits: show them, set or clear overrides.
    #[command(subcommand)]
    Quota(super::quotas::QuotaCommand),
}

#[derive(Debug, Args)]
pub struct ReasonArgs {
    pub slug: String,
    /// Why (recorded in the status history and the audit log).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub slug: String,
    #[arg(long)]
    pub name: String,
    /// free, starter, professional, enterprise or custom.
    #[arg(long)]
    pub tier: Option<String>,
    #[arg(long)]
    pub trial_days: Option<i64>,
    #[command(flatten)]
    pub fields: TenantFieldArgs,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub slug: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub tier: Option<String>,
    #[command(flatten)]
    pub fields: TenantFieldArgs,
}

#[derive(Debug, Args)]
pub struct TenantFieldArgs {
    #[arg(long)]
    pub contact_name: Option<String>,
    #[arg(long)]
    pub contact_email: Option<String>,
    #[arg(long)]
    pub contact_phone: Option<String>,
    /// A JSON object.
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
    #[arg(long)]
    pub oauth_issuer: Option<String>,
    #[arg(long)]
    pub client_id: Option<String>,
    /// File holding the OAuth client secret (`-` for standard input); never pass secrets as arguments.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// Comma-separated scopes (must include openid).
    #[arg(long)]
    pub scopes: Option<String>,
    /// File holding the database URI (`-` for standard input): it carries a password.
    #[arg(long, value_name = "FILE")]
    pub db_uri_file: Option<PathBuf>,
    #[arg(long)]
    pub default_schema: Option<String>,
}

impl TenantFieldArgs {
    fn contact(&self) -> Option<Contact> {
        (self.contact_name.is_some()
            || self.contact_email.is_some()
            || self.contact_phone.is_some())
        .then(|| Contact {
            name: self.contact_name.clone(),
            email: self.contact_email.clone(),
            phone: self.contact_phone.clone(),
        })
    }

    fn metadata(&self) -> anyhow::Result<Option<Map<String, Value>>> {
        self.metadata
            .as_deref()
            .map(|m| serde_json::from_str(m).context("--metadata must be a JSON object"))
            .transpose()
    }

    fn secrets(&self) -> anyhow::Result<(Option<String>, Option<String>)> {
        Ok((
            self.client_secret_file
                .as_deref()
                .map(read_secret_file)
                .transpose()?,
            self.db_uri_file
                .as_deref()
                .map(read_secret_file)
                .transpose()?,
        ))
    }
}

fn tenant_text(tenant: &Tenant) -> String {
    let secret = |s: &tenants::model::SecretStatus| match &s.fingerprint {
        Some(fp) if s.set => format!("set ({fp})"),
        _ => "not set".to_owned(),
    };
    let mut lines = vec![
        format!("slug:           {}", tenant.slug),
        format!("name:           {}", tenant.name),
        format!(
            "status:         {}{}",
            tenant.status,
            tenant
                .status_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        format!("tier:           {}", tenant.tier),
        format!("id:             {}", tenant.id),
        format!(
            "oauth_issuer:   {}",
            tenant.oauth_issuer.as_deref().unwrap_or("-")
        ),
        format!(
            "client_id:      {}",
            tenant.client_id.as_deref().unwrap_or("-")
        ),
        format!("client_secret:  {}", secret(&tenant.client_secret)),
        format!("scopes:         {}", tenant.scopes.join(",")),
        format!("db_uri:         {}", secret(&tenant.db_uri)),
        format!(
            "default_schema: {}",
            tenant.default_schema.as_deref().unwrap_or("-")
        ),
        format!("created_at:     {}", tenant.created_at.to_rfc3339()),
    ];
    if let Some(at) = tenant.trial_ends_at {
        lines.push(format!("trial_ends_at:  {}", at.to_rfc3339()));
    }
    if let Some(at) = tenant.retention_ends_at {
        lines.push(format!("retention_ends: {}", at.to_rfc3339()));
    }
    lines.join("\n")
}

pub(super) async fn tenant_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: TenantCommand,
) -> anyhow::Result<()> {
    let transition = |slug: String, t: Transition, reason: String| async move {
        let tenant = crate::lifecycle::transition(ctx, actor, &slug, t, &reason)
            .await
            .map_err(app_error)?;
        print(out, &tenant, || {
            format!("tenant {} is now {}", tenant.slug, tenant.status)
        })
    };
    match cmd {
        TenantCommand::Create(args) => create(ctx, actor, out, args).await,
        TenantCommand::List {
            status,
            tier,
            search,
            limit,
            cursor,
        } => {
            let query = TenantQuery {
                status,
                tier,
                q: search,
                cursor,
                limit: Some(limit),
            };
            list(ctx, out, &query).await
        }
        TenantCommand::Show { slug } => show(ctx, out, &slug).await,
        TenantCommand::Update(args) => update(ctx, actor, out, args).await,
        TenantCommand::Suspend(a) => transition(a.slug, Transition::Suspend, a.reason).await,
        TenantCommand::Reactivate(a) => transition(a.slug, Transition::Reactivate, a.reason).await,
        TenantCommand::Cancel(a) => transition(a.slug, Transition::Cancel, a.reason).await,
        TenantCommand::Restore(a) => transition(a.slug, Transition::Restore, a.reason).await,
        TenantCommand::Convert(a) => transition(a.slug, Transition::Convert, a.reason).await,
        TenantCommand::Delete {
            slug,
            hard,
            force,
            reason,
        } => {
            if hard {
                purge(ctx, actor, out, &slug, force, reason).await
            } else {
                let reason = reason.unwrap_or_else(|| "deleted from the command line".into());
                transition(slug, Transition::Delete, reason).await
            }
        }
        TenantCommand::Health { slug } => super::health::tenant_health(ctx, out, &slug).await,
        TenantCommand::Export {
            slug,
            file,
            recipient_key,
            format,
        } => super::bundles::export(ctx, actor, &slug, file, recipient_key, &format).await,
        TenantCommand::Import { file, dry_run } => {
            super::bundles::import(ctx, actor, out, &file, dry_run).await
        }
        TenantCommand::Provision {
            file,
            idempotency_key,
            no_wait,
        } => {
            super::provisioning::provision(
                ctx,
                actor,
                out,
                &file,
                idempotency_key.as_deref(),
                !no_wait,
            )
            .await
        }
        TenantCommand::Resources { slug } => super::provisioning::resources(ctx, out, &slug).await,
        TenantCommand::ApiKey(cmd) => super::keys::api_key_command(ctx, actor, out, cmd).await,
        TenantCommand::Sso(cmd) => super::sso::sso_command(ctx, actor, out, cmd).await,
        TenantCommand::Session(cmd) => super::sso::session_command(ctx, actor, out, cmd).await,
        TenantCommand::Drift { slug } => super::repair::drift(ctx, out, &slug).await,
        TenantCommand::Reconcile {
            slug,
            yes,
            current_templates,
        } => {
            let templates = template_versions(current_templates);
            super::repair::reconcile(ctx, actor, out, &slug, yes, templates).await
        }
        TenantCommand::Retry { slug, no_wait } => {
            super::repair::retry(ctx, actor, out, &slug, no_wait).await
        }
        TenantCommand::Usage { slug } => super::quotas::usage(ctx, out, &slug).await,
        TenantCommand::Quota(cmd) => super::quotas::quota_command(ctx, actor, out, cmd).await,
        TenantCommand::RollbackSecret { slug } => rollback_secret(ctx, actor, out, &slug).await,
    }
}

/// `tenant delete --hard`: the tenant purged, and the run that undoes it in its backends.
async fn purge(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    slug: &str,
    force: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let reason = reason.unwrap_or_else(|| "purged from the command line".into());
    let run = crate::lifecycle::purge(ctx, actor, slug, force, &reason)
        .await
        .map_err(app_error)?;
    print(
        out,
        &serde_json::json!({ "purged": slug, "run": run }),
        || match &run {
            Some(run) => format!(
                "tenant {slug} purged; its backends are undone by run {run} (tenantry run show {run})"
            ),
            None => format!("tenant {slug} purged"),
        },
    )
}

/// `tenant rollback-secret`: the OAuth client secret before the last rotation, back.
async fn rollback_secret(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    slug: &str,
) -> anyhow::Result<()> {
    let tenant = tenants::rollback_client_secret(ctx, actor, slug)
        .await
        .map_err(app_error)?;
    print(out, &tenant, || {
        format!(
            "tenant {} client secret rolled back to {}",
            tenant.slug,
            tenant.client_secret.fingerprint.as_deref().unwrap_or("-")
        )
    })
}

/// Which template versions a repair renders with: the current ones, or those recorded.
fn template_versions(current: bool) -> crate::provisioning::TemplateVersions {
    if current {
        crate::provisioning::TemplateVersions::Current
    } else {
        crate::provisioning::TemplateVersions::Recorded
    }
}

/// `tenant create`.
async fn create(ctx: &Context, actor: &Actor, out: Output, args: CreateArgs) -> anyhow::Result<()> {
    let (client_secret, db_uri) = args.fields.secrets()?;
    let request = NewTenant {
        slug: args.slug,
        name: args.name,
        tier: args.tier,
        trial_days: args.trial_days,
        contact: args.fields.contact(),
        metadata: args.fields.metadata()?,
        oauth_issuer: args.fields.oauth_issuer.clone(),
        client_id: args.fields.client_id.clone(),
        client_secret,
        scopes: args.fields.scopes.clone().map(Scopes::Text),
        db_uri,
        default_schema: args.fields.default_schema.clone(),
        role_mapping: None,
    };
    let tenant = tenants::create(ctx, actor, &request)
        .await
        .map_err(app_error)?;
    print(out, &tenant, || {
        format!("created tenant {} ({})", tenant.slug, tenant.status)
    })
}

/// `tenant list`: a page of tenants.
async fn list(ctx: &Context, out: Output, query: &TenantQuery) -> anyhow::Result<()> {
    let page = tenants::list(ctx, query).await.map_err(app_error)?;
    print(out, &page, || {
        let rows = page.items.iter().map(|t| {
            vec![
                t.slug.clone(),
                t.status.to_string(),
                t.tier.to_string(),
                t.name.clone(),
            ]
        });
        let mut text = table(
            &["SLUG", "STATUS", "TIER", "NAME"],
            rows.collect(),
            "no tenants",
        );
        if let Some(cursor) = &page.next_cursor {
            text.push_str(&format!("\nmore: --cursor {cursor}"));
        }
        text
    })
}

/// `tenant show`: the tenant and its status history.
async fn show(ctx: &Context, out: Output, slug: &str) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let history = tenants::history(ctx, &tenant).await.map_err(app_error)?;
    #[derive(Serialize)]
    struct Shown<'a> {
        #[serde(flatten)]
        tenant: &'a Tenant,
        history: &'a [tenants::StatusChange],
    }
    print(
        out,
        &Shown {
            tenant: &tenant,
            history: &history,
        },
        || {
            let mut text = tenant_text(&tenant);
            text.push_str("\nhistory:");
            for h in &history {
                text.push_str(&format!(
                    "\n  {}  {} → {}  by {}: {}",
                    h.at.to_rfc3339(),
                    h.from.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    h.to,
                    h.actor,
                    h.reason
                ));
            }
            text
        },
    )
}

/// `tenant update`: a PATCH of the tenant's fields.
async fn update(ctx: &Context, actor: &Actor, out: Output, args: UpdateArgs) -> anyhow::Result<()> {
    let (client_secret, db_uri) = args.fields.secrets()?;
    let patch = TenantPatch {
        name: args.name,
        tier: args.tier,
        contact: args.fields.contact().map(Some),
        metadata: args.fields.metadata()?,
        oauth_issuer: args.fields.oauth_issuer.clone().map(Some),
        client_id: args.fields.client_id.clone().map(Some),
        client_secret: client_secret.map(Some),
        scopes: args.fields.scopes.clone().map(Scopes::Text),
        db_uri: db_uri.map(Some),
        default_schema: args.fields.default_schema.clone().map(Some),
        ..TenantPatch::default()
    };
    let tenant = crate::lifecycle::patch_tenant(ctx, actor, &args.slug, &patch)
        .await
        .map_err(app_error)?;
    print(out, &tenant, || {
        format!(
            "updated tenant {} (version {})",
            tenant.slug, tenant.version
        )
    })
}
