//! What clients send to create or change a tenant, and the rules each field must follow. Every
//! rule broken is reported at once, named by field and rule.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::model::{Contact, TenantSlug, Tier};
use crate::error::FieldError;
use crate::roles::RoleMapping;

/// An identity provider's issuer: an https URL (plain http only on loopback), a port of at
/// most 65535, no query or fragment. The OpenAPI document states it; [`check_issuer`] accepts
/// every issuer it matches, and besides only what it leaves out of the document (an IPv6
/// literal host, a percent-encoded path).
pub const ISSUER: &str = r"^(https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|http://(localhost|127\.0\.0\.1|\[::1\]))(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)?$";

/// A database URL (`postgresql://user:pass@host:5432/db`): a host wherever a user or a port is
/// given, a port of at most 65535. The OpenAPI document states it and [`check_db_uri`] checks
/// exactly it: the two cannot disagree.
pub const DB_URI: &str = r"^[A-Za-z][A-Za-z0-9+.-]*://(([^\s/@\[\]:]+(:[^\s/@\[\]]*)?@)?[^\s/@\[\]:]+(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?|[^\s/@\[\]:]*)(/[^\s]*)?$";

fn pattern(source: &'static str) -> regex::Regex {
    regex::Regex::new(source).expect("a valid pattern")
}
static DB_URI_RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| pattern(DB_URI));

/// Scopes as a comma-separated string (`"openid,profile,email"`) or as a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn items(&self) -> Vec<String> {
        match self {
            Scopes::Text(text) => super::model::split_scopes(text),
            Scopes::List(list) => list.iter().map(|s| s.trim().to_owned()).collect(),
        }
    }
}

/// `POST /api/v1/tenant`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// 3–63 lowercase letters, digits and hyphens; unique; not a reserved word.
    pub slug: String,
    pub name: String,
    /// `free` (default), `starter`, `professional`, `enterprise` or `custom`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Length of the trial in days (0–365); 0 or absent: the tenant starts `active`.
    #[serde(default)]
    pub trial_days: Option<i64>,
    #[serde(default)]
    pub contact: Option<Contact>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub oauth_issuer: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Write-only: sealed at rest, shown only as set/fingerprint.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Default `openid,profile,email`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub scopes: Option<Scopes>,
    /// Write-only (it carries a password); also accepted as `db_sqlalchemy_uri`.
    #[serde(default, alias = "db_sqlalchemy_uri")]
    pub db_uri: Option<String>,
    #[serde(default)]
    pub default_schema: Option<String>,
    /// Which users of the tenant's identity provider get which role; absent: everyone who can
    /// log in there is a `member`.
    #[serde(default)]
    pub role_mapping: Option<RoleMapping>,
}

/// `PATCH /api/v1/tenant/{slug}`: absent fields stay as they are; `null` clears a clearable field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Contact>)]
    pub contact: Option<Option<Contact>>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub oauth_issuer: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub client_id: Option<Option<String>>,
    /// A new secret rotates it: the old one is kept sealed for a rollback.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<Option<String>>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub scopes: Option<Scopes>,
    #[serde(
        default,
        deserialize_with = "double_option",
        alias = "db_sqlalchemy_uri"
    )]
    #[schema(value_type = Option<String>)]
    pub db_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub default_schema: Option<Option<String>>,
    /// A new claim → role mapping; `null` restores the default.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<RoleMapping>)]
    pub role_mapping: Option<Option<RoleMapping>>,
    /// `false` suspends the tenant, `true` reactivates it (soft deprovisioning).
    #[serde(default)]
    pub is_active: Option<bool>,
    /// Reason recorded when `is_active` changes the status.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub(crate) fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// Fields after validation, trimmed and normalised.
