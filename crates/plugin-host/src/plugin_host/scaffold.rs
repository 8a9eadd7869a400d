//! `tenantry plugin new`: a plugin crate that builds as is, anywhere, for one world. The guest
//! SDK and the WIT it is built against are written into the crate (`vendor/` and `wit/`, with
//! the lock file the SDK is tested with), so the crate needs nothing of the machine tenantry was
//! built on; `--sdk PATH` depends on an SDK crate elsewhere instead.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::World;

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

/// The WIT version the SDK builds plugins for (the SDK moves to a new version after the host
/// runs it).
const SDK_WIT_VERSION: &str = "0.2.0";

/// What a provisioner's manifest adds: its capabilities and a configuration schema.
const PROVISIONER_MANIFEST_TAIL: &str = r#"
# Hosts (host or host:port), secrets and databases the plugin needs; the operator grants them.
[capabilities]
hosts = []
secrets = []

# What the operator configures (`tenantry plugin configure NAME --set KEY=VALUE`): endpoints,
# user names, options; read with `tenantry_plugin_sdk::config`. Secrets stay in `secrets`.
[config_schema]
type = "object"

[config_schema.properties.greeting]
type = "string"
default = "hello"
description = "How the plugin greets a tenant."
"#;

/// Where the SDK is written in a new crate; its bindings read `../../wit` from there.
const VENDORED_SDK: &str = "vendor/tenantry-plugin-sdk";

/// The SDK's manifest in a new crate: the source tree's, with what it inherits from the plugins
/// workspace written out.
const VENDORED_SDK_MANIFEST: &str = r#"[package]
name = "tenantry-plugin-sdk"
description = "Write tenantry plugins in Rust: implement a trait, register it with one macro."
edition = "2024"
version = "0.1.0"
license = "Apache-2.0"

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "std"] }
serde_json = "1"
serde = { version = "1", features = ["derive"] }

[features]
provisioner = []
renderer = []
quota-policy = []
"#;

