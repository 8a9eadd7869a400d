//! The portal's page of platform API tokens: list, create (shown once), rotate with a grace
//! period, revoke.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::session::PortalSession;
use super::tenants::number;
use super::{Flash, error_page, redirect_with, render, tera};
use crate::auth::{self, Role};
use crate::context::Context;
use crate::error::AppError;

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> HttpResponse {
    if let Err(err) = portal.session.principal.require_platform() {
        return error_page(tera(), Some(&portal), &err);
    }
    match auth::list_platform_tokens(&ctx).await {
        Ok(tokens) => {
            let mut context = tera::Context::new();
            context.insert("tokens", &tokens);
            context.insert("nav", "tokens");
            render(
                tera(),
                "tokens.html",
                Some(&portal),
                portal.flash.clone(),
                context,
            )
            .unwrap_or_else(|err| error_page(tera(), Some(&portal), &err))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
    #[serde(default)]
    grace_minutes: String,
}

fn shown_once(
    portal: &PortalSession,
    token: &auth::NewApiToken,
    grace_minutes: Option<u32>,
) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("key", token);
    context.insert("rotated", &grace_minutes.is_some());
    context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
    context.insert("nav", "tokens");
    render(tera(), "token_created.html", Some(portal), None, context)
        .unwrap_or_else(|err| error_page(tera(), Some(portal), &err))
}

pub async fn create(
    ctx: web::Data<Context>,
    portal: PortalSession,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let result = async {
        let role = match form.role.as_str() {
            "platform-viewer" => Role::PlatformViewer,
            _ => Role::PlatformAdmin,
        };
        let days = number("expires_in_days", &form.expires_in_days)?;
        auth::create_platform_token(&ctx, &portal.actor, &form.name, role, days).await
    }
    .await;
    match result {
        Ok(token) => shown_once(&portal, &token, None),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with("/tokens", Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

pub async fn revoke(
    ctx: web::Data<Context>,
    portal: PortalSession,
    id: web::Path<String>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    match auth::revoke_platform_token(&ctx, &portal.actor, &id).await {
        Ok(info) => redirect_with(
            "/tokens",
            Flash::success(format!("The token {} is revoked.", info.name)),
        ),
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}

pub async fn rotate(
    ctx: web::Data<Context>,
    portal: PortalSession,
    id: web::Path<String>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    if let Err(page) = portal.accept_admin_form(&form.csrf) {
        return page;
    }
    let result = async {
        let grace = number("grace_minutes", &form.grace_minutes)?.unwrap_or(60);
        let token = auth::rotate_key(&ctx, &portal.actor, None, &id, grace).await?;
        Ok::<_, AppError>((token, grace))
    }
    .await;
    match result {
        Ok((token, grace)) => shown_once(&portal, &token, Some(grace)),
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with("/tokens", Flash::error(err.to_string()))
        }
        Err(err) => error_page(tera(), Some(&portal), &err),
    }
}
