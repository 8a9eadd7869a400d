//! What a plugin is, read from its component before anything runs: the manifest embedded by the
//! SDK (custom section `tenantry-manifest`, TOML), the world it exports and the WIT version it
//! was built against (both from the names of its exports, e.g. `tenantry:plugin/render@0.1.0`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// WIT versions this host can run, newest first. A released version is frozen under
/// `wit/v<version>/` and kept beside the next one, each with its own bindings in
/// `plugins::bindings`.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];

/// A WIT version this host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WitVersion {
    /// `tenantry:plugin@0.1.0`, frozen: no configuration, `measure`, `export-tenant`,
    /// `import-tenant` or `sql`, and `compensate` returns no outcome.
    V0_1,
    /// `tenantry:plugin@0.2.0`.
    V0_2,
}

impl WitVersion {
    pub fn parse(text: &str) -> Option<WitVersion> {
        match text {
            "0.1.0" => Some(WitVersion::V0_1),
            "0.2.0" => Some(WitVersion::V0_2),
            _ => None,
        }
    }

    /// What a plugin of this version cannot do that one of the current version can, for
    /// `plugin check` and the plugin's page.
    pub fn lacks(self) -> &'static [&'static str] {
        match self {
            WitVersion::V0_1 => &[
                "configuration (the `config` interface)",
                "`measure` (usage for quotas)",
                "`export-tenant` and `import-tenant` (tenant bundles)",
                "a typed outcome from `compensate` (manual follow-ups are read from `warn` log lines that begin with `manual follow-up:`)",
                "the `sql` interface",
            ],
            WitVersion::V0_2 => &[],
        }
    }
}

/// The package every plugin interface belongs to.
pub const WIT_PACKAGE: &str = "tenantry:plugin";

/// The section the SDK embeds the manifest in.
pub const MANIFEST_SECTION: &str = "tenantry-manifest";

pub use super::package::{PACKAGE_SECTION, Package};

/// Reads a manifest: what it leaves out of `name`, `version` and `description` is taken from
/// `package`, and the whole is checked.
pub fn parse_manifest(text: &str, package: Option<&Package>) -> Result<Manifest, InspectError> {
    let bad = |e: toml::de::Error| InspectError::BadManifest(e.message().to_owned());
    let mut table: toml::Table = toml::from_str(text).map_err(bad)?;
    if let Some(package) = package {
        for (key, value) in [
            ("name", &package.name),
            ("version", &package.version),
            ("description", &package.description),
        ] {
            if !value.is_empty() {
                table
                    .entry(key)
                    .or_insert_with(|| toml::Value::String(value.clone()));
            }
        }
    }
    let manifest: Manifest = toml::Value::Table(table).try_into().map_err(bad)?;
    validate_manifest(&manifest)?;
    Ok(manifest)
}

pub use crate::store::vocabulary::World;

/// Capabilities a plugin asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Hosts (`host` or `host:port`) the plugin wants to reach over HTTP.
    pub hosts: Vec<String>,
    /// Names of secrets the plugin wants to read.
    pub secrets: Vec<String>,
    /// Aliases of databases the plugin wants to run SQL on (WIT 0.2.0 `sql`); the operator
    /// grants each with its connection URL.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
}

/// The manifest a plugin author writes (`tenantry-plugin.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    pub wit_version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The plugin's configuration, if it takes any: a JSON Schema object of typed properties
    /// (see `plugins::config`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<serde_json::Value>,
    /// A provisioner that makes real the databases the request's connections describe (the
    /// `postgres` plugin): in a provisioning run it goes before the backends that connect to
    /// them.
    #[serde(default)]
    pub makes_connections: bool,
    /// The metrics a provisioner's `measure` reports: only these are recorded (a figure of any
    /// other metric is shown, not recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<String>,
    /// A renderer or quota policy whose calls share nothing (no state kept in globals between
    /// them) may be called in an instance kept from an earlier call instead of a fresh one:
    /// far cheaper for a plugin whose instance is large (a JavaScript engine).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reuse_instances: bool,
}

/// What inspecting a component found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inspection {
    pub manifest: Manifest,
    /// The world, from the component's exports.
    pub world: World,
    /// The WIT version, from the component's exports.
    pub wit_version: String,
    /// Every import and export of the component.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub sha256: String,
    pub size_bytes: usize,
}

impl Inspection {
    /// The WIT version (inspecting refuses a component of any other).
    pub fn version(&self) -> WitVersion {
        WitVersion::parse(&self.wit_version).expect("inspected components have a supported version")
    }
}

