//! HTTP to Airflow's REST API (v2) and to the Kubernetes API through the host, with the
//! classification of failures the contract asks for: connection failures, timeouts, 5xx and
//! 429 are `transient`; other 4xx are `permanent` with the backend's own message. No message
//! carries a secret: the values of the granted secrets and of the passwords a call sends are
//! replaced by `***` in every message built here.

use serde_json::{Value, json};
use tenantry_plugin_sdk::http::{self, HttpError, Request, Response};
use tenantry_plugin_sdk::log;
use tenantry_plugin_sdk::provisioner::PluginError;
use tenantry_plugin_sdk::secrets;

use crate::uri::percent_encode;

pub fn permanent(message: impl Into<String>) -> PluginError {
    PluginError::Permanent(message.into())
}

pub fn transient(message: impl Into<String>) -> PluginError {
    PluginError::Transient(message.into())
}

/// A line end left by a `--value-file` is not part of a secret.
fn value_of(raw: String) -> String {
    raw.trim_end_matches(['\n', '\r']).to_string()
}

/// A granted secret; a missing one is a permanent error naming it (an operator must grant it).
pub fn secret(name: &str) -> Result<String, PluginError> {
    match secrets::get(name).map(value_of) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(permanent(format!("the secret `{name}` is empty"))),
        Err(_) => Err(permanent(format!(
            "the secret `{name}` is not granted to the airflow plugin \
             (tenantry plugin grant airflow --secret {name} --value-file -)"
        ))),
    }
}

/// A secret that may be absent.
pub fn optional_secret(name: &str) -> Option<String> {
    secrets::get(name)
        .ok()
        .map(value_of)
        .filter(|v| !v.is_empty())
}

/// Values that must never appear in a message.
#[derive(Default, Clone)]
pub struct Scrub(Vec<String>);

impl Scrub {
    pub fn add(&mut self, value: &str) {
        if value.len() >= 3 && !self.0.iter().any(|v| v == value) {
            self.0.push(value.to_string());
        }
    }

    pub fn clean(&self, text: &str) -> String {
        let mut text = text.to_string();
        // Longest first, so that a secret containing another is hidden whole.
        let mut values = self.0.clone();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for value in values {
            text = text.replace(&value, "***");
        }
        text
    }
}

/// The host and port of a URL, for messages (never its user information or path).
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_string()
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

/// The message of an error body: FastAPI's `detail` (a string, a list of validation errors —
/// without their `input`, which may be a password — or an object), Kubernetes' `message`, or
/// the text itself.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return cut(text.trim(), 300);
    };
    let message = match (&value["detail"], &value["message"]) {
        (Value::String(s), _) => s.clone(),
        (Value::Array(items), _) => items
            .iter()
            .map(|item| {
                let loc = item["loc"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                let msg = item["msg"].as_str().unwrap_or("invalid");
                if loc.is_empty() {
                    msg.to_string()
                } else {
                    format!("{loc}: {msg}")
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        (Value::Object(detail), _) => detail
            .get("message")
            .or_else(|| detail.get("reason"))
            .and_then(Value::as_str)
            .map_or_else(|| Value::Object(detail.clone()).to_string(), str::to_string),
        (_, Value::String(s)) => s.clone(),
        _ => text.trim().to_string(),
    };
    cut(&message, 500)
}

/// Sends one request; transport failures become plugin errors, responses are returned whatever
/// their status.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    what: &str,
    scrub: &Scrub,
) -> Result<Response, PluginError> {
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("Accept".into(), "application/json".into()));
    if body.is_some() {
        all.push(("Content-Type".into(), "application/json".into()));
    }
    let request = Request {
        method: method.into(),
        url: url.into(),
        headers: all,
        body: body.map(|b| b.to_string().into_bytes()),
        timeout_ms: Some(15_000),
    };
    let host = host_of(url);
    http::send(&request).map_err(|err| match err {
        HttpError::Timeout => transient(format!("{what}: {host} did not answer in time")),
        HttpError::Connection(cause) => {
            transient(scrub.clean(&format!("{what}: cannot connect to {host}: {cause}")))
        }
        HttpError::NotGranted(_) => permanent(format!(
            "{what}: the host {host} is not granted to the airflow plugin \
             (tenantry plugin grant airflow --host {host})"
        )),
        HttpError::Invalid(cause) => permanent(scrub.clean(&format!("{what}: {cause}"))),
        HttpError::TooLarge => permanent(format!("{what}: the answer of {host} is too large")),
    })
}

/// The error of an unexpected status: 429 and 5xx are transient, the rest permanent.
pub fn status_error(what: &str, backend: &str, response: &Response, scrub: &Scrub) -> PluginError {
    let status = response.status;
    let message = scrub.clean(&format!(
        "{what}: {backend} answered {status}: {}",
        error_message(&response.body)
    ));
    if status == 429 || status >= 500 {
        transient(message)
    } else {
        permanent(message)
    }
}

fn json_body(response: &Response) -> Value {
    serde_json::from_slice(&response.body).unwrap_or(Value::Null)
}

/// What creating a resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// 409: it was there already.
    Existed,
}

