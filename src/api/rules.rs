//! The rules the server checks on what a client sends, stated in the OpenAPI document: the
//! pattern, length, range or set of values of each request field and parameter, and which fields
//! require others. They are added to the document generated from the handlers, by schema and
//! property (or by operation and parameter), so that a client generated from the document sends
//! only what the server accepts.
//!
//! Rules the document cannot state — a template body's placeholders against its declarations,
//! a provision request's templates and backends, a plugin component's contents, a bundle's
//! consistency — are checked by the server and answered 422 naming the field.

use serde_json::{Value, json};

use crate::alerts::AlertKind;
use crate::provisioning::RunStatus;
use crate::roles::allowed_roles;
use crate::tenants::input::{DB_URI, ISSUER};
use crate::tenants::{TenantStatus, Tier};

/// Trimmed, not empty, no control characters.
const TEXT: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";
/// No control characters (may be empty or blank: it is then left out).
const OPTIONAL_TEXT: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
/// A tenant's slug: 3–63 lowercase letters, digits and hyphens, no hyphen at either end.
const SLUG: &str = r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$";
/// An e-mail address: one `@`, a dotted domain, no spaces.
const EMAIL: &str = r"^$|^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s.\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@\s.\x00-\x1f\x7f-\x9f]$";
/// A database schema: an identifier of at most 63 characters.
const SCHEMA_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$";
/// An OAuth scope-token (RFC 6749 §3.3), without the separators `,` and space.
const SCOPE: &str = r"^\s*[!#-+\--\[\]-~]+\s*$";
/// Scopes as one string: tokens separated by commas or spaces, `openid` among them.
const SCOPES_TEXT: &str = r"^[ ,]*([!#-+\--\[\]-~]+[ ,]+)*openid([ ,]+[!#-+\--\[\]-~]+)*[ ,]*$";
/// A template's name.
const TEMPLATE_NAME: &str = r"^[a-z0-9][a-z0-9._-]{1,62}$";
/// A template's placeholder.
const PLACEHOLDER: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$";
/// A template's tag.
const TAG: &str = r"^[a-z0-9_-]{1,40}$";
/// A host an operator grants a plugin: a DNS name or address, with an optional port or `:*`.
const GRANTABLE_HOST: &str = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|\*))?$";
/// A metric's name.
const METRIC: &str = r"^[a-z][a-z0-9_]{0,62}$";
/// An idempotency key: visible ASCII.
const IDEMPOTENCY_KEY: &str = r"^[!-~]{1,255}$";

const TIERS: &[&str] = Tier::WORDS;
const STATUSES: &[&str] = TenantStatus::WORDS;
const RUN_STATUSES: &[&str] = RunStatus::WORDS;
const TENANT_ROLES: &[&str] = allowed_roles(false);
const PLATFORM_ROLES: &[&str] = allowed_roles(true);

/// The alert kinds, and `""` (as good as absent).
fn alert_kinds() -> Vec<&'static str> {
    AlertKind::WORDS.iter().copied().chain([""]).collect()
}

fn text(max: u64) -> Value {
    json!({ "pattern": TEXT, "maxLength": max })
}

fn scopes() -> Value {
    json!({ "oneOf": [
        { "type": "string", "pattern": SCOPES_TEXT, "maxLength": 2048 },
        { "type": "array", "minItems": 1, "maxItems": 50,
          "items": { "type": "string", "pattern": SCOPE },
          "contains": { "type": "string", "pattern": r"^\s*openid\s*$" } },
    ] })
}

/// A tenant's role mapping as a request sets it: the roles of a tenant's users. (The platform's
/// own tenant maps to the platform roles; its mapping is set in the configuration.)
fn role_mapping() -> Value {
    json!({ "oneOf": [
        {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "claim": { "type": "string", "pattern": TEXT, "maxLength": 100 },
                "values": {
                    "type": "object",
                    "maxProperties": 100,
                    "propertyNames": { "minLength": 1, "maxLength": 200 },
                    "additionalProperties": { "type": "string", "enum": TENANT_ROLES },
                },
                "default_role": { "enum": [TENANT_ROLES[0], TENANT_ROLES[1], "none", null] },
            },
        },
        { "type": "null" },
    ] })
}

