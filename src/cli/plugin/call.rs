//! `tenantry plugin call NAME FUNCTION`: one export of an installed plugin, called as the product
//! calls it, with its answer on stdout and the lines it logged on stderr.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::{CallFunction, CliChange};
use crate::cli::{Output, app_error, print, read_file_or_stdin};
use crate::context::Context;
use crate::plugin_host::{
    CallError, LifecycleChange, LogLine, Outcome, PluginError, PluginTenant, RenderError, Step,
    Template,
};

/// A step as `plan` prints it and `apply` reads it; the input is JSON, not JSON text.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepJson {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    input: serde_json::Value,
}

impl StepJson {
    fn of(step: &Step) -> StepJson {
        StepJson {
            id: step.id.clone(),
            description: step.description.clone(),
            input: json_or_text(&step.input),
        }
    }

    fn to_wit(&self) -> Step {
        Step {
            id: self.id.clone(),
            description: self.description.clone(),
            input: self.input.to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeJson {
    #[serde(default)]
    output: serde_json::Value,
    #[serde(default)]
    manual_follow_up: Option<String>,
}

impl OutcomeJson {
    fn of(outcome: &Outcome) -> OutcomeJson {
        OutcomeJson {
            output: json_or_text(&outcome.output),
            manual_follow_up: outcome.manual_follow_up.clone(),
        }
    }

    fn to_wit(&self) -> Outcome {
        Outcome {
            output: self.output.to_string(),
            manual_follow_up: self.manual_follow_up.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppliedJson {
    step: StepJson,
    outcome: OutcomeJson,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateJson {
    #[serde(default = "template_name")]
    name: String,
    body: String,
    #[serde(default)]
    placeholders: Vec<String>,
    #[serde(default = "template_format")]
    format: String,
}

fn template_name() -> String {
    "template".into()
}

fn template_format() -> String {
    "text".into()
}

/// A bundle part as `export` prints it and `import` reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartJson {
    media_type: String,
    data_base64: String,
    #[serde(default)]
    instance_specific: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Drifted {
    resource: String,
    problem: String,
}

/// JSON text as JSON; anything else as a string.
fn json_or_text(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
}

fn read_json<T: serde::de::DeserializeOwned>(file: &Path, what: &str) -> anyhow::Result<T> {
    let text = read_file_or_stdin(file)?;
    serde_json::from_str(&text).with_context(|| format!("{}: not {what}", file.display()))
}

/// The applied steps of `--applied FILE` (none without it).
fn read_applied(
    file: Option<&Path>,
) -> anyhow::Result<Vec<(crate::plugin_host::Step, crate::plugin_host::Outcome)>> {
    let applied: Vec<AppliedJson> = match file {
        Some(file) => read_json(file, "a list of `{\"step\": …, \"outcome\": …}`")?,
        None => Vec::new(),
    };
    Ok(applied
        .iter()
        .map(|a| (a.step.to_wit(), a.outcome.to_wit()))
        .collect())
}

/// The id of the made-up tenant `slug`: derived from the slug, so that every call for it names
/// the same tenant (a second `apply` finds what the first made as this tenant's).
fn made_up_id(slug: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("tenantry made-up tenant:{slug}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The tenant named `slug`, or one made up for the call when the registry has none.
async fn tenant(ctx: &Context, slug: &str) -> anyhow::Result<PluginTenant> {
    match crate::tenants::get(ctx, slug).await {
        Ok(tenant) => Ok(crate::provisioning::plugin_tenant(&tenant)),
        Err(crate::error::AppError::NotFound { .. }) => {
            let id = made_up_id(slug);
            eprintln!(
                "note: no tenant `{slug}` in this database; calling for a made-up one (id {id}, \
                 the same at every call for `{slug}`; tier free, status active)"
            );
            Ok(PluginTenant {
                id,
                slug: slug.to_owned(),
                name: slug.to_owned(),
                tier: crate::tenants::Tier::Free,
                status: crate::tenants::TenantStatus::Active.to_string(),
            })
        }
        Err(err) => Err(app_error(err)),
    }
}

/// Prints the plugin's log lines to stderr.
pub(super) fn show_log(lines: &[LogLine]) {
    for line in lines {
        eprintln!("[{}] {}", line.level, line.message);
    }
}

/// The answer of a call, or the error that says why there is none (after the log lines).
fn answer<T, E: std::fmt::Debug>(
    result: Result<Result<T, E>, CallError>,
    lines: &[LogLine],
    describe: impl Fn(&E) -> String,
) -> anyhow::Result<T> {
    show_log(lines);
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => bail!("{}", describe(&err)),
        Err(err) => bail!("{err}"),
    }
}

fn plugin_error(err: &PluginError) -> String {
    match err {
        PluginError::Transient(m) => {
            format!("the plugin failed (transient: may succeed later): {m}")
        }
        PluginError::Permanent(m) => format!("the plugin failed (permanent): {m}"),
    }
}

fn render_error(err: &RenderError) -> String {
    match err {
        RenderError::Missing(names) => format!("values missing for: {}", names.join(", ")),
        RenderError::Undeclared(names) => {
            format!("placeholders not declared: {}", names.join(", "))
        }
        RenderError::Unexpected(names) => {
            format!("values for no placeholder: {}", names.join(", "))
        }
        RenderError::Invalid(reason) => format!("the template is invalid: {reason}"),
    }
}

pub(super) async fn run(
    ctx: &Context,
    out: Output,
    name: &str,
    function: CallFunction,
) -> anyhow::Result<()> {
    let host = &ctx.plugins;
    match function {
        CallFunction::Evaluate { .. } => unreachable!("evaluate is handled with the quotas"),
        CallFunction::Render { template, values } => {
            let template: TemplateJson = read_json(&template, "a template")?;
            let values: std::collections::BTreeMap<String, String> =
                read_json(&values, "a JSON object of placeholder → value")?;
            let template = Template {
                name: template.name,
                body: template.body,
                placeholders: template.placeholders,
                format: template.format,
            };
            let logged = host
                .render_logged(name, template, values.into_iter().collect())
                .await;
            let rendered = answer(logged.result, &logged.log, render_error)?;
            print(out, &rendered, || rendered.clone())
        }
        CallFunction::Describe => {
            let (result, lines) = host.describe_logged(name).await;
            show_log(&lines);
            let info = result.map_err(|e| anyhow::anyhow!("{e}"))?;
            let view = serde_json::json!({
                "name": info.name, "version": info.version, "description": info.description,
            });
            print(out, &view, || {
                format!("{} {} — {}", info.name, info.version, info.description)
            })
        }
        CallFunction::Plan {
            tenant: slug,
            request,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let request = match request {
                Some(file) => read_file_or_stdin(&file)?,
                None => "{}".to_owned(),
            };
            let logged = host.plan_logged(name, &tenant, request).await;
            let steps = answer(logged.result, &logged.log, plugin_error)?;
            let view: Vec<StepJson> = steps.iter().map(StepJson::of).collect();
            print(out, &view, || {
                if view.is_empty() {
                    return "no steps".to_owned();
                }
                view.iter()
                    .map(|s| format!("{}: {}\n  input: {}", s.id, s.description, s.input))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        CallFunction::Apply {
            tenant: slug,
            step,
            key,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let step: StepJson =
                read_json(&step, "a step (`{\"id\", \"description\", \"input\"}`)")?;
            let key = key.unwrap_or_else(|| format!("cli:{name}:{}", step.id));
            let logged = host.apply(name, &tenant, step.to_wit(), key).await;
            let outcome = answer(logged.result, &logged.log, plugin_error)?;
            let view = OutcomeJson::of(&outcome);
            print(out, &view, || outcome_text(&view))
        }
        CallFunction::Compensate {
            tenant: slug,
            step,
            outcome,
            key,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let step: StepJson =
                read_json(&step, "a step (`{\"id\", \"description\", \"input\"}`)")?;
            let outcome: OutcomeJson = read_json(
                &outcome,
                "an outcome (`{\"output\", \"manual_follow_up\"}`)",
            )?;
            let key = key.unwrap_or_else(|| format!("cli:{name}:{}", step.id));
            let logged = host
                .compensate(name, &tenant, step.to_wit(), outcome.to_wit(), key)
                .await;
            let undone = answer(logged.result, &logged.log, plugin_error)?;
            let view = serde_json::json!({
                "compensated": step.id,
                "manual_follow_up": undone.manual_follow_up,
            });
            print(out, &view, || match &undone.manual_follow_up {
                Some(follow_up) => {
                    format!(
                        "step {} compensated\nmanual follow-up: {follow_up}",
                        step.id
                    )
                }
                None => format!("step {} compensated", step.id),
            })
        }
        CallFunction::Observe {
            tenant: slug,
            applied,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let applied: Vec<AppliedJson> =
                read_json(&applied, "a list of `{\"step\": …, \"outcome\": …}`")?;
            let applied = applied
                .iter()
                .map(|a| (a.step.to_wit(), a.outcome.to_wit()))
                .collect();
            let logged = host.observe(name, &tenant, applied).await;
            let drift = answer(logged.result, &logged.log, plugin_error)?;
            let view: Vec<Drifted> = drift
                .into_iter()
                .map(|d| Drifted {
                    resource: d.resource,
                    problem: d.problem,
                })
                .collect();
            print(out, &view, || {
                if view.is_empty() {
                    return "no drift".to_owned();
                }
                view.iter()
                    .map(|d| format!("{}: {}", d.resource, d.problem))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        CallFunction::Measure {
            tenant: slug,
            applied,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let applied = read_applied(applied.as_deref())?;
            let logged = host.measure(name, &tenant, applied).await;
            let measured = answer(logged.result, &logged.log, plugin_error)?;
            let view: std::collections::BTreeMap<String, f64> =
                measured.into_iter().map(|m| (m.metric, m.value)).collect();
            print(out, &view, || {
                if view.is_empty() {
                    return "nothing measured".to_owned();
                }
                view.iter()
                    .map(|(metric, value)| format!("{metric}: {value}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        CallFunction::Export {
            tenant: slug,
            applied,
        } => {
            use base64::Engine as _;
            let tenant = tenant(ctx, &slug).await?;
            let applied = read_applied(applied.as_deref())?;
            let logged = host.export_tenant(name, &tenant, applied).await;
            let part = answer(logged.result, &logged.log, plugin_error)?;
            let view = part.map(|p| PartJson {
                media_type: p.media_type,
                data_base64: base64::engine::general_purpose::STANDARD.encode(&p.data),
                instance_specific: p.instance_specific,
            });
            print(out, &view, || match &view {
                Some(p) => format!(
                    "{} ({} bytes as base64); instance-specific: {}",
                    p.media_type,
                    p.data_base64.len(),
                    p.instance_specific.join(", ")
                ),
                None => "nothing to export".to_owned(),
            })
        }
        CallFunction::Import { tenant: slug, part } => {
            use base64::Engine as _;
            let tenant = tenant(ctx, &slug).await?;
            let part: PartJson = read_json(&part, "a part as `export` prints it")?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(part.data_base64.as_bytes())
                .context("data_base64 is not base64")?;
            let part = crate::plugin_host::BundlePart {
                media_type: part.media_type,
                data,
                instance_specific: part.instance_specific,
            };
            let logged = host.import_tenant(name, &tenant, part).await;
            let outcome = answer(logged.result, &logged.log, plugin_error)?;
            let view = OutcomeJson::of(&outcome);
            print(out, &view, || outcome_text(&view))
        }
        CallFunction::Transition {
            tenant: slug,
            change,
            reason,
        } => {
            let tenant = tenant(ctx, &slug).await?;
            let change = match change {
                CliChange::Suspend => LifecycleChange::Suspend,
                CliChange::Reactivate => LifecycleChange::Reactivate,
                CliChange::Cancel => LifecycleChange::Cancel,
                CliChange::Purge => LifecycleChange::Purge,
            };
            let logged = host.transition(name, &tenant, change, reason).await;
            let outcome = answer(logged.result, &logged.log, plugin_error)?;
            let view = OutcomeJson::of(&outcome);
            print(out, &view, || outcome_text(&view))
        }
    }
}

fn outcome_text(outcome: &OutcomeJson) -> String {
    match &outcome.manual_follow_up {
        Some(follow_up) => format!("done: {}\nmanual follow-up: {follow_up}", outcome.output),
        None => format!("done: {}", outcome.output),
    }
}