/// Why a component is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InspectError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "the component has no `{MANIFEST_SECTION}` section: build it with the tenantry plugin SDK"
    )]
    NoManifest,
    #[error("the manifest is invalid: {0}")]
    BadManifest(String),
    #[error(
        "the component exports no tenantry plugin interface (`{WIT_PACKAGE}/provision`, `/render` or `/policy`)"
    )]
    NoWorld,
    #[error(
        "the component was built for WIT version {found}; this server supports {}",
        SUPPORTED_WIT_VERSIONS.join(", ")
    )]
    UnsupportedWitVersion { found: String },
    #[error(
        "the manifest says world `{manifest}` but the component exports the `{component}` world"
    )]
    WorldMismatch { manifest: World, component: World },
    #[error("the manifest says WIT version {manifest} but the component was built for {component}")]
    WitVersionMismatch { manifest: String, component: String },
    #[error("the `{world}` world may not import `{import}`")]
    ForbiddenImport { world: World, import: String },
}

/// Checks a manifest file (`tenantry-plugin.toml`) alone, before any build: what a component
/// carrying it would be refused for (its name, version, world, WIT version, capabilities and
/// configuration schema).
pub fn check_manifest_text(
    text: &str,
    package: Option<&Package>,
) -> Result<Manifest, InspectError> {
    parse_manifest(text, package)
}

/// Reads the manifest, world and WIT version of a component without compiling or running it.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, InspectError> {
    use wasmparser::{Parser, Payload};
    if !Parser::is_component(bytes) {
        let what = if Parser::is_core_wasm(bytes) {
            "a core module (build for wasm32-wasip2, which produces a component)".to_owned()
        } else {
            "the bytes are not WebAssembly".to_owned()
        };
        return Err(InspectError::NotAComponent(what));
    }
    let mut manifest_text = None;
    let mut package = None;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| InspectError::NotAComponent(e.to_string()))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if section.name() == MANIFEST_SECTION => {
                manifest_text = Some(String::from_utf8_lossy(section.data()).into_owned());
            }
            Payload::CustomSection(section) if section.name() == PACKAGE_SECTION => {
                package = Package::from_section(section.data());
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| InspectError::NotAComponent(e.to_string()))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| InspectError::NotAComponent(e.to_string()))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    let mut found = None;
    for export in &exports {
        let Some(rest) = export.strip_prefix(&format!("{WIT_PACKAGE}/")) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let world = [World::Provisioner, World::Renderer, World::QuotaPolicy]
            .into_iter()
            .find(|w| w.export_interface() == interface);
        if let Some(world) = world {
            found = Some((world, version.to_owned()));
        }
    }
    let (world, wit_version) = found.ok_or(InspectError::NoWorld)?;
    if !SUPPORTED_WIT_VERSIONS.contains(&wit_version.as_str()) {
        return Err(InspectError::UnsupportedWitVersion { found: wit_version });
    }
    let text = manifest_text.ok_or(InspectError::NoManifest)?;
    let manifest = parse_manifest(&text, package.as_ref())?;
    if manifest.world != world {
        return Err(InspectError::WorldMismatch {
            manifest: manifest.world,
            component: world,
        });
    }
    if manifest.wit_version != wit_version {
        return Err(InspectError::WitVersionMismatch {
            manifest: manifest.wit_version.clone(),
            component: wit_version,
        });
    }
    if !world.has_capabilities() {
        for import in &imports {
            let denied = ["state", "secrets", "http", "sql"]
                .iter()
                .any(|i| import.starts_with(&format!("{WIT_PACKAGE}/{i}@")))
                || import.starts_with("wasi:http/")
                || import.starts_with("wasi:sockets/");
            if denied {
                return Err(InspectError::ForbiddenImport {
                    world,
                    import: import.clone(),
                });
            }
        }
    }
    use sha2::Digest as _;
    Ok(Inspection {
        manifest,
        world,
        wit_version,
        imports,
        exports,
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        size_bytes: bytes.len(),
    })
}

fn validate_manifest(manifest: &Manifest) -> Result<(), InspectError> {
    let bad = |m: String| Err(InspectError::BadManifest(m));
    let name_ok = (2..=63).contains(&manifest.name.len())
        && manifest
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !manifest.name.starts_with('-')
        && !manifest.name.ends_with('-');
    if !name_ok {
        return bad(format!(
            "name `{}` must be 2–63 lowercase letters, digits and hyphens",
            manifest.name
        ));
    }
    if manifest.version.split('.').count() != 3
        || manifest
            .version
            .split('.')
            .any(|p| p.parse::<u64>().is_err())
    {
        return bad(format!(
            "version `{}` must be MAJOR.MINOR.PATCH",
            manifest.version
        ));
    }
    if !manifest.world.has_capabilities()
        && (!manifest.capabilities.hosts.is_empty()
            || !manifest.capabilities.secrets.is_empty()
            || !manifest.capabilities.databases.is_empty())
    {
        return bad(format!(
            "the `{}` world may not request hosts, secrets or databases",
            manifest.world
        ));
    }
    let mut aliases = BTreeMap::new();
    for alias in &manifest.capabilities.databases {
        let ok = (1..=63).contains(&alias.len())
            && alias
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return bad(format!(
                "database `{alias}` must be 1–63 lowercase letters, digits, `_` and `-`"
            ));
        }
        if aliases.insert(alias, ()).is_some() {
            return bad(format!("database `{alias}` is listed twice"));
        }
    }
    for host in &manifest.capabilities.hosts {
        if host.is_empty() || host.contains('/') || host.contains('@') || host.contains(' ') {
            return bad(format!(
                "host `{host}` must be `host`, `host:port`, `host:*` or `*`"
            ));
        }
    }
    let mut seen = BTreeMap::new();
    for secret in &manifest.capabilities.secrets {
        if seen.insert(secret, ()).is_some() {
            return bad(format!("secret `{secret}` is listed twice"));
        }
    }
    if manifest.reuse_instances && manifest.world.has_capabilities() {
        return bad(format!(
            "`reuse_instances` is for renderers and quota policies, whose calls have no side \
             effects; the `{}` world gets a fresh instance for every call",
            manifest.world
        ));
    }
    if let Err(err) = super::config::fields(manifest.config_schema.as_ref()) {
        return bad(err);
    }
    Ok(())
}