/// Fields that require others: `then` holds when `field` is given as a string.
fn requires(field: &str, required: &str) -> Value {
    json!({
        "if": { "properties": { field: { "type": "string" } }, "required": [field] },
        "then": { "properties": { required: { "type": "string" } }, "required": [required] },
    })
}

/// The rules of the tenant fields shared by creation, PATCH and provisioning.
fn tenant_fields() -> Value {
    json!({
        "name": text(200),
        "tier": { "enum": tiers_or_null() },
        "oauth_issuer": { "pattern": ISSUER, "maxLength": 2048 },
        "client_id": text(255),
        "client_secret": { "minLength": 1, "maxLength": 4096 },
        // `null` is as good as absent: the default scopes.
        "scopes": { "oneOf": [scopes(), { "type": "null" }] },
        "db_uri": { "pattern": DB_URI, "maxLength": 2048 },
        "default_schema": { "pattern": SCHEMA_NAME },
        "role_mapping": role_mapping(),
    })
}

fn tiers_or_null() -> Vec<Value> {
    TIERS
        .iter()
        .map(|t| json!(t))
        .chain([Value::Null])
        .collect()
}

/// (schema, property → rule): merged into the properties of the document's schemas.
// Long function: a table, a schema an entry.
fn schema_rules() -> Vec<(&'static str, Value)> {
    vec![
        (
            "UsageEvent",
            json!({
                "id": { "pattern": OPTIONAL_TEXT, "minLength": 1, "maxLength": 200 },
                "metric": { "pattern": METRIC },
                "increment": { "maximum": i64::MAX },
                "value": { "maximum": i64::MAX },
            }),
        ),
        (
            "UsageBatch",
            json!({ "events": { "minItems": 1, "maxItems": crate::quotas::report::MAX_BATCH } }),
        ),
        (
            "PolicyChoice",
            json!({ "policy": { "pattern": r"^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$" } }),
        ),
        (
            "NewWebhook",
            json!({
                "url": { "pattern": crate::alerts::webhooks::URL_PATTERN, "maxLength": 2048 },
                "events": { "items": { "enum": crate::alerts::webhooks::EVENT_TYPES } },
                "tenant": { "pattern": SLUG },
                "description": { "pattern": OPTIONAL_TEXT, "maxLength": 200 },
            }),
        ),
        (
            "CheckRequest",
            json!({ "metric": { "pattern": METRIC }, "increment": { "maximum": i64::MAX } }),
        ),
        (
            "NewTenant",
            merge(
                tenant_fields(),
                json!({
                    "slug": {
                        "pattern": SLUG,
                        "minLength": 3,
                        "maxLength": 63,
                        "not": { "enum": crate::tenants::model::RESERVED_SLUGS },
                    },
                    "trial_days": { "minimum": 0, "maximum": 365 },
                    // `null` is as good as absent: no metadata.
                    "metadata": { "type": ["object", "null"] },
                }),
            ),
        ),
        (
            "TenantPatch",
            merge(tenant_fields(), json!({ "reason": text(500) })),
        ),
        (
            "Contact",
            json!({
                "name": { "pattern": OPTIONAL_TEXT, "maxLength": 200 },
                "email": { "pattern": EMAIL, "maxLength": 254 },
                "phone": { "pattern": OPTIONAL_TEXT, "maxLength": 50 },
            }),
        ),
        ("LifecycleRequest", json!({ "reason": text(500) })),
        (
            "NewKey",
            json!({
                "name": text(100),
                "role": { "enum": [TENANT_ROLES[0], TENANT_ROLES[1], null] },
                "expires_in_days": { "minimum": 1, "maximum": crate::auth::MAX_EXPIRES_IN_DAYS },
                "rate_limit_per_minute": { "minimum": 1, "maximum": crate::auth::MAX_RATE_LIMIT_PER_MINUTE },
            }),
        ),
        (
            "NewTokenRequest",
            json!({
                "name": text(100),
                "role": { "oneOf": [{ "type": "string", "enum": PLATFORM_ROLES }, { "type": "null" }] },
                "expires_in_days": { "minimum": 1, "maximum": crate::auth::MAX_EXPIRES_IN_DAYS },
            }),
        ),
        (
            "Rotate",
            json!({ "grace_minutes": { "minimum": 0, "maximum": crate::auth::MAX_GRACE_MINUTES } }),
        ),
        (
            "EnableRequest",
            json!({ "deadline_ms": {
                "minimum": crate::plugin_registry::MIN_DEADLINE_MS,
                "maximum": crate::plugin_registry::MAX_DEADLINE_MS,
            } }),
        ),
        (
            "GrantRequest",
            json!({
                "kind": { "enum": ["host", "secret"] },
                "name": { "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]+$" },
                "value": { "minLength": 1 },
            }),
        ),
        (
            "SsoUpdate",
            json!({
                "oauth_issuer": { "pattern": ISSUER, "maxLength": 2048 },
                "client_id": text(255),
                "client_secret": { "minLength": 1, "maxLength": 4096 },
                "scopes": { "oneOf": [scopes(), { "type": "null" }] },
                "role_mapping": role_mapping(),
            }),
        ),
        (
            "ConnectionTest",
            json!({
                "oauth_issuer": { "pattern": ISSUER, "maxLength": 2048 },
                "scopes": { "oneOf": [scopes(), { "type": "null" }] },
            }),
        ),
        (
            "NewLink",
            json!({ "expires_in_hours": { "minimum": 1, "maximum": 168 } }),
        ),
        (
            "TemplateInput",
            json!({
                "name": { "pattern": TEMPLATE_NAME, "not": { "const": "new" } },
                "kind": { "enum": ["connection", "asset", null] },
                "format": { "enum": ["uri", "json", "yaml", "sql-literal", "text", null] },
                "description": { "maxLength": 500 },
                "body": { "pattern": r"\S", "maxLength": crate::provisioning::templates::MAX_BODY },
                "placeholders": { "items": { "pattern": PLACEHOLDER }, "uniqueItems": true },
                "tags": { "items": { "pattern": TAG } },
            }),
        ),
        (
            "ProvisionRequest",
            json!({
                "tier": { "enum": tiers_or_null() },
                "trial_days": { "minimum": 0, "maximum": 365 },
                "idempotency_key": { "pattern": IDEMPOTENCY_KEY },
            }),
        ),
    ]
}

