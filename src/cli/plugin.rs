//! `tenantry plugin …`: plugins scaffolded, checked, installed, listed, inspected, granted,
//! revoked, enabled and disabled.

use crate::audit::Actor;
use crate::context::Context;
use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;

use super::{Output, app_error, print, read_secret_file, table};

mod call;
mod scratch;

pub(super) use scratch::call_file;
use scratch::read_set;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Install (or upgrade) a plugin from its component.
    Install { file: PathBuf },
    /// List plugins with their world, version and capabilities.
    List,
    /// Show one plugin: manifest, requested and granted capabilities, deadline.
    Inspect { name: String },
    /// Grant a host, a secret or a database the plugin's manifest requests.
    Grant {
        name: String,
        /// A host: `host` or `host:*` (any port), or `host:port`. A private, loopback or
        /// link-local address is reached only through a grant that names that address.
        #[arg(long, conflicts_with_all = ["secret", "database"])]
        host: Option<String>,
        /// A secret's name; its value is read from --value-file.
        #[arg(long, requires = "value_file", conflicts_with = "database")]
        secret: Option<String>,
        /// File holding the secret's value (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        /// A database's alias; its connection URL (the role the plugin acts as) is read from
        /// --url-file.
        #[arg(long, requires = "url_file")]
        database: Option<String>,
        /// File holding the database's URL (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        url_file: Option<PathBuf>,
    },
    /// Set a plugin's configuration: each `--set KEY=VALUE` typed by the field it names, each
    /// `--unset KEY` back to its default; `-f FILE` (a JSON object) replaces the whole of it
    /// first. Every value is checked against its field, and a refusal changes nothing.
    Configure {
        name: String,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Revoke a granted host or secret.
    Revoke {
        name: String,
        #[arg(long, conflicts_with_all = ["secret", "database"])]
        host: Option<String>,
        #[arg(long, conflicts_with = "database")]
        secret: Option<String>,
        #[arg(long)]
        database: Option<String>,
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
        /// Depend on the SDK crate at PATH (default: a copy written into the new crate, with
        /// the WIT it builds against, so that it builds anywhere).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// The plugin's language: Rust (a crate on the guest SDK), or JavaScript (a quota
        /// policy or a renderer built with componentize-js).
        #[arg(long, value_enum, default_value = "rust")]
        lang: CliLang,
    },
    /// Check a component: world, WIT version, manifest, exports, requested capabilities. Given a
    /// `tenantry-plugin.toml`, checks the manifest alone, before any build.
    Check { file: PathBuf },
    /// Call an installed plugin's export as the product would, and print its answer and the
    /// lines it logged (a provisioner's `apply`, `compensate` and `transition` act on its
    /// backend; nothing else changes). With `--file`, a component straight from its file: no
    /// install, no database, grants given here.
    Call {
        /// The installed plugin (none with --file).
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        /// Run this component instead of an installed plugin: it is installed in a scratch
        /// data directory (a SQLite database of its own, removed afterwards) with the grants
        /// and configuration given here.
        #[arg(long, value_name = "FILE.wasm")]
        file: Option<PathBuf>,
        /// With --file: a host the plugin may reach (`host`, `host:port`, `host:*`); repeat.
        #[arg(long = "allow-host", value_name = "HOST", requires = "file")]
        allow_host: Vec<String>,
        /// With --file: a secret, its value read from FILE; repeat.
        #[arg(long = "secret", value_name = "NAME=FILE", requires = "file")]
        secrets: Vec<String>,
        /// With --file: a configuration field; repeat.
        #[arg(long = "set", value_name = "KEY=VALUE", requires = "file")]
        set: Vec<String>,
        #[command(subcommand)]
        function: CallFunction,
    },
}

