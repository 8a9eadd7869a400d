//! A JSON client of one backend through the host's `http`.

use serde_json::Value;

use super::uri::host_of;
use super::{Redactor, error_message, permanent, status_error, transient};
use crate::http::{self, HttpError, Request};
use crate::provisioner::PluginError;

/// How long a read may take unless the plugin says otherwise.
const READ_TIMEOUT_MS: u32 = 15_000;
/// Writes often do more (a backend that tests a connection before it stores it).
const WRITE_TIMEOUT_MS: u32 = 25_000;

/// A backend at one base URL: the headers every call carries, its timeouts and the values no
/// message may show.
///
/// ```no_run
/// use serde_json::Value;
/// use tenantry_plugin_sdk::backend::{self, Backend};
/// use tenantry_plugin_sdk::provisioner::PluginError;
///
/// fn space(name: &str) -> Result<Option<Value>, PluginError> {
///     // The endpoint is configuration (the manifest's `config_schema`), the token a secret.
///     let url = backend::setting("workspace", "url", "workspace-url")?;
///     let token = backend::secret("workspace", "workspace-token")?;
///     let mut api = Backend::new("Workspace", "workspace", &url).require_http("url")?;
///     api.hide(&token);
///     api.set_header("Authorization", &format!("Bearer {token}"));
///     let path = format!("/api/spaces/{}", backend::uri::percent_encode(name));
///     let answer = api.json("GET", &path, None, "reading the space")?;
///     match answer.status {
///         200 => Ok(Some(answer.json())),
///         404 => Ok(None),
///         _ => Err(api.status_error("reading the space", &answer)),
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Backend {
    /// The backend's name in messages: `Airflow`.
    name: String,
    /// The plugin's name, for the grant commands messages suggest: `airflow`.
    plugin: String,
    base: String,
    headers: Vec<(String, String)>,
    read_timeout_ms: u32,
    write_timeout_ms: u32,
    redactor: Redactor,
}

/// What a request sends.
pub enum Body<'a> {
    None,
    Json(&'a Value),
    /// Bytes of a content type of their own (a multipart upload).
    Raw {
        content_type: &'a str,
        bytes: Vec<u8>,
    },
}

/// A backend's answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The values of a header (names compare case-insensitively).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `name=value` pairs of the answer's `Set-Cookie` headers (without their attributes).
    pub fn cookies(&self) -> Vec<String> {
        self.header_values("set-cookie")
            .filter_map(|v| v.split(';').next().map(|c| c.trim().to_string()))
            .filter(|c| c.contains('='))
            .collect()
    }
}

impl Backend {
    /// The backend `name` (for messages) driven by the plugin `plugin` at `base_url`. A
    /// trailing `/` of the URL is dropped; paths given to the calls start with `/`.
    pub fn new(name: &str, plugin: &str, base_url: &str) -> Backend {
        Backend {
            name: name.to_string(),
            plugin: plugin.to_string(),
            base: base_url.trim().trim_end_matches('/').to_string(),
            headers: Vec::new(),
            read_timeout_ms: READ_TIMEOUT_MS,
            write_timeout_ms: WRITE_TIMEOUT_MS,
            redactor: Redactor::new(),
        }
    }

    /// Checks that the base URL is an http(s) URL; the error names the setting it came from.
    pub fn require_http(self, setting: &str) -> Result<Backend, PluginError> {
        if self.base.starts_with("http://") || self.base.starts_with("https://") {
            Ok(self)
        } else {
            Err(permanent(format!(
                "the setting `{setting}` is not an http(s) URL"
            )))
        }
    }

    /// Timeouts of reads (GET, HEAD) and of the other methods.
    pub fn with_timeouts(mut self, read_ms: u32, write_ms: u32) -> Backend {
        self.read_timeout_ms = read_ms;
        self.write_timeout_ms = write_ms;
        self
    }

    /// Sets a header every call carries (replacing one of the same name).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// Hides a value from every message from now on.
    pub fn hide(&mut self, value: &str) {
        self.redactor.add(value);
    }

