//! Connection and asset templates: versioned text with declared `{placeholder}` slots, rendered by
//! the renderer plugin with each value escaped for the template's format.

mod render;

use render::render_raw;
pub use render::{Rendered, fingerprint, render, render_named};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::plugin_host::RenderError;
use crate::store::models::{TemplateRow, TemplateVersionRow};
use crate::store::{self, provisioning as sql};
use crate::transaction;

/// Longest template body, in bytes.
pub const MAX_BODY: usize = 256 * 1024;

pub const KINDS: [&str; 2] = ["connection", "asset"];
pub const FORMATS: [&str; 5] = ["uri", "json", "yaml", "sql-literal", "text"];

/// A new template, or (for `PUT`) the next version of one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// 2–63 lowercase letters, digits, `-`, `_` or `.`; starts with a letter or digit.
    /// Ignored on `PUT` (the path names the template).
    #[serde(default)]
    pub name: Option<String>,
    /// `connection` (a URI or connection string) or `asset` (a bundle of datasets, dashboards,
    /// DAG definitions…). Cannot change between versions.
    #[serde(default)]
    pub kind: Option<String>,
    /// How values are escaped: `uri`, `json`, `yaml`, `sql-literal`, `text`. Default: `uri` for
    /// connections, `text` for assets.
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The text, with `{placeholder}` slots (`{{` and `}}` for literal braces).
    #[serde(default)]
    pub body: Option<String>,
    /// Every placeholder the body may use.
    #[serde(default)]
    pub placeholders: Vec<String>,
    /// Tags that select asset templates at provisioning (`default`, `enterprise`…).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A template at one version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateView {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    /// The version shown.
    pub version: i64,
    /// The newest version.
    pub latest_version: i64,
    pub body: String,
    pub placeholders: Vec<String>,
    pub tags: Vec<String>,
    pub created_by: String,
    /// When this version was made.
    pub created_at: String,
    pub updated_at: String,
}

/// One version in a template's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionSummary {
    pub version: i64,
    pub placeholders: Vec<String>,
    pub tags: Vec<String>,
    pub created_by: String,
    pub created_at: String,
}

fn view(t: &TemplateRow, v: &TemplateVersionRow) -> TemplateView {
    TemplateView {
        name: t.name.clone(),
        kind: t.kind.clone(),
        format: t.format.clone(),
        description: t.description.clone(),
        version: v.version,
        latest_version: t.latest_version,
        body: v.body.clone(),
        placeholders: list(&v.placeholders),
        tags: list(&v.tags),
        created_by: v.created_by.clone(),
        created_at: clock::rfc3339(v.created_at),
        updated_at: clock::rfc3339(t.updated_at),
    }
}

