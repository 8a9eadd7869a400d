//! A kit for plugins that drive a backend over HTTP: what every such plugin otherwise writes
//! again.
//!
//! - [`permanent`] and [`transient`] build the two error classes of the contract;
//!   [`is_retryable`] says which HTTP statuses are worth another attempt (408, 429 and 5xx).
//! - [`Backend`] is a JSON client of one backend through the host's `http`: it adds the
//!   headers every call carries, turns transport failures into classified errors that say
//!   which host to grant, and builds the error of an unexpected status with the backend's own
//!   message ([`error_message`]) — never with a secret ([`Redactor`]).
//! - [`secret`] and [`optional_secret`] read granted secrets; a missing one names the command
//!   that grants it.
//! - [`uri`] parses SQLAlchemy-style connection URLs (`scheme://user:password@host:port/db?…`)
//!   with their percent-decoding, and encodes path segments.
//!
//! Everything but the client and the secrets is plain Rust, so a plugin's tests of it run
//! natively (`cargo test`).

mod message;
mod redact;
pub mod uri;

#[cfg(feature = "provisioner")]
mod client;

pub use message::{cut, error_message};
pub use redact::Redactor;

#[cfg(feature = "provisioner")]
pub use client::{Answer, Backend, Body};

/// Whether a failed HTTP status is worth another attempt: a timeout (408), a rate limit (429)
/// or a server error (5xx). Every other refusal will be refused again.
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The message of an unexpected status, in the one form every backend plugin uses:
/// `{what}: {backend} answered {status}: {message}`.
pub fn status_message(what: &str, backend: &str, status: u16, message: &str) -> String {
    format!("{what}: {backend} answered {status}: {message}")
}

#[cfg(feature = "provisioner")]
pub use errors::{
    optional_secret, optional_setting, permanent, secret, setting, status_error, transient,
};

#[cfg(feature = "provisioner")]
mod errors {
    use crate::provisioner::PluginError;
    use crate::secrets;

    /// An error that another attempt will not cure: an operator must change something.
    pub fn permanent(message: impl Into<String>) -> PluginError {
        PluginError::Permanent(message.into())
    }

    /// An error worth retrying (the host retries with backoff).
    pub fn transient(message: impl Into<String>) -> PluginError {
        PluginError::Transient(message.into())
    }

    /// The error of an unexpected status: transient when [`super::is_retryable`], else
    /// permanent. `message` is the backend's own (already redacted).
    pub fn status_error(what: &str, backend: &str, status: u16, message: &str) -> PluginError {
        let text = super::status_message(what, backend, status, message);
        if super::is_retryable(status) {
            transient(text)
        } else {
            permanent(text)
        }
    }

    /// A line end left by `--value-file` is not part of a secret.
    fn value_of(raw: String) -> String {
        raw.trim_end_matches(['\n', '\r']).to_string()
    }

    /// A granted secret of the plugin `plugin`. A missing or empty one is a permanent error
    /// that names it and the command that grants it.
    pub fn secret(plugin: &str, name: &str) -> Result<String, PluginError> {
        match secrets::get(name).map(value_of) {
            Ok(value) if !value.trim().is_empty() => Ok(value),
            Ok(_) => Err(permanent(format!("the secret `{name}` is empty"))),
            Err(_) => Err(permanent(format!(
                "the secret `{name}` is not granted to the {plugin} plugin \
                 (tenantry plugin grant {plugin} --secret {name} --value-file -)"
            ))),
        }
    }

    /// A configuration field of the plugin `plugin` (a string: an endpoint, a user name).
    /// Plugins built against WIT 0.1.0 took these as secrets; a secret granted under the old
    /// name `legacy_secret` still serves when the field is not set, with a warning in the log
    /// that says how to move it. Neither set is a permanent error naming the command that
    /// sets the field.
    pub fn setting(plugin: &str, key: &str, legacy_secret: &str) -> Result<String, PluginError> {
        optional_setting(plugin, key, legacy_secret).ok_or_else(|| {
            permanent(format!(
                "the {plugin} plugin's `{key}` is not configured \
                 (tenantry plugin configure {plugin} --set {key}=VALUE)"
            ))
        })
    }

    /// A configuration field that may be absent, with the same fallback to the secret of its
    /// 0.1.0 name as [`setting`]; empty counts as absent.
    pub fn optional_setting(plugin: &str, key: &str, legacy_secret: &str) -> Option<String> {
        if let Some(value) = crate::config::string(key).filter(|v| !v.trim().is_empty()) {
            return Some(value);
        }
        let legacy = optional_secret(legacy_secret)?;
        crate::log::warn(&format!(
            "`{key}` is read from the secret `{legacy_secret}`, as before WIT 0.2.0; move it to \
             configuration: tenantry plugin configure {plugin} --set {key}=VALUE, then \
             tenantry plugin revoke {plugin} --secret {legacy_secret}"
        ));
        Some(legacy)
    }

    /// A secret that may be absent (an optional setting); empty counts as absent.
    pub fn optional_secret(name: &str) -> Option<String> {
        secrets::get(name)
            .ok()
            .map(value_of)
            .filter(|v| !v.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timeouts_rate_limits_and_server_errors_are_retried() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable(status), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert!(!is_retryable(status), "{status}");
        }
    }

    #[test]
    fn a_status_message_names_the_call_the_backend_and_the_status() {
        assert_eq!(
            status_message("creating pool `acme`", "Airflow", 422, "slots: invalid"),
            "creating pool `acme`: Airflow answered 422: slots: invalid"
        );
    }
}
