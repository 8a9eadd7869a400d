//! The `tenantry` command line. Commands other than `serve` work on the database directly, through
//! the same services as the API (so every change is validated and audited the same way), with the
//! actor `cli:<user>`.

use std::io::{BufRead as _, IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value};

mod keys;
mod provisioning;
mod sso;

use crate::app;
use crate::audit::{self, Actor, AuditQuery};
use crate::auth::{self, Role};
use crate::config::Config;
use crate::context::Context;
use crate::error::AppError;
use crate::key_rotation;
use crate::tenants::input::Scopes;
use crate::tenants::model::Contact;
use crate::tenants::{self, NewTenant, Tenant, TenantPatch, TenantQuery, Transition};

#[derive(Debug, Parser)]
#[command(
    name = "tenantry",
    version,
    about = "Multi-tenant platform control plane",
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file (TOML); default: $TENANTRY_CONFIG, else ./tenantry.toml when present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format of commands that print data.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (API, admin portal, metrics).
    Serve {
        /// Address to listen on (overrides TENANTRY_BIND).
        #[arg(long, value_name = "ADDR")]
        bind: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage platform administration (bootstrap password, API tokens).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage the master key that seals secrets at rest.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Print the OpenAPI document of the API.
    Openapi,
    /// Manage Wasm plugins, and write your own.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage connection and asset templates (versioned).
    #[command(subcommand)]
    Template(provisioning::TemplateCommand),
    /// Follow provisioning and lifecycle runs.
    #[command(subcommand)]
    Run(provisioning::RunCommand),
    /// Converge a tenant to a spec file: shows the plan (create, change, leave); --yes applies it.
    Apply {
        /// The tenant spec (YAML; `-` for standard input).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Apply the plan (without it, only show it).
        #[arg(long)]
        yes: bool,
        /// Queue the run and return without waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install (or upgrade) a plugin from its component.
    Install { file: PathBuf },
    /// List plugins with their world, version and capabilities.
    List,
    /// Show one plugin: manifest, requested and granted capabilities, deadline.
    Inspect { name: String },
    /// Grant a host or a secret the plugin's manifest requests.
    Grant {
        name: String,
        /// A host (`host` or `host:port`).
        #[arg(long, conflicts_with = "secret")]
        host: Option<String>,
        /// A secret's name; its value is read from --value-file.
        #[arg(long, requires = "value_file")]
        secret: Option<String>,
        /// File holding the secret's value (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
    },
    /// Revoke a granted host or secret.
    Revoke {
        name: String,
        #[arg(long, conflicts_with = "secret")]
        host: Option<String>,
        #[arg(long)]
        secret: Option<String>,
    },
    /// Enable a plugin, optionally with its own call deadline.
    Enable {
        name: String,
        /// Deadline of each call in milliseconds (overrides the world's default).
        #[arg(long)]
        deadline_ms: Option<u64>,
    },
    /// Disable a plugin.
    Disable { name: String },
    /// Create a new plugin crate that builds as is.
    New {
        name: String,
        #[arg(long, value_enum)]
        world: CliWorld,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK crate (default: the one of this source tree).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Check a component: world, WIT version, manifest, exports, requested capabilities.
    Check { file: PathBuf },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliWorld {
    Provisioner,
    Renderer,
    QuotaPolicy,
}

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
        /// Substring of the slug or the name.
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
    /// Roll the OAuth client secret back to the one before the last rotation.
    RollbackSecret { slug: String },
    /// Check a tenant: whether it is serving, and a round trip to its own database.
    Health { slug: String },
    /// Export a tenant as a JSON bundle (record with sealed secrets, status history).
    Export {
        slug: String,
        /// Write the bundle to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Restore a tenant from an export bundle.
    Import {
        /// The bundle (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
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
    ApiKey(keys::ApiKeyCommand),
    /// A tenant's single sign-on: settings, test connection, setup links.
    #[command(subcommand)]
    Sso(sso::SsoCommand),
    /// The sessions of a tenant's users.
    #[command(subcommand)]
    Session(sso::SessionCommand),
    /// What a tenant holds in each backend.
    Resources { slug: String },
    /// Ask each backend whether the tenant's resources are as provisioned (exit 1 on drift).
    Drift { slug: String },
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

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// Exact action, or a prefix ending in a dot (`tenant.`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Records older than this sequence number (the `next_before` of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Check the hash chain; exits non-zero when a record was changed or removed.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every secret under a new master key.
    RotateKey {
        /// The new key (base64 of 32 bytes). Without it, a key is generated into the managed key file.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

/// Runs the command line; errors come back to `main`, which prints one line and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    let out = cli.output;
    match cli.command {
        Command::Serve { bind } => {
            if let Some(bind) = bind {
                config.bind = bind;
                // Checked like TENANTRY_BIND, before start-up writes anything (database, key,
                // generated admin password).
                config.validate()?;
            }
            crate::telemetry::init(&config);
            app::serve(config).await
        }
        Command::Openapi => {
            println!("{}", crate::api::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Plugin(PluginCommand::New {
            name,
            world,
            dir,
            sdk,
        }) => {
            let dir = crate::plugins::scaffold::create(
                &name,
                world.into(),
                dir.as_deref(),
                sdk.as_deref(),
            )?;
            print(out, &serde_json::json!({ "created": dir }), || {
                format!(
                    "created {dir}\nbuild it:   cd {dir} && cargo build --release --target wasm32-wasip2\ninstall it: tenantry plugin install {dir}/target/wasm32-wasip2/release/{file}.wasm",
                    dir = dir.display(),
                    file = name.replace('-', "_")
                )
            })
        }
        Command::Plugin(PluginCommand::Check { file }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let inspection = crate::plugin_registry::check(&bytes).map_err(app_error)?;
            print(out, &inspection, || plugin_check_text(&inspection))
        }
        Command::Migrate => {
            crate::telemetry::init(&config);
            let (keyring, _) = crate::secrets::Keyring::load(&config)?;
            let ctx = app::open_with_keyring(config, keyring).await?;
            let applied = ctx.db.migrate().await?;
            print(
                out,
                &serde_json::json!({ "applied": applied, "database": ctx.db.display_url() }),
                || {
                    if applied.is_empty() {
                        format!("{}: schema is up to date", ctx.db.display_url())
                    } else {
                        format!("{}: applied {}", ctx.db.display_url(), applied.join(", "))
                    }
                },
            )
        }
        command => {
            // CLI commands log warnings only: their output is the data they print.
            config.log_level =
                std::env::var("TENANTRY_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
            crate::telemetry::init(&config);
            let ctx = open_for_cli(config).await?;
            let actor = Actor::cli();
            let outcome = match command {
                Command::Tenant(cmd) => tenant_command(&ctx, &actor, out, cmd).await,
                Command::Admin(cmd) => admin_command(&ctx, &actor, out, cmd).await,
                Command::Audit(cmd) => audit_command(&ctx, out, cmd).await,
                Command::Secrets(SecretsCommand::RotateKey { new_key_file }) => {
                    let report =
                        key_rotation::rotate(&ctx, &actor, new_key_file.as_deref()).await?;
                    print(out, &report, || {
                        let mut text = format!(
                            "re-sealed {} secrets: key {} → {}",
                            report.resealed, report.old_key_id, report.new_key_id
                        );
                        match &report.key_file {
                            Some(path) => text.push_str(&format!(
                                "\nthe new key is in {}; restart running servers so that they seal with it",
                                path.display()
                            )),
                            None => text.push_str(
                                "\nnow point TENANTRY_MASTER_KEY / TENANTRY_MASTER_KEY_FILE at the new key and restart the servers",
                            ),
                        }
                        text
                    })
                }
                Command::Plugin(cmd) => plugin_command(&ctx, &actor, out, cmd).await,
                Command::Template(cmd) => {
                    provisioning::template_command(&ctx, &actor, out, cmd).await
                }
                Command::Run(cmd) => provisioning::run_command(&ctx, out, cmd).await,
                Command::Apply { file, yes, no_wait } => {
                    provisioning::apply(&ctx, &actor, out, &file, yes, !no_wait).await
                }
                Command::Serve { .. } | Command::Migrate | Command::Openapi => {
                    unreachable!("handled above")
                }
            };
            // Plugin calls this command made count like any server's.
            if let Err(err) = ctx.plugins.report_stats().await {
                tracing::warn!("cannot record plugin call statistics: {err}");
            }
            outcome
        }
    }
}

/// Opens the database for a command: migrated, with the platform tenant in place.
async fn open_for_cli(config: Config) -> anyhow::Result<Context> {
    let (keyring, _) = crate::secrets::Keyring::load(&config)?;
    let ctx = app::open_with_keyring(config, keyring).await?;
    ctx.db.migrate().await?;
    tenants::ensure_admin_tenant(&ctx)
        .await
        .map_err(app_error)?;
    crate::plugin_registry::record_builtins(&ctx)
        .await
        .map_err(app_error)?;
    Ok(ctx)
}

/// An application error as one line for the terminal.
pub fn app_error(err: AppError) -> anyhow::Error {
    err.into_anyhow()
}

fn print<T: Serialize>(
    out: Output,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Text => println!("{}", text()),
    }
    Ok(())
}

fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
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

async fn tenant_command(
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
        TenantCommand::Create(args) => {
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
        TenantCommand::List {
            status,
            tier,
            search,
            limit,
            cursor,
        } => {
            let page = tenants::list(
                ctx,
                &TenantQuery {
                    status,
                    tier,
                    q: search,
                    cursor,
                    limit: Some(limit),
                },
            )
            .await
            .map_err(app_error)?;
            print(out, &page, || {
                let mut lines = vec![format!(
                    "{:<28} {:<12} {:<13} {}",
                    "SLUG", "STATUS", "TIER", "NAME"
                )];
                lines.extend(
                    page.items.iter().map(|t| {
                        format!("{:<28} {:<12} {:<13} {}", t.slug, t.status, t.tier, t.name)
                    }),
                );
                if let Some(cursor) = &page.next_cursor {
                    lines.push(format!("more: --cursor {cursor}"));
                }
                lines.join("\n")
            })
        }
        TenantCommand::Show { slug } => {
            let tenant = tenants::get(ctx, &slug).await.map_err(app_error)?;
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
        TenantCommand::Update(args) => {
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
            let tenant = crate::lifecycle::update(ctx, actor, &args.slug, &patch)
                .await
                .map_err(app_error)?;
            print(out, &tenant, || {
                format!(
                    "updated tenant {} (version {})",
                    tenant.slug, tenant.version
                )
            })
        }
        TenantCommand::Suspend(a) => transition(a.slug, Transition::Suspend, a.reason).await,
        TenantCommand::Reactivate(a) => transition(a.slug, Transition::Reactivate, a.reason).await,
        TenantCommand::Cancel(a) => transition(a.slug, Transition::Cancel, a.reason).await,
        TenantCommand::Restore(a) => transition(a.slug, Transition::Restore, a.reason).await,
        TenantCommand::Delete {
            slug,
            hard,
            force,
            reason,
        } => {
            if hard {
                let reason = reason.unwrap_or_else(|| "purged from the command line".into());
                crate::lifecycle::purge(ctx, actor, &slug, force, &reason)
                    .await
                    .map_err(app_error)?;
                print(out, &serde_json::json!({ "purged": slug }), || {
                    format!("tenant {slug} purged")
                })
            } else {
                let reason = reason.unwrap_or_else(|| "deleted from the command line".into());
                transition(slug, Transition::Delete, reason).await
            }
        }
        TenantCommand::Health { slug } => {
            let tenant = crate::health::tenant(ctx, &slug).await.map_err(app_error)?;
            let database = crate::health::tenant_database(ctx, &slug)
                .await
                .map_err(app_error)?;
            let oauth = crate::auth::sso::oauth_health(ctx, &slug)
                .await
                .map_err(app_error)?;
            let report =
                serde_json::json!({ "tenant": tenant, "database": database, "oauth": oauth });
            print(out, &report, || {
                format!(
                    "tenant {}: {} ({})\noauth: {}{}{}\ndatabase: {}{}{}",
                    tenant.tenant,
                    tenant.status,
                    tenant.tenant_status,
                    oauth.status.replace('_', " "),
                    oauth
                        .discovery
                        .as_ref()
                        .map(|d| format!(
                            " (discovery {} ms{})",
                            d.response_time_ms,
                            oauth
                                .jwks
                                .as_ref()
                                .map(|j| format!(", keys {} ms", j.response_time_ms))
                                .unwrap_or_default()
                        ))
                        .unwrap_or_default(),
                    if oauth.problems.is_empty() || oauth.status == "not_configured" {
                        String::new()
                    } else {
                        format!(" — {}", oauth.problems.join("; "))
                    },
                    database.status.replace('_', " "),
                    database
                        .response_time_ms
                        .map(|ms| format!(" in {ms:.1} ms"))
                        .unwrap_or_default(),
                    database
                        .detail
                        .as_deref()
                        .map(|d| format!(" — {d}"))
                        .unwrap_or_default()
                )
            })?;
            anyhow::ensure!(
                tenant.status == "healthy"
                    && matches!(database.status.as_str(), "connected" | "not_configured")
                    && matches!(oauth.status.as_str(), "healthy" | "not_configured"),
                "tenant {slug} is not healthy"
            );
            Ok(())
        }
        TenantCommand::Export { slug, file } => {
            let bundle = tenants::bundle::export(ctx, actor, &slug)
                .await
                .map_err(app_error)?;
            let json = serde_json::to_string_pretty(&bundle)?;
            match file {
                Some(path) => {
                    use std::io::Write as _;
                    use std::os::unix::fs::OpenOptionsExt as _;
                    let mut out = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&path)
                        .with_context(|| format!("writing {}", path.display()))?;
                    writeln!(out, "{json}")?;
                    eprintln!("tenant {slug} exported to {}", path.display());
                }
                None => println!("{json}"),
            }
            Ok(())
        }
        TenantCommand::Import { file } => {
            let text = if file == Path::new("-") {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let bundle = crate::http::body::parse(text.as_bytes()).map_err(app_error)?;
            let tenant = tenants::bundle::import(ctx, actor, &bundle)
                .await
                .map_err(app_error)?;
            print(out, &tenant, || {
                format!("restored tenant {} ({})", tenant.slug, tenant.status)
            })
        }
        TenantCommand::Provision {
            file,
            idempotency_key,
            no_wait,
        } => {
            provisioning::provision(ctx, actor, out, &file, idempotency_key.as_deref(), !no_wait)
                .await
        }
        TenantCommand::Resources { slug } => provisioning::resources(ctx, out, &slug).await,
        TenantCommand::ApiKey(cmd) => keys::api_key_command(ctx, actor, out, cmd).await,
        TenantCommand::Sso(cmd) => sso::sso_command(ctx, actor, out, cmd).await,
        TenantCommand::Session(cmd) => sso::session_command(ctx, actor, out, cmd).await,
        TenantCommand::Drift { slug } => provisioning::drift(ctx, out, &slug).await,
        TenantCommand::RollbackSecret { slug } => {
            let tenant = tenants::rollback_client_secret(ctx, actor, &slug)
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

async fn admin_command(
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
                let mut lines = vec![format!(
                    "{:<36} {:<20} {:<10} {:<16} {}",
                    "ID", "NAME", "PREFIX", "ROLE", "STATE"
                )];
                lines.extend(tokens.iter().map(|t| {
                    let state = if t.revoked_at.is_some() {
                        "revoked".to_owned()
                    } else if t.expires_at.is_some_and(|e| e <= chrono::Utc::now()) {
                        "expired".to_owned()
                    } else {
                        "live".to_owned()
                    };
                    format!(
                        "{:<36} {:<20} {:<10} {:<16} {}",
                        t.id,
                        t.name,
                        t.prefix,
                        t.role.as_str(),
                        state
                    )
                }));
                lines.join("\n")
            })
        }
        AdminCommand::Token(TokenCommand::Rotate { id, grace_minutes }) => {
            let token = auth::rotate_key(ctx, actor, None, &id, grace_minutes)
                .await
                .map_err(app_error)?;
            print(out, &token, || {
                format!(
                    "{}\n(the old token works for {grace_minutes} more minutes)",
                    keys::new_key_text(&token)
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

async fn audit_command(ctx: &Context, out: Output, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::List {
            tenant,
            action,
            actor,
            since,
            until,
            limit,
            before,
        } => {
            let page = audit::list(
                &ctx.db,
                &AuditQuery {
                    tenant,
                    action,
                    actor,
                    since: since.map(|t| t.naive_utc()),
                    until: until.map(|t| t.naive_utc()),
                    before,
                    limit: Some(limit),
                },
            )
            .await
            .map_err(app_error)?;
            print(out, &page, || {
                let mut lines: Vec<String> = page
                    .items
                    .iter()
                    .map(|r| {
                        format!(
                            "{:>6}  {}  {:<16} {:<28} {:<20} {}",
                            r.seq,
                            r.at.format("%Y-%m-%d %H:%M:%S"),
                            r.actor,
                            r.action,
                            r.tenant.as_deref().unwrap_or("-"),
                            r.details
                        )
                    })
                    .collect();
                if let Some(before) = page.next_before {
                    lines.push(format!("more: --before {before}"));
                }
                lines.join("\n")
            })
        }
        AuditCommand::Verify => {
            let report = audit::verify(&ctx.db).await.map_err(app_error)?;
            print(out, &report, || {
                if report.ok {
                    format!("audit chain intact: {} records", report.records)
                } else {
                    format!(
                        "audit chain BROKEN: {}",
                        report.problem.clone().unwrap_or_default()
                    )
                }
            })?;
            anyhow::ensure!(
                report.ok,
                "audit chain is broken at record {}",
                report.first_broken_seq.unwrap_or(0)
            );
            Ok(())
        }
    }
}

impl From<CliWorld> for crate::plugins::World {
    fn from(world: CliWorld) -> Self {
        match world {
            CliWorld::Provisioner => crate::plugins::World::Provisioner,
            CliWorld::Renderer => crate::plugins::World::Renderer,
            CliWorld::QuotaPolicy => crate::plugins::World::QuotaPolicy,
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn plugin_check_text(i: &crate::plugins::Inspection) -> String {
    format!(
        "ok: {} {} — world {}, WIT {}\n{}\nrequests hosts: {}\nrequests secrets: {}\nexports: {}\nimports: {}\nsha256: {} ({} bytes)",
        i.manifest.name,
        i.manifest.version,
        i.world,
        i.wit_version,
        i.manifest.description,
        list_or_none(&i.manifest.capabilities.hosts),
        list_or_none(&i.manifest.capabilities.secrets),
        i.exports.join(", "),
        i.imports.join(", "),
        i.sha256,
        i.size_bytes
    )
}

fn plugin_text(p: &crate::plugin_registry::PluginView) -> String {
    format!(
        "{} {} ({}{}) — world {}, WIT {}, deadline {} ms\n{}\nhosts:   requested {} | granted {}\nsecrets: requested {} | granted {}\ncalls: {} ({} failed, mean {:.2} ms)",
        p.name,
        p.version,
        if p.enabled { "enabled" } else { "disabled" },
        if p.builtin { ", built-in" } else { "" },
        p.world,
        p.wit_version,
        p.deadline_ms,
        p.description,
        list_or_none(&p.requested.hosts),
        list_or_none(&p.granted.hosts),
        list_or_none(&p.requested.secrets),
        list_or_none(&p.granted.secrets),
        p.stats.calls,
        p.stats.failures,
        p.stats.mean_ms
    )
}

async fn plugin_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: PluginCommand,
) -> anyhow::Result<()> {
    use crate::plugin_registry::{self as registry, Capability};
    match cmd {
        PluginCommand::Install { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let plugin = registry::install(ctx, actor, bytes)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || {
                format!(
                    "installed {} {} ({})",
                    plugin.name, plugin.version, plugin.world
                )
            })
        }
        PluginCommand::List => {
            let plugins = registry::list(ctx).await.map_err(app_error)?;
            print(out, &plugins, || {
                let mut lines = vec![format!(
                    "{:<20} {:<9} {:<13} {:<6} {:<9} GRANTED",
                    "NAME", "VERSION", "WORLD", "WIT", "STATE"
                )];
                lines.extend(plugins.iter().map(|p| {
                    format!(
                        "{:<20} {:<9} {:<13} {:<6} {:<9} {}",
                        p.name,
                        p.version,
                        p.world.as_str(),
                        p.wit_version,
                        if p.enabled { "enabled" } else { "disabled" },
                        [p.granted.hosts.clone(), p.granted.secrets.clone()]
                            .concat()
                            .join(", ")
                    )
                }));
                lines.join("\n")
            })
        }
        PluginCommand::Inspect { name } => {
            let plugin = registry::get(ctx, &name).await.map_err(app_error)?;
            print(out, &plugin, || plugin_text(&plugin))
        }
        PluginCommand::Grant {
            name,
            host,
            secret,
            value_file,
        } => {
            let capability = match (host, secret, value_file) {
                (Some(host), None, _) => Capability::Host(host),
                (None, Some(secret), Some(file)) => Capability::Secret {
                    name: secret,
                    value: read_secret_file(&file)?,
                },
                _ => anyhow::bail!("give --host HOST, or --secret NAME --value-file FILE"),
            };
            let plugin = registry::grant(ctx, actor, &name, capability)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || plugin_text(&plugin))
        }
        PluginCommand::Revoke { name, host, secret } => {
            let (kind, capability) = match (host, secret) {
                (Some(host), None) => ("host", host),
                (None, Some(secret)) => ("secret", secret),
                _ => anyhow::bail!("give --host HOST or --secret NAME"),
            };
            let plugin = registry::revoke(ctx, actor, &name, kind, &capability)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || plugin_text(&plugin))
        }
        PluginCommand::Enable { name, deadline_ms } => {
            let plugin = registry::set_enabled(ctx, actor, &name, true, deadline_ms)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || {
                format!(
                    "plugin {} enabled (deadline {} ms)",
                    plugin.name, plugin.deadline_ms
                )
            })
        }
        PluginCommand::Disable { name } => {
            let plugin = registry::set_enabled(ctx, actor, &name, false, None)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || format!("plugin {} disabled", plugin.name))
        }
        PluginCommand::New { .. } | PluginCommand::Check { .. } => {
            unreachable!("handled without a database")
        }
    }
}