#[derive(Debug, Clone)]
pub struct ValidTenant {
    pub slug: TenantSlug,
    pub name: String,
    pub tier: Tier,
    pub trial_days: i64,
    pub contact: Contact,
    pub metadata: Map<String, Value>,
    pub oauth: OAuthFields,
    pub db_uri: Option<String>,
    pub default_schema: Option<String>,
    /// JSON of the role mapping; none: the default.
    pub role_mapping: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct OAuthFields {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub scopes: String,
}

pub const DEFAULT_SCOPES: &str = "openid,profile,email";

/// Collects field errors so that all of them are reported together.
#[derive(Default)]
pub struct Checks(pub Vec<FieldError>);

impl Checks {
    pub fn push(&mut self, err: FieldError) {
        self.0.push(err);
    }

    fn keep<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub fn name(&mut self, name: &str) -> Option<String> {
        self.keep(check_name(name))
    }

    pub fn tier(&mut self, tier: &str) -> Option<Tier> {
        self.keep(tier.parse::<Tier>().map_err(|m| {
            // `ENTERPRISE`, ` Starter`: the operators' spelling of a tier we know.
            let near = tier.trim().to_lowercase();
            match near.parse::<Tier>() {
                Ok(_) if near != tier => FieldError::new(
                    "tier",
                    "one_of",
                    format!("{}; tiers are lowercase: use `{near}`", m.rule()),
                ),
                _ => FieldError::new("tier", "one_of", m.rule()),
            }
        }))
    }

    pub fn contact(&mut self, contact: &Contact) -> Option<Contact> {
        self.keep(check_contact(contact))
    }

    pub fn metadata(&mut self, metadata: &Map<String, Value>) {
        if serde_json::to_string(metadata).map_or(0, |s| s.len()) > 16 * 1024 {
            self.push(FieldError::new(
                "metadata",
                "size",
                "must be at most 16 KiB of JSON",
            ));
        }
    }

    pub fn issuer(&mut self, issuer: &str) -> Option<String> {
        self.keep(check_issuer(issuer))
    }

    pub fn text(&mut self, field: &str, value: &str, max: usize) -> Option<String> {
        self.keep(check_text(field, value, max))
    }

    pub fn scopes(&mut self, scopes: &Scopes) -> Option<String> {
        self.keep(check_scopes(&scopes.items()))
    }

    pub fn db_uri(&mut self, uri: &str) -> Option<String> {
        self.keep(check_db_uri(uri))
    }

    pub fn schema(&mut self, schema: &str) -> Option<String> {
        self.keep(check_schema(schema))
    }

