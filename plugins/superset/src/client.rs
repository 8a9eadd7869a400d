//! Superset's REST API through the host's HTTP: a session (login, CSRF token and cookie) and the
//! few calls the steps need. Each plugin call logs in anew (an instance lives for one call).

use serde_json::{Value, json};
use tenantry_plugin_sdk::http::{self, HttpError, Request};
use tenantry_plugin_sdk::log;
use tenantry_plugin_sdk::secrets;

use crate::logic::{self, Failure, RisonValue};

const READ_TIMEOUT_MS: u32 = 10_000;
/// Creating a database tests the connection; importing a bundle takes a while too.
const WRITE_TIMEOUT_MS: u32 = 25_000;

pub type Result<T> = std::result::Result<T, Failure>;

pub struct Session {
    base: String,
    token: String,
    csrf: String,
    cookie: String,
    /// Strings never to show in a message (the password, connection passwords).
    secrets: Vec<String>,
}

/// An answer of Superset: its status and JSON body (`Null` when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

fn secret(name: &str) -> Result<String> {
    secrets::get(name).map_err(|e| {
        Failure::Permanent(format!(
            "{e} (grant it: `tenantry plugin grant superset --secret {name} --value-file -`)"
        ))
    })
}

fn transport(what: &str, err: HttpError) -> Failure {
    match err {
        HttpError::Timeout => {
            Failure::Transient(format!("{what}: Superset did not answer in time"))
        }
        HttpError::Connection(e) => {
            Failure::Transient(format!("{what}: cannot reach Superset: {e}"))
        }
        HttpError::NotGranted(e) => Failure::Permanent(format!(
            "{what}: {e} (grant the host of `superset-url`: `tenantry plugin grant superset --host HOST:PORT`)"
        )),
        HttpError::Invalid(e) => Failure::Permanent(format!("{what}: invalid request: {e}")),
        HttpError::TooLarge => {
            Failure::Permanent(format!("{what}: Superset's answer is too large"))
        }
    }
}

fn set_cookies(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .filter_map(|(_, v)| v.split(';').next().map(|c| c.trim().to_string()))
        .filter(|c| c.contains('='))
        .collect()
}

impl Session {
    /// Logs in with the granted secrets and fetches a CSRF token.
    pub fn open() -> Result<Session> {
        let base = secret("superset-url")?.trim_end_matches('/').to_string();
        let username = secret("superset-username")?;
        let password = secret("superset-password")?;
        let mut session = Session {
            base,
            token: String::new(),
            csrf: String::new(),
            cookie: String::new(),
            secrets: vec![password.clone()],
        };
        let login = session.raw(
            "POST",
            "/api/v1/security/login",
            Some((
                "application/json",
                json!({"username": username, "password": password, "provider": "db", "refresh": false})
                    .to_string()
                    .into_bytes(),
            )),
            READ_TIMEOUT_MS,
            "login",
        )?;
        if login.status != 200 {
            let message = logic::redact(
                &logic::superset_message(&login.body_bytes),
                &session.secrets,
            );
            return Err(
                match logic::classify_status(login.status, "login", &message) {
                    Failure::Permanent(m) => Failure::Permanent(format!(
                        "{m} (check the secrets `superset-username` and `superset-password`)"
                    )),
                    transient => transient,
                },
            );
        }
        let body: Value = serde_json::from_slice(&login.body_bytes).unwrap_or(Value::Null);
        session.token = body["access_token"]
            .as_str()
            .ok_or_else(|| {
                Failure::Permanent("login: Superset's answer has no access_token".into())
            })?
            .to_string();
        let mut cookies = set_cookies(&login.headers);
        let csrf = session.raw(
            "GET",
            "/api/v1/security/csrf_token/",
            None,
            READ_TIMEOUT_MS,
            "CSRF token",
        )?;
        if csrf.status != 200 {
            let message = logic::superset_message(&csrf.body_bytes);
            return Err(logic::classify_status(csrf.status, "CSRF token", &message));
        }
        let body: Value = serde_json::from_slice(&csrf.body_bytes).unwrap_or(Value::Null);
        session.csrf = body["result"].as_str().unwrap_or_default().to_string();
        cookies.extend(set_cookies(&csrf.headers));
        session.cookie = cookies.join("; ");
        Ok(session)
    }

    /// Adds strings that must never appear in a message.
    pub fn hide(&mut self, secret: Option<String>) {
        if let Some(s) = secret {
            self.secrets.push(s);
        }
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        timeout_ms: u32,
        what: &str,
    ) -> Result<RawAnswer> {
        let mut headers = vec![("Accept".to_string(), "application/json".to_string())];
        if !self.token.is_empty() {
            headers.push(("Authorization".into(), format!("Bearer {}", self.token)));
        }
        if method != "GET" && !self.csrf.is_empty() {
            headers.push(("X-CSRFToken".into(), self.csrf.clone()));
            headers.push(("Referer".into(), format!("{}/", self.base)));
        }
        if !self.cookie.is_empty() {
            headers.push(("Cookie".into(), self.cookie.clone()));
        }
        let payload = body.map(|(content_type, bytes)| {
            headers.push(("Content-Type".into(), content_type.to_string()));
            bytes
        });
        let response = http::send(&Request {
            method: method.into(),
            url: format!("{}{path}", self.base),
            headers,
            body: payload,
            timeout_ms: Some(timeout_ms),
        })
        .map_err(|e| {
            let failure = transport(what, e);
            match failure {
                Failure::Transient(m) => Failure::Transient(logic::redact(&m, &self.secrets)),
                Failure::Permanent(m) => Failure::Permanent(logic::redact(&m, &self.secrets)),
            }
        })?;
        Ok(RawAnswer {
            status: response.status,
            headers: response.headers,
            body_bytes: response.body,
        })
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
        let timeout = if method == "GET" {
            READ_TIMEOUT_MS
        } else {
            WRITE_TIMEOUT_MS
        };
        let raw = self.raw(
            method,
            path,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
            timeout,
            what,
        )?;
        self.check(raw, accept, what)
    }

    fn check(&self, raw: RawAnswer, accept: &[u16], what: &str) -> Result<Answer> {
        if !(200..300).contains(&raw.status) && !accept.contains(&raw.status) {
            let message = logic::redact(&logic::superset_message(&raw.body_bytes), &self.secrets);
            log::warn(&format!("{what}: {} {message}", raw.status));
            return Err(logic::classify_status(raw.status, what, &message));
        }
        Ok(Answer {
            status: raw.status,
            body: serde_json::from_slice(&raw.body_bytes).unwrap_or(Value::Null),
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
        let raw = self.raw("POST", path, Some((content_type, body)), 30_000, what)?;
        self.check(raw, &[], what)
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
        let q = logic::url_encode(&logic::rison_filters(filters));
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

struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body_bytes: Vec<u8>,
}
