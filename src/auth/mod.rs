//! Who is asking: the bootstrap administrator (argon2 password, portal sessions) and hashed API
//! tokens (`Authorization: Bearer tny_<prefix>_<secret>`).
//!
//! A token is looked up by its prefix and its secret compared as a SHA-256 digest in constant time
//! (tokens are 190 bits of randomness: a slow hash adds nothing). Passwords are argon2id.

mod admins;
mod bearer;
pub mod key_owner;
mod keys;
pub mod login;
mod sessions;
pub(crate) use sessions::id_token_context;
pub mod sso;
pub use admins::*;
pub use bearer::{KeyOutcome, authenticate_key, authenticate_token};
pub use keys::*;
pub use sessions::*;

use rand::Rng as _;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

pub use crate::roles::Role;
pub use crate::tenants::TenantScope;

use crate::error::{AppError, AppResult};

/// The bootstrap administrator's user name.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `admin` for the bootstrap administrator, `token:<name>` for a platform API token,
    /// `key:<slug>/<name>` for a tenant API key.
    pub name: String,
    pub role: Role,
    /// The tenant of a tenant principal (`None` for the platform's).
    pub tenant: Option<TenantScope>,
    /// The API key that authenticated the request, with its own rate limit.
    pub key: Option<(String, Option<u32>)>,
}

impl Principal {
    fn tenant_only(&self) -> AppError {
        let slug = self.tenant.as_ref().map_or("?", |t| t.slug.as_str());
        AppError::forbidden(format!(
            "`{}` belongs to tenant `{slug}`: it reaches only that tenant's own routes",
            self.name
        ))
    }

    /// Refuses (403) anyone who may not change platform-wide things.
    pub fn require_admin(&self) -> AppResult<()> {
        match self.role {
            Role::PlatformAdmin => Ok(()),
            Role::PlatformViewer => Err(AppError::forbidden(format!(
                "`{}` has the {} role, which may only read",
                self.name,
                self.role.as_str()
            ))),
            Role::TenantAdmin | Role::Member => Err(self.tenant_only()),
        }
    }

    /// Refuses (403) anyone who may not read platform-wide data.
    pub fn require_platform(&self) -> AppResult<()> {
        match self.role {
            Role::PlatformAdmin | Role::PlatformViewer => Ok(()),
            Role::TenantAdmin | Role::Member => Err(self.tenant_only()),
        }
    }

    /// Refuses anyone who may not read tenant `slug`: a tenant principal of another tenant gets
    /// a 404 (it learns nothing of other tenants).
    pub fn require_tenant_read(&self, slug: &str) -> AppResult<()> {
        match &self.tenant {
            None => self.require_platform(),
            Some(scope) if scope.slug == slug => Ok(()),
            Some(_) => Err(AppError::not_found("tenant", slug)),
        }
    }

    /// Refuses anyone who may not administer tenant `slug` (its API keys…): platform admins and
    /// that tenant's admins may.
    pub fn require_tenant_admin(&self, slug: &str) -> AppResult<()> {
        self.require_tenant_read(slug)?;
        match self.role {
            Role::PlatformAdmin | Role::TenantAdmin => Ok(()),
            Role::PlatformViewer | Role::Member => Err(AppError::forbidden(format!(
                "`{}` has the {} role, which may only read",
                self.name,
                self.role.as_str()
            ))),
        }
    }
}

pub(crate) fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Compares a submitted CSRF token with the expected one in constant time.
pub fn csrf_matches(expected: &str, submitted: &str) -> bool {
    !expected.is_empty() && constant_time_eq(expected, submitted)
}

/// A fresh random token (login-form CSRF, request ids).
pub fn new_token() -> String {
    random_string(32)
}
