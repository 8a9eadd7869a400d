//! `tenantry plugin new`: a plugin crate that builds as is, for one world.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::World;

/// The SDK of this source tree.
const SOURCE_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/sdk");

/// Creates the crate `name` in `dir` (default `./name`); returns its directory.
pub fn create(
    name: &str,
    world: World,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let valid = (2..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    anyhow::ensure!(
        valid,
        "plugin name `{name}` must be 2–63 lowercase letters, digits and hyphens, starting with a letter"
    );
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    let sdk = match sdk {
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(SOURCE_SDK),
    };
    let sdk = sdk.canonicalize().with_context(|| {
        format!(
            "the SDK crate is not at {} (pass --sdk PATH)",
            sdk.display()
        )
    })?;
    std::fs::create_dir_all(dir.join("src"))?;
    let feature = world.as_str();
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    let files: [(&str, String); 5] = [
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A tenantry {feature} plugin."

[lib]
crate-type = ["cdylib"]

[dependencies]
tenantry-plugin-sdk = {{ path = "{sdk}", features = ["{feature}"] }}

[profile.release]
opt-level = "s"
lto = true
strip = "debuginfo"

# A crate of its own, not part of an enclosing workspace.
[workspace]
"#,
                sdk = sdk.display()
            ),
        ),
        (
            "tenantry-plugin.toml",
            format!(
                r#"name = "{name}"
version = "0.1.0"
world = "{feature}"
wit_version = "{wit}"
description = "A tenantry {feature} plugin."
{caps}"#,
                wit = super::manifest::SUPPORTED_WIT_VERSIONS[0],
                caps = if world == World::Provisioner {
                    "\n# Hosts (host or host:port) and secrets the plugin needs; the operator grants them.\n[capabilities]\nhosts = []\nsecrets = []\n"
                } else {
                    ""
                }
            ),
        ),
        (
            "rust-toolchain.toml",
            "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\nprofile = \"minimal\"\n".to_owned(),
        ),
        (".gitignore", "/target\n".to_owned()),
        ("src/lib.rs", source(world, name, &type_name)),
    ];
    for (file, content) in files {
        std::fs::write(dir.join(file), content).with_context(|| format!("writing {file}"))?;
    }
    Ok(dir)
}

fn source(world: World, name: &str, type_name: &str) -> String {
    match world {
        World::Provisioner => format!(
            r#"//! The `{name}` provisioner.

use tenantry_plugin_sdk::log;
use tenantry_plugin_sdk::provisioner::{{Outcome, PluginError, PluginInfo, Provisioner, Step, Tenant}};

struct {type_name};

impl Provisioner for {type_name} {{
    fn describe() -> PluginInfo {{
        PluginInfo {{
            name: "{name}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }}
    }}

    fn plan(tenant: Tenant, _request: String) -> Result<Vec<Step>, PluginError> {{
        Ok(vec![Step {{
            id: "greet".into(),
            description: format!("say hello to {{}}", tenant.slug),
            input: "{{}}".into(),
        }}])
    }}

    fn apply(tenant: Tenant, step: Step, _idempotency_key: String) -> Result<Outcome, PluginError> {{
        log::info(&format!("applying {{}} for {{}}", step.id, tenant.slug));
        Ok(Outcome {{ output: "{{}}".into(), manual_follow_up: None }})
    }}
}}

tenantry_plugin_sdk::register_provisioner!({type_name});
"#
        ),
        World::Renderer => format!(
            r#"//! The `{name}` renderer: replaces each `{{name}}` slot with its value, as is.

use tenantry_plugin_sdk::renderer::{{RenderError, Renderer, Template}};

struct {type_name};

impl Renderer for {type_name} {{
    fn render(template: Template, values: Vec<(String, String)>) -> Result<String, RenderError> {{
        let missing: Vec<String> = template
            .placeholders
            .iter()
            .filter(|p| !values.iter().any(|(k, _)| k == *p))
            .cloned()
            .collect();
        if !missing.is_empty() {{
            return Err(RenderError::Missing(missing));
        }}
        let mut out = template.body;
        for (key, value) in values {{
            out = out.replace(&format!("{{{{{{key}}}}}}"), &value);
        }}
        Ok(out)
    }}
}}

tenantry_plugin_sdk::register_renderer!({type_name});
"#
        ),
        World::QuotaPolicy => format!(
            r#"//! The `{name}` quota policy: every metric has the limit the operator set (override).

use tenantry_plugin_sdk::quota::{{Decision, MetricDecision, PluginError, QuotaPolicy, Severity, Tenant, Usage}};

struct {type_name};

impl QuotaPolicy for {type_name} {{
    fn evaluate(_tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError> {{
        let metrics: Vec<MetricDecision> = usage
            .into_iter()
            .map(|u| {{
                let percent = u.override_limit.map_or(0.0, |l| u.used as f64 * 100.0 / l.max(1) as f64);
                MetricDecision {{
                    metric: u.metric,
                    used: u.used,
                    limit: u.override_limit,
                    percent,
                    severity: if percent >= 100.0 {{ Severity::Blocked }} else {{ Severity::Ok }},
                }}
            }})
            .collect();
        let allowed = metrics.iter().all(|m| !matches!(m.severity, Severity::Blocked));
        Ok(Decision {{ metrics, allowed, at_risk: false }})
    }}
}}

tenantry_plugin_sdk::register_quota_policy!({type_name});
"#
        ),
    }
}