/// Creates the crate `name` in `dir` (default `./name`); returns its directory.
// Long function: most of it is the text of the files a new plugin starts from.
pub fn create(
    name: &str,
    world: World,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    let sdk =
        match sdk {
            Some(path) => Some(path.canonicalize().with_context(|| {
                format!("the SDK crate is not at {} (--sdk PATH)", path.display())
            })?),
            None => None,
        };
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
                sdk = sdk
                    .as_deref()
                    .map_or_else(|| VENDORED_SDK.to_owned(), |p| p.display().to_string())
            ),
        ),
        (
            "tenantry-plugin.toml",
            format!(
                r#"# The plugin's name, version and description are the crate's (Cargo.toml): the SDK
# embeds them beside this manifest, so they are written once. A `name`, `version` or
# `description` written here would take their place.
world = "{feature}"
wit_version = "{wit}"
{caps}"#,
                wit = SDK_WIT_VERSION,
                caps = if world == World::Provisioner {
                    PROVISIONER_MANIFEST_TAIL
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
    if sdk.is_none() {
        let vendored = dir.join(VENDORED_SDK);
        let mut written = vec![
            (vendored.join("Cargo.toml"), VENDORED_SDK_MANIFEST),
            (dir.join("Cargo.lock"), PLUGINS_LOCK),
        ];
        written.extend(
            SDK_SOURCES
                .iter()
                .map(|(p, text)| (vendored.join(p), *text)),
        );
        written.extend(WIT_FILES.iter().map(|(p, text)| (dir.join(p), *text)));
        for (path, text) in written {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(dir)
}

/// A plugin's name: 2–63 lowercase letters, digits and hyphens, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
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
    Ok(())
}

fn source(world: World, name: &str, type_name: &str) -> String {
    match world {
        World::Provisioner => format!(
            r#"//! The `{name}` provisioner.

use tenantry_plugin_sdk::{{config, log}};
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
        let greeting = config::string("greeting").unwrap_or_default();
        log::info(&format!("applying {{}}: {{greeting}}, {{}}", step.id, tenant.slug));
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

/// The componentize-js release a JavaScript plugin is built with (the one tenantry is tested
/// with).
pub const COMPONENTIZE_JS_VERSION: &str = "0.19.3";

/// The WASI shim componentize-js imports without declaring it (npm does not always hoist its
/// dependencies' copy where componentize-js finds it): a JavaScript plugin names it itself.
pub const PREVIEW2_SHIM_VERSION: &str = "0.25.0";

/// Creates the JavaScript plugin `name` in `dir` (default `./name`): a quota policy or a
/// renderer in `src/plugin.js`, built by `npm run build` with componentize-js into a component
/// against the WIT written into it, with its manifest embedded. Returns its directory.
// Long function: most of it is the text of the files a new plugin starts from.
pub fn create_js(name: &str, world: World, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        world != World::Provisioner,
        "--lang js makes a quota policy or a renderer; write a provisioner in Rust"
    );
    check_name(name)?;
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(name));
    anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
    std::fs::create_dir_all(dir.join("src"))?;
    let world_name = world.as_str();
    let file = format!("{name}.wasm");
    let files: [(&str, String); 6] = [
        (
            "package.json",
            format!(
                r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "description": "A tenantry {world_name} plugin in JavaScript.",
  "type": "module",
  "scripts": {{
    "build": "node build.mjs"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS_VERSION}",
    "@bytecodealliance/preview2-shim": "{PREVIEW2_SHIM_VERSION}"
  }}
}}
"#
            ),
        ),
        (
            "build.mjs",
            format!(
                r#"// Builds {file}: src/plugin.js made a WebAssembly component of the `{world_name}` world of
// wit/v0.2.0 by componentize-js, which snapshots its JavaScript engine with the script loaded
// (a call starts from that snapshot, booting nothing), and the manifest tenantry-plugin.toml
// embedded as the custom section `tenantry-manifest` that the server reads, with the name,
// version and description of package.json as the section `tenantry-package`.
import {{ componentize }} from '@bytecodealliance/componentize-js';
import {{ readFile, writeFile }} from 'node:fs/promises';

const source = await readFile('src/plugin.js', 'utf8');
const manifest = await readFile('tenantry-plugin.toml');
const pkg = JSON.parse(await readFile('package.json', 'utf8'));
const packageInfo = Buffer.from([pkg.name, pkg.version, pkg.description ?? ''].join('\0'));
const {{ component }} = await componentize(source, {{
  witPath: 'wit/v0.2.0',
  worldName: '{world_name}',
  // No WASI: the plugin gets the host interfaces of its world and nothing else.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
}});

// A custom section: id 0, its size, its name's size and name, then its bytes (sizes in
// unsigned LEB128).
function leb128(n) {{
  const out = [];
  do {{
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  }} while (n !== 0);
  return Buffer.from(out);
}}
function section(name, bytes) {{
  const id = Buffer.from(name);
  const payload = Buffer.concat([leb128(id.length), id, bytes]);
  return Buffer.concat([Buffer.from([0]), leb128(payload.length), payload]);
}}
const wasm = Buffer.concat([
  Buffer.from(component),
  section('tenantry-manifest', manifest),
  section('tenantry-package', packageInfo),
]);
await writeFile('{file}', wasm);
console.log(`built {file} (${{wasm.length}} bytes): tenantry plugin install {file}`);
"#
            ),
        ),
        (
            "tenantry-plugin.toml",
            format!(
                r#"# The plugin's name, version and description are the package's (package.json): the build
# embeds them beside this manifest, so they are written once. A `name`, `version` or
# `description` written here would take their place.
world = "{world_name}"
wit_version = "0.2.0"
# Calls share nothing (src/plugin.js keeps no state between them), so the server may call the
# plugin in an instance kept from an earlier call: a JavaScript engine is costly to start.
reuse_instances = true
{config}"#,
                config = if world == World::QuotaPolicy {
                    "\n# What the operator configures (`tenantry plugin configure NAME --set limit=10`).\n[config_schema]\ntype = \"object\"\n\n[config_schema.properties.limit]\ntype = \"integer\"\ndefault = 5\ndescription = \"Every metric's limit, unless the operator overrode it for the tenant.\"\n"
                } else {
                    ""
                }
            ),
        ),
        (".gitignore", "/node_modules\n/*.wasm\n".to_owned()),
        ("src/plugin.js", js_source(world, name)),
        (
            "README.md",
            format!(
                "# {name}\n\nA tenantry {world_name} plugin in JavaScript.\n\n```sh\nnpm install\nnpm run build\ntenantry plugin install {file}\n```\n"
            ),
        ),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).with_context(|| format!("writing {path}"))?;
    }
    for (path, text) in WIT_FILES
        .iter()
        .filter(|(p, _)| p.starts_with("wit/v0.2.0/"))
    {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

fn js_source(world: World, name: &str) -> String {
    match world {
        World::QuotaPolicy => format!(
            r#"// The `{name}` quota policy: every metric has the configured limit (an operator's
// override for the tenant wins). Numbers that are u64 in WIT (`used`, limits) are BigInts.
import {{ write }} from 'tenantry:plugin/log@0.2.0';
import {{ get }} from 'tenantry:plugin/config@0.2.0';

export const policy = {{
  // `tenant`: {{ id, slug, name, tier, status }}; `usage`: [{{ metric, used, overrideLimit }}].
  // Returns a decision; throwing {{ tag: 'permanent' | 'transient', val: 'why' }} fails the call.
  evaluate(tenant, usage) {{
    const limit = BigInt(JSON.parse(get('limit') ?? '5'));
    write('debug', `a limit of ${{limit}} for ${{tenant.slug}}`);
    const metrics = usage.map((u) => {{
      const l = u.overrideLimit ?? limit;
      const percent = l === 0n ? (u.used > 0n ? 100 : 0) : (Number(u.used) * 100) / Number(l);
      const severity = percent >= 100 ? 'blocked' : percent >= 95 ? 'critical' : percent >= 80 ? 'warning' : 'ok';
      return {{ metric: u.metric, used: u.used, limit: l, percent, severity }};
    }});
    return {{
      metrics,
      allowed: metrics.every((m) => m.severity !== 'blocked'),
      atRisk: metrics.some((m) => m.percent > 90),
    }};
  }},
}};
"#
        ),
        _ => format!(
            r#"// The `{name}` renderer: replaces each `{{name}}` slot with its value, as is.
export const render = {{
  // `template`: {{ name, body, placeholders, format }}; `values`: [[name, value], ...].
  // Returns the text; throwing {{ tag: 'missing' | 'undeclared' | 'unexpected' | 'invalid', val }}
  // fails the call.
  render(template, values) {{
    const given = new Map(values);
    const missing = template.placeholders.filter((p) => !given.has(p));
    if (missing.length > 0) throw {{ tag: 'missing', val: missing }};
    return template.body.replace(/\{{([a-z0-9_]+)\}}/g, (slot, key) => given.get(key) ?? slot);
  }},
}};
"#
        ),
    }
}
