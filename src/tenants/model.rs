//! The tenant's domain types: slug, tier, status and its state machine, and the shapes the API
//! and the portal show.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::clock;
use crate::error::{AppError, FieldError};
use crate::store::models::TenantRow;

/// Slugs the platform keeps for itself (host names, paths and the platform's own tenant).
pub const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "docs",
    "health",
    "help",
    "internal",
    "login",
    "logout",
    "mail",
    "metrics",
    "new",
    "null",
    "oauth",
    "portal",
    "provision",
    "public",
    "root",
    "static",
    "status",
    "support",
    "system",
    "tenantry",
    "undefined",
    "www",
];

/// The slug of the platform's own tenant.
pub const ADMIN_SLUG: &str = "admin";

/// A tenant's unique, URL- and DNS-safe name: 3–63 lowercase letters, digits and hyphens, not
/// starting or ending with a hyphen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct TenantSlug(String);

/// Whether `text` is shaped like a tenant id (a UUID in its hyphenated form).
pub fn is_tenant_id(text: &str) -> bool {
    text.len() == 36 && uuid::Uuid::try_parse(text).is_ok()
}

impl TenantSlug {
    /// Checks the syntax rules; `reserved` says whether the reserved list applies.
    pub fn parse(input: &str, reserved: bool) -> Result<Self, FieldError> {
        let err = |rule: &str, message: &str| Err(FieldError::new("slug", rule, message));
        let len = input.chars().count();
        if !(3..=63).contains(&len) {
            return err("length", "must be 3 to 63 characters long");
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return err(
                "charset",
                "may contain only lowercase letters a-z, digits 0-9 and hyphens",
            );
        }
        if input.starts_with('-') || input.ends_with('-') {
            return err("hyphen_edge", "must not start or end with a hyphen");
        }
        if is_tenant_id(input) {
            return err(
                "not_an_id",
                "must not be shaped like a tenant id (a UUID): tenants are addressed by either",
            );
        }
        if reserved && RESERVED_SLUGS.contains(&input) {
            return err("reserved", "is reserved by the platform");
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub use crate::store::vocabulary::{TenantStatus, Tier};

string_enum!(
    /// An operator's lifecycle action.
    Transition {
        Suspend => "suspend",
        Reactivate => "reactivate",
        Cancel => "cancel",
        Delete => "delete",
        Restore => "restore",
        Convert => "convert",
    }
);

impl Transition {
    /// The audit action of this transition.
    pub fn audit_action(self) -> &'static str {
        match self {
            Transition::Suspend => "tenant.suspend",
            Transition::Reactivate => "tenant.reactivate",
            Transition::Cancel => "tenant.cancel",
            Transition::Delete => "tenant.delete",
            Transition::Restore => "tenant.restore",
            Transition::Convert => "tenant.convert",
        }
    }

    /// The lifecycle's state machine: the status this action leads to from `from`, or `None` when
    /// it is not allowed. `in_trial` says whether the tenant's trial is still running (a tenant
    /// coming back to life returns to `trial` then).
    pub fn target(self, from: TenantStatus, in_trial: bool) -> Option<TenantStatus> {
        use TenantStatus::*;
        let live = if in_trial { Trial } else { Active };
        match (self, from) {
            (Transition::Suspend, Trial | Active) => Some(Suspended),
            (Transition::Reactivate, Suspended) => Some(live),
            (Transition::Cancel, Trial | Active | Suspended) => Some(Canceled),
            (Transition::Delete, Trial | Active | Suspended | Canceled | Failed) => Some(Deleted),
            (Transition::Restore, Canceled | Deleted) => Some(live),
            (Transition::Convert, Trial) => Some(Active),
            _ => None,
        }
    }

    /// The statuses this action may start from, for error messages and the portal's buttons.
    pub fn allowed_from(self) -> Vec<TenantStatus> {
        TenantStatus::ALL
            .iter()
            .copied()
            .filter(|s| self.target(*s, false).is_some())
            .collect()
    }
}

/// Who to talk to at the tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Whether a secret is set, and a short fingerprint to tell secrets apart. Never the secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretStatus {
    pub set: bool,
    pub fingerprint: Option<String>,
}

impl SecretStatus {
    fn of(sealed: &Option<String>, fingerprint: &Option<String>) -> Self {
        SecretStatus {
            set: sealed.is_some(),
            fingerprint: sealed.as_ref().and(fingerprint.clone()),
        }
    }
}

/// A tenant as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: Tier,
    pub status: TenantStatus,
    pub status_reason: Option<String>,
    pub status_changed_at: DateTime<Utc>,
    /// True while the tenant is `trial` or `active` (what the API's `is_active` reports).
    pub is_active: bool,
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// When a canceled or deleted tenant may be purged without `force`.
    pub retention_ends_at: Option<DateTime<Utc>>,
    pub contact: Contact,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub oauth_issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: SecretStatus,
    /// The secret before the last rotation, kept for a rollback.
    pub client_secret_previous: SecretStatus,
    pub scopes: Vec<String>,
    pub db_uri: SecretStatus,
    pub default_schema: Option<String>,
    /// Which users of the tenant's identity provider get which role.
    pub role_mapping: crate::roles::RoleMapping,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Increases with every change.
    pub version: i64,
}

