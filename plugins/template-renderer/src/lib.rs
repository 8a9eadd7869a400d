//! `{placeholder}` substitution with escaping per target format.
//!
//! - `uri`: a value is percent-encoded for the part of the URI it lands in (user, password,
//!   host, path or query), so a password with `@` or `/` cannot change where the URI points.
//! - `json`: the value is escaped as the inside of a JSON string.
//! - `yaml`: the value is emitted as a double-quoted YAML scalar body.
//! - `sql-literal`: single quotes are doubled, for a value the body puts between single quotes.
//!   A value holding a backslash or a NUL character is refused, naming its placeholder: a
//!   backslash escapes the closing quote where `standard_conforming_strings` is off (PostgreSQL
//!   before 9.1, and any server so configured) and in MySQL's default mode, so no one spelling
//!   means the same on every server.
//! - `text`: as is.
//!
//! `{{` and `}}` are literal braces. Every placeholder the body uses must be declared; every
//! declared placeholder needs a value; a value for an undeclared name is refused. All problems
//! are reported at once, by name.

use std::collections::{BTreeMap, BTreeSet};

use tenantry_plugin_sdk::renderer::{RenderError, Renderer, Template};

struct TemplateRenderer;

enum Piece<'a> {
    Text(&'a str),
    Literal(char),
    Slot(&'a str),
}

fn parse(body: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                pieces.push(Piece::Text(&body[start..i]));
                pieces.push(Piece::Literal('{'));
                i += 2;
                start = i;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                pieces.push(Piece::Text(&body[start..i]));
                pieces.push(Piece::Literal('}'));
                i += 2;
                start = i;
            }
            b'{' => {
                let end = body[i + 1..]
                    .find('}')
                    .ok_or_else(|| format!("unclosed `{{` at byte {i}"))?;
                let name = &body[i + 1..i + 1 + end];
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Err(format!(
                        "`{{{name}}}` is not a placeholder name (letters, digits, _ and -)"
                    ));
                }
                pieces.push(Piece::Text(&body[start..i]));
                pieces.push(Piece::Slot(name));
                i += end + 2;
                start = i;
            }
            b'}' => {
                return Err(format!(
                    "unmatched `}}` at byte {i}; write `}}}}` for a literal brace"
                ));
            }
            _ => i += 1,
        }
    }
    pieces.push(Piece::Text(&body[start..]));
    Ok(pieces)
}

/// Which part of a URI the text so far has reached.
#[derive(Clone, Copy, PartialEq)]
enum UriPart {
    Scheme,
    Userinfo,
    Host,
    Path,
    Query,
}

fn uri_part(before: &str) -> UriPart {
    let Some(scheme_end) = before.find("://") else {
        return if before.contains(':') {
            UriPart::Path
        } else {
            UriPart::Scheme
        };
    };
    let rest = &before[scheme_end + 3..];
    if rest.contains('?') || rest.contains('#') {
        return UriPart::Query;
    }
    if rest.contains('/') {
        return UriPart::Path;
    }
    if rest.contains('@') {
        return UriPart::Host;
    }
    // Still before any `@`: userinfo if an `@` follows in the template, else the host. The
    // caller decides with the whole template; here, assume userinfo and let `render` correct.
    UriPart::Userinfo
}

fn percent_encode(value: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn escape_uri(value: &str, part: UriPart) -> String {
    match part {
        // Host names and ports pass as they are when they are valid; anything else is encoded.
        UriPart::Host => percent_encode(value, |b| matches!(b, b':' | b'[' | b']')),
        UriPart::Path => percent_encode(value, |_| false),
        UriPart::Query => percent_encode(value, |_| false),
        UriPart::Userinfo | UriPart::Scheme => percent_encode(value, |_| false),
    }
}

/// The inside of a JSON (or YAML double-quoted) string.
fn escape_json(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl Renderer for TemplateRenderer {
    fn render(template: Template, values: Vec<(String, String)>) -> Result<String, RenderError> {
        let format = template.format.as_str();
        if !matches!(format, "uri" | "json" | "yaml" | "sql-literal" | "text") {
            return Err(RenderError::Invalid(format!(
                "template `{}`: unknown format `{format}` (uri, json, yaml, sql-literal or text)",
                template.name
            )));
        }
        let pieces = parse(&template.body)
            .map_err(|e| RenderError::Invalid(format!("template `{}`: {e}", template.name)))?;
        let declared: BTreeSet<&str> = template.placeholders.iter().map(String::as_str).collect();
        let values: BTreeMap<&str, &str> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();

        let used: BTreeSet<&str> = pieces
            .iter()
            .filter_map(|p| {
                if let Piece::Slot(name) = p {
                    Some(*name)
                } else {
                    None
                }
            })
            .collect();
        let undeclared: Vec<String> = used.difference(&declared).map(|s| s.to_string()).collect();
        if !undeclared.is_empty() {
            return Err(RenderError::Undeclared(undeclared));
        }
        let missing: Vec<String> = declared
            .iter()
            .filter(|d| !values.contains_key(*d))
            .map(|s| s.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(RenderError::Missing(missing));
        }
        let unexpected: Vec<String> = values
            .keys()
            .filter(|k| !declared.contains(*k))
            .map(|s| s.to_string())
            .collect();
        if !unexpected.is_empty() {
            return Err(RenderError::Unexpected(unexpected));
        }
        if format == "sql-literal" {
            let refused: Vec<&str> = used
                .iter()
                .copied()
                .filter(|name| values[name].contains(['\\', '\0']))
                .collect();
            if !refused.is_empty() {
                return Err(RenderError::Invalid(format!(
                    "template `{}`: the value of {} holds a backslash or a NUL character, which a \
                     SQL literal cannot carry alike on every server (a backslash escapes the \
                     closing quote where standard_conforming_strings is off, and in MySQL)",
                    template.name,
                    refused
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }

        let has_userinfo = format == "uri" && {
            // An `@` between `://` and the first `/` after it marks a userinfo part.
            let body = template.body.as_str();
            body.find("://").is_some_and(|i| {
                let rest = &body[i + 3..];
                let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
                authority.contains('@')
            })
        };
        let mut out = String::with_capacity(template.body.len() + 64);
        for piece in &pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Literal(c) => out.push(*c),
                Piece::Slot(name) => {
                    let value = values[name];
                    let escaped = match format {
                        "uri" => {
                            let mut part = uri_part(&out);
                            if part == UriPart::Userinfo && !has_userinfo {
                                part = UriPart::Host;
                            }
                            escape_uri(value, part)
                        }
                        "json" => escape_json(value),
                        "yaml" => escape_json(value),
                        "sql-literal" => value.replace('\'', "''"),
                        _ => value.to_owned(),
                    };
                    out.push_str(&escaped);
                }
            }
        }
        Ok(out)
    }
}

tenantry_plugin_sdk::register_renderer!(TemplateRenderer);
