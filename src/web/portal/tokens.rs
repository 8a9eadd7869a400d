//! The portal's page of platform API tokens: list, create (shown once), rotate with a grace
//! period, revoke.

use actix_web::web;

use crate::auth::{self, Role};
use crate::context::Context;
use crate::error::AppError;
use crate::web::error::PageResult;
use crate::web::keys::KeyForm;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, back_or_error, redirect_with};

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    portal.session.principal.require_platform()?;
    let tokens = auth::list_platform_tokens(&ctx).await?;
    let mut context = tera::Context::new();
    context.insert("tokens", &tokens);
    context.insert("nav", "tokens");
    Ok(portal.page("tokens.html", context)?)
}

pub async fn create(ctx: web::Data<Context>, form: PortalForm<KeyForm>) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let role = match form.role() {
            "platform-viewer" => Role::PlatformViewer,
            _ => Role::PlatformAdmin,
        };
        let days = form.expires_in_days()?;
        auth::create_platform_token(&ctx, &portal.actor, form.name(), role, days).await
    }
    .await;
    match result {
        Ok(token) => shown_once(&portal, &token, None),
        Err(err) => back_or_error("/tokens", err),
    }
}

pub async fn revoke(
    ctx: web::Data<Context>,
    id: web::Path<String>,
    form: PortalForm,
) -> PageResult {
    form.session.require_admin()?;
    let info = auth::revoke_platform_token(&ctx, &form.session.actor, &id).await?;
    Ok(redirect_with(
        "/tokens",
        Flash::success(format!("The token {} is revoked.", info.name)),
    ))
}

pub async fn rotate(
    ctx: web::Data<Context>,
    id: web::Path<String>,
    form: PortalForm<KeyForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let grace = form.grace()?;
        let token = auth::rotate_key(&ctx, &portal.actor, None, &id, grace).await?;
        Ok::<_, AppError>((token, grace))
    }
    .await;
    match result {
        Ok((token, grace)) => shown_once(&portal, &token, Some(grace)),
        Err(err) => back_or_error("/tokens", err),
    }
}

fn shown_once(
    portal: &PortalSession,
    token: &auth::NewApiToken,
    grace_minutes: Option<u32>,
) -> PageResult {
    let mut context = tera::Context::new();
    context.insert("key", token);
    context.insert("rotated", &grace_minutes.is_some());
    context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
    context.insert("nav", "tokens");
    Ok(portal.page("token_created.html", context)?)
}
