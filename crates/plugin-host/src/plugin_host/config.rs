//! A plugin's configuration: the fields its manifest's `config_schema` declares (a JSON Schema
//! object of typed properties — `string`, `integer`, `number` or `boolean` — with an optional
//! `default`, `description`, `enum` and, for strings, `format = "uri"` (an absolute http(s)
//! URL), and a `required` list), checked when the plugin is
//! installed, and the values an operator sets, checked against them when set.
//!
//! Configuration is for what is not secret (endpoints, user names, options): a string field
//! named for a password, a secret, a token or credentials (`api_token`, `client-secret`) is
//! refused, as those are the operator's grants; a number is not (`max_tokens` is a limit).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    String,
    Integer,
    Number,
    Boolean,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        match text {
            "string" => Some(Kind::String),
            "integer" => Some(Kind::Integer),
            "number" => Some(Kind::Number),
            "boolean" => Some(Kind::Boolean),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Boolean => "true or false",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Integer => value.is_i64() || value.is_u64(),
            Kind::Number => value.is_number(),
            Kind::Boolean => value.is_boolean(),
        }
    }

    /// `text` as a value of this kind: a string as it is, anything else parsed as JSON.
    pub fn read(self, text: &str) -> Result<Value, String> {
        let value = match self {
            Kind::String => Value::String(text.to_owned()),
            _ => serde_json::from_str(text).map_err(|_| format!("must be {}", self.name()))?,
        };
        if self.admits(&value) {
            Ok(value)
        } else {
            Err(format!("must be {}", self.name()))
        }
    }
}

/// One field of a plugin's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub required: bool,
    /// The value when the operator sets none (absent when the field has no default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The values allowed, when the schema lists them.
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
    /// `uri`: the value is an absolute http(s) URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// Whether `text` is an absolute http(s) URL with a host.
