//! Pure logic of the plugin (no host calls), unit-tested natively: names, rison filters, SQL
//! literals, the asset bundle (its text format, per-tenant UUIDs, the ZIP and the multipart body).
//! Error classes, messages and connection URIs are the SDK's backend kit.

use std::collections::{BTreeMap, BTreeSet};

/// The name of the Superset database connection of `connection` for the tenant `slug`. It always
/// carries the slug, so two tenants never share (or adopt) each other's connection.
pub fn database_name(slug: &str, connection: &str) -> String {
    format!("tenantry-{slug}-{}", sanitize(connection))
}

/// The tenant's role.
pub fn role_name(slug: &str) -> String {
    format!("tenant-{slug}")
}

/// The tenant's row-level security filter.
pub fn rls_name(slug: &str) -> String {
    format!("tenantry-{slug}-rls")
}

/// The plan's step id of a connection.
pub fn database_step_id(connection: &str) -> String {
    format!("database-{}", sanitize(connection))
}

/// Lower-case letters, digits, `-` and `_`; everything else becomes `-`.
pub fn sanitize(name: &str) -> String {
    let out: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if out.is_empty() {
        "default".into()
    } else {
        out
    }
}

/// A SQL string literal: `'` doubled, wrapped in quotes.
pub fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether `name` is a plain SQL identifier (a column of the RLS clause must be one).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The RLS clause restricting `column` to the tenant `slug`.
pub fn rls_clause(column: &str, slug: &str) -> String {
    format!("{column} = {}", sql_literal(slug))
}

/// A rison string (always quoted: `'` and `!` are escaped with `!`).
pub fn rison_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '!' {
            out.push('!');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// A filter value in rison.
#[derive(Debug, Clone)]
pub enum RisonValue {
    Str(String),
    Int(i64),
}

/// `(filters:!((col:C,opr:O,value:V),…),page_size:100)` for a list API.
pub fn rison_filters(filters: &[(&str, &str, RisonValue)]) -> String {
    let items: Vec<String> = filters
        .iter()
        .map(|(col, opr, value)| {
            let value = match value {
                RisonValue::Str(s) => rison_string(s),
                RisonValue::Int(i) => i.to_string(),
            };
            format!("(col:{col},opr:{opr},value:{value})")
        })
        .collect();
    format!("(filters:!({}),page_size:100)", items.join(","))
}

/// One file of an asset bundle.
pub type BundleFiles = BTreeMap<String, String>;

/// Parses an asset template's rendered body: either JSON `{"files": {"charts/x.yaml": "…"}}` or
/// the text form, files separated by lines `--- file: PATH` (text before the first is ignored).
pub fn parse_asset_body(template: &str, body: &str) -> Result<BundleFiles, String> {
    let trimmed = body.trim_start();
    let files: BundleFiles = if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Doc {
            files: BTreeMap<String, String>,
        }
        serde_json::from_str::<Doc>(trimmed)
            .map_err(|e| format!("asset template `{template}`: not a JSON bundle: {e}"))?
            .files
    } else {
        let mut files = BundleFiles::new();
        let mut current: Option<(String, String)> = None;
        for line in body.split_inclusive('\n') {
            if let Some(path) = line.trim_end().strip_prefix("--- file:") {
                if let Some((p, text)) = current.take() {
                    files.insert(p, text);
                }
                current = Some((path.trim().to_string(), String::new()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
            }
        }
        if let Some((p, text)) = current {
            files.insert(p, text);
        }
        files
    };
    if files.is_empty() {
        return Err(format!(
            "asset template `{template}`: no files (expected `--- file: PATH` lines or JSON {{\"files\": {{…}}}})"
        ));
    }
    for (path, text) in &files {
        let ok_dir = ["datasets/", "charts/", "dashboards/"]
            .iter()
            .any(|d| path.starts_with(d));
        if !ok_dir
            || !(path.ends_with(".yaml") || path.ends_with(".yml"))
            || path.contains("..")
            || path.contains('\\')
        {
            return Err(format!(
                "asset template `{template}`: file `{path}` must be a .yaml file under datasets/, charts/ or dashboards/ (the plugin writes metadata.yaml and databases/ itself)"
            ));
        }
        if top_level(text, "uuid").is_none() {
            return Err(format!(
                "asset template `{template}`: file `{path}` has no top-level `uuid:`"
            ));
        }
        if path.starts_with("datasets/") {
            match top_level(text, "database_uuid") {
                Some(v) if v.starts_with(DATABASE_UUID_TOKEN) => {}
                _ => {
                    return Err(format!(
                        "asset template `{template}`: dataset `{path}` must say `database_uuid: {DATABASE_UUID_TOKEN}` (or `{DATABASE_UUID_TOKEN}[connection]`)"
                    ));
                }
            }
        }
    }
    Ok(files)
}

/// Stands for the UUID of the tenant's database connection in an asset file.
pub const DATABASE_UUID_TOKEN: &str = "TENANTRY_DATABASE_UUID";

/// The value of a top-level `key: value` line of a YAML document (quotes removed).
pub fn top_level(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        Some(
            rest.trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string(),
        )
    })
}