/// Airflow's REST API with a token obtained for this call.
pub struct Airflow {
    base: String,
    bearer: String,
    pub scrub: Scrub,
}

impl Airflow {
    /// Reads the granted URL and credentials and gets a token (`POST /auth/token`).
    pub fn connect(mut scrub: Scrub) -> Result<Airflow, PluginError> {
        let base = secret("airflow-url")?
            .trim()
            .trim_end_matches('/')
            .to_string();
        let username = secret("airflow-username")?;
        let password = secret("airflow-password")?;
        scrub.add(&password);
        let response = send(
            "POST",
            &format!("{base}/auth/token"),
            &[],
            Some(&json!({"username": username, "password": password})),
            "Airflow sign-in",
            &scrub,
        )?;
        match response.status {
            200 | 201 => {}
            401 | 403 => {
                return Err(permanent(
                    "Airflow sign-in: the credentials airflow-username/airflow-password were refused",
                ));
            }
            _ => {
                return Err(status_error(
                    "Airflow sign-in",
                    "Airflow",
                    &response,
                    &scrub,
                ));
            }
        }
        let token = json_body(&response)["access_token"]
            .as_str()
            .ok_or_else(|| permanent("Airflow sign-in: the answer has no access_token"))?
            .to_string();
        scrub.add(&token);
        Ok(Airflow {
            base,
            bearer: format!("Bearer {token}"),
            scrub,
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Response, PluginError> {
        let url = format!("{}/api/v2/{path}", self.base);
        log::debug(&format!("{method} /api/v2/{path}"));
        send(
            method,
            &url,
            &[("Authorization", &self.bearer)],
            body,
            what,
            &self.scrub,
        )
    }

    /// `GET /api/v2/{collection}/{name}`: the resource, or none (404).
    pub fn get(&self, collection: &str, name: &str) -> Result<Option<Value>, PluginError> {
        let what = format!("reading {} `{name}`", singular(collection));
        let response = self.call(
            "GET",
            &format!("{collection}/{}", percent_encode(name)),
            None,
            &what,
        )?;
        match response.status {
            200 => Ok(Some(json_body(&response))),
            404 => Ok(None),
            _ => Err(status_error(&what, "Airflow", &response, &self.scrub)),
        }
    }

    /// `POST /api/v2/{collection}`.
    pub fn create(
        &self,
        collection: &str,
        name: &str,
        body: &Value,
    ) -> Result<Created, PluginError> {
        let what = format!("creating {} `{name}`", singular(collection));
        let response = self.call("POST", collection, Some(body), &what)?;
        match response.status {
            200 | 201 => Ok(Created::Created),
            409 => Ok(Created::Existed),
            _ => Err(status_error(&what, "Airflow", &response, &self.scrub)),
        }
    }

    /// `PATCH /api/v2/{collection}/{name}[?update_mask=…]`.
    pub fn patch(
        &self,
        collection: &str,
        name: &str,
        update_mask: Option<&str>,
        body: &Value,
    ) -> Result<Value, PluginError> {
        let what = format!("updating {} `{name}`", singular(collection));
        let mut path = format!("{collection}/{}", percent_encode(name));
        if let Some(mask) = update_mask {
            path.push_str(&format!("?update_mask={mask}"));
        }
        let response = self.call("PATCH", &path, Some(body), &what)?;
        match response.status {
            200 | 201 | 204 => Ok(json_body(&response)),
            _ => Err(status_error(&what, "Airflow", &response, &self.scrub)),
        }
    }

    /// `DELETE /api/v2/{collection}/{name}`: true when deleted, false when it was gone.
    pub fn delete(&self, collection: &str, name: &str) -> Result<bool, PluginError> {
        let what = format!("deleting {} `{name}`", singular(collection));
        let response = self.call(
            "DELETE",
            &format!("{collection}/{}", percent_encode(name)),
            None,
            &what,
        )?;
        match response.status {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(&what, "Airflow", &response, &self.scrub)),
        }
    }
}

fn singular(collection: &str) -> &str {
    match collection {
        "pools" => "pool",
        "connections" => "connection",
        "variables" => "variable",
        other => other,
    }
}

/// The Kubernetes API, when the operator granted `kubernetes-url` (and its host).
pub struct Kubernetes {
    base: String,
    bearer: Option<String>,
    scrub: Scrub,
}

impl Kubernetes {
    /// None when no Kubernetes API is configured.
    pub fn configured(mut scrub: Scrub) -> Option<Kubernetes> {
        let base = optional_secret("kubernetes-url")?
            .trim()
            .trim_end_matches('/')
            .to_string();
        let token = optional_secret("kubernetes-token");
        if let Some(token) = &token {
            scrub.add(token);
        }
        Some(Kubernetes {
            base,
            bearer: token.map(|t| format!("Bearer {t}")),
            scrub,
        })
    }

    pub fn host(&self) -> String {
        host_of(&self.base)
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Response, PluginError> {
        let headers: Vec<(&str, &str)> = match &self.bearer {
            Some(b) => vec![("Authorization", b.as_str())],
            None => Vec::new(),
        };
        log::debug(&format!("{method} {path} (Kubernetes)"));
        send(
            method,
            &format!("{}{path}", self.base),
            &headers,
            body,
            what,
            &self.scrub,
        )
    }

    /// POSTs an object to its collection; 409 means it exists.
    pub fn create(
        &self,
        collection: &str,
        body: &Value,
        what: &str,
    ) -> Result<Created, PluginError> {
        let response = self.call("POST", collection, Some(body), what)?;
        match response.status {
            200..=202 => Ok(Created::Created),
            409 => Ok(Created::Existed),
            _ => Err(status_error(what, "Kubernetes", &response, &self.scrub)),
        }
    }

    /// GETs an object: whether it exists.
    pub fn exists(&self, path: &str, what: &str) -> Result<bool, PluginError> {
        let response = self.call("GET", path, None, what)?;
        match response.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(what, "Kubernetes", &response, &self.scrub)),
        }
    }

    /// DELETEs an object: true when deleted, false when it was gone.
    pub fn delete(&self, path: &str, what: &str) -> Result<bool, PluginError> {
        let response = self.call("DELETE", path, None, what)?;
        match response.status {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(what, "Kubernetes", &response, &self.scrub)),
        }
    }
}

/// Whether a permanent error is the host refusing a host that is not granted.
pub fn is_not_granted(message: &str) -> bool {
    message.contains("is not granted to the airflow plugin (tenantry plugin grant airflow --host")
}
