//! `ApiJson<T>`: the JSON body extractor of the API. Over the size limit → 413; not JSON → 415;
//! malformed JSON → 400; well-formed JSON of the wrong shape → 422 naming the field.

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::StreamExt as _;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::{AppError, FieldError};

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<Context>>()
            .map_or(256 * 1024, |ctx| ctx.config.max_body_bytes);
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|len| len > limit) {
                return Err(AppError::PayloadTooLarge { limit });
            }
            let mime = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            // A POST with neither a body nor a type (`curl -X POST …/suspend`) is read as `{}`,
            // so that what the operation needs is named (422 `reason` is required) instead of
            // the type it was not sent in.
            if content_type.is_empty() && declared.unwrap_or(0) == 0 {
                let mut body = web::BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk.map_err(|e| {
                        AppError::BadRequest(format!("reading the request body: {e}"))
                    })?;
                    body.extend_from_slice(&chunk);
                    if body.len() > limit {
                        return Err(AppError::PayloadTooLarge { limit });
                    }
                }
                if body.is_empty() {
                    return parse(b"{}").map(ApiJson).map_err(without_a_body);
                }
                return Err(AppError::UnsupportedMediaType(
                    "expected Content-Type: application/json, got `nothing`".into(),
                ));
            }
            if mime != "application/json" && !mime.ends_with("+json") {
                return Err(AppError::UnsupportedMediaType(format!(
                    "expected Content-Type: application/json, got `{}`",
                    if content_type.is_empty() {
                        "nothing"
                    } else {
                        &content_type
                    }
                )));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk
                    .map_err(|e| AppError::BadRequest(format!("reading the request body: {e}")))?;
                if body.len() + chunk.len() > limit {
                    return Err(AppError::PayloadTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(ApiJson)
        })
    }
}

/// The 422 of a request sent without a body: each missing field says how to send it.
fn without_a_body(err: AppError) -> AppError {
    match err {
        AppError::Validation(fields) => AppError::Validation(
            fields
                .into_iter()
                .map(|mut f| {
                    if f.rule == "required" {
                        f.message = format!(
                            "{} is required: the request had no body; send a JSON object such as \
                             {{\"{}\": \"…\"}} with Content-Type: application/json",
                            f.field, f.field
                        );
                    }
                    f
                })
                .collect(),
        ),
        other => other,
    }
}

/// Parses a JSON document into `T`, telling syntax errors (400) from shape errors (422). Every
/// body of the API is a JSON object: anything else (serde would read a struct from an array of
/// its fields in order) is a 422. A number with an integral value is an integer whatever its
/// notation (`2.0` is 2, as JSON Schema has it).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| AppError::BadRequest(format!("malformed JSON: {err}")))?;
    if !value.is_object() {
        return Err(AppError::Validation(vec![FieldError::new(
            "body",
            "type",
            "must be a JSON object",
        )]));
    }
    integral_numbers(&mut value);
    from_value(value)
}

/// Reads a parsed JSON document into `T`, a struct only from an object at any depth; a shape
/// error is a 422 naming the field. Every unknown field of the document is named at once (each
/// is set aside and the document read again), then the first other error, if any.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, AppError> {
    let mut value = value;
    let mut errors: Vec<FieldError> = Vec::new();
    // Bounded: each round removes one key of the document.
    for _ in 0..256 {
        let err =
            match serde_path_to_error::deserialize::<_, T>(super::strict::Strict(value.clone())) {
                Ok(read) if errors.is_empty() => return Ok(read),
                Ok(_) => break,
                Err(err) => err,
            };
        let path = err.path().to_string();
        let segments: Vec<serde_path_to_error::Segment> = err.path().iter().cloned().collect();
        let message = err.into_inner().to_string();
        // serde_path_to_error's path already ends in an unknown field's name; for a missing
        // field it is the path of the object that lacks it.
        if message.starts_with("unknown field `") {
            let message = match unknown_field_hint(&path) {
                Some(hint) => format!("{message}; {hint}"),
                None => message,
            };
            errors.push(FieldError::new(path, "unknown_field", message));
            if remove_at(&mut value, &segments) {
                continue;
            }
            break;
        }
        let (field, rule) = if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            (join_path(&path, name), "required")
        } else {
            (if path == "." { "body".to_owned() } else { path }, "type")
        };
        errors.push(FieldError::new(field, rule, message));
        break;
    }
    Err(AppError::Validation(errors))
}

/// Where to look when a runbook's shape is close to ours: a limit spelled as a field
/// (`max_agents`), or a field the registry keeps in `metadata`.
fn unknown_field_hint(path: &str) -> Option<String> {
    let name = path.rsplit('.').next().unwrap_or(path);
    if let Some(metric) = name.strip_prefix("max_") {
        return Some(format!(
            "limits are not fields: drop `max_` and set `{metric}` with PUT \
             /api/v1/tenant/{{slug}}/quotas (docs/quotas.md)"
        ));
    }
    match name {
        "environment" | "features" | "sla" | "billing" | "cost_center" | "cost_centre"
        | "labels" | "annotations" | "owner" | "team" => Some(format!(
            "keep `{name}` in the tenant's `metadata` object (docs/tenants.md \"Tenants and their lifecycle\")"
        )),
        "plan" => Some("a tenant's plan is its `tier`".to_owned()),
        "tenant_id" | "tenant_slug" => Some("a tenant is named by its `slug`".to_owned()),
        _ => None,
    }
}

/// Removes the member at `path` (an unknown field) from the document; false when the path does
/// not lead to one.
fn remove_at(value: &mut serde_json::Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        at = match (segment, at) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, serde_json::Value::Array(items)) => {
                match items.get_mut(*index) {
                    Some(next) => next,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, serde_json::Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

/// Turns every number with an integral value written as a float (`2.0`, `1e3`) into an integer.
fn integral_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
                *value = Value::from(f as i64);
            } else if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(map) => map.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

fn join_path(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}
