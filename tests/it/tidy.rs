//! Tidy checks of the source tree itself (as rust-analyzer keeps them): rules of the code base
//! that a reviewer would otherwise have to remember.
//!
//! - **Layers point one way.** Every top-level module of `src/` and of the crates under
//!   `crates/` belongs to one layer of the table in `ARCHITECTURE.md` (read from there: it is
//!   kept in one place); a module imports only modules of lower layers, or earlier modules of its
//!   own layer where the layer is ordered. The web and API layers do not reach the store. Cargo
//!   keeps the crates apart (the store cannot name the server); this keeps the order inside
//!   each crate, and the import graph therefore has no cycle.
//! - **Files hold one job.** A file of `src/` longer than [`LONG_FILE`] lines says why at its top,
//!   in a line starting with `//! Long file:`.
//! - **Functions read as sentences.** A function longer than [`LONG_FUNCTION`] lines says why
//!   above it, in a line with `Long function:`, or is one of [`LONG_FUNCTIONS_TO_CUT`], a list
//!   that may only shrink.
//! - **A stored word is never guessed.** A word the store keeps (a status, a role, a kind) is
//!   parsed into its enum, and a failed parse is an error: never `parse(..).unwrap_or(..)`.
//! - **The repository stands on its own.** Code and docs do not refer to documents the
//!   repository does not contain.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A group of modules at the same depth.
struct Layer {
    name: String,
    modules: Vec<String>,
    /// Whether a module may import the modules listed before it in the same layer.
    ordered: bool,
}

/// The layers, lowest first, as the table of `ARCHITECTURE.md` ("Layers") states them: one row
/// per layer, `| layer | crate | modules | order |`, with the modules in backticks and the order
/// `ordered` (a module may import those before it) or `peers` (none imports another).
fn layers() -> Vec<Layer> {
    let map = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let table = map
        .split("\n## Layers\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a section `## Layers`");
    let module = regex::Regex::new(r"`([a-z_]+)`").unwrap();
    let layers: Vec<Layer> = table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(
                cells.len(),
                4,
                "a row of the layer table has four cells: {row}"
            );
            assert!(
                matches!(cells[3], "ordered" | "peers"),
                "a layer's order is `ordered` or `peers`: {row}"
            );
            Layer {
                name: cells[0].to_owned(),
                modules: module
                    .captures_iter(cells[2])
                    .map(|c| c[1].to_owned())
                    .collect(),
                ordered: cells[3] == "ordered",
            }
        })
        .collect();
    assert!(layers.len() >= 5, "the layer table was not found");
    layers
}

/// The directories of Rust sources: the server's `src/` and each crate's under `crates/`.
fn source_roots() -> Vec<PathBuf> {
    let mut roots = vec![root().join("src")];
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            roots.push(src);
        }
    }
    roots
}

/// Every Rust file of every source root.
fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in source_roots() {
        rust_files(&dir, &mut files);
    }
    files
}

/// Imports that skip layers they must go through: (from, to).
const FORBIDDEN: &[(&str, &str)] = &[("api", "store"), ("web", "store"), ("http", "store")];

/// Macros exported at the crate root, by the module that defines them.
const MACROS: &[(&str, &str)] = &[("transaction", "store"), ("with_conn", "store")];

const LONG_FILE: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments, string and character literals blanked out (newlines kept), so
/// that only code is searched.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
        {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &chars[i..j.min(chars.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1b}'), not a lifetime ('a).
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&ch| ch == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn identifier_at(text: &str) -> Option<&str> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| &text[..end])
}

/// The first path segment of each item of a `{…}` group that starts `text`.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    heads.extend(identifier_at(text[start..i].trim_start()).map(str::to_owned));
                    break;
                }
            }
            ',' if depth == 1 => {
                heads.extend(identifier_at(text[start..i].trim_start()).map(str::to_owned));
                start = i + 1;
            }
            _ => {}
        }
    }
    heads
}