fn list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = (2..=63).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if name == "new" {
        return Err(FieldError::new(
            "name",
            "reserved",
            "`new` is reserved (the portal's form for a new template)",
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "format",
            "must be 2 to 63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit",
        ))
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validated fields of a version.
struct ValidVersion {
    format: String,
    description: String,
    body: String,
    placeholders: Vec<String>,
    tags: Vec<String>,
}

fn validate(
    input: &TemplateInput,
    kind: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ValidVersion> {
    let format = input
        .format
        .clone()
        .unwrap_or_else(|| if kind == "connection" { "uri" } else { "text" }.to_owned());
    if !FORMATS.contains(&format.as_str()) {
        errors.push(FieldError::new(
            "format",
            "one_of",
            format!("must be one of {}", FORMATS.join(", ")),
        ));
    }
    let body = match &input.body {
        None => {
            errors.push(FieldError::new("body", "required", "is required"));
            String::new()
        }
        Some(b) if b.trim().is_empty() => {
            errors.push(FieldError::new("body", "required", "must not be empty"));
            String::new()
        }
        Some(b) if b.len() > MAX_BODY => {
            errors.push(FieldError::new(
                "body",
                "max_length",
                format!("must be at most {MAX_BODY} bytes"),
            ));
            String::new()
        }
        Some(b) => b.clone(),
    };
    let mut placeholders = Vec::new();
    for (i, p) in input.placeholders.iter().enumerate() {
        if !is_identifier(p) {
            errors.push(FieldError::new(
                format!("placeholders[{i}]"),
                "identifier",
                "must be a name of letters, digits and `_` (not starting with a digit), at most 64",
            ));
        } else if placeholders.contains(p) {
            errors.push(FieldError::new(
                format!("placeholders[{i}]"),
                "unique",
                format!("`{p}` is declared twice"),
            ));
        } else {
            placeholders.push(p.clone());
        }
    }
    let mut tags = Vec::new();
    for (i, t) in input.tags.iter().enumerate() {
        if t.is_empty()
            || t.len() > 40
            || !t
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            errors.push(FieldError::new(
                format!("tags[{i}]"),
                "format",
                "must be 1 to 40 lowercase letters, digits, `-` or `_`",
            ));
        } else if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let description = input.description.clone().unwrap_or_default();
    if description.chars().count() > 500 {
        errors.push(FieldError::new(
            "description",
            "max_length",
            "must be at most 500 characters",
        ));
    }
    Some(ValidVersion {
        format,
        description,
        body,
        placeholders,
        tags,
    })
}

/// Checks the body's slots against the declared placeholders with the renderer itself (every
/// declared placeholder filled with a dummy value): undeclared slots and malformed bodies are
/// refused when the template is saved, not when a tenant is provisioned.
async fn check_body(ctx: &Context, name: &str, v: &ValidVersion) -> AppResult<()> {
    let values = v
        .placeholders
        .iter()
        .map(|p| (p.clone(), "x".to_owned()))
        .collect();
    match render_raw(ctx, name, &v.format, &v.body, &v.placeholders, values).await? {
        Ok(_) => Ok(()),
        Err(RenderError::Undeclared(names)) => Err(AppError::Validation(
            names
                .iter()
                .map(|n| {
                    FieldError::new(
                        "body",
                        "undeclared_placeholder",
                        format!("uses `{{{n}}}`, which is not in `placeholders`"),
                    )
                })
                .collect(),
        )),
        Err(RenderError::Invalid(reason)) => Err(AppError::invalid("body", "syntax", reason)),
        Err(other) => Err(AppError::internal(anyhow::anyhow!(
            "renderer refused a complete set of values: {other:?}"
        ))),
    }
}

pub async fn create(
    ctx: &Context,
    actor: &Actor,
    input: &TemplateInput,
) -> AppResult<TemplateView> {
    let mut errors = Vec::new();
    let name = match &input.name {
        None => {
            errors.push(FieldError::new("name", "required", "is required"));
            String::new()
        }
        Some(n) => {
            if let Err(e) = check_name(n) {
                errors.push(e);
            }
            n.clone()
        }
    };
    let kind = input.kind.clone().unwrap_or_default();
    if !KINDS.contains(&kind.as_str()) {
        errors.push(FieldError::new(
            "kind",
            if input.kind.is_none() {
                "required"
            } else {
                "one_of"
            },
            "must be `connection` or `asset`",
        ));
    }
    let valid = validate(input, &kind, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let valid = valid.expect("validated");
    check_body(ctx, &name, &valid).await?;
    let now = clock::now();
    let row = TemplateRow {
        name: name.clone(),
        kind,
        format: valid.format.clone(),
        description: valid.description.clone(),
        latest_version: 1,
        created_by: actor.name.clone(),
        created_at: now,
        updated_at: now,
    };
    let version = version_row(&name, 1, &valid, actor, now);
    transaction!(ctx.db, |tx| {
        sql::insert_template(tx, &row).await.map_err(|err| {
            store::unique_violation(err, || {
                AppError::conflict(
                    "template_exists",
                    format!("a template named `{name}` already exists; PUT a new version"),
                    json!({ "field": "name" }),
                )
            })
        })?;
        sql::insert_template_version(tx, &version).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "template.create",
                json!({ "template": name, "kind": row.kind, "version": 1, "tags": valid.tags }),
            ),
        )
        .await?;
        Ok(())
    })?;
    Ok(view(&row, &version))
}

fn version_row(
    name: &str,
    version: i64,
    valid: &ValidVersion,
    actor: &Actor,
    now: chrono::NaiveDateTime,
) -> TemplateVersionRow {
    TemplateVersionRow {
        template: name.to_owned(),
        version,
        body: valid.body.clone(),
        placeholders: serde_json::to_string(&valid.placeholders).expect("strings"),
        tags: serde_json::to_string(&valid.tags).expect("strings"),
        created_by: actor.name.clone(),
        created_at: now,
    }
}

/// Saves the next version of a template; returns it and whether anything changed (an identical
/// body, placeholder list, tags, format and description make no new version).
pub async fn update(
    ctx: &Context,
    actor: &Actor,
    name: &str,
    input: &TemplateInput,
) -> AppResult<(TemplateView, bool)> {
    let (current, latest) = get_rows(ctx, name, None).await?;
    let mut errors = Vec::new();
    if let Some(kind) = &input.kind
        && kind != &current.kind
    {
        errors.push(FieldError::new(
            "kind",
            "immutable",
            format!(
                "is `{}` and cannot change; create another template",
                current.kind
            ),
        ));
    }
    if let Some(n) = &input.name
        && n != name
    {
        errors.push(FieldError::new(
            "name",
            "immutable",
            "cannot change; create another template",
        ));
    }
    let mut input = input.clone();
    if input.format.is_none() {
        input.format = Some(current.format.clone());
    }
    if input.description.is_none() {
        input.description = Some(current.description.clone());
    }
    let valid = validate(&input, &current.kind, &mut errors);
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let valid = valid.expect("validated");
    let unchanged = valid.body == latest.body
        && valid.placeholders == list(&latest.placeholders)
        && valid.tags == list(&latest.tags)
        && valid.format == current.format
        && valid.description == current.description;
    if unchanged {
        return Ok((view(&current, &latest), false));
    }
    check_body(ctx, name, &valid).await?;
    let now = clock::now();
    let (row, version) = transaction!(ctx.db, |tx| {
        // Re-read inside the transaction: two concurrent edits make two versions, never one lost.
        let mut row = sql::find_template(tx, name)
            .await?
            .ok_or_else(|| AppError::not_found("template", name))?;
        row.latest_version += 1;
        row.format = valid.format.clone();
        row.description = valid.description.clone();
        row.updated_at = now;
        let version = version_row(name, row.latest_version, &valid, actor, now);
        sql::update_template(tx, &row).await?;
        sql::insert_template_version(tx, &version).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "template.update",
                json!({ "template": name, "version": row.latest_version, "tags": valid.tags }),
            ),
        )
        .await?;
        Ok((row, version))
    })?;
    Ok((view(&row, &version), true))
}

