//! The `http` capability: outbound HTTP to the hosts the plugin's manifest requests and the
//! operator granted — checked for the first URL and again for every redirect hop — with a
//! deadline and a cap on the response body.
//!
//! A granted name is resolved by the host, and the request goes to the addresses it checked
//! (never resolved again, so a name that changes its answer cannot lead it elsewhere). An
//! address that is internal (loopback, private, link-local — the metadata services —, see
//! `net`) is reached only through a grant of that very address: a grant of a name that resolves
//! to one is refused. `Host` and the hop-by-hop headers are the host's to write: a plugin's own
//! would reach another virtual host behind the same address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::plugin_host::bindings::provisioner::tenantry::plugin::http;
use crate::plugin_host::manifest::host_matches;
use crate::plugin_host::{HostServices, LoadedPlugin};

/// The host's outbound HTTP client, built on first use (it loads the system's CA certificates).
pub type HttpClient = std::sync::Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>;

const MAX_REDIRECTS: usize = 5;

/// Headers a plugin may not set: the host writes them from the URL and the body.
const HOST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

tokio::task_local! {
    /// The addresses the host checked for each name of the request being sent.
    static PINNED: HashMap<String, Vec<SocketAddr>>;
}

/// reqwest's resolver for plugins' requests: the addresses the host checked for the name, and
/// nothing else (a name it did not check does not resolve).
struct PinnedResolver;

impl reqwest::dns::Resolve for PinnedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = PINNED
            .try_with(|pinned| pinned.get(name.as_str()).cloned())
            .ok()
            .flatten();
        Box::pin(async move {
            match found {
                Some(addresses) => Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs),
                None => Err("a name the host did not check".into()),
            }
        })
    }
}

pub struct HttpUnit {
    client: HttpClient,
    plugin: String,
    requested: Vec<String>,
    granted: Vec<String>,
    timeout_cap: Duration,
    max_body: usize,
    runtime: tokio::runtime::Handle,
    end: super::CallEnd,
    cancel: std::sync::Arc<super::Cancel>,
    /// What this call waited on, and how long.
    pub waits: super::Waits,
}

impl HttpUnit {
    pub fn new(
        services: &HostServices,
        plugin: &LoadedPlugin,
        runtime: tokio::runtime::Handle,
        end: super::CallEnd,
        cancel: std::sync::Arc<super::Cancel>,
    ) -> Self {
        HttpUnit {
            client: services.http.clone(),
            plugin: plugin.name.clone(),
            requested: plugin.manifest.capabilities.hosts.clone(),
            granted: plugin.grants.hosts.clone(),
            timeout_cap: Duration::from_millis(services.config.http_timeout_ms),
            max_body: services.config.http_max_response_bytes,
            runtime,
            end,
            cancel,
            waits: super::Waits::default(),
        }
    }

    /// The access check: whether `url`'s host (and port) is requested and granted.
    fn allowed(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let port = url.port_or_known_default();
        let matches = |pattern: &String| host_matches(pattern, host, port);
        self.requested.iter().any(matches) && self.granted.iter().any(matches)
    }

    /// Why a request to `url` is refused: the host and port asked for, and what the plugin
    /// requests and was granted.
    fn refusal(&self, url: &url::Url) -> String {
        let host = url.host_str().unwrap_or("?");
        let asked = match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let list = |hosts: &[String]| {
            if hosts.is_empty() {
                "none".to_owned()
            } else {
                hosts.join(", ")
            }
        };
        let requested = self
            .requested
            .iter()
            .any(|p| host_matches(p, host, url.port_or_known_default()));
        if requested {
            format!(
                "{asked} is not granted to plugin `{}` (granted: {})",
                self.plugin,
                list(&self.granted)
            )
        } else {
            format!(
                "{asked} is not requested by plugin `{}` in its manifest (requested: {})",
                self.plugin,
                list(&self.requested)
            )
        }
    }

    /// The addresses `url`'s host may be reached at: an address granted as such, or the
    /// addresses its name resolves to when none is internal.
    async fn checked_addresses(
        &self,
        url: &url::Url,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(String, Vec<SocketAddr>)>, http::HttpError> {
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            // An address in the URL passed `allowed` only through a grant of that address.
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) | None => Ok(None),
            Some(url::Host::Domain(name)) => {
                let resolved =
                    tokio::time::timeout_at(deadline, tokio::net::lookup_host((name, port)))
                        .await
                        .map_err(|_| http::HttpError::Timeout)?
                        .map_err(|e| {
                            http::HttpError::Connection(format!("resolving {name}: {e}"))
                        })?;
                let addresses: Vec<SocketAddr> = resolved.collect();
                // An internal address only where the operator granted that very address.
                let granted_as_such = |address: &SocketAddr| {
                    let host = match address.ip() {
                        std::net::IpAddr::V4(v4) => v4.to_string(),
                        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    };
                    self.granted
                        .iter()
                        .any(|pattern| host_matches(pattern, &host, Some(port)))
                };
                if let Some(internal) = addresses
                    .iter()
                    .find(|a| crate::net::is_internal(a.ip()) && !granted_as_such(a))
                {
                    return Err(http::HttpError::NotGranted(format!(
                        "{name} resolves to the internal address {}, which plugin `{}` may \
                         reach only through a grant of that address itself",
                        internal.ip(),
                        self.plugin
                    )));
                }
                Ok(Some((name.to_owned(), addresses)))
            }
        }
    }

    fn client(&self) -> Result<reqwest::Client, http::HttpError> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .dns_resolver(std::sync::Arc::new(PinnedResolver))
                    .build()
                    .map_err(|e| format!("the host's HTTP client cannot start: {e}"))
            })
            .clone()
            .map_err(http::HttpError::Connection)
    }
}