/// What `plugin call` calls. A tenant not in the registry is made up (tier `free`, status
/// `active`) for the call, and the call says so.
#[derive(Debug, clap::Subcommand)]
pub enum CallFunction {
    /// A renderer's `render`.
    Render {
        /// JSON: `{"name", "body", "placeholders": [...], "format"}` (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        template: PathBuf,
        /// JSON object of placeholder → value.
        #[arg(long, value_name = "FILE")]
        values: PathBuf,
    },
    /// A provisioner's `describe`.
    Describe,
    /// A provisioner's `plan`: the steps it would take (it changes nothing).
    Plan {
        #[arg(long)]
        tenant: String,
        /// The request (JSON; `{}` when not given).
        #[arg(long, value_name = "FILE")]
        request: Option<PathBuf>,
    },
    /// A provisioner's `apply` of one step (as `plan` prints it).
    Apply {
        #[arg(long)]
        tenant: String,
        /// JSON: `{"id", "description", "input"}`.
        #[arg(long, value_name = "FILE")]
        step: PathBuf,
        /// The idempotency key (default: `cli:<plugin>:<step id>`).
        #[arg(long)]
        key: Option<String>,
    },
    /// A provisioner's `compensate` of one applied step.
    Compensate {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_name = "FILE")]
        step: PathBuf,
        /// JSON: `{"output", "manual_follow_up"}` (as `apply` prints it).
        #[arg(long, value_name = "FILE")]
        outcome: PathBuf,
        #[arg(long)]
        key: Option<String>,
    },
    /// A provisioner's `observe`: drift between applied steps and its backend.
    Observe {
        #[arg(long)]
        tenant: String,
        /// JSON: a list of `{"step": {...}, "outcome": {...}}`.
        #[arg(long, value_name = "FILE")]
        applied: PathBuf,
    },
    /// A provisioner's `measure` (WIT 0.2.0): the tenant's use of its backend.
    Measure {
        #[arg(long)]
        tenant: String,
        /// JSON: a list of `{"step": {...}, "outcome": {...}}` (default: none).
        #[arg(long, value_name = "FILE")]
        applied: Option<PathBuf>,
    },
    /// A provisioner's `export-tenant` (WIT 0.2.0): what its backend holds of the tenant, as a
    /// bundle part (JSON: `{"media_type", "data_base64", "instance_specific"}`).
    Export {
        #[arg(long)]
        tenant: String,
        /// JSON: a list of `{"step": {...}, "outcome": {...}}` (default: none).
        #[arg(long, value_name = "FILE")]
        applied: Option<PathBuf>,
    },
    /// A provisioner's `import-tenant` (WIT 0.2.0) of a part as `export` prints it.
    Import {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_name = "FILE")]
        part: PathBuf,
    },
    /// A provisioner's `transition`: a lifecycle change carried into its backend.
    Transition {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        change: CliChange,
        #[arg(long, default_value = "tried with tenantry plugin call")]
        reason: String,
    },
    /// A quota policy's decision on a tenant's real usage (or on `--usage`).
    Evaluate {
        #[arg(long)]
        tenant: String,
        /// A JSON object of metric → use, in place of the tenant's current use of those
        /// metrics (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        usage: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliChange {
    Suspend,
    Reactivate,
    Cancel,
    Purge,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliWorld {
    Provisioner,
    Renderer,
    QuotaPolicy,
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CliLang {
    Rust,
    Js,
}

impl From<CliWorld> for crate::plugin_host::World {
    fn from(world: CliWorld) -> Self {
        match world {
            CliWorld::Provisioner => crate::plugin_host::World::Provisioner,
            CliWorld::Renderer => crate::plugin_host::World::Renderer,
            CliWorld::QuotaPolicy => crate::plugin_host::World::QuotaPolicy,
        }
    }
}

pub(super) fn plugin_check_text(i: &crate::plugin_host::Inspection) -> String {
    let lacks = i.version().lacks();
    let lacks = if lacks.is_empty() {
        String::new()
    } else {
        format!(
            "\nbuilt against WIT {}, which lacks (rebuild against {} for them):\n  - {}",
            i.wit_version,
            crate::plugin_host::SUPPORTED_WIT_VERSIONS[0],
            lacks.join("\n  - ")
        )
    };
    let text = format!(
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
    );
    // WASI interfaces the host links with nothing behind them: a call of one fails.
    let unserved: Vec<&str> = i
        .imports
        .iter()
        .map(String::as_str)
        .filter(|import| {
            import.starts_with("wasi:sockets/") || import.starts_with("wasi:filesystem/")
        })
        .collect();
    let unserved = if unserved.is_empty() {
        String::new()
    } else {
        format!(
            "\nimports what it will not get (linked with nothing behind it, every call fails: no \
             sockets — use the `http` capability; no file system — keep data in `state`):\n  - {}",
            unserved.join("\n  - ")
        )
    };
    text + &lacks + &unserved
}

fn plugin_text(p: &crate::plugin_registry::PluginView) -> String {
    format!(
        "{} {} ({}{}) — world {}, WIT {}, deadline {} ms\n{}\nhosts:   requested {} | granted {}\nsecrets: requested {} | granted {}\ndatabases: requested {} | granted {}\ncalls: {} ({} failed, mean {:.2} ms)",
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
        list_or_none(&p.requested.databases),
        list_or_none(&p.granted.databases),
        p.stats.calls,
        p.stats.failures,
        p.stats.mean_ms
    ) + &if p.config_fields.is_empty() {
        String::new()
    } else {
        format!("\n{}", config_text(p))
    }
}

pub(super) async fn plugin_command(
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
                let rows = plugins.iter().map(|p| {
                    vec![
                        p.name.clone(),
                        p.version.clone(),
                        p.world.as_str().to_owned(),
                        p.wit_version.clone(),
                        if p.enabled { "enabled" } else { "disabled" }.into(),
                        [
                            p.granted.hosts.clone(),
                            p.granted.secrets.clone(),
                            p.granted
                                .databases
                                .iter()
                                .map(|d| format!("database {d}"))
                                .collect(),
                        ]
                        .concat()
                        .join(", "),
                    ]
                });
                table(
                    &["NAME", "VERSION", "WORLD", "WIT", "STATE", "GRANTED"],
                    rows.collect(),
                    "no plugins",
                )
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
            database,
            url_file,
        } => {
            let capability = match (host, secret, value_file, database, url_file) {
                (Some(host), None, _, None, _) => Capability::Host(host),
                (None, Some(secret), Some(file), None, _) => Capability::Secret {
                    name: secret,
                    value: read_secret_file(&file)?,
                },
                (None, None, _, Some(alias), Some(file)) => Capability::Database {
                    alias,
                    url: read_secret_file(&file)?,
                },
                _ => anyhow::bail!(
                    "give --host HOST, --secret NAME --value-file FILE, or --database ALIAS --url-file FILE"
                ),
            };
            let plugin = registry::grant(ctx, actor, &name, capability)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || plugin_text(&plugin))
        }
        PluginCommand::Configure {
            name,
            set,
            unset,
            file,
        } => {
            let current = registry::get(ctx, &name).await.map_err(app_error)?;
            let mut values: serde_json::Map<String, serde_json::Value> = match file {
                Some(file) => {
                    let text = super::read_file_or_stdin(&file)?;
                    serde_json::from_str(&text).with_context(|| {
                        format!("{}: not a JSON object of field → value", file.display())
                    })?
                }
                None => current
                    .config
                    .iter()
                    .filter(|(key, _)| current.config_set.contains(key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            };
            for key in unset {
                values.remove(&key);
            }
            read_set(&current, &set, &mut values)?;
            let plugin = registry::configure(ctx, actor, &name, values)
                .await
                .map_err(app_error)?;
            print(out, &plugin, || config_text(&plugin))
        }
        PluginCommand::Revoke {
            name,
            host,
            secret,
            database,
        } => {
            let (kind, capability) = match (host, secret, database) {
                (Some(host), None, None) => ("host", host),
                (None, Some(secret), None) => ("secret", secret),
                (None, None, Some(alias)) => ("database", alias),
                _ => anyhow::bail!("give --host HOST, --secret NAME or --database ALIAS"),
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
        PluginCommand::Call {
            name: Some(name),
            file: None,
            function: CallFunction::Evaluate { tenant, usage },
            ..
        } => {
            let tenant = crate::tenants::get(ctx, &tenant).await.map_err(app_error)?;
            let usage: Option<std::collections::HashMap<String, u64>> = match usage {
                Some(file) => {
                    let text = super::read_file_or_stdin(&file)?;
                    Some(serde_json::from_str(&text).map_err(|e| {
                        anyhow::anyhow!(
                            "{}: not a JSON object of metric → use: {e}",
                            file.display()
                        )
                    })?)
                }
                None => None,
            };
            let (decision, lines) = crate::quotas::evaluate(ctx, &name, &tenant, usage.as_ref())
                .await
                .map_err(app_error)?;
            call::show_log(&lines);
            let decision = decision.map_err(app_error)?;
            let view = crate::quotas::decision_view(&decision);
            print(out, &view, || {
                let rows = view
                    .metrics
                    .iter()
                    .map(|m| {
                        vec![
                            m.metric.clone(),
                            m.used.to_string(),
                            m.limit.map_or("—".into(), |l| l.to_string()),
                            format!("{:.1} %", m.percent),
                            m.severity.as_str().to_owned(),
                        ]
                    })
                    .collect();
                format!(
                    "{name} on {}: {}{}\n{}",
                    tenant.slug,
                    if view.allowed { "allowed" } else { "blocked" },
                    if view.at_risk { ", at risk" } else { "" },
                    table(
                        &["METRIC", "USED", "LIMIT", "USE", "SEVERITY"],
                        rows,
                        "no metrics"
                    )
                )
            })
        }
        PluginCommand::Call {
            name: Some(name),
            file: None,
            function,
            ..
        } => call::run(ctx, out, &name, function).await,
        PluginCommand::New { .. }
        | PluginCommand::Check { .. }
        | PluginCommand::Call { file: Some(_), .. }
        | PluginCommand::Call { name: None, .. } => {
            unreachable!("handled without a database")
        }
    }
}

/// A plugin's configuration, one field a line: its value, and whether it is the default.
fn config_text(p: &crate::plugin_registry::PluginView) -> String {
    if p.config_fields.is_empty() {
        return format!("plugin {} takes no configuration", p.name);
    }
    let lines: Vec<String> = p
        .config_fields
        .iter()
        .map(|f| {
            let value = p
                .config
                .get(&f.name)
                .map_or_else(|| "(not set)".to_owned(), |v| v.to_string());
            let origin = if p.config_set.contains(&f.name) {
                ""
            } else if p.config.contains_key(&f.name) {
                " (default)"
            } else {
                ""
            };
            format!("{} = {value}{origin}", f.name)
        })
        .collect();
    format!("plugin {} configured:\n{}", p.name, lines.join("\n"))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}
