//! `tenantry template …`, `tenantry tenant provision|resources|drift`, `tenantry run …` and
//! `tenantry apply -f`.
//!
//! The command line works on the database like the other commands. A queued run is carried out
//! by any running server; a command that waits for its run also runs a worker of its own, so that
//! provisioning works without a server too (leases keep the two from running the same run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Subcommand;
use serde_json::Value;

use super::{Output, app_error, print, read_file_or_stdin, table};
use crate::audit::Actor;
use crate::context::Context;
use crate::provisioning::spec::{ApplyPlan, TenantSpec};
use crate::provisioning::templates::{self, TemplateInput, TemplateView};
use crate::provisioning::{self, ProvisionRequest, Provisioned, RunView, StepState};
use crate::tenants;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List templates at their newest versions.
    List {
        /// `connection` or `asset`.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tag: Option<String>,
    },
    /// Show a template (its newest version, or --version N).
    #[command(disable_version_flag = true)]
    Show {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// The versions of a template, newest first.
    Versions { name: String },
    /// Create a template (version 1).
    Create {
        name: String,
        /// `connection` or `asset`.
        #[arg(long)]
        kind: String,
        /// `uri`, `json`, `yaml`, `sql-literal` or `text` (default: uri for connections, text for
        /// assets).
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// File holding the body (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        body_file: PathBuf,
        /// A placeholder the body uses (repeat for each).
        #[arg(long = "placeholder", value_name = "NAME")]
        placeholders: Vec<String>,
        /// A tag (repeat for each).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Save a new version; what is not given stays as in the newest version.
    Update {
        name: String,
        #[arg(long)]
        format: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, value_name = "FILE")]
        body_file: Option<PathBuf>,
        /// The placeholders (replace the list; repeat for each).
        #[arg(long = "placeholder", value_name = "NAME")]
        placeholders: Vec<String>,
        /// The tags (replace the list; repeat for each).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Delete a template and its versions.
    Delete { name: String },
    /// Render a template with values (a preview: nothing is stored).
    #[command(disable_version_flag = true)]
    Render {
        name: String,
        #[arg(long)]
        version: Option<i64>,
        /// `name=value` (repeat for each placeholder).
        #[arg(long = "value", value_name = "NAME=VALUE")]
        values: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Provisioning and lifecycle runs, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// `queued`, `running`, `compensating`, `succeeded` or `failed`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// A run with its steps.
    Show {
        id: String,
        /// Wait until it has finished (carrying it out here if no server does).
        #[arg(long)]
        wait: bool,
    },
}

fn template_text(t: &TemplateView) -> String {
    format!(
        "{} ({} template, format {}) version {} of {}\nplaceholders: {}\ntags: {}\n---\n{}",
        t.name,
        t.kind,
        t.format,
        t.version,
        t.latest_version,
        t.placeholders.join(", "),
        t.tags.join(", "),
        t.body
    )
}

pub async fn template_command(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    cmd: TemplateCommand,
) -> anyhow::Result<()> {
    match cmd {
        TemplateCommand::List { kind, tag } => {
            let list = templates::list_latest(ctx, kind.as_deref(), tag.as_deref())
                .await
                .map_err(app_error)?;
            print(out, &list, || {
                let rows = list.iter().map(|t| {
                    vec![
                        t.name.clone(),
                        t.kind.to_string(),
                        format!("v{}", t.version),
                        t.format.to_string(),
                        t.tags.join(", "),
                    ]
                });
                table(
                    &["NAME", "KIND", "VERSION", "FORMAT", "TAGS"],
                    rows.collect(),
                    "no templates",
                )
            })
        }
        TemplateCommand::Show { name, version } => {
            let t = templates::get(ctx, &name, version)
                .await
                .map_err(app_error)?;
            print(out, &t, || template_text(&t))
        }
        TemplateCommand::Versions { name } => {
            let versions = templates::versions(ctx, &name).await.map_err(app_error)?;
            print(out, &versions, || {
                versions
                    .iter()
                    .map(|v| {
                        format!(
                            "v{:<4} {}  by {}  placeholders: {}  tags: {}",
                            v.version,
                            v.created_at,
                            v.created_by,
                            v.placeholders.join(","),
                            v.tags.join(",")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        TemplateCommand::Create {
            name,
            kind,
            format,
            description,
            body_file,
            placeholders,
            tags,
        } => {
            let input = TemplateInput {
                name: Some(name),
                kind: Some(kind),
                format,
                description,
                body: Some(read_file_or_stdin(&body_file)?),
                placeholders,
                tags,
            };
            let t = templates::create(ctx, actor, &input)
                .await
                .map_err(app_error)?;
            print(out, &t, || {
                format!("created {} version {}", t.name, t.version)
            })
        }
        TemplateCommand::Update {
            name,
            format,
            description,
            body_file,
            placeholders,
            tags,
        } => {
            let current = templates::get(ctx, &name, None).await.map_err(app_error)?;
            let input = TemplateInput {
                name: None,
                kind: None,
                format,
                description,
                body: Some(match body_file {
                    Some(path) => read_file_or_stdin(&path)?,
                    None => current.body.clone(),
                }),
                placeholders: if placeholders.is_empty() {
                    current.placeholders.clone()
                } else {
                    placeholders
                },
                tags: if tags.is_empty() {
                    current.tags.clone()
                } else {
                    tags
                },
            };
            let (t, changed) = templates::update(ctx, actor, &name, &input)
                .await
                .map_err(app_error)?;
            print(out, &t, || {
                if changed {
                    format!("saved {} version {}", t.name, t.version)
                } else {
                    format!("{} unchanged (version {})", t.name, t.version)
                }
            })
        }
        TemplateCommand::Delete { name } => {
            templates::delete(ctx, actor, &name)
                .await
                .map_err(app_error)?;
            print(out, &serde_json::json!({ "deleted": name }), || {
                format!("deleted template {name}")
            })
        }
        TemplateCommand::Render {
            name,
            version,
            values,
        } => {
            let mut map = BTreeMap::new();
            for pair in values {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--value `{pair}` is not NAME=VALUE"))?;
                map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let r = templates::render(ctx, "values", &name, version, &map)
                .await
                .map_err(app_error)?;
            print(
                out,
                &serde_json::json!({ "template": r.template, "version": r.version, "rendered": r.text, "fingerprint": r.fingerprint }),
                || r.text.clone(),
            )
        }
    }
}

/// Reads a provisioning request (JSON or YAML). `assets.bundle_path` is read here, relative to
/// the file, and sent as `bundle_base64`.
pub fn read_request(path: &Path) -> anyhow::Result<(ProvisionRequest, Value)> {
    let text = read_file_or_stdin(path)?;
    let mut value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).context("the request is not valid JSON")?
    } else {
        serde_yaml_ng::from_str(&text).context("the request is not valid YAML")?
    };
    if let Some(bundle) = value
        .get_mut("assets")
        .and_then(|a| a.as_object_mut())
        .and_then(|a| a.remove("bundle_path"))
    {
        let rel = bundle
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("assets.bundle_path must be a path"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let file = base.join(rel);
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        value["assets"]["bundle_base64"] =
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    let request: ProvisionRequest =
        crate::http::body::parse(value.to_string().as_bytes()).map_err(app_error)?;
    Ok((request, value))
}

pub async fn provision(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    file: &Path,
    key: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let (request, body) = read_request(file)?;
    let accepted = match provisioning::provision(ctx, actor, request, &body, key)
        .await
        .map_err(app_error)?
    {
        Provisioned::Queued(a) => a,
        Provisioned::Replayed(a) => {
            eprintln!("this idempotency key was used before: its run is {}", a.run);
            a
        }
    };
    if !wait {
        return print(out, &accepted, || {
            format!(
                "queued run {} for tenant {}: {}",
                accepted.run,
                accepted.tenant,
                accepted.steps.join(", ")
            )
        });
    }
    let run = wait_for(ctx, &accepted.run).await?;
    finish(out, &run)
}

/// Prints a finished run; a failed run is a failed command.
pub(super) fn finish(out: Output, run: &RunView) -> anyhow::Result<()> {
    print(out, run, || run_text(run))?;
    if run.status == provisioning::RunStatus::Failed {
        anyhow::bail!(
            "run {} failed: {}",
            run.id,
            run.error.clone().unwrap_or_default()
        );
    }
    Ok(())
}

/// Waits for a run to finish, running a worker here meanwhile.
pub async fn wait_for(ctx: &Context, run: &str) -> anyhow::Result<RunView> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let worker = provisioning::saga::spawn(ctx.clone(), stop.clone());
    let mut shown = 0;
    let result = loop {
        let view = provisioning::get_run(ctx, run).await.map_err(app_error)?;
        let settled: Vec<_> = view
            .steps
            .iter()
            .filter(|s| !matches!(s.state, StepState::Pending | StepState::Running))
            .collect();
        for s in settled.iter().skip(shown) {
            eprintln!(
                "  {:<12} {}/{} {}",
                s.state, s.plugin, s.step, s.description
            );
        }
        shown = shown.max(settled.len());
        if !view.is_open() {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.notify_one();
    let _ = worker.await;
    Ok(result)
}

pub fn run_text(run: &RunView) -> String {
    let mut text = format!(
        "run {} ({} of {}): {}{}\n",
        run.id,
        run.kind,
        run.tenant,
        run.status,
        run.error
            .as_ref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default()
    );
    for s in &run.steps {
        text.push_str(&format!(
            "  {:>2}. {:<12} {:<11} {}/{} — {} (attempts {}{})\n",
            s.seq + 1,
            s.state,
            s.action,
            s.plugin,
            s.step,
            s.description,
            s.attempts,
            s.duration_ms
                .map(|d| format!(", {d} ms"))
                .unwrap_or_default()
        ));
        if let Some(err) = &s.error {
            text.push_str(&format!("      error: {err}\n"));
        }
    }
    for f in &run.manual_follow_ups {
        text.push_str(&format!("  MANUAL FOLLOW-UP: {f}\n"));
    }
    text.trim_end().to_owned()
}

pub async fn run_command(ctx: &Context, out: Output, cmd: RunCommand) -> anyhow::Result<()> {
    match cmd {
        RunCommand::List {
            tenant,
            status,
            limit,
        } => {
            let runs = provisioning::list_runs(ctx, tenant.as_deref(), status.as_deref(), limit)
                .await
                .map_err(app_error)?;
            print(out, &runs, || {
                let rows = runs.iter().map(|r| {
                    vec![
                        r.id.clone(),
                        r.kind.to_string(),
                        r.tenant.clone(),
                        r.status.to_string(),
                        r.created_at.to_string(),
                    ]
                });
                table(
                    &["ID", "KIND", "TENANT", "STATUS", "CREATED"],
                    rows.collect(),
                    "no runs",
                )
            })
        }
        RunCommand::Show { id, wait } => {
            let run = if wait {
                wait_for(ctx, &id).await?
            } else {
                provisioning::get_run(ctx, &id).await.map_err(app_error)?
            };
            print(out, &run, || run_text(&run))
        }
    }
}

pub async fn resources(ctx: &Context, out: Output, slug: &str) -> anyhow::Result<()> {
    let tenant = tenants::get(ctx, slug).await.map_err(app_error)?;
    let list = provisioning::resources(ctx, &tenant)
        .await
        .map_err(app_error)?;
    print(out, &list, || {
        if list.is_empty() {
            return format!("{slug} holds nothing in any backend");
        }
        list.iter()
            .map(|r| {
                format!(
                    "{}/{} — {}{}",
                    r.plugin,
                    r.step,
                    r.description,
                    match (&r.template, r.template_version) {
                        (Some(t), Some(v)) => format!(" (from {t}@{v})"),
                        _ => String::new(),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn plan_text(plan: &ApplyPlan) -> String {
    if !plan.changes {
        let mut text = format!("tenant {}: no changes", plan.tenant);
        for i in plan.items.iter().filter(|i| i.action == "leave") {
            text.push_str(&format!("\n  = {} — {}", i.target, i.detail));
        }
        return text;
    }
    let mut text = format!("tenant {}:", plan.tenant);
    for i in &plan.items {
        let mark = match i.action.as_str() {
            "create" => "+",
            "change" => "~",
            _ => "=",
        };
        text.push_str(&format!("\n  {mark} {} — {}", i.target, i.detail));
    }
    text
}

/// `tenantry apply -f FILE [--yes]`.
pub async fn apply(
    ctx: &Context,
    actor: &Actor,
    out: Output,
    file: &Path,
    yes: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let text = read_file_or_stdin(file)?;
    let spec = TenantSpec::parse(&text)?;
    let request = spec.to_request(&|var| std::env::var(var).ok())?;
    let plan = provisioning::spec::plan(ctx, &request)
        .await
        .map_err(app_error)?;
    if !yes || !plan.changes {
        print(out, &plan, || {
            let mut text = plan_text(&plan);
            if plan.changes {
                text.push_str("\nrun again with --yes to apply");
            }
            text
        })?;
        return Ok(());
    }
    if out == Output::Text {
        eprintln!("{}", plan_text(&plan));
    }
    let applied = provisioning::spec::apply(ctx, actor, &request, &plan)
        .await
        .map_err(app_error)?;
    match (&applied.run, wait) {
        (Some(run), true) => {
            let run = wait_for(ctx, run).await?;
            finish(out, &run)
        }
        _ => print(out, &applied, || match &applied.url {
            Some(url) => format!("applied: run {url}"),
            None => "applied".into(),
        }),
    }
}
