//! The human-readable part of a backend's error body, in the formats the usual web stacks
//! answer with.

use serde_json::Value;

/// The longest backend message carried into an error.
const MAX_MESSAGE: usize = 500;

/// `text` cut to `max` characters, with `…` where it was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

/// The message of an error body, at most 500 characters:
/// - JSON: the first of `errors`, `detail`, `error` and `message` that says something. Each may
///   be a string, a list or an object: field errors become `field: message` (Django REST
///   framework's `{"email": ["…"]}`, FastAPI's `[{"loc": […], "msg": "…"}]`, whose `input` —
///   possibly a password — is left out), and a list of `{"message", "error_type"}` (Superset,
///   Flask-AppBuilder) becomes `message (error_type)`.
/// - HTML: the page's title.
/// - Anything else: the text itself.
pub fn error_message(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        let text = String::from_utf8_lossy(body);
        if let Some(start) = text.find("<title>")
            && let Some(end) = text[start..].find("</title>")
        {
            return cut(text[start + 7..start + end].trim(), 300);
        }
        return cut(text.trim(), 300);
    };
    let source = ["errors", "detail", "error", "message"]
        .iter()
        .map(|key| &value[*key])
        .find(|v| says_something(v))
        .unwrap_or(&value);
    let mut parts = Vec::new();
    collect(source, "", &mut parts);
    let text = if parts.is_empty() {
        match &value {
            Value::Null => "(no message)".to_string(),
            other => other.to_string(),
        }
    } else {
        parts.join("; ")
    };
    cut(&text, MAX_MESSAGE)
}

fn says_something(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.trim().is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    }
}

fn collect(value: &Value, prefix: &str, out: &mut Vec<String>) {
    let push = |out: &mut Vec<String>, text: &str| {
        if prefix.is_empty() {
            out.push(text.to_string());
        } else {
            out.push(format!("{prefix}: {text}"));
        }
    };
    match value {
        Value::String(s) => push(out, s),
        Value::Array(items) => items.iter().for_each(|v| collect(v, prefix, out)),
        Value::Object(map) => {
            // A FastAPI / pydantic validation error: where, and what (never its `input`).
            if let Some(msg) = map.get("msg").and_then(Value::as_str) {
                let location = map
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|parts| {
                        parts
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                let inner = match (prefix.is_empty(), location.is_empty()) {
                    (_, true) => prefix.to_string(),
                    (true, false) => location,
                    (false, false) => format!("{prefix}.{location}"),
                };
                collect(&Value::String(msg.to_string()), &inner, out);
                return;
            }
            // An error object with a message of its own (and perhaps a kind).
            if let Some(message) = map.get("message").and_then(Value::as_str) {
                match map.get("error_type").and_then(Value::as_str) {
                    Some(kind) => push(out, &format!("{message} ({kind})")),
                    None => push(out, message),
                }
                return;
            }
            for (key, v) in map {
                // Wrappers and flags say nothing a person needs.
                if matches!(key.as_str(), "error" | "status" | "code") && !v.is_string() {
                    continue;
                }
                let inner = if key.ends_with("_errors") || key == "non_field_errors" {
                    prefix.to_owned()
                } else if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect(v, &inner, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(body: &str) -> String {
        error_message(body.as_bytes())
    }

    #[test]
    fn fastapi_details_name_the_field_and_never_the_input() {
        assert_eq!(of(r#"{"detail": "Pool not found"}"#), "Pool not found");
        let body = r#"{"detail": [{"loc": ["body", "slots"], "msg": "must be positive",
                        "input": "hunter2"}]}"#;
        assert_eq!(of(body), "body.slots: must be positive");
        assert!(!of(body).contains("hunter2"));
    }

    #[test]
    fn superset_errors_carry_their_kind() {
        assert_eq!(
            of(
                r#"{"errors": [{"message": "Connection failed", "error_type": "GENERIC_DB_ENGINE_ERROR"}]}"#
            ),
            "Connection failed (GENERIC_DB_ENGINE_ERROR)"
        );
        assert_eq!(
            of(
                r#"{"message": {"database_name": ["A database with the same name already exists."]}}"#
            ),
            "database_name: A database with the same name already exists."
        );
        assert_eq!(of(r#"{"message": "Forbidden"}"#), "Forbidden");
    }

    #[test]
    fn django_field_errors_and_wrappers() {
        assert_eq!(
            of(r#"{"error": true, "errors": {"email": ["Enter a valid email address."]}}"#),
            "email: Enter a valid email address."
        );
        assert_eq!(
            of(r#"{"errors": {"non_field_errors": ["Already a member"]}}"#),
            "Already a member"
        );
        assert_eq!(
            of(r#"{"detail": "Given token not valid for any token type"}"#),
            "Given token not valid for any token type"
        );
    }

    #[test]
    fn kubernetes_statuses_html_pages_and_text() {
        assert_eq!(
            of(
                r#"{"kind": "Status", "status": "Failure", "message": "namespaces \"acme\" already exists", "reason": "AlreadyExists", "code": 409}"#
            ),
            "namespaces \"acme\" already exists"
        );
        assert_eq!(
            of("<html><head><title>502 Bad Gateway</title></head></html>"),
            "502 Bad Gateway"
        );
        assert_eq!(of("  upstream timed out \n"), "upstream timed out");
        assert_eq!(of(""), "");
        assert_eq!(of("null"), "(no message)");
    }

    #[test]
    fn long_messages_are_cut() {
        let long = format!(r#"{{"detail": "{}"}}"#, "x".repeat(800));
        let message = of(&long);
        assert_eq!(message.chars().count(), 501);
        assert!(message.ends_with('…'));
    }
}
