//! `[admin_tenant]`: the platform's own tenant, as the server's start-up and `migrate` put it.

use serde::{Deserialize, Serialize};

/// The platform's own `admin` tenant, created at start and kept in line with this section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminTenantConfig {
    pub name: String,
    pub oauth_issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: String,
    pub db_uri: Option<String>,
    /// `db_uri` under the name the API also accepts; folded into `db_uri` when loaded.
    #[serde(skip_serializing)]
    pub db_sqlalchemy_uri: Option<String>,
    pub default_schema: Option<String>,
    /// Who of the platform's identity provider's users gets which platform role; absent: every
    /// user who can log in there is a `platform-admin`.
    pub role_mapping: Option<crate::roles::RoleMapping>,
}

impl AdminTenantConfig {
    /// Takes `db_sqlalchemy_uri` as `db_uri`.
    pub(super) fn fold_db_uri(&mut self) -> anyhow::Result<()> {
        if let Some(uri) = self.db_sqlalchemy_uri.take() {
            anyhow::ensure!(
                self.db_uri.is_none(),
                "invalid configuration: admin_tenant: give db_uri or db_sqlalchemy_uri, not both"
            );
            self.db_uri = Some(uri);
        }
        Ok(())
    }
}

impl Default for AdminTenantConfig {
    fn default() -> Self {
        Self {
            name: "Platform Administration".into(),
            oauth_issuer: None,
            client_id: None,
            client_secret: None,
            scopes: "openid,profile,email".into(),
            db_uri: None,
            db_sqlalchemy_uri: None,
            default_schema: None,
            role_mapping: None,
        }
    }
}