    /// A role mapping, checked for a tenant (`platform`: the platform's own), as stored JSON.
    pub fn role_mapping(&mut self, mapping: &RoleMapping, platform: bool) -> Option<String> {
        match mapping.validate(platform) {
            Ok(valid) => serde_json::to_string(&valid).ok(),
            Err(errors) => {
                self.0.extend(errors);
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), crate::error::AppError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(crate::error::AppError::Validation(self.0))
        }
    }
}

impl NewTenant {
    /// Checks every field; `reserved` is false only for the platform's own tenant.
    pub fn validate(&self, reserved: bool) -> Result<ValidTenant, crate::error::AppError> {
        let mut checks = Checks::default();
        let slug = checks.keep(TenantSlug::parse(&self.slug, reserved));
        let name = checks.name(&self.name);
        let tier = checks.tier(self.tier.as_deref().unwrap_or("free"));
        let trial_days = self.trial_days.unwrap_or(0);
        if !(0..=365).contains(&trial_days) {
            checks.push(FieldError::new(
                "trial_days",
                "range",
                "must be between 0 and 365",
            ));
        }
        let contact = checks.contact(self.contact.as_ref().unwrap_or(&Contact::default()));
        let metadata = self.metadata.clone().unwrap_or_default();
        checks.metadata(&metadata);
        let issuer = self.oauth_issuer.as_deref().map(|i| checks.issuer(i));
        let client_id = self
            .client_id
            .as_deref()
            .map(|c| checks.text("client_id", c, 255));
        let client_secret = self
            .client_secret
            .as_deref()
            .map(|c| checks.keep(check_secret("client_secret", c)));
        let scopes = match &self.scopes {
            Some(scopes) => checks.scopes(scopes),
            None => Some(DEFAULT_SCOPES.to_owned()),
        };
        let db_uri = self.db_uri.as_deref().map(|u| checks.db_uri(u));
        let default_schema = self.default_schema.as_deref().map(|s| checks.schema(s));
        let role_mapping = self
            .role_mapping
            .as_ref()
            .map(|m| checks.role_mapping(m, !reserved));
        if client_secret.is_some() && self.client_id.is_none() {
            checks.push(FieldError::new(
                "client_id",
                "required",
                "is required when client_secret is set",
            ));
        }
        if self.client_id.is_some() && self.oauth_issuer.is_none() {
            checks.push(FieldError::new(
                "oauth_issuer",
                "required",
                "is required when client_id is set",
            ));
        }
        checks.finish()?;
        Ok(ValidTenant {
            slug: slug.expect("checked"),
            name: name.expect("checked"),
            tier: tier.expect("checked"),
            trial_days,
            contact: contact.expect("checked"),
            metadata,
            oauth: OAuthFields {
                issuer: issuer.flatten(),
                client_id: client_id.flatten(),
                client_secret: client_secret.flatten(),
                scopes: scopes.expect("checked"),
            },
            db_uri: db_uri.flatten(),
            default_schema: default_schema.flatten(),
            role_mapping: role_mapping.flatten(),
        })
    }
}

pub(crate) fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

fn check_name(name: &str) -> Result<String, FieldError> {
    check_text("name", name, 200)
}

/// A line of text: no control characters (anywhere, before trimming), at most `max`
/// characters, and something left once trimmed.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<String, FieldError> {
    if has_control(value) {
        return Err(FieldError::new(
            field,
            "charset",
            "must not contain control characters",
        ));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            "length",
            format!("must be at most {max} characters"),
        ));
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "required", "must not be empty"));
    }
    Ok(value.to_owned())
}

/// Secrets are kept exactly as given (no trimming): only emptiness and size are checked.
pub fn check_secret(field: &str, value: &str) -> Result<String, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "required", "must not be empty"));
    }
    if value.chars().count() > 4096 {
        return Err(FieldError::new(
            field,
            "length",
            "must be at most 4096 characters",
        ));
    }
    Ok(value.to_owned())
}

fn check_contact(contact: &Contact) -> Result<Contact, FieldError> {
    let clean =
        |field: &str, value: &Option<String>, max: usize| -> Result<Option<String>, FieldError> {
            match value.as_deref().map(str::trim) {
                None | Some("") => Ok(None),
                Some(v) => check_text(field, v, max).map(Some),
            }
        };
    let email = clean("contact.email", &contact.email, 254)?;
    if let Some(email) = &email {
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.contains(char::is_whitespace)
                && !domain.contains('@')
        });
        if !valid {
            return Err(FieldError::new(
                "contact.email",
                "email",
                "must be an e-mail address like ops@example.com",
            ));
        }
    }
    Ok(Contact {
        name: clean("contact.name", &contact.name, 200)?,
        email,
        phone: clean("contact.phone", &contact.phone, 50)?,
    })
}