fn is_http_url(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// The fields of `schema`, or what is wrong with it (naming the field).
pub fn fields(schema: Option<&Value>) -> Result<Vec<Field>, String> {
    let Some(schema) = schema else {
        return Ok(Vec::new());
    };
    let object = schema
        .as_object()
        .ok_or("config_schema must be an object")?;
    if object.get("type").is_some_and(|t| t != "object") {
        return Err("config_schema must have `type = \"object\"`".into());
    }
    let properties = match object.get("properties") {
        None => return Ok(Vec::new()),
        Some(Value::Object(p)) => p,
        Some(_) => return Err("config_schema.properties must be a table of fields".into()),
    };
    let required: Vec<&str> = match object.get("required") {
        None => Vec::new(),
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .ok_or("config_schema.required must list field names")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("config_schema.required must list field names".into()),
    };
    for name in &required {
        if !properties.contains_key(*name) {
            return Err(format!(
                "config_schema.required names `{name}`, which is not a field"
            ));
        }
    }
    let mut fields = Vec::with_capacity(properties.len());
    for (name, property) in properties {
        let at = format!("config_schema.properties.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid_name {
            return Err(format!(
                "{at}: a field name is 1–64 lowercase letters, digits, `_` and `-`"
            ));
        }
        let kind = property
            .get("type")
            .and_then(Value::as_str)
            .and_then(Kind::parse)
            .ok_or_else(|| format!("{at}.type must be string, integer, number or boolean"))?;
        // A string named for a secret is one: `api_token`, `client-secret`. A number is not
        // (`max_tokens`, `tokens_per_day` are limits), nor a word that merely contains one.
        let secret_word = |word: &str| {
            matches!(
                word,
                "password"
                    | "passwd"
                    | "secret"
                    | "token"
                    | "apikey"
                    | "credential"
                    | "credentials"
            )
        };
        if kind == Kind::String && name.split(['_', '-']).any(secret_word) {
            return Err(format!(
                "{at}: a secret is not configuration; request it in `capabilities.secrets` and \
                 the operator grants it"
            ));
        }
        let choices = match property.get("enum") {
            None => None,
            Some(Value::Array(values)) if !values.is_empty() => {
                if let Some(bad) = values.iter().find(|v| !kind.admits(v)) {
                    return Err(format!("{at}.enum: {bad} is not {}", kind.name()));
                }
                Some(values.clone())
            }
            Some(_) => return Err(format!("{at}.enum must list the values allowed")),
        };
        let format = match property.get("format") {
            None => None,
            Some(Value::String(f)) if f == "uri" && kind == Kind::String => Some(f.clone()),
            Some(_) => return Err(format!("{at}.format can only be \"uri\", on a string")),
        };
        let default = property.get("default").cloned();
        if let Some(default) = &default {
            if !kind.admits(default) {
                return Err(format!("{at}.default must be {}", kind.name()));
            }
            if choices.as_ref().is_some_and(|c| !c.contains(default)) {
                return Err(format!("{at}.default is not one of its enum"));
            }
            if format.is_some() && !default.as_str().is_some_and(is_http_url) {
                return Err(format!("{at}.default is not an http(s) URL"));
            }
        }
        fields.push(Field {
            name: name.clone(),
            kind,
            required: required.contains(&name.as_str()),
            default,
            description: property
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            choices,
            format,
        });
    }
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(fields)
}

/// A value refused: the field, the rule it broke and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

/// What is wrong with `values` as a whole configuration of `fields`, by field name.
pub fn check(fields: &[Field], values: &Map<String, Value>) -> Vec<Refusal> {
    let mut refused = Vec::new();
    for (key, value) in values {
        let Some(field) = fields.iter().find(|f| &f.name == key) else {
            let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            refused.push(Refusal {
                field: key.clone(),
                rule: "known",
                message: if known.is_empty() {
                    "the plugin takes no configuration".into()
                } else {
                    format!(
                        "is not a field of the plugin's configuration ({})",
                        known.join(", ")
                    )
                },
            });
            continue;
        };
        if !field.kind.admits(value) {
            refused.push(Refusal {
                field: key.clone(),
                rule: "type",
                message: format!("must be {}", field.kind.name()),
            });
        } else if let Some(choices) = &field.choices
            && !choices.contains(value)
        {
            let listed: Vec<String> = choices.iter().map(Value::to_string).collect();
            refused.push(Refusal {
                field: key.clone(),
                rule: "enum",
                message: format!("must be one of {}", listed.join(", ")),
            });
        } else if field.format.is_some() && !value.as_str().is_some_and(is_http_url) {
            refused.push(Refusal {
                field: key.clone(),
                rule: "format",
                message: "must be an absolute http(s) URL, e.g. https://bi.internal:8088".into(),
            });
        }
    }
    for field in fields {
        if field.required && field.default.is_none() && !values.contains_key(&field.name) {
            refused.push(Refusal {
                field: field.name.clone(),
                rule: "required",
                message: "is required (it has no default)".into(),
            });
        }
    }
    refused.sort_by(|a, b| a.field.cmp(&b.field));
    refused
}

/// The configuration in force: each field's value as set, else its default, as JSON text.
pub fn effective(fields: &[Field], set: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|f| {
            set.get(&f.name)
                .cloned()
                .or_else(|| f.default.as_ref().map(Value::to_string))
                .map(|v| (f.name.clone(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": { "type": "string", "format": "uri", "description": "Where the backend answers." },
                "port": { "type": "integer", "default": 8088 },
                "mode": { "type": "string", "enum": ["fast", "safe"], "default": "safe" },
            },
        })
    }

    #[test]
    fn a_schema_reads_as_typed_fields() {
        let fields = fields(Some(&schema())).unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["mode", "port", "url"]);
        assert!(fields[2].required);
        assert_eq!(fields[1].kind, Kind::Integer);
        assert!(super::fields(None).unwrap().is_empty());
    }

    #[test]
    fn a_limit_named_for_tokens_is_configuration_a_string_named_for_a_secret_is_not() {
        let schema = json!({ "properties": {
            "tokens": { "type": "integer" },
            "max_tokens_per_day": { "type": "integer" },
            "token_budget": { "type": "number" },
            "tokenizer": { "type": "string" },
        } });
        assert_eq!(super::fields(Some(&schema)).unwrap().len(), 4);
        for name in ["api_token", "client-secret", "password", "db_credentials"] {
            let schema = json!({ "properties": { name: { "type": "string" } } });
            assert!(
                super::fields(Some(&schema))
                    .unwrap_err()
                    .contains("a secret is not configuration"),
                "{name}"
            );
        }
    }

    #[test]
    fn a_bad_schema_is_refused_naming_the_field() {
        for (schema, says) in [
            (
                json!({ "properties": { "n": { "type": "list" } } }),
                "properties.n.type",
            ),
            (
                json!({ "properties": { "n": { "type": "integer", "default": "x" } } }),
                "properties.n.default must be an integer",
            ),
            (
                json!({ "properties": { "api_token": { "type": "string" } } }),
                "a secret is not configuration",
            ),
            (
                json!({ "required": ["m"], "properties": {} }),
                "names `m`, which is not a field",
            ),
            (
                json!({ "properties": { "Bad": { "type": "string" } } }),
                "properties.Bad: a field name",
            ),
            (
                json!({ "properties": { "n": { "type": "integer", "format": "uri" } } }),
                "properties.n.format can only be \"uri\", on a string",
            ),
            (
                json!({ "properties": { "u": { "type": "string", "format": "uri", "default": "x" } } }),
                "properties.u.default is not an http(s) URL",
            ),
        ] {
            let err = fields(Some(&schema)).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn values_are_checked_by_type_enum_name_and_requirement() {
        let fields = fields(Some(&schema())).unwrap();
        let values = |v: Value| v.as_object().unwrap().clone();
        assert!(check(&fields, &values(json!({ "url": "http://x" }))).is_empty());
        let refused = check(
            &fields,
            &values(json!({ "port": "80", "mode": "slow", "nope": 1 })),
        );
        let rules: Vec<(&str, &str)> = refused.iter().map(|r| (r.field.as_str(), r.rule)).collect();
        assert_eq!(
            rules,
            [
                ("mode", "enum"),
                ("nope", "known"),
                ("port", "type"),
                ("url", "required")
            ]
        );
        assert_eq!(refused[2].message, "must be an integer");
        for bad in ["superset.internal:8088", "ftp://x", "/api", ""] {
            let refused = check(&fields, &values(json!({ "url": bad })));
            assert_eq!(refused.len(), 1, "{bad}");
            assert_eq!(
                (refused[0].field.as_str(), refused[0].rule),
                ("url", "format")
            );
        }
    }

    #[test]
    fn the_effective_configuration_is_what_was_set_else_the_default() {
        let fields = fields(Some(&schema())).unwrap();
        let set = BTreeMap::from([("url".to_owned(), "\"http://x\"".to_owned())]);
        let effective = effective(&fields, &set);
        assert_eq!(effective["url"], "\"http://x\"");
        assert_eq!(effective["port"], "8088");
        assert_eq!(effective["mode"], "\"safe\"");
        assert_eq!(Kind::Integer.read("12").unwrap(), json!(12));
        assert_eq!(Kind::String.read("12").unwrap(), json!("12"));
        assert!(Kind::Boolean.read("yes").is_err());
    }
}
