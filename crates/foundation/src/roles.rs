//! Roles, and which role a user who logged in through a tenant's identity provider gets: a
//! per-tenant mapping from the values of one claim (for example `groups`) to roles.
//!
//! The users of an ordinary tenant become `tenant-admin` or `member` of that tenant; the users of
//! the platform's own `admin` tenant become `platform-admin` or `platform-viewer`. A user none of
//! whose values is mapped gets the mapping's default role, or — with the default `none` — cannot
//! log in at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::FieldError;

crate::words::stored_words! {
    /// What a principal may do.
    pub enum Role ("role") {
        /// Everything on the platform.
        PlatformAdmin = "platform-admin",
        /// Read-only access to everything on the platform (dashboards, monitoring, audits).
        PlatformViewer = "platform-viewer",
        /// Everything a tenant may do for itself (its API keys, its settings), in its own
        /// tenant only.
        TenantAdmin = "tenant-admin",
        /// Reads its own tenant.
        Member = "member",
    }
}

impl Role {
    /// What another product's name for a tenant role (`analyst`, `ADMIN`, `tenant_admin`) is here,
    /// for an error that says where to look.
    pub fn tenant_role_hint(text: &str) -> Option<&'static str> {
        match text.trim().to_lowercase().replace('_', "-").as_str() {
            "tenant-admin" | "admin" | "administrator" | "owner" => Some(
                "`tenant-admin` (a tenant's administrator: its keys, SSO and users; docs/tenants.md \"Tenant login\")",
            ),
            "member" | "analyst" | "viewer" | "user" | "editor" | "read-only" | "readonly"
            | "developer" => Some(
                "`member` (every other user of the tenant; what they may do in a backend is the backend's own role, set by its plugin; docs/tenants.md \"Tenant login\")",
            ),
            _ => None,
        }
    }

    /// Whether the role belongs to one tenant (rather than to the platform).
    pub fn is_tenant_role(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Member)
    }
}

/// The default role `none`: a user without a mapped claim value cannot log in.
pub const NO_ROLE: &str = "none";

/// A tenant's claim → role mapping, as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    /// The id_token (or userinfo) claim whose values decide the role; default `groups`. A string,
    /// a list of strings, or a boolean (`true` matches the value `true`).
    #[serde(default = "default_claim")]
    pub claim: String,
    /// Claim value → role. A user with several mapped values gets the highest of their roles.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// The role of a user none of whose values is mapped; `none`: such a user cannot log in.
    /// Default: `member` (`platform-admin` for the platform's own tenant).
    #[serde(default)]
    pub default_role: Option<String>,
}

fn default_claim() -> String {
    "groups".into()
}

/// What a mapping decided for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleDecision {
    Granted(Role),
    /// Mapped to nothing and the default role is `none`.
    NoAccess,
}

impl RoleMapping {
    /// The mapping of a tenant without one of its own.
    pub fn default_for(platform: bool) -> Self {
        RoleMapping {
            claim: default_claim(),
            values: BTreeMap::new(),
            default_role: Some(default_role_name(platform).into()),
        }
    }

    /// The stored mapping (`None`: the default).
    pub fn from_stored(stored: Option<&str>, platform: bool) -> Self {
        stored
            .and_then(|text| serde_json::from_str::<RoleMapping>(text).ok())
            .map(|mut m| {
                m.default_role
                    .get_or_insert_with(|| default_role_name(platform).into());
                m
            })
            .unwrap_or_else(|| Self::default_for(platform))
    }