/// Conditions between the fields of a schema (`allOf` of `if`/`then`), by schema.
fn conditions() -> Vec<(&'static str, Value)> {
    vec![
        (
            "NewTenant",
            json!([
                requires("client_secret", "client_id"),
                requires("client_id", "oauth_issuer")
            ]),
        ),
        (
            "GrantRequest",
            json!([
                {
                    "if": { "properties": { "kind": { "const": "secret" } } },
                    "then": { "properties": { "value": { "type": "string" } }, "required": ["value"] },
                },
                {
                    "if": { "properties": { "kind": { "const": "host" } } },
                    "then": { "properties": { "name": { "pattern": GRANTABLE_HOST } } },
                },
            ]),
        ),
    ]
}

/// (method and path, fields the operation's body must have, as strings, beyond its schema's).
fn body_requirements() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("POST /api/v1/template", &["name", "kind", "body"]),
        ("PUT /api/v1/template/{name}", &["body"]),
    ]
}

/// (method and path, parameter → rule): merged into the operations' parameters.
// Long function: a table, an operation's parameter an entry.
fn parameter_rules() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "GET /api/v1/api-keys/{prefix}",
            "prefix",
            json!({ "pattern": "^(tny_)?[a-z0-9]{8}$" }),
        ),
        (
            "GET /api/v1/usage/heaviest",
            "window_minutes",
            json!({ "minimum": 1, "maximum": 60 }),
        ),
        (
            "GET /api/v1/usage/heaviest",
            "limit",
            json!({ "minimum": 1, "maximum": 500 }),
        ),
        (
            "PUT /api/v1/quotas/policies/{tier}",
            "tier",
            json!({ "enum": TIERS }),
        ),
        (
            "GET /api/v1/tenant",
            "status",
            json!({ "enum": STATUSES.iter().copied().chain([""]).collect::<Vec<_>>() }),
        ),
        (
            "GET /api/v1/tenant",
            "tier",
            json!({ "enum": TIERS.iter().copied().chain([""]).collect::<Vec<_>>() }),
        ),
        (
            "GET /api/v1/tenant",
            "limit",
            json!({ "minimum": 1, "maximum": 200 }),
        ),
        (
            "GET /api/v1/tenant",
            "q",
            json!({ "pattern": OPTIONAL_TEXT, "maxLength": 200 }),
        ),
        (
            "GET /api/v1/tenant",
            "cursor",
            json!({ "pattern": OPTIONAL_TEXT, "maxLength": 200 }),
        ),
        (
            "GET /api/v1/alerts",
            "status",
            json!({ "enum": ["open", "resolved", "all", ""] }),
        ),
        (
            "GET /api/v1/alerts",
            "severity",
            json!({ "enum": ["warning", "critical", "blocked", ""] }),
        ),
        (
            "GET /api/v1/alerts",
            "kind",
            json!({ "enum": alert_kinds() }),
        ),
        (
            "GET /api/v1/alerts",
            "limit",
            json!({ "minimum": 1, "maximum": 500 }),
        ),
        (
            "GET /api/v1/tenant/{slug}/alerts",
            "status",
            json!({ "enum": ["open", "resolved", "all", ""] }),
        ),
        (
            "GET /api/v1/tenant/{slug}/alerts",
            "severity",
            json!({ "enum": ["warning", "critical", "blocked", ""] }),
        ),
        (
            "GET /api/v1/tenant/{slug}/alerts",
            "kind",
            json!({ "enum": alert_kinds() }),
        ),
        (
            "GET /api/v1/tenant/{slug}/alerts",
            "limit",
            json!({ "minimum": 1, "maximum": 500 }),
        ),
        (
            "GET /api/v1/webhooks/{id}/deliveries",
            "limit",
            json!({ "minimum": 1, "maximum": 500 }),
        ),
        (
            "GET /api/v1/provisioning",
            "status",
            json!({ "enum": RUN_STATUSES.iter().copied().chain([""]).collect::<Vec<_>>() }),
        ),
        (
            "DELETE /api/v1/tenant/{slug}",
            "reason",
            json!({ "pattern": TEXT, "maxLength": 500 }),
        ),
        (
            "GET /api/v1/template",
            "kind",
            json!({ "enum": ["connection", "asset", ""] }),
        ),
        (
            "DELETE /api/v1/plugin/{name}/grants/{kind}/{capability}",
            "kind",
            json!({ "enum": ["host", "secret"] }),
        ),
    ]
}

