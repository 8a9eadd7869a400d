//! Whose is this key? An API key or platform token found by its public prefix — the first
//! question of "a tenant sees the wrong data". Only the prefix is read: given a whole token, its
//! secret is never checked, logged or echoed.

use serde::Serialize;
use utoipa::ToSchema;

use super::ApiTokenInfo;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store;

/// A key and the tenant it belongs to (none for a platform token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyOwner {
    pub key: ApiTokenInfo,
    pub tenant: Option<KeyTenant>,
}

/// The tenant of a tenant key.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyTenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub status: crate::tenants::TenantStatus,
}

/// The prefix of `text`: `abcd1234`, `tny_abcd1234`, or a whole token `tny_abcd1234_<secret>`.
pub fn prefix_of(text: &str) -> AppResult<String> {
    let text = text.trim();
    let bare = text.strip_prefix("tny_").unwrap_or(text);
    let prefix = bare.split('_').next().unwrap_or_default();
    if prefix.len() == 8
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        Ok(prefix.to_owned())
    } else {
        Err(AppError::invalid(
            "prefix",
            "pattern",
            "a key's prefix is the 8 letters and digits after `tny_` (tny_abcd1234_…)",
        ))
    }
}

/// The key whose prefix `text` names, and its tenant.
pub async fn find(ctx: &Context, text: &str) -> AppResult<KeyOwner> {
    let prefix = prefix_of(text)?;
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::admin::find_key_by_prefix(&mut conn, &prefix).await?
    }
    .ok_or_else(|| AppError::not_found("key", &format!("tny_{prefix}")))?;
    let tenant = match &row.tenant_id {
        None => None,
        Some(id) => crate::tenants::get_by_id(ctx, id)
            .await?
            .map(|t| KeyTenant {
                id: t.id.clone(),
                slug: t.slug.clone(),
                name: t.name.clone(),
                status: t.status,
            }),
    };
    Ok(KeyOwner {
        key: ApiTokenInfo::from_row(&row)?,
        tenant,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_of;

    #[test]
    fn the_prefix_of_a_prefix_or_a_whole_token() {
        assert_eq!(prefix_of("abcd1234").unwrap(), "abcd1234");
        assert_eq!(prefix_of("tny_abcd1234").unwrap(), "abcd1234");
        assert_eq!(
            prefix_of(" tny_abcd1234_0123456789abcdef0123456789abcdef\n").unwrap(),
            "abcd1234"
        );
        assert!(prefix_of("tny_abc").is_err());
        assert!(prefix_of("ABCD1234").is_err());
        assert!(prefix_of("").is_err());
    }
}