    /// The values hidden from messages, for messages the plugin builds itself.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn redactor_mut(&mut self) -> &mut Redactor {
        &mut self.redactor
    }

    /// The base URL (`https://host:port/prefix`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host and port of the base URL, as grants name them.
    pub fn host(&self) -> String {
        host_of(&self.base)
    }

    /// Sends one request to `base + path`; transport failures become classified errors,
    /// answers come back whatever their status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Body<'_>,
        what: &str,
    ) -> Result<Answer, PluginError> {
        self.send_with(method, path, &[], body, what)
    }

    /// [`Backend::send`] with headers of this call only (they replace the common ones of the
    /// same name: a token bound to one organization, say).
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
        what: &str,
    ) -> Result<Answer, PluginError> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e.eq_ignore_ascii_case(k)))
            .cloned()
            .collect();
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        headers.push(("Accept".into(), "application/json".into()));
        let payload = match body {
            Body::None => None,
            Body::Json(value) => {
                headers.push(("Content-Type".into(), "application/json".into()));
                Some(value.to_string().into_bytes())
            }
            Body::Raw {
                content_type,
                bytes,
            } => {
                headers.push(("Content-Type".into(), content_type.to_string()));
                Some(bytes)
            }
        };
        let timeout = if matches!(method, "GET" | "HEAD") {
            self.read_timeout_ms
        } else {
            self.write_timeout_ms
        };
        let request = Request {
            method: method.into(),
            url: format!("{}{path}", self.base),
            headers,
            body: payload,
            timeout_ms: Some(timeout),
        };
        crate::log::debug(&format!("{method} {path} ({})", self.name));
        let response = http::send(&request).map_err(|err| self.transport_error(what, err))?;
        Ok(Answer {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }

    /// A JSON request (or none, for `None`).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer, PluginError> {
        self.send(method, path, body.map_or(Body::None, Body::Json), what)
    }

    /// A JSON request whose status must be 2xx or one of `accept`; any other status is
    /// [`Backend::status_error`].
    pub fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: &[u16],
        what: &str,
    ) -> Result<Answer, PluginError> {
        let answer = self.json(method, path, body, what)?;
        if answer.is_success() || accept.contains(&answer.status) {
            Ok(answer)
        } else {
            Err(self.status_error(what, &answer))
        }
    }

    /// The error of an answer the plugin did not expect: the status and the backend's own
    /// message (redacted); transient for 408, 429 and 5xx, permanent otherwise.
    pub fn status_error(&self, what: &str, answer: &Answer) -> PluginError {
        let message = self.redactor.clean(&error_message(&answer.body));
        #[cfg(target_arch = "wasm32")]
        crate::log::warn(&format!("{what}: {} {message}", answer.status));
        status_error(what, &self.name, answer.status, &message)
    }

    /// The error of a request that got no answer.
    pub fn transport_error(&self, what: &str, err: HttpError) -> PluginError {
        let (name, plugin, host) = (&self.name, &self.plugin, self.host());
        let clean = |text: String| self.redactor.clean(&text);
        match err {
            HttpError::Timeout => {
                transient(format!("{what}: {name} at {host} did not answer in time"))
            }
            HttpError::Connection(cause) => transient(clean(format!(
                "{what}: cannot reach {name} at {host}: {cause}"
            ))),
            HttpError::NotGranted(_) => permanent(format!(
                "{what}: the host {host} is not granted to the {plugin} plugin \
                 (tenantry plugin grant {plugin} --host {host})"
            )),
            HttpError::Invalid(cause) => {
                permanent(clean(format!("{what}: invalid request: {cause}")))
            }
            HttpError::TooLarge => permanent(format!(
                "{what}: the answer of {name} is larger than the host allows"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_their_json_and_cookies() {
        let answer = Answer {
            status: 201,
            headers: vec![
                ("Set-Cookie".into(), "session=abc; HttpOnly; Path=/".into()),
                ("set-cookie".into(), "flag; Path=/".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: br#"{"id": 7}"#.to_vec(),
        };
        assert!(answer.is_success());
        assert_eq!(answer.json()["id"], 7);
        assert_eq!(answer.cookies(), vec!["session=abc".to_string()]);
        let not_json = Answer {
            status: 502,
            headers: vec![],
            body: b"<html>".to_vec(),
        };
        assert!(!not_json.is_success());
        assert_eq!(not_json.json(), Value::Null);
    }

    #[test]
    fn transport_errors_are_classified_and_say_what_to_grant() {
        let mut api = Backend::new("Airflow", "airflow", "http://u:pw@127.0.0.1:8080/");
        api.hide("s3cret-token");
        assert_eq!(api.base(), "http://u:pw@127.0.0.1:8080");
        let e = api.transport_error("reading pool `a`", HttpError::NotGranted("x".into()));
        assert!(
            matches!(&e, PluginError::Permanent(m) if m.contains(
                "the host 127.0.0.1:8080 is not granted to the airflow plugin (tenantry plugin grant airflow --host 127.0.0.1:8080)"
            )),
            "{e:?}"
        );
        let e = api.transport_error("x", HttpError::Connection("refused s3cret-token".into()));
        assert!(
            matches!(&e, PluginError::Transient(m)
            if m == "x: cannot reach Airflow at 127.0.0.1:8080: refused ***"),
            "{e:?}"
        );
        assert!(matches!(
            api.transport_error("x", HttpError::Timeout),
            PluginError::Transient(_)
        ));
        assert!(matches!(
            api.transport_error("x", HttpError::TooLarge),
            PluginError::Permanent(_)
        ));
    }

    #[test]
    fn unexpected_statuses_carry_the_backend_message_without_secrets() {
        let mut api = Backend::new("Superset", "superset", "http://h:1");
        api.hide("hunter22");
        let answer = Answer {
            status: 422,
            headers: vec![],
            body: br#"{"message": "bad password hunter22"}"#.to_vec(),
        };
        let e = api.status_error("creating database `d`", &answer);
        assert!(
            matches!(&e, PluginError::Permanent(m)
            if m == "creating database `d`: Superset answered 422: bad password ***"),
            "{e:?}"
        );
        let busy = Answer {
            status: 503,
            ..answer
        };
        assert!(matches!(
            api.status_error("x", &busy),
            PluginError::Transient(_)
        ));
        assert!(
            Backend::new("C", "c", "ftp://x")
                .require_http("c-url")
                .is_err()
        );
    }
}