/// `a` with `b`'s keys added (objects merged key by key, one level).
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Adds `rule`'s keywords to `schema`: a `oneOf` (a nullable field) gets the string or
/// number keywords on its non-null member, anything else on itself.
fn apply(schema: &mut Value, rule: &Value) {
    let Some(rule) = rule.as_object() else { return };
    if rule.contains_key("oneOf") {
        // A replacement of the whole schema (a field of several shapes).
        let description = schema.get("description").cloned();
        *schema = Value::Object(rule.clone());
        if let Some(d) = description {
            schema["description"] = d;
        }
        return;
    }
    if let Some(members) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        for member in members.iter_mut() {
            if member.get("type") != Some(&json!("null")) {
                apply(member, &Value::Object(rule.clone()));
            }
        }
        return;
    }
    if let Some(object) = schema.as_object_mut() {
        for (key, value) in rule {
            object.insert(key.clone(), value.clone());
        }
    }
}

/// The JSON pointer of operation `METHOD /path` in the document.
fn operation_pointer(operation: &str) -> String {
    let (method, path) = operation.split_once(' ').expect("METHOD /path");
    format!(
        "/paths/{}/{}",
        path.replace('~', "~0").replace('/', "~1"),
        method.to_ascii_lowercase()
    )
}

/// Adds the rules to the document (as JSON).
pub fn state(doc: &mut Value) {
    for (schema, rules) in schema_rules() {
        let Some(properties) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties"))
            .and_then(Value::as_object_mut)
        else {
            panic!("the document has no schema `{schema}` with properties");
        };
        for (property, rule) in rules.as_object().expect("rules are objects") {
            let Some(target) = properties.get_mut(property) else {
                panic!("schema `{schema}` has no property `{property}`");
            };
            apply(target, rule);
        }
    }
    for (schema, conditions) in conditions() {
        doc["components"]["schemas"][schema]["allOf"] = conditions;
    }
    for (operation, fields) in body_requirements() {
        let pointer = format!(
            "{}/requestBody/content/application~1json/schema",
            operation_pointer(operation)
        );
        let Some(schema) = doc.pointer_mut(&pointer) else {
            panic!("{operation} has no JSON body");
        };
        let strings: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| ((*f).to_owned(), json!({ "type": "string" })))
            .collect();
        *schema =
            json!({ "allOf": [schema.clone(), { "required": fields, "properties": strings }] });
    }
    for operation in ["POST /api/v1/plugin", "POST /api/v1/plugin/check"] {
        let pointer = format!(
            "{}/requestBody/content/application~1wasm/schema",
            operation_pointer(operation)
        );
        let Some(schema) = doc.pointer_mut(&pointer) else {
            panic!("{operation} has no component body");
        };
        // The component's bytes, as they are.
        *schema = json!({ "type": "string", "format": "binary" });
    }
    optional_empty_bodies(doc);
    for (operation, parameter, rule) in parameter_rules() {
        let pointer = format!("{}/parameters", operation_pointer(operation));
        let Some(parameters) = doc.pointer_mut(&pointer).and_then(Value::as_array_mut) else {
            panic!("no parameters for {operation}");
        };
        let Some(target) = parameters
            .iter_mut()
            .find(|p| p["name"] == parameter)
            .map(|p| &mut p["schema"])
        else {
            panic!("{operation} has no parameter `{parameter}`");
        };
        apply(target, &rule);
    }
}