/// Whether a host pattern (`host` or `host:*` for any port, `host:port`, or `*` for any host)
/// matches a URL's host and port.
pub fn host_matches(pattern: &str, host: &str, port: Option<u16>) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.rsplit_once(':') {
        Some((h, "*")) if !h.is_empty() => h == host,
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
            h == host && p.parse::<u16>().ok() == port
        }
        _ => pattern == host,
    }
}

/// Whether `grant` is a host an operator can grant: a DNS name, an IPv4 address or a bracketed
/// IPv6 address, with an optional port or `:*` (any port). `*` alone is a manifest's request,
/// never a grant.
pub fn is_grantable_host(grant: &str) -> bool {
    let (host, port) = match grant.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (grant, None),
    };
    let port_ok = port.is_none_or(|p| p == "*" || p.parse::<u16>().is_ok_and(|p| p > 0));
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => host.len() <= 253 && host.split('.').all(label),
    };
    port_ok && host_ok
}

/// Whether granting `granted` stays within the `requested` pattern: the same pattern, one port
/// (or every port) of a `host:*` request, or any one host (never `*` itself) of a `*` request.
pub fn host_covers(requested: &str, granted: &str) -> bool {
    if requested == "*" {
        // A backend plugin whose backend can be anywhere: the operator names the host.
        return granted != "*";
    }
    if requested == granted {
        return true;
    }
    match (requested.rsplit_once(':'), granted.rsplit_once(':')) {
        (Some((rh, "*")), Some((gh, gp))) => rh == gh && (gp == "*" || gp.parse::<u16>().is_ok()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "world = \"quota-policy\"\nwit_version = \"0.2.0\"\n";

    fn package() -> Package {
        Package {
            name: "js-quota".into(),
            version: "1.2.3".into(),
            description: "Limits.".into(),
        }
    }

    #[test]
    fn what_a_manifest_leaves_out_of_name_version_and_description_is_the_packages() {
        let m = parse_manifest(BASE, Some(&package())).unwrap();
        assert_eq!(
            (m.name.as_str(), m.version.as_str(), m.description.as_str()),
            ("js-quota", "1.2.3", "Limits.")
        );
        let own = format!("{BASE}name = \"mine\"\nversion = \"0.0.1\"\n");
        let m = parse_manifest(&own, Some(&package())).unwrap();
        assert_eq!((m.name.as_str(), m.version.as_str()), ("mine", "0.0.1"));
        assert_eq!(m.description, "Limits.");
        let err = parse_manifest(BASE, None).unwrap_err().to_string();
        assert!(err.contains("missing field `name`"), "{err}");
        let bad = Package {
            version: "one".into(),
            ..package()
        };
        let err = parse_manifest(BASE, Some(&bad)).unwrap_err().to_string();
        assert!(
            err.contains("version `one` must be MAJOR.MINOR.PATCH"),
            "{err}"
        );
        assert_eq!(
            Package::from_section(b"js-quota\x001.2.3\x00Limits."),
            Some(package())
        );
    }

    #[test]
    fn only_a_world_without_side_effects_may_reuse_instances() {
        let reuse = format!("{BASE}reuse_instances = true\n");
        assert!(
            parse_manifest(&reuse, Some(&package()))
                .unwrap()
                .reuse_instances
        );
        let provisioner = reuse.replace("quota-policy", "provisioner");
        let err = parse_manifest(&provisioner, Some(&package()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`reuse_instances` is for renderers and quota policies"),
            "{err}"
        );
    }

    #[test]
    fn grantable_hosts_are_names_or_addresses_with_an_optional_port() {
        for ok in [
            "example.com",
            "db-1.internal:5432",
            "127.0.0.1",
            "superset:*",
            "[::1]:8088",
            "[::1]",
        ] {
            assert!(super::is_grantable_host(ok), "{ok}");
        }
        for bad in [
            "*",
            "",
            "a b",
            "-x.com",
            "x.com:0",
            "x.com:70000",
            "x.com:",
            "\u{b6}\n0",
            "x..com",
        ] {
            assert!(!super::is_grantable_host(bad), "{bad}");
        }
    }
}
