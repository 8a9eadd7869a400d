//! Portal pages of the connection and asset templates: the list (filtered by kind and tag), a
//! template at one version with its history and a render preview, the create and "new version"
//! forms with the API's rules and errors per field, and delete with a typed confirmation.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::StatusCode;
use actix_web::web;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::Context;
use crate::error::{AppError, FieldError};
use crate::provisioning::templates::{self, FORMATS, KINDS, TemplateInput, TemplateView};
use crate::web::error::PageResult;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, redirect_with, render_status, tera};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    kind: Option<String>,
    tag: Option<String>,
}

fn nonempty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Placeholders whose values are secrets by their name: typed into password inputs and never
/// sent back to a page.
pub fn is_secret_placeholder(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "key",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

pub async fn list(
    ctx: web::Data<Context>,
    portal: PortalSession,
    query: web::Query<ListQuery>,
) -> PageResult {
    let kind = nonempty(query.kind.as_deref());
    let tag = nonempty(query.tag.as_deref());
    let all = templates::list_latest(&ctx, None, None).await?;
    let tags: BTreeSet<&String> = all.iter().flat_map(|t| t.tags.iter()).collect();
    let shown: Vec<&TemplateView> = all
        .iter()
        .filter(|t| kind.is_none_or(|k| t.kind == k))
        .filter(|t| tag.is_none_or(|g| t.tags.iter().any(|x| x == g)))
        .collect();
    let mut context = tera::Context::new();
    context.insert("templates", &shown);
    context.insert("total", &all.len());
    context.insert("kind", kind.unwrap_or_default());
    context.insert("tag", tag.unwrap_or_default());
    context.insert("kinds", &KINDS);
    context.insert("tags", &tags);
    context.insert("nav", "templates");
    Ok(portal.page("templates/list.html", context)?)
}

/// The fields of the create and "new version" forms, as typed.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct TemplateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    body: String,
    /// Comma- or space-separated.
    #[serde(default)]
    placeholders: String,
    /// Comma- or space-separated.
    #[serde(default)]
    tags: String,
}

fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn opt(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl TemplateForm {
    fn to_input(&self, create: bool) -> TemplateInput {
        TemplateInput {
            name: if create { opt(&self.name) } else { None },
            kind: if create { opt(&self.kind) } else { None },
            format: opt(&self.format),
            description: Some(self.description.trim().to_owned()),
            // Browsers send a textarea's lines with CRLF.
            body: Some(self.body.replace("\r\n", "\n")),
            placeholders: split_list(&self.placeholders),
            tags: split_list(&self.tags),
        }
    }

    fn from_view(view: &TemplateView) -> Self {
        TemplateForm {
            name: view.name.clone(),
            kind: view.kind.clone(),
            format: view.format.clone(),
            description: view.description.clone(),
            body: view.body.clone(),
            placeholders: view.placeholders.join(", "),
            tags: view.tags.join(", "),
            ..TemplateForm::default()
        }
    }
}

/// The API's field errors as the form's: `placeholders[2]` and `tags[0]` go to their text fields
/// (naming the item), several errors of one field are joined.
fn form_errors(err: &AppError, input: &TemplateInput) -> BTreeMap<String, String> {
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for field in err.field_errors() {
        let (key, message) = match field.field.split_once('[') {
            Some((list @ ("placeholders" | "tags"), rest)) => {
                let items = if list == "tags" {
                    &input.tags
                } else {
                    &input.placeholders
                };
                let item = rest
                    .trim_end_matches(']')
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i));
                match item {
                    Some(item) => (list.to_owned(), format!("`{item}`: {}", field.message)),
                    None => (list.to_owned(), field.message.clone()),
                }
            }
            _ => (field.field.clone(), field.message.clone()),
        };
        errors.entry(key).or_default().push(message);
    }
    if let AppError::Conflict { details, .. } = err
        && details.get("field").and_then(Value::as_str) == Some("name")
    {
        errors.entry("name".into()).or_default().push(
            "is already the name of another template; save a new version of it instead".into(),
        );
    }
    errors.into_iter().map(|(k, v)| (k, v.join("; "))).collect()
}

