//! The portal's import of a tenant: a bundle uploaded as a file (the archive a tenant's page
//! downloads, or the JSON of earlier versions) or pasted (JSON). An archive can be tried first
//! (`dry_run`: the page shows what would be created); an import that is not whole is taken back
//! and the page says why.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::bundles::{self, ImportOutcome};
use crate::context::Context;
use crate::error::{AppError, FieldError};
use crate::tenants;
use crate::web::error::{PageError, PageResult};
use crate::web::form::check_csrf;
use crate::web::portal::session::PortalSession;
use crate::web::{Flash, redirect_with, render_status, tera};

/// What the import form sends.
#[derive(Debug, Default)]
struct ImportFields {
    csrf: String,
    bundle: Vec<u8>,
    dry_run: bool,
}

/// The form sent URL-encoded (a pasted bundle).
#[derive(Debug, Default, Deserialize)]
struct PastedForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    bundle: String,
    #[serde(default)]
    dry_run: Option<String>,
}

fn too_large() -> AppError {
    AppError::Validation(vec![FieldError::new(
        "bundle",
        "size",
        format!("is larger than {} MiB", bundles::MAX_BYTES / (1024 * 1024)),
    )])
}

fn unreadable(e: impl std::fmt::Display) -> AppError {
    AppError::Validation(vec![FieldError::new(
        "bundle",
        "body",
        format!("could not be read: {e}"),
    )])
}

/// Reads the form, multipart (a file) or URL-encoded (pasted), within the size of a bundle.
async fn read_fields(req: &HttpRequest, payload: web::Payload) -> Result<ImportFields, AppError> {
    let multipart = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut fields = ImportFields::default();
    if multipart {
        let mut form = Multipart::new(req.headers(), payload);
        let mut pasted = Vec::new();
        while let Some(field) = form.next().await {
            let mut field = field.map_err(unreadable)?;
            let name = field.name().unwrap_or_default().to_owned();
            let mut value = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(unreadable)?;
                if value.len() + chunk.len() > bundles::MAX_BYTES {
                    return Err(too_large());
                }
                value.extend_from_slice(&chunk);
            }
            match name.as_str() {
                "csrf" => fields.csrf = String::from_utf8_lossy(&value).into_owned(),
                "file" => fields.bundle = value,
                "bundle" => pasted = value,
                "dry_run" => fields.dry_run = !value.is_empty(),
                _ => {}
            }
        }
        if fields.bundle.is_empty() {
            fields.bundle = pasted;
        }
        return Ok(fields);
    }
    let mut body = Vec::new();
    let mut payload = payload;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(unreadable)?;
        // A pasted bundle is URL-encoded: up to three bytes for one.
        if body.len() + chunk.len() > 3 * bundles::MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let form: PastedForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| AppError::BadRequest(format!("the form is malformed: {e}")))?;
    fields.csrf = form.csrf;
    fields.bundle = form.bundle.into_bytes();
    fields.dry_run = form.dry_run.is_some_and(|v| !v.is_empty());
    Ok(fields)
}

fn import_page(
    portal: &PortalSession,
    errors: &[FieldError],
    outcome: Option<&ImportOutcome>,
    status: StatusCode,
) -> PageResult {
    let mut context = tera::Context::new();
    context.insert("errors", errors);
    context.insert("outcome", &outcome);
    context.insert("nav", "tenants");
    let flash = (!errors.is_empty()).then(|| Flash::error("The bundle was not imported."));
    Ok(render_status(
        tera(),
        "tenants/import.html",
        status,
        Some(portal),
        flash,
        &mut context,
    )?)
}

pub async fn import_form(portal: PortalSession) -> PageResult {
    import_page(&portal, &[], None, StatusCode::OK)
}

/// Why an import was taken back, as the page lists it.
fn not_whole(outcome: &ImportOutcome) -> Vec<FieldError> {
    let mut errors: Vec<FieldError> = outcome
        .backends
        .iter()
        .filter_map(|b| {
            b.error
                .as_ref()
                .map(|e| FieldError::new(format!("backends/{}", b.plugin), "import", e.clone()))
        })
        .collect();
    errors.extend(
        outcome
            .differences
            .iter()
            .map(|d| FieldError::new("bundle", "difference", d.clone())),
    );
    let back = match outcome.rolled_back_by.as_ref().and_then(|b| b.run.as_ref()) {
        Some(run) => format!(
            "the import was taken back: the registry holds nothing of it, and run {run} undid its backends"
        ),
        None => "the import was taken back: the registry holds nothing of it".into(),
    };
    errors.push(FieldError::new("bundle", "rolled_back", back));
    errors
}

/// Restores a tenant from an uploaded or pasted bundle.
pub async fn import(
    ctx: web::Data<Context>,
    req: HttpRequest,
    portal: PortalSession,
    payload: web::Payload,
) -> PageResult {
    portal.require_admin()?;
    let fields = match read_fields(&req, payload).await {
        Ok(fields) => fields,
        Err(AppError::Validation(errors)) => {
            return import_page(&portal, &errors, None, StatusCode::UNPROCESSABLE_ENTITY);
        }
        Err(err) => return Err(PageError(err)),
    };
    check_csrf(&portal, &fields.csrf)?;
    let text = String::from_utf8_lossy(&fields.bundle);
    if text.trim_start().starts_with('{') || fields.bundle.is_empty() {
        return import_json(&ctx, &portal, &fields.bundle).await;
    }
    let result = match bundles::Bundle::from_tar(&fields.bundle) {
        Ok(bundle) => bundles::import(&ctx, &portal.actor, &bundle, fields.dry_run).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(outcome) if outcome.dry_run => import_page(&portal, &[], Some(&outcome), StatusCode::OK),
        Ok(outcome) if outcome.ok => Ok(redirect_with(
            &format!("/tenants/{}", outcome.plan.tenant),
            Flash::success(format!(
                "Tenant {} imported ({}): every backend restored, and equal to its bundle.",
                outcome.plan.tenant, outcome.plan.status
            )),
        )),
        Ok(outcome) => import_page(
            &portal,
            &not_whole(&outcome),
            Some(&outcome),
            StatusCode::BAD_GATEWAY,
        ),
        Err(err) => refused(&portal, err),
    }
}

/// A refused import: the page again, saying why (nothing was written).
fn refused(portal: &PortalSession, err: AppError) -> PageResult {
    match err {
        AppError::Validation(errors) => {
            import_page(portal, &errors, None, StatusCode::UNPROCESSABLE_ENTITY)
        }
        err @ AppError::Conflict { .. } => import_page(
            portal,
            &[FieldError::new("bundle", "conflict", err.to_string())],
            None,
            StatusCode::CONFLICT,
        ),
        err => Err(PageError(err)),
    }
}

/// The JSON bundle of earlier versions (the registry record and its status history).
async fn import_json(ctx: &Context, portal: &PortalSession, bytes: &[u8]) -> PageResult {
    let result = match crate::http::body::parse::<tenants::record::TenantBundle>(bytes) {
        Ok(bundle) => tenants::record::import(ctx, &portal.actor, &bundle).await,
        Err(AppError::BadRequest(message)) => Err(AppError::invalid("bundle", "json", message)),
        Err(err) => Err(err),
    };
    match result {
        Ok(tenant) => Ok(redirect_with(
            &format!("/tenants/{}", tenant.slug),
            Flash::success(format!(
                "Tenant {} restored ({}): {}.",
                tenant.slug,
                tenant.status,
                tenants::record::RECORD_ONLY
            )),
        )),
        Err(err) => refused(portal, err),
    }
}