    /// Checks the mapping for a tenant (`platform`: the `admin` tenant, whose users get platform
    /// roles) and returns it normalised (default role filled in).
    pub fn validate(&self, platform: bool) -> Result<RoleMapping, Vec<FieldError>> {
        let mut errors = Vec::new();
        let claim = self.claim.trim();
        if claim.is_empty()
            || self.claim.chars().count() > 100
            || self.claim.chars().any(char::is_control)
        {
            errors.push(FieldError::new(
                "role_mapping.claim",
                "length",
                "must be a claim name of 1 to 100 characters",
            ));
        }
        if self.values.len() > 100 {
            errors.push(FieldError::new(
                "role_mapping.values",
                "length",
                "may map at most 100 values",
            ));
        }
        let allowed = allowed_roles(platform);
        for (value, role) in &self.values {
            if value.is_empty() || value.len() > 200 {
                errors.push(FieldError::new(
                    format!("role_mapping.values.{value}"),
                    "length",
                    "a claim value must be 1 to 200 characters",
                ));
            }
            if !allowed.contains(&role.as_str()) {
                errors.push(FieldError::new(
                    format!("role_mapping.values.{value}"),
                    "one_of",
                    format!("must be one of: {}", allowed.join(", ")),
                ));
            }
        }
        let default_role = self
            .default_role
            .clone()
            .unwrap_or_else(|| default_role_name(platform).into());
        if default_role != NO_ROLE && !allowed.contains(&default_role.as_str()) {
            errors.push(FieldError::new(
                "role_mapping.default_role",
                "one_of",
                format!("must be one of: {}, {NO_ROLE}", allowed.join(", ")),
            ));
        }
        if errors.is_empty() {
            Ok(RoleMapping {
                claim: claim.to_owned(),
                values: self.values.clone(),
                default_role: Some(default_role),
            })
        } else {
            Err(errors)
        }
    }

    /// The role of a user with these claims.
    pub fn decide(&self, claims: &serde_json::Map<String, Value>) -> RoleDecision {
        let values: Vec<String> = match claims.get(&self.claim) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Bool(b) => Some(b.to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            Some(Value::Bool(b)) => vec![b.to_string()],
            Some(Value::Number(n)) => vec![n.to_string()],
            _ => Vec::new(),
        };
        let best = values
            .iter()
            .filter_map(|v| self.values.get(v))
            .filter_map(|r| r.parse::<Role>().ok())
            .max_by_key(|r| rank(*r));
        match best {
            Some(role) => RoleDecision::Granted(role),
            None => match self.default_role.as_deref().map(str::parse::<Role>) {
                Some(Ok(role)) => RoleDecision::Granted(role),
                // `none`, which validation allows as the only word that is not a role.
                Some(Err(_)) | None => RoleDecision::NoAccess,
            },
        }
    }
}

fn default_role_name(platform: bool) -> &'static str {
    if platform { "platform-admin" } else { "member" }
}

/// The roles a tenant's users may get.
pub const fn allowed_roles(platform: bool) -> &'static [&'static str] {
    if platform {
        &["platform-admin", "platform-viewer"]
    } else {
        &["tenant-admin", "member"]
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::PlatformAdmin => 4,
        Role::PlatformViewer => 3,
        Role::TenantAdmin => 2,
        Role::Member => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_highest_mapped_role_wins_and_unmapped_users_get_the_default() {
        let mapping = RoleMapping {
            claim: "groups".into(),
            values: [("admins".to_owned(), "tenant-admin".to_owned())].into(),
            default_role: Some("member".into()),
        }
        .validate(false)
        .unwrap();
        assert_eq!(
            mapping.decide(&claims(json!({"groups": ["staff", "admins"]}))),
            RoleDecision::Granted(Role::TenantAdmin)
        );
        assert_eq!(
            mapping.decide(&claims(json!({"groups": "staff"}))),
            RoleDecision::Granted(Role::Member)
        );
        assert_eq!(
            mapping.decide(&claims(json!({}))),
            RoleDecision::Granted(Role::Member)
        );
    }

    #[test]
    fn default_none_refuses_unmapped_users_and_booleans_match_true() {
        let mapping = RoleMapping {
            claim: "platform_admin".into(),
            values: [("true".to_owned(), "platform-admin".to_owned())].into(),
            default_role: Some("none".into()),
        }
        .validate(true)
        .unwrap();
        assert_eq!(
            mapping.decide(&claims(json!({"platform_admin": true}))),
            RoleDecision::Granted(Role::PlatformAdmin)
        );
        assert_eq!(
            mapping.decide(&claims(json!({"platform_admin": false}))),
            RoleDecision::NoAccess
        );
    }

    #[test]
    fn a_tenant_cannot_map_to_platform_roles() {
        let errors = RoleMapping {
            claim: "groups".into(),
            values: [("x".to_owned(), "platform-admin".to_owned())].into(),
            default_role: Some("owner".into()),
        }
        .validate(false)
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["role_mapping.values.x", "role_mapping.default_role"]
        );
    }
}