/// The top-level modules (and crate-root macros) a file's code names through `crate::`.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        if before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')) {
            if after.starts_with('{') {
                found.extend(group_heads(after));
            } else if let Some(name) = identifier_at(after) {
                found.insert(name.to_owned());
            }
        }
        rest = after;
    }
    found
}

/// The top-level module a file of `src/` belongs to (`None` for the crate roots).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    (!matches!(name.as_str(), "lib" | "main")).then_some(name)
}

/// Where a module sits: (layer index, position in the layer).
fn position(layers: &[Layer], module: &str) -> Option<(usize, usize)> {
    layers.iter().enumerate().find_map(|(l, layer)| {
        layer
            .modules
            .iter()
            .position(|m| *m == module)
            .map(|p| (l, p))
    })
}

/// module → (imported module → the files that import it).
fn import_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (src, file) in source_roots().into_iter().flat_map(|src| {
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        files.into_iter().map(move |f| (src.clone(), f))
    }) {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        let Some(module) = module_of(&relative) else {
            continue;
        };
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        let edges = graph.entry(module.clone()).or_default();
        for name in crate_references(&code) {
            let target = MACROS
                .iter()
                .find(|(m, _)| *m == name)
                .map_or(name.clone(), |(_, owner)| (*owner).to_owned());
            if target != module {
                edges
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

#[test]
fn the_source_scanner_sees_only_code() {
    let code = code_only(
        "use crate::a; // crate::b\n/* crate::c /* nested */ crate::d */ let s = \"crate::e\";\n\
         let r = r#\"crate::f\"#; let c = '\"'; fn f<'a>(x: &'a str) { crate::g::h(); }\n\
         use crate::{i::j, k, l::{m, n}};",
    );
    let found: Vec<String> = crate_references(&code).into_iter().collect();
    assert_eq!(found, ["a", "g", "i", "k", "l"]);
}

#[test]
fn every_module_has_a_layer_and_imports_only_below_it() {
    let layers = layers();
    let graph = import_graph();
    let unplaced: Vec<&String> = graph
        .keys()
        .filter(|m| position(&layers, m).is_none())
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to the layer table of ARCHITECTURE.md): {unplaced:?}"
    );
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        let (layer, at) = position(&layers, module).unwrap();
        for (target, files) in edges {
            let Some((target_layer, target_at)) = position(&layers, target) else {
                continue; // not a module: an item of the crate root
            };
            let allowed = target_layer < layer
                || (target_layer == layer && layers[layer].ordered && target_at < at);
            let forbidden = FORBIDDEN.contains(&(module.as_str(), target.as_str()));
            if !allowed || forbidden {
                wrong.push(format!(
                    "{module} ({}) → {target} ({}) in {}",
                    layers[layer].name,
                    layers[target_layer].name,
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or skip a layer:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn long_files_say_why_at_their_top() {
    let mut unexplained = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        let explained = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .any(|l| l.starts_with("//! Long file:"));
        if lines > LONG_FILE && !explained {
            unexplained.push(format!(
                "{} ({lines} lines)",
                file.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over {LONG_FILE} lines without a `//! Long file:` reason at the top: {unexplained:?}"
    );
}

/// Functions longer than this many lines say why above them, in a comment line starting with
/// `// Long function:` (or a doc line with `Long function:`).
const LONG_FUNCTION: usize = 100;

/// The long functions still to be cut into named steps, by file and name: the list may only
/// shrink (a function cut short must leave it; a new long function needs a reason instead).
const LONG_FUNCTIONS_TO_CUT: &[(&str, &str)] = &[
    ("crates/foundation/src/config/mod.rs", "validate"),
    ("crates/plugin-host/src/plugin_host/config.rs", "fields"),
    ("crates/plugin-host/src/plugin_host/host.rs", "run_here"),
    ("src/alerts/evaluate.rs", "evaluate_tenant"),
    ("src/app.rs", "start_with"),
    ("src/audit.rs", "verify"),
    ("src/bundles/backup.rs", "backup"),
    ("src/bundles/import.rs", "restore"),
    ("src/bundles/import/check.rs", "check"),
    ("src/cli/alerts.rs", "webhook_command"),
    ("src/cli/health.rs", "tenant_health"),
    ("src/cli/mod.rs", "run"),
    ("src/cli/plugin.rs", "plugin_command"),
    ("src/cli/plugin/call.rs", "run"),
    ("src/cli/provisioning.rs", "template_command"),
    ("src/cli/quotas.rs", "quota_command"),
    ("src/cli/quotas.rs", "usage_command"),
    ("src/cli/sso.rs", "sso_command"),
    ("src/plugin_registry.rs", "grant"),
    ("src/provisioning/saga.rs", "forward"),
    ("src/provisioning/spec/convert.rs", "from_airflow"),
    ("src/quotas/overrides.rs", "parse_overrides"),
    ("src/quotas/report.rs", "check_events"),
    ("src/quotas/report.rs", "report"),
    ("src/tenants/patch.rs", "apply_patch"),
    ("src/web/portal/tenants.rs", "detail"),
    ("src/web/site/login.rs", "callback"),
];

/// Every function of `code` (comments and literals blanked) with its first line (0-based) and
/// its length in lines, from its `fn` line to its closing brace.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let head = regex::Regex::new(
        r"(?m)^[ \t]*(?:pub(?:\([^)]*\))? )?(?:const )?(?:async )?(?:unsafe )?fn (\w+)",
    )
    .unwrap();
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for m in head.captures_iter(code) {
        let whole = m.get(0).unwrap();
        // The body's opening brace: the first `{` outside parentheses and brackets; a `;` first
        // is a declaration without a body.
        let mut depth = 0i32;
        let mut at = whole.end();
        let mut open = None;
        while at < bytes.len() {
            match bytes[at] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(at);
                    break;
                }
                _ => {}
            }
            at += 1;
        }
        let Some(open) = open else { continue };
        let mut braces = 0i32;
        let mut close = open;
        for (i, b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'{' => braces += 1,
                b'}' => {
                    braces -= 1;
                    if braces == 0 {
                        close = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let first = code[..whole.start()].matches('\n').count();
        let last = code[..close].matches('\n').count();
        found.push((m[1].to_owned(), first, last - first + 1));
    }
    found
}

#[test]
fn the_function_scanner_measures_bodies() {
    let code = "fn a() {\n    let x = { 1 };\n}\n\nfn b(x: [u8; 2]) -> u8 { x[0] }\ntrait T { fn c(&self); }\n";
    let found = functions(code);
    assert_eq!(
        found,
        [("a".to_owned(), 0, 3), ("b".to_owned(), 4, 1)],
        "{found:?}"
    );
}

#[test]
fn long_functions_say_why_above_them() {
    let mut unexplained = Vec::new();
    let mut still_listed = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = code_only(&text);
        let lines: Vec<&str> = text.lines().collect();
        let relative = file.strip_prefix(root()).unwrap().display().to_string();
        for (name, first, length) in functions(&code) {
            // The comment and attribute lines right above the function.
            let explained = lines[..first]
                .iter()
                .rev()
                .take_while(|l| {
                    let l = l.trim_start();
                    l.starts_with("//") || l.starts_with("#[")
                })
                .any(|l| l.contains("Long function:"));
            let listed = LONG_FUNCTIONS_TO_CUT.contains(&(relative.as_str(), name.as_str()));
            if length > LONG_FUNCTION && !explained && !listed {
                unexplained.push(format!("{relative}: {name} ({length} lines)"));
            }
            if listed && length <= LONG_FUNCTION {
                still_listed.push(format!("{relative}: {name}"));
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "functions over {LONG_FUNCTION} lines without a `// Long function:` reason above them (cut \
         them into named steps, or say why they are one):\n  {}",
        unexplained.join("\n  ")
    );
    assert!(
        still_listed.is_empty(),
        "functions cut short that LONG_FUNCTIONS_TO_CUT still lists: {still_listed:?}"
    );
}

/// The enums declared with `stored_words!` anywhere in `src/`.
fn stored_word_types() -> Vec<String> {
    let declaration = regex::Regex::new(r"pub enum (\w+) \(").unwrap();
    let mut types = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("stored_words! {") {
            types.extend(declaration.captures_iter(&text).map(|c| c[1].to_owned()));
        }
    }
    types
}

/// Where `code` (comments and literals blanked) turns a failed parse of one of `types` into a
/// default: `T::parse(..)`, `T::from_str(..)`, `.parse::<T>()` or a bare `.parse()` whose
/// default is a `T::…`, followed by `.unwrap_or…` (after `.ok()` or not).
fn defaulted_parses(code: &str, types: &[String]) -> Vec<String> {
    let code: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    let names = types.join("|");
    let patterns = [
        format!(r"\b(?:{names})::(?:parse|from_str)\([^;{{}}]*?\)(?: ?\. ?ok\(\))? ?\. ?unwrap_or"),
        format!(r"\. ?parse ?::<(?:{names})> ?\(\)(?: ?\. ?ok\(\))? ?\. ?unwrap_or"),
        format!(
            r"\. ?parse ?\(\)(?: ?\. ?ok\(\))? ?\. ?unwrap_or(?:_else)? ?\([^;]*?\b(?:{names})::"
        ),
    ];
    patterns
        .iter()
        .flat_map(|p| {
            regex::Regex::new(p)
                .unwrap()
                .find_iter(&code)
                .map(|m| m.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_defaulted_parse_check_sees_each_shape() {
    let types = ["AlertKind".to_owned(), "Role".to_owned()];
    for bad in [
        "let k = AlertKind::parse(&row.kind).unwrap_or(AlertKind::Quota);",
        "let r = Role::parse(&row.role)\n    .unwrap_or(Role::Member);",
        "let r = row.role.parse::<Role>().ok().unwrap_or(Role::Member);",
        "let r: Role = row.role.parse().unwrap_or(Role::Member);",
        "let r: Role = row.role.parse().unwrap_or_else(|_| Role::Member);",
    ] {
        assert_eq!(defaulted_parses(bad, &types).len(), 1, "{bad}");
    }
    for good in [
        "let k = row.kind.parse::<AlertKind>()?;",
        "let n = text.parse::<usize>().unwrap_or(0);",
        "let role = body.role.unwrap_or(Role::PlatformAdmin);",
    ] {
        assert!(defaulted_parses(good, &types).is_empty(), "{good}");
    }
}

#[test]
fn no_stored_word_is_parsed_with_a_default() {
    let types = stored_word_types();
    assert!(
        types.iter().any(|t| t == "Role") && types.iter().any(|t| t == "TenantStatus"),
        "the stored words were not found: {types:?}"
    );
    let mut found = Vec::new();
    for file in all_sources() {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        for hit in defaulted_parses(&code, &types) {
            found.push(format!(
                "{}: {hit}",
                file.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "stored words parsed with a default (a word this version does not know must be an \
         error):\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn the_repository_names_no_document_it_does_not_contain() {
    let mut files = Vec::new();
    for dir in [
        "src", "crates", "plugins", "docs", "tests", "wit", "scripts", "deploy", "benches",
    ] {
        let dir = root().join(dir);
        if dir.is_dir() {
            collect_text(&dir, &mut files);
        }
    }
    files.extend(["README.md", "ARCHITECTURE.md"].map(|f| root().join(f)));
    let needles = [
        "DESIGN.md",
        "seeds/",
        "seed 00",
        "the seed",
        "shared/backends",
    ];
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if file.ends_with("tests/it/tidy.rs") {
                continue;
            }
            let lower = line.to_lowercase();
            if needles
                .iter()
                .any(|needle| lower.contains(&needle.to_lowercase()))
            {
                found.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(root()).unwrap().display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "references to documents outside the repository:\n  {}",
        found.join("\n  ")
    );
}

fn collect_text(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "node_modules" | "target") {
                collect_text(&path, out);
            }
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("rs" | "md" | "toml" | "wit" | "mjs" | "yml" | "yaml" | "sh" | "py")
        ) || path.extension().is_none()
        {
            out.push(path);
        }
    }
}