/// A request without a body is read as `{}` (`http::body`): an operation whose JSON body has no
/// required field takes no body at all, and the document says so.
fn optional_empty_bodies(doc: &mut Value) {
    let schemas = doc["components"]["schemas"].clone();
    let required_of = |schema: &Value| -> bool {
        let resolved = match schema["$ref"].as_str() {
            Some(r) => schemas
                .get(r.trim_start_matches("#/components/schemas/"))
                .cloned()
                .unwrap_or(Value::Null),
            None => schema.clone(),
        };
        let direct = resolved["required"]
            .as_array()
            .is_some_and(|r| !r.is_empty());
        let in_all_of = resolved["allOf"].as_array().is_some_and(|parts| {
            parts
                .iter()
                .any(|p| p["required"].as_array().is_some_and(|r| !r.is_empty()))
        });
        direct || in_all_of || resolved["type"] != "object"
    };
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for operation in operations.values_mut() {
            let body = &mut operation["requestBody"];
            let schema = &body["content"]["application/json"]["schema"];
            if schema.is_object() && !required_of(schema) {
                body["required"] = json!(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rule_names_a_field_of_the_document() {
        // `state` panics on a schema, property, operation or parameter the document lacks.
        let doc = super::super::openapi_document();
        assert!(
            doc["components"]["schemas"]["NewTenant"]["properties"]["slug"]["pattern"].is_string()
        );
    }
}