impl Tenant {
    /// The tenant as a principal's scope (what its keys and sessions belong to).
    pub fn scope(&self) -> TenantScope {
        TenantScope {
            id: self.id.clone(),
            slug: self.slug.clone(),
        }
    }

    pub fn from_row(row: &TenantRow, retention_days: u32) -> Result<Self, AppError> {
        let (status, tier) = (row.status, row.tier);
        let retention_ends_at = matches!(status, TenantStatus::Canceled | TenantStatus::Deleted)
            .then(|| {
                clock::to_utc(row.status_changed_at) + chrono::Duration::days(retention_days.into())
            });
        Ok(Tenant {
            id: row.id.clone(),
            slug: row.slug.clone(),
            name: row.name.clone(),
            tier,
            status,
            status_reason: row.status_reason.clone(),
            status_changed_at: clock::to_utc(row.status_changed_at),
            is_active: status.is_active(),
            trial_ends_at: row.trial_ends_at.map(clock::to_utc),
            retention_ends_at,
            contact: serde_json::from_str(&row.contact).unwrap_or_default(),
            metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
            oauth_issuer: row.oauth_issuer.clone(),
            client_id: row.client_id.clone(),
            client_secret: SecretStatus::of(&row.client_secret, &row.client_secret_fp),
            client_secret_previous: SecretStatus::of(
                &row.client_secret_previous,
                &row.client_secret_previous_fp,
            ),
            scopes: split_scopes(&row.scopes),
            db_uri: SecretStatus::of(&row.db_uri, &row.db_uri_fp),
            default_schema: row.default_schema.clone(),
            role_mapping: crate::roles::RoleMapping::from_stored(
                row.role_mapping.as_deref(),
                row.slug == ADMIN_SLUG,
            ),
            created_at: clock::to_utc(row.created_at),
            updated_at: clock::to_utc(row.updated_at),
            version: row.version,
        })
    }
}

/// One entry of a tenant's status history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    pub from: Option<TenantStatus>,
    pub to: TenantStatus,
    pub reason: String,
    pub actor: String,
    pub at: DateTime<Utc>,
}

pub fn split_scopes(scopes: &str) -> Vec<String> {
    scopes
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The tenant a tenant principal belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    pub id: String,
    pub slug: String,
}

#[cfg(test)]
mod tests {
    use super::{TenantSlug, is_tenant_id};

    #[test]
    fn a_slug_is_never_shaped_like_an_id() {
        let id = "0193a7c2-5b1e-7c4d-9f00-1234567890ab";
        assert!(is_tenant_id(id));
        assert!(!is_tenant_id("0193a7c25b1e7c4d9f001234567890ab"));
        assert!(!is_tenant_id("acme-corp"));
        assert_eq!(TenantSlug::parse(id, true).unwrap_err().rule, "not_an_id");
        assert!(TenantSlug::parse("0193a7c2-5b1e", true).is_ok());
    }
}