fn form_page(
    portal: &PortalSession,
    mode: &str,
    form: &TemplateForm,
    current: Option<&TemplateView>,
    err: Option<(&AppError, &TemplateInput)>,
) -> PageResult {
    let errors = err
        .map(|(e, input)| form_errors(e, input))
        .unwrap_or_default();
    let mut context = tera::Context::new();
    context.insert("mode", mode);
    context.insert("form", form);
    context.insert("current", &current);
    context.insert("errors", &errors);
    context.insert("kinds", &KINDS);
    context.insert("formats", &FORMATS);
    context.insert("nav", "templates");
    Ok(portal.form_page(
        "templates/form.html",
        context,
        err.map(|(e, _)| e),
        !errors.is_empty(),
        None,
    )?)
}

pub async fn new_form(portal: PortalSession) -> PageResult {
    let form = TemplateForm {
        kind: "connection".into(),
        ..TemplateForm::default()
    };
    Ok(form_page(&portal, "create", &form, None, None)?)
}

pub async fn create(ctx: web::Data<Context>, form: PortalForm<TemplateForm>) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let input = form.to_input(true);
    Ok(match templates::create(&ctx, &portal.actor, &input).await {
        Ok(view) => redirect_with(
            &format!("/templates/{}", view.name),
            Flash::success(format!("Template {} created (version 1).", view.name)),
        ),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            form_page(&portal, "create", &form, None, Some((&err, &input)))?
        }
        Err(err) => return Err(err.into()),
    })
}

pub async fn edit_form(
    ctx: web::Data<Context>,
    portal: PortalSession,
    name: web::Path<String>,
) -> PageResult {
    let view = templates::get(&ctx, &name, None).await?;
    form_page(
        &portal,
        "edit",
        &TemplateForm::from_view(&view),
        Some(&view),
        None,
    )
}

