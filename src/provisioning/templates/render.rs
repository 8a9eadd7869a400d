//! Rendering a template through the renderer plugin: values checked, every placeholder accounted
//! for (a missing, undeclared or unexpected one is a 422 that names it), and the fingerprint of
//! what was rendered from which version.

use super::*;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::plugin_host::{RenderError, Template as WitTemplate};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What rendering produced, and the fingerprint that identifies its inputs.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: String,
    pub version: i64,
    pub text: String,
    pub tags: Vec<String>,
    /// `sha256:` of template name, version and values (values never leave the server otherwise).
    pub fingerprint: String,
}

pub(super) async fn render_raw(
    ctx: &Context,
    name: &str,
    format: &str,
    body: &str,
    placeholders: &[String],
    values: Vec<(String, String)>,
) -> AppResult<Result<String, RenderError>> {
    let renderer = ctx.config.plugins.template_renderer.as_str();
    ctx.plugins
        .render(
            renderer,
            WitTemplate {
                name: name.to_owned(),
                body: body.to_owned(),
                placeholders: placeholders.to_vec(),
                format: format.to_owned(),
            },
            values,
        )
        .await
        .map_err(|err| {
            AppError::Unavailable(format!(
                "the template renderer `{renderer}` (`plugins.template_renderer`) failed: {err}"
            ))
        })
}

/// Renders template `name` the request names (404 when there is none) with `values`, as
/// [`render`] does.
pub async fn render_named(
    ctx: &Context,
    name: &str,
    version: Option<i64>,
    values: &BTreeMap<String, Value>,
) -> AppResult<Rendered> {
    get_rows(ctx, name, version).await?;
    render(ctx, "values", name, version, values).await
}

/// Renders `template` (at `version`, default newest) with `values`. A missing, undeclared or
/// unexpected placeholder is a 422 whose field is `<field>.<placeholder>`.
pub async fn render(
    ctx: &Context,
    field: &str,
    name: &str,
    version: Option<i64>,
    values: &BTreeMap<String, Value>,
) -> AppResult<Rendered> {
    let (row, v) = get_rows(ctx, name, version)
        .await
        .map_err(|err| match err {
            AppError::NotFound { .. } => AppError::invalid(
                field
                    .rsplit_once('.')
                    .map_or(field, |(head, _)| head)
                    .to_owned()
                    + ".template_name",
                "exists",
                format!("no template named `{name}`"),
            ),
            other => other,
        })?;
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in values {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                errors.push(FieldError::new(
                    format!("{field}.{key}"),
                    "scalar",
                    "must be a string, a number or a boolean",
                ));
                continue;
            }
        };
        pairs.push((key.clone(), text));
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let placeholders = list(&v.placeholders);
    let fingerprint = fingerprint(&row.name, v.version, &pairs);
    let result = render_raw(ctx, &row.name, &row.format, &v.body, &placeholders, pairs).await?;
    let named = |names: Vec<String>, rule: &str, message: &dyn Fn(&str) -> String| {
        AppError::Validation(
            names
                .iter()
                .map(|n| FieldError::new(format!("{field}.{n}"), rule, message(n)))
                .collect(),
        )
    };
    match result {
        Ok(text) => Ok(Rendered {
            template: row.name,
            version: v.version,
            text,
            tags: list(&v.tags),
            fingerprint,
        }),
        Err(RenderError::Missing(names)) => Err(named(names, "missing", &|n| {
            format!("template `{name}` needs a value for `{n}`")
        })),
        Err(RenderError::Undeclared(names)) => Err(named(names, "undeclared", &|n| {
            format!("template `{name}` uses `{{{n}}}` without declaring it")
        })),
        Err(RenderError::Unexpected(names)) => Err(named(names, "undeclared", &|n| {
            format!("template `{name}` declares no placeholder `{n}`")
        })),
        Err(RenderError::Invalid(reason)) => Err(AppError::invalid(field, "template", reason)),
    }
}

/// `sha256:` of the template, its version and the values, in a canonical order.
pub fn fingerprint(name: &str, version: i64, values: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = values.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    hasher.update(b"tenantry-template-input\0");
    hasher.update(name.as_bytes());
    hasher.update(b"\0");
    hasher.update(version.to_string().as_bytes());
    for (k, v) in sorted {
        hasher.update(b"\0");
        hasher.update(k.as_bytes());
        hasher.update(b"=");
        hasher.update(v.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}
