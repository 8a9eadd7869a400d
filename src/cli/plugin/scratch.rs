//! `plugin call --file`: a component straight from its file, installed in a scratch
//! installation with the grants and configuration given on the command line; and `--set`
//! pairs read as their fields' types (for `plugin configure` too).

use anyhow::Context as _;

use super::{CallFunction, call};
use crate::audit::Actor;
use crate::cli::{Output, app_error, read_secret_file};
use crate::context::Context;

/// Adds the `--set KEY=VALUE` pairs to `values`, each read as its field's type.
pub(super) fn read_set(
    current: &crate::plugin_registry::PluginView,
    set: &[String],
    values: &mut serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let name = &current.name;
    for pair in set {
        let Some((key, text)) = pair.split_once('=') else {
            anyhow::bail!("--set {pair}: give KEY=VALUE");
        };
        let Some(field) = current.config_fields.iter().find(|f| f.name == key) else {
            let names: Vec<&str> = current
                .config_fields
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            anyhow::bail!(
                "--set {key}: plugin `{name}` has no such field ({})",
                if names.is_empty() {
                    "it takes no configuration".to_owned()
                } else {
                    names.join(", ")
                }
            );
        };
        let value = field
            .kind
            .read(text)
            .map_err(|message| anyhow::anyhow!("--set {key}: {message}"))?;
        values.insert(key.to_owned(), value);
    }
    Ok(())
}

/// `plugin call --file`: the component installed in `ctx` (a scratch installation) with the
/// grants and configuration given, then called.
pub(in crate::cli) async fn call_file(
    ctx: &Context,
    out: Output,
    file: &std::path::Path,
    hosts: Vec<String>,
    secrets: Vec<String>,
    set: Vec<String>,
    function: CallFunction,
) -> anyhow::Result<()> {
    use crate::plugin_registry::{self as registry, Capability};
    let actor = Actor::cli();
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let plugin = registry::install(ctx, &actor, bytes)
        .await
        .map_err(app_error)?;
    let name = plugin.name.clone();
    for host in hosts {
        registry::grant(ctx, &actor, &name, Capability::Host(host))
            .await
            .map_err(app_error)?;
    }
    for pair in secrets {
        let Some((secret, path)) = pair.split_once('=') else {
            anyhow::bail!("--secret {pair}: give NAME=FILE");
        };
        let value = read_secret_file(std::path::Path::new(path))?;
        registry::grant(
            ctx,
            &actor,
            &name,
            Capability::Secret {
                name: secret.to_owned(),
                value,
            },
        )
        .await
        .map_err(app_error)?;
    }
    if !set.is_empty() {
        let mut values = serde_json::Map::new();
        read_set(&plugin, &set, &mut values)?;
        registry::configure(ctx, &actor, &name, values)
            .await
            .map_err(app_error)?;
    }
    call::run(ctx, out, &name, function).await
}