pub async fn update(
    ctx: web::Data<Context>,
    name: web::Path<String>,
    form: PortalForm<TemplateForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let input = form.to_input(false);
    Ok(
        match templates::update(&ctx, &portal.actor, &name, &input).await {
            Ok((view, true)) => redirect_with(
                &format!("/templates/{}", view.name),
                Flash::success(format!(
                    "Template {} saved as version {}.",
                    view.name, view.version
                )),
            ),
            Ok((view, false)) => redirect_with(
                &format!("/templates/{}", view.name),
                Flash::success(format!(
                    "Nothing changed: version {} of {} stays the newest.",
                    view.version, view.name
                )),
            ),
            Err(err @ AppError::Validation(_)) => {
                let current = templates::get(&ctx, &name, None).await.ok();
                let mut form = form;
                form.name = name.to_string();
                if let Some(current) = &current {
                    form.kind = current.kind.clone();
                }
                form_page(
                    &portal,
                    "edit",
                    &form,
                    current.as_ref(),
                    Some((&err, &input)),
                )?
            }
            Err(err) => return Err(err.into()),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct DetailQuery {
    version: Option<i64>,
}

/// One input of the render preview.
#[derive(Debug, Serialize)]
struct PreviewInput {
    name: String,
    /// What was typed (empty for secrets: never sent back).
    value: String,
    secret: bool,
    error: Option<String>,
}

/// The render preview's outcome.
#[derive(Debug, Default, Serialize)]
struct Preview {
    rendered: Option<String>,
    fingerprint: Option<String>,
    /// Errors that belong to no single input.
    errors: Vec<String>,
}

/// A submitted preview: what was typed, the errors per placeholder, the outcome.
#[derive(Debug, Default)]
struct PreviewState {
    typed: BTreeMap<String, String>,
    by_input: BTreeMap<String, String>,
    preview: Preview,
}

async fn detail_page(
    ctx: &Context,
    portal: &PortalSession,
    name: &str,
    version: Option<i64>,
    state: Option<&PreviewState>,
    status: StatusCode,
) -> PageResult {
    let empty = PreviewState::default();
    let typed = &state.unwrap_or(&empty).typed;
    let field_errors = &state.unwrap_or(&empty).by_input;
    let preview = state.map(|s| &s.preview);
    let view = templates::get(ctx, name, version).await?;
    let history = templates::versions(ctx, name).await?;
    let inputs: Vec<PreviewInput> = view
        .placeholders
        .iter()
        .map(|p| {
            let secret = is_secret_placeholder(p);
            PreviewInput {
                name: p.clone(),
                value: if secret {
                    String::new()
                } else {
                    typed.get(p).cloned().unwrap_or_default()
                },
                secret,
                error: field_errors.get(p).cloned(),
            }
        })
        .collect();
    let mut context = tera::Context::new();
    context.insert("t", &view);
    context.insert("history", &history);
    context.insert("inputs", &inputs);
    context.insert("preview", &preview);
    context.insert("nav", "templates");
    let flash = if status == StatusCode::UNPROCESSABLE_ENTITY {
        Some(Flash::error(
            "The template did not render; see the preview below.",
        ))
    } else {
        portal.flash.clone()
    };
    Ok(render_status(
        tera(),
        "templates/detail.html",
        status,
        Some(portal),
        flash,
        &mut context,
    )?)
}

pub async fn detail(
    ctx: web::Data<Context>,
    portal: PortalSession,
    name: web::Path<String>,
    query: web::Query<DetailQuery>,
) -> PageResult {
    Ok(detail_page(&ctx, &portal, &name, query.version, None, StatusCode::OK).await?)
}

/// Renders the template with the values typed into the preview form (nothing is stored); the
/// page shows the text, or the renderer's errors next to the placeholders they concern.
pub async fn render_preview(
    ctx: web::Data<Context>,
    name: web::Path<String>,
    form: PortalForm<Vec<(String, String)>>,
) -> PageResult {
    let (portal, fields) = (form.session, form.fields);
    portal.require_admin()?;
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let version = get("version").and_then(|v| v.trim().parse::<i64>().ok());
    let typed: BTreeMap<String, String> = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("v_").map(|p| (p.to_owned(), v.clone())))
        .collect();
    // An empty input is a value not given: the renderer names it as missing.
    let values: BTreeMap<String, Value> = typed
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(
        match templates::render(&ctx, "values", &name, version, &values).await {
            Ok(rendered) => {
                let state = PreviewState {
                    typed,
                    by_input: BTreeMap::new(),
                    preview: Preview {
                        rendered: Some(rendered.text),
                        fingerprint: Some(rendered.fingerprint),
                        errors: Vec::new(),
                    },
                };
                detail_page(
                    &ctx,
                    &portal,
                    &name,
                    Some(rendered.version),
                    Some(&state),
                    StatusCode::OK,
                )
                .await?
            }
            Err(AppError::Validation(errors)) => {
                let mut by_input: BTreeMap<String, String> = BTreeMap::new();
                let mut preview = Preview::default();
                for FieldError { field, message, .. } in errors {
                    match field.strip_prefix("values.") {
                        Some(p) if typed.contains_key(p) => {
                            by_input
                                .entry(p.to_owned())
                                .and_modify(|m| {
                                    m.push_str("; ");
                                    m.push_str(&message);
                                })
                                .or_insert(message);
                        }
                        _ => preview.errors.push(format!("{field}: {message}")),
                    }
                }
                let state = PreviewState {
                    typed,
                    by_input,
                    preview,
                };
                detail_page(
                    &ctx,
                    &portal,
                    &name,
                    version,
                    Some(&state),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await?
            }
            Err(err) => return Err(err.into()),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    confirm: String,
}

/// Deletes a template once its name was typed as confirmation.
pub async fn delete(
    ctx: web::Data<Context>,
    name: web::Path<String>,
    form: PortalForm<DeleteForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    if form.confirm.trim() != name.as_str() {
        return Ok(redirect_with(
            &format!("/templates/{name}"),
            Flash::error(format!(
                "Type the template's name ({name}) to confirm deleting it; nothing was deleted."
            )),
        ));
    }
    Ok(match templates::delete(&ctx, &portal.actor, &name).await {
        Ok(()) => redirect_with(
            "/templates",
            Flash::success(format!("Template {name} and its versions were deleted.")),
        ),
        Err(err) => return Err(err.into()),
    })
}
