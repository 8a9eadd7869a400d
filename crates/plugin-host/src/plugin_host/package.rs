//! A plugin's package — the crate's `Cargo.toml`, or a JavaScript plugin's `package.json` — as
//! the build embeds it beside the manifest: the name, version and description the manifest may
//! leave out, so that they are written once.

/// The custom section the SDK (and the JavaScript scaffold's build) writes with the package's
/// own name, version and description — the crate's, or `package.json`'s — separated by NUL
/// bytes. A manifest that leaves out its name, version or description takes them from it, so
/// they are written once, in the package.
pub const PACKAGE_SECTION: &str = "tenantry-package";

/// A plugin's package, as its build describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl Package {
    /// From the bytes of the [`PACKAGE_SECTION`].
    pub fn from_section(data: &[u8]) -> Option<Package> {
        let text = std::str::from_utf8(data).ok()?;
        let mut parts = text.splitn(3, '\0');
        Some(Package {
            name: parts.next()?.to_owned(),
            version: parts.next()?.to_owned(),
            description: parts.next().unwrap_or_default().trim().to_owned(),
        })
    }

    /// From the package file beside a manifest: the `[package]` of `Cargo.toml`, or
    /// `package.json`. None when there is neither (or it cannot be read).
    pub fn beside(manifest: &std::path::Path) -> Option<Package> {
        let dir = manifest.parent()?;
        let field = |v: Option<&str>| v.unwrap_or_default().trim().to_owned();
        if let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) {
            let cargo: toml::Table = toml::from_str(&text).ok()?;
            let package = cargo.get("package")?.as_table()?;
            let get = |key: &str| field(package.get(key).and_then(toml::Value::as_str));
            return Some(Package {
                name: get("name"),
                version: get("version"),
                description: get("description"),
            });
        }
        let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let get = |key: &str| field(json.get(key).and_then(serde_json::Value::as_str));
        Some(Package {
            name: get("name"),
            version: get("version"),
            description: get("description"),
        })
    }
}