fn is_uuid_at(bytes: &[u8], i: usize) -> bool {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let mut j = i;
    for (n, len) in GROUPS.iter().enumerate() {
        for _ in 0..*len {
            if j >= bytes.len() || !bytes[j].is_ascii_hexdigit() {
                return false;
            }
            j += 1;
        }
        if n < 4 {
            if j >= bytes.len() || bytes[j] != b'-' {
                return false;
            }
            j += 1;
        }
    }
    let before_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-');
    let after_ok = j >= bytes.len() || !(bytes[j].is_ascii_alphanumeric() || bytes[j] == b'-');
    before_ok && after_ok
}

/// Every UUID in `text`, lower-cased, in order of appearance.
pub fn find_uuids(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        if is_uuid_at(bytes, i) {
            out.push(text[i..i + 36].to_ascii_lowercase());
            i += 36;
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces every UUID of `text` through `map` (UUIDs not in it are kept).
pub fn replace_uuids(text: &str, map: &BTreeMap<String, String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i + 36 <= bytes.len() {
        if is_uuid_at(bytes, i) {
            if let Some(new) = map.get(&text[i..i + 36].to_ascii_lowercase()) {
                out.push_str(&text[last..i]);
                out.push_str(new);
                last = i + 36;
            }
            i += 36;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[last..]);
    out
}

fn fnv1a64(seed: u64, data: &[u8]) -> u64 {
    let mut hash = seed;
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix so that close inputs spread over every bit.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash
}

/// A UUID (version 8, RFC 9562's custom kind) derived from the tenant and a template's UUID: the
/// same on every run, different for every tenant.
pub fn tenant_uuid(slug: &str, original: &str) -> String {
    let data = format!("tenantry/{slug}/{}", original.to_ascii_lowercase());
    let hi = fnv1a64(0xcbf2_9ce4_8422_2325, data.as_bytes());
    let lo = fnv1a64(0x8422_2325_cbf2_9ce4, data.as_bytes());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The tenant's copy of the bundle: every UUID in it replaced by the tenant's own (so that two
/// tenants' imports never overwrite each other), with the UUIDs of what it creates by kind.
pub fn tenant_bundle(
    slug: &str,
    files: &BundleFiles,
) -> (BundleFiles, BTreeMap<String, Vec<String>>) {
    let mut map = BTreeMap::new();
    for text in files.values() {
        for uuid in find_uuids(text) {
            map.entry(uuid.clone())
                .or_insert_with(|| tenant_uuid(slug, &uuid));
        }
    }
    let mut out = BundleFiles::new();
    let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in files {
        let text = replace_uuids(text, &map);
        let kind = path.split('/').next().unwrap_or("").to_string();
        if let Some(uuid) = top_level(&text, "uuid") {
            let list = kinds.entry(kind).or_default();
            if !list.contains(&uuid) {
                list.push(uuid);
            }
        }
        out.insert(path.clone(), text);
    }
    (out, kinds)
}

/// Replaces `TENANTRY_DATABASE_UUID[connection]` and `TENANTRY_DATABASE_UUID` (the first
/// connection) with the connections' UUIDs.
pub fn substitute_database_uuids(text: &str, uuids: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(DATABASE_UUID_TOKEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + DATABASE_UUID_TOKEN.len()..];
        let (uuid, consumed) = if let Some(inner) = after.strip_prefix('[') {
            let end = inner
                .find(']')
                .ok_or_else(|| format!("an unclosed `{DATABASE_UUID_TOKEN}[`"))?;
            let name = &inner[..end];
            let uuid = uuids
                .iter()
                .find(|(c, _)| c == name)
                .map(|(_, u)| u.clone())
                .ok_or_else(|| format!("no connection named `{name}`"))?;
            (uuid, end + 2)
        } else {
            let uuid = uuids.first().map(|(_, u)| u.clone()).ok_or_else(|| {
                "the bundle refers to a database but there is no connection".to_string()
            })?;
            (uuid, 0)
        };
        out.push_str(&uuid);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The connections a bundle refers to (`None` for the first one).
pub fn referenced_connections(files: &BundleFiles) -> BTreeSet<Option<String>> {
    let mut out = BTreeSet::new();
    for text in files.values() {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(DATABASE_UUID_TOKEN) {
            let after = &rest[i + DATABASE_UUID_TOKEN.len()..];
            match after.strip_prefix('[').and_then(|s| s.split_once(']')) {
                Some((name, _)) => out.insert(Some(name.to_string())),
                None => out.insert(None),
            };
            rest = after;
        }
    }
    out
}

/// A YAML double-quoted scalar.
pub fn yaml_string(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A ZIP archive of `files`, stored (not compressed): all Superset's importer needs.
pub fn zip_stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let name = name.as_bytes();
        // Local file header.
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes()); // version needed
        out.extend_from_slice(&0x0800u16.to_le_bytes()); // flags: UTF-8 names
        out.extend_from_slice(&0u16.to_le_bytes()); // stored
        out.extend_from_slice(&0u16.to_le_bytes()); // time
        out.extend_from_slice(&0x0021u16.to_le_bytes()); // date: 1980-01-01
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(data);
        // Central directory entry.
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&0x0800u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0u16.to_le_bytes());
        central.extend_from_slice(&0x0021u16.to_le_bytes());
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        central.extend_from_slice(&0u32.to_le_bytes()); // external attrs
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name);
    }
    let central_offset = out.len() as u32;
    let central_size = central.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// A `multipart/form-data` body: text fields and one file. Returns the content type and body.
pub fn multipart(
    fields: &[(&str, &str)],
    file: (&str, &str, &[u8]),
    seed: &str,
) -> (String, Vec<u8>) {
    let boundary = format!(
        "tenantry-{}",
        &tenant_uuid(seed, "boundary").replace('-', "")
    );
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    let (name, filename, data) = file;
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/zip\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Decodes standard base64 (whitespace ignored, padding optional).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return Err(format!("not base64: byte {c:#04x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_slug() {
        assert_eq!(database_name("acme", "primary"), "tenantry-acme-primary");
        assert_eq!(database_name("acme", "Main DB!"), "tenantry-acme-main-db-");
        assert_eq!(role_name("acme"), "tenant-acme");
        assert_eq!(database_step_id("primary"), "database-primary");
    }

    #[test]
    fn rison_quotes_and_escapes() {
        assert_eq!(rison_string("a'b!c"), "'a!'b!!c'");
        assert_eq!(
            rison_filters(&[
                (
                    "database_name",
                    "eq",
                    RisonValue::Str("tenantry-acme-primary".into())
                ),
                ("database", "rel_o_m", RisonValue::Int(3)),
            ]),
            "(filters:!((col:database_name,opr:eq,value:'tenantry-acme-primary'),(col:database,opr:rel_o_m,value:3)),page_size:100)"
        );
    }

    #[test]
    fn sql_literals_double_quotes() {
        assert_eq!(rls_clause("tenant_id", "o'neil"), "tenant_id = 'o''neil'");
        assert!(is_identifier("tenant_id"));
        assert!(!is_identifier("tenant_id; drop table x"));
    }

    #[test]
    fn bundles_parse_and_get_tenant_uuids() {
        let body = "intro\n--- file: datasets/db/orders.yaml\ntable_name: orders\nuuid: 11111111-2222-3333-4444-555555555555\ndatabase_uuid: TENANTRY_DATABASE_UUID\n--- file: charts/c.yaml\nuuid: 21111111-2222-3333-4444-555555555555\ndataset_uuid: 11111111-2222-3333-4444-555555555555\n";
        let files = parse_asset_body("t", body).unwrap();
        assert_eq!(files.len(), 2);
        let (a, kinds) = tenant_bundle("acme", &files);
        let (b, _) = tenant_bundle("other", &files);
        let ds = &kinds["datasets"][0];
        assert_ne!(ds, "11111111-2222-3333-4444-555555555555");
        assert!(a["charts/c.yaml"].contains(&format!("dataset_uuid: {ds}")));
        assert_ne!(a["charts/c.yaml"], b["charts/c.yaml"]);
        assert_eq!(find_uuids(ds), vec![ds.clone()]);
        let text = substitute_database_uuids(
            &a["datasets/db/orders.yaml"],
            &[(
                "primary".into(),
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into(),
            )],
        )
        .unwrap();
        assert!(text.contains("database_uuid: aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"));
        assert!(parse_asset_body("t", "--- file: databases/x.yaml\nuuid: 1\n").is_err());
        assert!(parse_asset_body("t", "--- file: datasets/x.yaml\nuuid: 11111111-2222-3333-4444-555555555555\ndatabase_uuid: 11111111-2222-3333-4444-555555555556\n").is_err());
        let json =
            r#"{"files": {"charts/c.yaml": "uuid: 21111111-2222-3333-4444-555555555555\n"}}"#;
        assert_eq!(parse_asset_body("t", json).unwrap().len(), 1);
    }

    #[test]
    fn zip_and_base64() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let zip = zip_stored(&[("a/b.yaml".into(), b"x: 1\n".to_vec())]);
        assert_eq!(&zip[..4], b"PK\x03\x04");
        assert_eq!(base64_decode("UEsDBA==").unwrap(), b"PK\x03\x04");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
    }
}
