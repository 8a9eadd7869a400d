//! The platform's own `admin` tenant: created at start from configuration and kept in line with
//! it; platform administrators log in through its identity provider.

use super::input::{self};
use crate::audit::Actor;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::secrets::fingerprint;
use crate::store::{self};

use super::{ADMIN_SLUG, NewTenant, TenantPatch, insert_valid, patch_fields};

/// Creates the platform's own `admin` tenant from configuration, or brings its OAuth settings in
/// line with the configuration when they differ. Returns whether it was created.
pub async fn ensure_admin_tenant(ctx: &Context) -> AppResult<bool> {
    let config = &ctx.config.admin_tenant;
    let actor = Actor::system();
    let existing = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::find_by_slug(&mut conn, ADMIN_SLUG).await?
    };
    match existing {
        None => {
            let request = NewTenant {
                slug: ADMIN_SLUG.into(),
                name: config.name.clone(),
                tier: Some("enterprise".into()),
                trial_days: None,
                contact: None,
                metadata: None,
                oauth_issuer: config.oauth_issuer.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scopes: Some(input::Scopes::Text(config.scopes.clone())),
                db_uri: config.db_uri.clone(),
                default_schema: config.default_schema.clone(),
                role_mapping: config.role_mapping.clone(),
            };
            let valid = request.validate(false).map_err(invalid_configuration)?;
            match insert_valid(
                ctx,
                &actor,
                valid,
                "platform tenant created from configuration",
            )
            .await
            {
                Ok(_) => Ok(true),
                // Another replica created it first.
                Err(AppError::Conflict {
                    code: "slug_taken", ..
                }) => Ok(false),
                Err(err) => Err(err),
            }
        }
        Some(row) => {
            let mut patch = TenantPatch::default();
            if row.name != config.name {
                patch.name = Some(config.name.clone());
            }
            if row.oauth_issuer != config.oauth_issuer {
                patch.oauth_issuer = Some(config.oauth_issuer.clone());
            }
            if row.client_id != config.client_id {
                patch.client_id = Some(config.client_id.clone());
            }
            if let Some(secret) = &config.client_secret
                && row.client_secret_fp.as_deref() != Some(&fingerprint(secret))
            {
                patch.client_secret = Some(Some(secret.clone()));
            }
            if row.scopes != config.scopes.replace(' ', "") {
                patch.scopes = Some(input::Scopes::Text(config.scopes.clone()));
            }
            if let Some(uri) = &config.db_uri
                && row.db_uri_fp.as_deref() != Some(&fingerprint(uri))
            {
                patch.db_uri = Some(Some(uri.clone()));
            }
            if row.default_schema != config.default_schema && config.default_schema.is_some() {
                patch.default_schema = Some(config.default_schema.clone());
            }
            let mapping = config
                .role_mapping
                .as_ref()
                .and_then(|m| m.validate(true).ok())
                .and_then(|m| serde_json::to_string(&m).ok());
            if config.role_mapping.is_some() && row.role_mapping != mapping {
                patch.role_mapping = Some(config.role_mapping.clone());
            }
            patch_fields(ctx, &actor, ADMIN_SLUG, &patch)
                .await
                .map_err(invalid_configuration)?;
            Ok(false)
        }
    }
}

/// A platform tenant the configuration cannot make: the rule broken, and where to fix it.
fn invalid_configuration(err: impl std::fmt::Display) -> AppError {
    AppError::internal(anyhow::anyhow!(
        "admin_tenant configuration is invalid: {err} (set it in [admin_tenant] of the \
         configuration file or as TENANTRY_ADMIN_TENANT__<FIELD>, as the server runs with)"
    ))
}