fn check_issuer(issuer: &str) -> Result<String, FieldError> {
    let field = "oauth_issuer";
    let issuer = issuer.trim();
    let url = url::Url::parse(issuer).map_err(|_| {
        FieldError::new(
            field,
            "url",
            "must be an absolute URL like https://idp.example.com",
        )
    })?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    let dns_name = |name: &str| {
        name.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    if let Some(url::Host::Domain(name)) = url.host()
        && !dns_name(name)
    {
        return Err(FieldError::new(
            field,
            "url",
            "must be an absolute URL like https://idp.example.com (a host name of letters, digits and hyphens)",
        ));
    }
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(FieldError::new(
                field,
                "https",
                "must use https (http only for localhost)",
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(FieldError::new(
            field,
            "url",
            "must not have a query or fragment",
        ));
    }
    if issuer.chars().count() > 2048 {
        return Err(FieldError::new(
            field,
            "length",
            "must be at most 2048 characters",
        ));
    }
    // The issuer is compared exactly at login: keep it as written.
    Ok(issuer.to_owned())
}

fn check_scopes(items: &[String]) -> Result<String, FieldError> {
    let field = "scopes";
    if items.is_empty() {
        return Err(FieldError::new(
            field,
            "required",
            "must list at least `openid`",
        ));
    }
    for scope in items {
        // RFC 6749 §3.3 scope-token.
        let valid = !scope.is_empty()
            && scope
                .chars()
                .all(|c| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c));
        if !valid {
            return Err(FieldError::new(
                field,
                "scope_token",
                format!("`{scope}` is not a valid scope"),
            ));
        }
    }
    if !items.iter().any(|s| s == "openid") {
        return Err(FieldError::new(field, "openid", "must include `openid`"));
    }
    let mut unique: Vec<&str> = Vec::new();
    for scope in items {
        if !unique.contains(&scope.as_str()) {
            unique.push(scope);
        }
    }
    Ok(unique.join(","))
}

fn check_db_uri(uri: &str) -> Result<String, FieldError> {
    let field = "db_uri";
    if uri.chars().count() > 2048 {
        return Err(FieldError::new(
            field,
            "length",
            "must be at most 2048 characters",
        ));
    }
    // The value is never echoed back: it may hold a password.
    if !DB_URI_RE.is_match(uri) {
        return Err(FieldError::new(
            field,
            "url",
            "must be a database URL like postgresql://user:pass@host:5432/db (a host wherever \
             a user or a port is given, a port of at most 65535)",
        ));
    }
    Ok(uri.to_owned())
}

fn check_schema(schema: &str) -> Result<String, FieldError> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && schema.len() <= 63;
    if !valid {
        return Err(FieldError::new(
            "default_schema",
            "identifier",
            "must be an identifier: a letter or _ then letters, digits or _, at most 63 characters",
        ));
    }
    Ok(schema.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the OpenAPI document's pattern accepts, the server accepts (for database URLs,
    /// exactly that), and ports up to 65535 are in both.
    #[test]
    fn the_documented_patterns_and_the_server_agree() {
        let issuers = [
            ("https://idp.example.com", true),
            ("https://idp.example.com/realms/acme", true),
            ("http://127.0.0.1:41100/oidc", true),
            ("https://idp.example.com:65535", true),
            ("https://idp.example.com:65536", false),
            ("https://idp.example.com:443/", true),
            ("http://idp.example.com", false),
            ("https://idp.example.com/?x=1", false),
        ];
        for (issuer, ok) in issuers {
            assert_eq!(pattern(ISSUER).is_match(issuer), ok, "pattern: {issuer}");
            assert_eq!(check_issuer(issuer).is_ok(), ok, "server: {issuer}");
        }
        let uris = [
            ("postgresql://user:pass@db.example.com:5432/acme", true),
            ("postgresql+psycopg2://u@h/db", true),
            ("sqlite:///var/lib/acme.db", true),
            ("mysql://h:65535/db", true),
            ("A://:00", false),
            ("postgresql://user@:5432/db", false),
            ("postgresql://h:65536/db", false),
            ("postgresql://h:99999/db", false),
            ("not a url", false),
            ("postgresql://u:p@h/d b", false),
        ];
        for (uri, ok) in uris {
            assert_eq!(DB_URI_RE.is_match(uri), ok, "pattern: {uri}");
            assert_eq!(check_db_uri(uri).is_ok(), ok, "server: {uri}");
        }
    }
}
