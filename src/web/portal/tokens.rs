//! The portal's page of platform API tokens: list, create (shown once), rotate with a grace
//! period, revoke.

use actix_web::web;
use serde::Deserialize;

use crate::auth::{self, Role};
use crate::context::Context;
use crate::error::AppError;
use crate::web::error::PageResult;
use crate::web::keys::number;
use crate::web::portal::session::{PortalForm, PortalSession};
use crate::web::{Flash, redirect_with, render, tera};

pub async fn list(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    if let Err(err) = portal.session.principal.require_platform() {
        return Err(err.into());
    }
    Ok(match auth::list_platform_tokens(&ctx).await {
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
            )?
        }
        Err(err) => return Err(err.into()),
    })
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
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
) -> PageResult {
    let mut context = tera::Context::new();
    context.insert("key", token);
    context.insert("rotated", &grace_minutes.is_some());
    context.insert("grace_minutes", &grace_minutes.unwrap_or_default());
    context.insert("nav", "tokens");
    Ok(render(
        tera(),
        "token_created.html",
        Some(portal),
        None,
        context,
    )?)
}

pub async fn create(ctx: web::Data<Context>, form: PortalForm<TokenForm>) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let role = match form.role.as_str() {
            "platform-viewer" => Role::PlatformViewer,
            _ => Role::PlatformAdmin,
        };
        let days = number("expires_in_days", &form.expires_in_days)?;
        auth::create_platform_token(&ctx, &portal.actor, &form.name, role, days).await
    }
    .await;
    Ok(match result {
        Ok(token) => shown_once(&portal, &token, None)?,
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with("/tokens", Flash::error(err.to_string()))
        }
        Err(err) => return Err(err.into()),
    })
}

pub async fn revoke(
    ctx: web::Data<Context>,
    id: web::Path<String>,
    form: PortalForm<TokenForm>,
) -> PageResult {
    let (portal, _form) = (form.session, form.fields);
    portal.require_admin()?;
    Ok(
        match auth::revoke_platform_token(&ctx, &portal.actor, &id).await {
            Ok(info) => redirect_with(
                "/tokens",
                Flash::success(format!("The token {} is revoked.", info.name)),
            ),
            Err(err) => return Err(err.into()),
        },
    )
}

pub async fn rotate(
    ctx: web::Data<Context>,
    id: web::Path<String>,
    form: PortalForm<TokenForm>,
) -> PageResult {
    let (portal, form) = (form.session, form.fields);
    portal.require_admin()?;
    let result = async {
        let grace = number("grace_minutes", &form.grace_minutes)?.unwrap_or(60);
        let token = auth::rotate_key(&ctx, &portal.actor, None, &id, grace).await?;
        Ok::<_, AppError>((token, grace))
    }
    .await;
    Ok(match result {
        Ok((token, grace)) => shown_once(&portal, &token, Some(grace))?,
        Err(err @ (AppError::Validation(_) | AppError::Conflict { .. })) => {
            redirect_with("/tokens", Flash::error(err.to_string()))
        }
        Err(err) => return Err(err.into()),
    })
}
