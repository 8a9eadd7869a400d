//! The `tenantry` command line. Commands other than `serve` work on the database directly, through
//! the same services as the API (so every change is validated and audited the same way), with the
//! actor `cli:<user>`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

mod admin;
mod alerts;
mod audit;
mod bundles;
mod health;
mod jobs;
mod keys;
mod plugin;
mod provisioning;
mod quotas;
mod repair;
mod sso;
mod tenant;

pub use admin::{AdminCommand, CliRole, TokenCommand};
pub use audit::AuditCommand;
pub use plugin::{CliWorld, PluginCommand};
pub use tenant::{CreateArgs, ReasonArgs, TenantCommand, TenantFieldArgs, UpdateArgs};

use crate::app;
use crate::audit::Actor;
use crate::config::Config;
use crate::context::Context;
use crate::error::AppError;
use crate::key_rotation;
use crate::tenants::{self};

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
    /// Find API keys and platform tokens.
    #[command(subcommand)]
    Key(keys::KeyCommand),
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
    /// Report usage from an operator's system.
    #[command(subcommand)]
    Usage(quotas::UsageCommand),
    /// Alerts on tenants.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Endpoints told about alerts (signed, retried).
    #[command(subcommand)]
    Webhook(alerts::WebhookCommand),
    /// The jobs the servers run by themselves.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Back every tenant up into a directory: each tenant's bundle (`<slug>.tar`, secrets
    /// sealed), written when anything it holds changed since the last backup there (the
    /// bundles before it kept beside it as `<slug>.<time>.tar`).
    Backup {
        /// The backup directory (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Write every tenant's bundle, changed or not.
        #[arg(long)]
        full: bool,
        /// Bundles kept of each tenant, the newest included; older ones are removed.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
        keep: u16,
    },
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
    /// Tenant specs written in other shapes.
    #[command(subcommand)]
    Spec(SpecCommand),
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Convert an Airflow tenant config (`tenant:`, `warehouse:`, `resources:`) into a
    /// `tenantry/v1` spec on standard output; every field left out or changed is listed on
    /// standard error, with why. Touches no database.
    Convert {
        /// The Airflow tenant config (`-` for standard input).
        file: PathBuf,
    },
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
        Command::Spec(SpecCommand::Convert { file }) => {
            let text = read_file_or_stdin(&file)?;
            let converted = crate::provisioning::spec::convert::from_airflow(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for note in &converted.notes {
                eprintln!("note: {note}");
            }
            match out {
                Output::Json => write_stdout(&serde_json::to_string_pretty(&converted.spec)?),
                Output::Text => write_stdout(converted.yaml()?.trim_end()),
            }
        }
        Command::Openapi => write_stdout(&serde_json::to_string_pretty(
            &crate::api::openapi_document(),
        )?),
        Command::Plugin(PluginCommand::New {
            name,
            world,
            dir,
            sdk,
            lang: plugin::CliLang::Js,
        }) => {
            anyhow::ensure!(
                sdk.is_none(),
                "--sdk is the Rust SDK crate; a JavaScript plugin takes none"
            );
            let dir = crate::plugin_host::scaffold::create_js(&name, world.into(), dir.as_deref())?;
            print(out, &serde_json::json!({ "created": dir }), || {
                format!(
                    "created {dir}
build it:   cd {dir} && npm install && npm run build
install it: tenantry plugin install {dir}/{name}.wasm",
                    dir = dir.display(),
                )
            })
        }
        Command::Plugin(PluginCommand::New {
            name,
            world,
            dir,
            sdk,
            lang: plugin::CliLang::Rust,
        }) => {
            let dir = crate::plugin_host::scaffold::create(
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
        Command::Plugin(PluginCommand::Call {
            file: Some(file),
            allow_host,
            secrets,
            set,
            function,
            ..
        }) => {
            // A scratch installation of its own: a SQLite database and a generated key in a
            // directory removed afterwards, whatever the configuration names.
            config.log_level =
                std::env::var("TENANTRY_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
            crate::telemetry::init(&config);
            let scratch = std::env::temp_dir().join(format!(
                "tenantry-plugin-call-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            config.data_dir = scratch.clone();
            config.database_url =
                Some(format!("sqlite://{}", scratch.join("scratch.db").display()));
            config.master_key = None;
            config.master_key_file = None;
            config.previous_master_keys = Vec::new();
            config.redis_url = None;
            let outcome = async {
                let ctx = open_for_cli(config).await?;
                plugin::call_file(&ctx, out, &file, allow_host, secrets, set, function).await
            }
            .await;
            let _ = std::fs::remove_dir_all(&scratch);
            outcome
        }
        Command::Plugin(PluginCommand::Check { file })
            if file.extension().is_some_and(|e| e == "toml") =>
        {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let package = crate::plugin_host::manifest::Package::beside(&file);
            let manifest =
                crate::plugin_host::manifest::check_manifest_text(&text, package.as_ref())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            print(out, &manifest, || {
                format!(
                    "ok: {} {} — world {}, WIT {} (the manifest alone: build the component and check it too)",
                    manifest.name, manifest.version, manifest.world, manifest.wit_version
                )
            })
        }
        Command::Plugin(PluginCommand::Check { file }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let inspection = crate::plugin_registry::check(&bytes).map_err(app_error)?;
            print(out, &inspection, || plugin::plugin_check_text(&inspection))
        }
        Command::Migrate => {
            crate::telemetry::init(&config);
            let (keyring, _) = crate::secrets::Keyring::load(&config)?;
            let ctx = app::open_with_keyring(config, keyring).await?;
            let applied = ctx.db.migrate().await?;
            // Like the server's start-up, `migrate` brings the platform tenant in line with
            // `[admin_tenant]` (creating it on a new database).
            tenants::ensure_admin_tenant(&ctx)
                .await
                .map_err(app_error)?;
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
                Command::Tenant(cmd) => tenant::tenant_command(&ctx, &actor, out, cmd).await,
                Command::Admin(cmd) => admin::admin_command(&ctx, &actor, out, cmd).await,
                Command::Key(cmd) => keys::key_command(&ctx, out, cmd).await,
                Command::Audit(cmd) => audit::audit_command(&ctx, out, cmd).await,
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
                Command::Plugin(cmd) => plugin::plugin_command(&ctx, &actor, out, cmd).await,
                Command::Template(cmd) => {
                    provisioning::template_command(&ctx, &actor, out, cmd).await
                }
                Command::Run(cmd) => provisioning::run_command(&ctx, out, cmd).await,
                Command::Usage(cmd) => quotas::usage_command(&ctx, &actor, out, cmd).await,
                Command::Alerts(cmd) => alerts::alerts_command(&ctx, out, cmd).await,
                Command::Webhook(cmd) => alerts::webhook_command(&ctx, &actor, out, cmd).await,
                Command::Job(cmd) => jobs::job_command(&ctx, out, cmd).await,
                Command::Backup { dir, full, keep } => {
                    bundles::backup(&ctx, &actor, out, &dir, full, keep.into()).await
                }
                Command::Apply { file, yes, no_wait } => {
                    provisioning::apply(&ctx, &actor, out, &file, yes, !no_wait).await
                }
                Command::Serve { .. } | Command::Migrate | Command::Openapi | Command::Spec(_) => {
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

/// Opens the database for a command: migrated, with the built-in plugins recorded. The
/// platform tenant is left as the registry has it: only `serve` and `migrate` apply
/// `[admin_tenant]`, so a command run with other settings (or none) never rewrites it.
async fn open_for_cli(config: Config) -> anyhow::Result<Context> {
    let (keyring, _) = crate::secrets::Keyring::load(&config)?;
    let ctx = app::open_with_keyring(config, keyring).await?;
    ctx.db.migrate().await?;
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
    let text = match out {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Text => text(),
    };
    write_stdout(&text)
}

/// Writes a command's output and a newline. A reader that stopped reading (`tenantry … | head`)
/// ends the output quietly, as it ends any Unix tool's, instead of failing the command.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("writing to standard output"))
        }
        _ => Ok(()),
    }
}

/// A text table: the header and one line a row, each column as wide as its widest cell (the
/// last one unpadded); `empty` where there is no row.
fn table(header: &[&str], rows: Vec<Vec<String>>, empty: &str) -> String {
    if rows.is_empty() {
        return empty.to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.to_string()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    std::iter::once(line(header.to_vec()))
        .chain(
            rows.iter()
                .map(|row| line(row.iter().map(String::as_str).collect())),
        )
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a file, or of standard input for `-`.
fn read_file_or_stdin(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(text)
}

/// A secret from a file or standard input, without the line end an editor or `echo` adds.
fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = read_file_or_stdin(path)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}