async fn get_rows(
    ctx: &Context,
    name: &str,
    version: Option<i64>,
) -> AppResult<(TemplateRow, TemplateVersionRow)> {
    let mut conn = ctx.db.conn().await?;
    let row = sql::find_template(&mut conn, name)
        .await?
        .ok_or_else(|| AppError::not_found("template", name))?;
    let wanted = version.unwrap_or(row.latest_version);
    let v = sql::template_version(&mut conn, name, wanted)
        .await?
        .ok_or_else(|| AppError::not_found("template version", format!("{name}@{wanted}")))?;
    Ok((row, v))
}

/// A template at `version` (default: the newest).
pub async fn get(ctx: &Context, name: &str, version: Option<i64>) -> AppResult<TemplateView> {
    let (row, v) = get_rows(ctx, name, version).await?;
    Ok(view(&row, &v))
}

pub async fn versions(ctx: &Context, name: &str) -> AppResult<Vec<VersionSummary>> {
    let mut conn = ctx.db.conn().await?;
    if sql::find_template(&mut conn, name).await?.is_none() {
        return Err(AppError::not_found("template", name));
    }
    Ok(sql::template_versions(&mut conn, name)
        .await?
        .into_iter()
        .map(|v| VersionSummary {
            version: v.version,
            placeholders: list(&v.placeholders),
            tags: list(&v.tags),
            created_by: v.created_by,
            created_at: clock::rfc3339(v.created_at),
        })
        .collect())
}

/// Every template at its newest version, optionally only of `kind` and carrying `tag`.
pub async fn list_latest(
    ctx: &Context,
    kind: Option<&str>,
    tag: Option<&str>,
) -> AppResult<Vec<TemplateView>> {
    if let Some(kind) = kind
        && !kind.is_empty()
        && !KINDS.contains(&kind)
    {
        return Err(AppError::invalid(
            "kind",
            "one_of",
            format!("must be one of {}", KINDS.join(", ")),
        ));
    }
    let mut conn = ctx.db.conn().await?;
    let rows = sql::list_templates(&mut conn).await?;
    let versions: BTreeMap<String, TemplateVersionRow> = sql::all_latest_versions(&mut conn)
        .await?
        .into_iter()
        .map(|v| (v.template.clone(), v))
        .collect();
    Ok(rows
        .iter()
        .filter_map(|t| versions.get(&t.name).map(|v| view(t, v)))
        .filter(|t| kind.is_none_or(|k| k.is_empty() || t.kind == k))
        .filter(|t| tag.is_none_or(|g| t.tags.iter().any(|x| x == g)))
        .collect())
}

pub async fn delete(ctx: &Context, actor: &Actor, name: &str) -> AppResult<()> {
    transaction!(ctx.db, |tx| {
        if !sql::delete_template(tx, name).await? {
            return Err(AppError::not_found("template", name));
        }
        audit::record(
            tx,
            actor,
            AuditEvent::platform("template.delete", json!({ "template": name })),
        )
        .await?;
        Ok(())
    })
}

/// The newest version of every asset template carrying any of `tags`.
pub async fn assets_tagged(ctx: &Context, tags: &[String]) -> AppResult<Vec<TemplateView>> {
    Ok(list_latest(ctx, Some("asset"), None)
        .await?
        .into_iter()
        .filter(|t| t.tags.iter().any(|tag| tags.contains(tag)))
        .collect())
}
