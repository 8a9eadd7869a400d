//! Superset's REST API through the SDK's backend kit: a session (login, CSRF token and cookie)
//! and the few calls the steps need. Each plugin call logs in anew (an instance lives for one
//! call).

use serde_json::{Value, json};
use tenantry_plugin_sdk::backend::uri::percent_encode;
use tenantry_plugin_sdk::backend::{self, Backend, Body};
use tenantry_plugin_sdk::provisioner::PluginError;

use crate::logic::{self, RisonValue};

const READ_TIMEOUT_MS: u32 = 10_000;
/// Creating a database tests the connection; importing a bundle takes a while too.
const WRITE_TIMEOUT_MS: u32 = 25_000;
const UPLOAD_TIMEOUT_MS: u32 = 30_000;

pub type Result<T> = std::result::Result<T, PluginError>;

pub struct Session {
    api: Backend,
}

/// An answer of Superset: its status and JSON body (`Null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn secret(name: &str) -> Result<String> {
    backend::secret("superset", name)
}

impl Session {
    /// Logs in with the granted secrets and fetches a CSRF token.
    pub fn open() -> Result<Session> {
        let url = backend::setting("superset", "url", "superset-url")?;
        let mut api = Backend::new("Superset", "superset", &url)
            .require_http("url")?
            .with_timeouts(READ_TIMEOUT_MS, WRITE_TIMEOUT_MS);
        let username = backend::setting("superset", "username", "superset-username")?;
        let password = secret("superset-password")?;
        api.hide(&password);
        let login = api.json(
            "POST",
            "/api/v1/security/login",
            Some(&json!({"username": username, "password": password, "provider": "db", "refresh": false})),
            "login",
        )?;
        if login.status != 200 {
            return Err(match api.status_error("login", &login) {
                PluginError::Permanent(m) => PluginError::Permanent(format!(
                    "{m} (check the secrets `superset-username` and `superset-password`)"
                )),
                transient => transient,
            });
        }
        let token = login.json()["access_token"]
            .as_str()
            .ok_or_else(|| backend::permanent("login: Superset's answer has no access_token"))?
            .to_string();
        api.hide(&token);
        api.set_header("Authorization", &format!("Bearer {token}"));
        let mut cookies = login.cookies();
        let csrf = api.expect(
            "GET",
            "/api/v1/security/csrf_token/",
            None,
            &[],
            "CSRF token",
        )?;
        let csrf_token = csrf.json()["result"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        cookies.extend(csrf.cookies());
        if !csrf_token.is_empty() {
            // Only writes are checked, but the token is harmless on reads.
            api.set_header("X-CSRFToken", &csrf_token);
            let referer = format!("{}/", api.base());
            api.set_header("Referer", &referer);
        }
        if !cookies.is_empty() {
            api.set_header("Cookie", &cookies.join("; "));
        }
        Ok(Session { api })
    }

    /// Hides the password of a connection URI from every message from now on.
    pub fn hide_uri_password(&mut self, uri: &str) {
        self.api.redactor_mut().add_uri_password(uri);
    }

    /// A JSON call; a status outside 2xx (and not in `accept`) is an error.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &[u16],
        what: &str,
    ) -> Result<Answer> {
        let answer = self.api.expect(method, path, body, accept, what)?;
        Ok(Answer {
            status: answer.status,
            body: answer.json(),
        })
    }

    /// A multipart upload (the asset import).
    pub fn upload(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<Answer> {
        let api = self
            .api
            .clone()
            .with_timeouts(READ_TIMEOUT_MS, UPLOAD_TIMEOUT_MS);
        let answer = api.send(
            "POST",
            path,
            Body::Raw {
                content_type,
                bytes: body,
            },
            what,
        )?;
        if !answer.is_success() {
            return Err(api.status_error(what, &answer));
        }
        Ok(Answer {
            status: answer.status,
            body: answer.json(),
        })
    }

    /// A GET whose answer is not JSON (an export's ZIP): its bytes.
    pub fn download(&self, path: &str, what: &str) -> Result<Vec<u8>> {
        let answer = self.api.send("GET", path, Body::None, what)?;
        if !answer.is_success() {
            return Err(self.api.status_error(what, &answer));
        }
        Ok(answer.body)
    }

    pub fn get(&self, path: &str, what: &str) -> Result<Answer> {
        self.call("GET", path, None, &[404], what)
    }

    pub fn post(&self, path: &str, body: &Value, what: &str) -> Result<Value> {
        Ok(self.call("POST", path, Some(body), &[], what)?.body)
    }

    /// Deletes; a resource already gone is a success. Returns whether it was there.
    pub fn delete(&self, path: &str, what: &str) -> Result<bool> {
        Ok(self.call("DELETE", path, None, &[404], what)?.status != 404)
    }

    /// The rows of a list API matching `filters`.
    pub fn list(
        &self,
        resource: &str,
        filters: &[(&str, &str, RisonValue)],
        what: &str,
    ) -> Result<Vec<Value>> {
        let q = percent_encode(&logic::rison_filters(filters));
        let answer = self.call(
            "GET",
            &format!("/api/v1/{resource}/?q={q}"),
            None,
            &[],
            what,
        )?;
        Ok(answer.body["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The one row whose `column` equals `value` exactly.
    pub fn find(
        &self,
        resource: &str,
        column: &str,
        value: &str,
        what: &str,
    ) -> Result<Option<Value>> {
        let rows = self.list(
            resource,
            &[(column, "eq", RisonValue::Str(value.into()))],
            what,
        )?;
        Ok(rows.into_iter().find(|r| r[column].as_str() == Some(value)))
    }
}