/// A reqwest error with its causes (its own message alone says little), without the URL.
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl http::Host for HttpUnit {
    fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let mut url = url::Url::parse(&request.url)
            .map_err(|e| http::HttpError::Invalid(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(http::HttpError::Invalid("only http and https URLs".into()));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| http::HttpError::Invalid(format!("method `{}`", request.method)))?;
        let timeout = request
            .timeout_ms
            .map_or(Duration::from_secs(10), |ms| {
                Duration::from_millis(ms.into())
            })
            .min(self.timeout_cap);
        // The request ends with the call, whatever it asked for.
        let timeout = self.end.cap(timeout);
        if timeout.is_zero() {
            self.waits.cut = true;
            return Err(http::HttpError::Timeout);
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| http::HttpError::Invalid(format!("header name `{name}`")))?;
            if HOST_HEADERS.contains(&name.as_str()) {
                return Err(http::HttpError::Invalid(format!(
                    "header `{name}` is written by the host, not by a plugin"
                )));
            }
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| http::HttpError::Invalid(format!("header value of `{name}`")))?;
            headers.append(name, value);
        }
        let client = self.client()?;
        let max_body = self.max_body;
        let unit = &*self;
        let body = request.body;
        let started = std::time::Instant::now();
        let cancel = self.cancel.clone();
        let result = self.runtime.block_on(cancel.or(
            async move {
                let deadline = tokio::time::Instant::now() + timeout;
                let mut method = method;
                let mut body = body;
                for _ in 0..=MAX_REDIRECTS {
                    if !unit.allowed(&url) {
                        return Err(http::HttpError::NotGranted(unit.refusal(&url)));
                    }
                    let pinned: HashMap<String, Vec<SocketAddr>> = unit
                        .checked_addresses(&url, deadline)
                        .await?
                        .into_iter()
                        .collect();
                    let mut builder = client
                        .request(method.clone(), url.clone())
                        .headers(headers.clone());
                    if let Some(body) = &body {
                        builder = builder.body(body.clone());
                    }
                    let response =
                        tokio::time::timeout_at(deadline, PINNED.scope(pinned, builder.send()))
                            .await
                            .map_err(|_| http::HttpError::Timeout)?
                            .map_err(|e| http::HttpError::Connection(describe(e)))?;
                    if response.status().is_redirection() {
                        let location = response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|v| v.to_str().ok())
                            .ok_or_else(|| {
                                http::HttpError::Invalid("a redirect without a Location".into())
                            })?;
                        url = url
                            .join(location)
                            .map_err(|e| http::HttpError::Invalid(format!("redirect: {e}")))?;
                        if response.status() == reqwest::StatusCode::SEE_OTHER {
                            method = reqwest::Method::GET;
                            body = None;
                        }
                        continue;
                    }
                    return read_response(response, deadline, max_body).await;
                }
                Err(http::HttpError::Invalid(format!(
                    "more than {MAX_REDIRECTS} redirects"
                )))
            },
            Err(http::HttpError::Timeout),
        ));
        let host = request_host(&request.url);
        self.waits
            .ended(|| format!("{host} (HTTP)"), started.elapsed(), &self.end);
        result
    }
}

/// The host (and port) of a request's URL, as the deadline's error names it.
fn request_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                u.port()
                    .map_or_else(|| h.to_owned(), |p| format!("{h}:{p}"))
            })
        })
        .unwrap_or_else(|| "a host".into())
}

/// The status, headers and body (at most `max_body` bytes) of a response, before `deadline`.
async fn read_response(
    mut response: reqwest::Response,
    deadline: tokio::time::Instant,
    max_body: usize,
) -> Result<http::Response, http::HttpError> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if response
        .content_length()
        .is_some_and(|len| len as usize > max_body)
    {
        return Err(http::HttpError::TooLarge);
    }
    let mut collected = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| http::HttpError::Timeout)?
            .map_err(|e| http::HttpError::Connection(describe(e)))?;
        let Some(chunk) = chunk else { break };
        if collected.len() + chunk.len() > max_body {
            return Err(http::HttpError::TooLarge);
        }
        collected.extend_from_slice(&chunk);
    }
    Ok(http::Response {
        status,
        headers,
        body: collected,
    })
}
