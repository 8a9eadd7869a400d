//! The per-call state of a plugin instance (its `Store` data) and the host interfaces a plugin
//! may import: log, state, secrets and HTTP — each checking the plugin's capabilities on every
//! call. WASI is linked with nothing behind it: no preopened directories, no environment, no
//! arguments, no sockets; stdout and stderr go to capped in-memory pipes that end up in the log.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::provisioner::tenantry::plugin::{http, log, secrets, state, types};
use super::{LoadedPlugin, PluginTenant};
use crate::clock;
use crate::context::Context;

/// The host's outbound HTTP client, built on first use (it loads the system's CA certificates).
pub type HttpClient = Arc<std::sync::OnceLock<Result<reqwest::Client, String>>>;

/// Limits of the state interface.
const MAX_STATE_KEY: usize = 128;
const MAX_STATE_VALUE: usize = 64 * 1024;
const MAX_STATE_KEYS: usize = 256;
/// Limits of the log interface.
const MAX_LOG_LINE: usize = 4096;
const MAX_LOG_LINES: usize = 256;
const MAX_REDIRECTS: usize = 5;

/// Memory limits that remember whether they refused a growth (for a clear error).
pub struct Limiter {
    inner: StoreLimits,
    pub refused_memory: bool,
    pub max_memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.refused_memory = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Everything one call of one plugin may see. Dropped with the `Store` when the call ends.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    pub plugin: Arc<LoadedPlugin>,
    pub tenant: Option<PluginTenant>,
    ctx: Context,
    runtime: tokio::runtime::Handle,
    http: HttpClient,
    log_lines: usize,
    /// The log lines of this call, kept for callers that journal them (provisioning steps).
    pub captured: Vec<super::LogLine>,
}

impl CallState {
    pub fn new(
        plugin: Arc<LoadedPlugin>,
        tenant: Option<PluginTenant>,
        ctx: Context,
        runtime: tokio::runtime::Handle,
        http: HttpClient,
    ) -> Self {
        let config = &ctx.config.plugins;
        let stdout = MemoryOutputPipe::new(config.max_output_bytes);
        let stderr = MemoryOutputPipe::new(config.max_output_bytes);
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let max_memory = (config.max_memory_mib * 1024 * 1024) as usize;
        CallState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                inner: wasmtime::StoreLimitsBuilder::new()
                    .memory_size(max_memory)
                    .instances(32)
                    .tables(32)
                    .memories(8)
                    .build(),
                refused_memory: false,
                max_memory,
            },
            stdout,
            stderr,
            plugin,
            tenant,
            ctx,
            runtime,
            http,
            log_lines: 0,
            captured: Vec::new(),
        }
    }

    /// The tenant a state operation is for.
    fn tenant_id(&self) -> Result<String, String> {
        self.tenant
            .as_ref()
            .map(|t| t.id.clone())
            .ok_or_else(|| "this call is not made for a tenant; state needs one".to_owned())
    }

    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn slug(&self) -> &str {
        self.tenant.as_ref().map_or("", |t| t.slug.as_str())
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let (plugin, tenant) = (self.name().to_owned(), self.slug().to_owned());
        self.captured.push(super::LogLine {
            level: match level {
                log::Level::Trace => "trace",
                log::Level::Debug => "debug",
                log::Level::Info => "info",
                log::Level::Warn => "warn",
                log::Level::Error => "error",
            }
            .to_owned(),
            message: message.clone(),
        });
        match level {
            log::Level::Trace => {
                tracing::trace!(plugin = %plugin, tenant = %tenant, "plugin: {message}")
            }
            log::Level::Debug => {
                tracing::debug!(plugin = %plugin, tenant = %tenant, "plugin: {message}")
            }
            log::Level::Info => {
                tracing::info!(plugin = %plugin, tenant = %tenant, "plugin: {message}")
            }
            log::Level::Warn => {
                tracing::warn!(plugin = %plugin, tenant = %tenant, "plugin: {message}")
            }
            log::Level::Error => {
                tracing::error!(plugin = %plugin, tenant = %tenant, "plugin: {message}")
            }
        }
    }
}

impl state::Host for CallState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let tenant = self.tenant_id().ok()?;
        let (db, plugin) = (self.ctx.db.clone(), self.plugin.name.clone());
        self.runtime
            .block_on(async move {
                let mut conn = db.conn().await?;
                crate::store::plugins::state_get(&mut conn, &plugin, &tenant, &key).await
            })
            .unwrap_or_else(|err| {
                tracing::warn!(plugin = %self.plugin.name, "plugin state read failed: {err}");
                None
            })
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let tenant = self.tenant_id()?;
        if key.is_empty() || key.len() > MAX_STATE_KEY {
            return Err(format!("a state key must be 1 to {MAX_STATE_KEY} bytes"));
        }
        if value.len() > MAX_STATE_VALUE {
            return Err(format!(
                "a state value must be at most {MAX_STATE_VALUE} bytes"
            ));
        }
        let (db, plugin) = (self.ctx.db.clone(), self.plugin.name.clone());
        self.runtime.block_on(async move {
            crate::transaction!(db, |tx| {
                let keys = crate::store::plugins::state_keys(tx, &plugin, &tenant).await?;
                if keys.len() >= MAX_STATE_KEYS && !keys.contains(&key) {
                    return Ok(Err(format!(
                        "a plugin keeps at most {MAX_STATE_KEYS} keys per tenant"
                    )));
                }
                crate::store::plugins::state_put(tx, &plugin, &tenant, &key, &value, clock::now())
                    .await?;
                Ok(Ok(()))
            })
            .unwrap_or_else(|err| Err(format!("state is unavailable: {err}")))
        })
    }

    fn delete(&mut self, key: String) {
        let Ok(tenant) = self.tenant_id() else { return };
        let (db, plugin) = (self.ctx.db.clone(), self.plugin.name.clone());
        let result = self.runtime.block_on(async move {
            crate::transaction!(db, |tx| {
                crate::store::plugins::state_delete(tx, &plugin, &tenant, &key).await
            })
        });
        if let Err(err) = result {
            tracing::warn!(plugin = %self.plugin.name, "plugin state delete failed: {err}");
        }
    }

    fn keys(&mut self) -> Vec<String> {
        let Ok(tenant) = self.tenant_id() else {
            return Vec::new();
        };
        let (db, plugin) = (self.ctx.db.clone(), self.plugin.name.clone());
        self.runtime
            .block_on(async move {
                let mut conn = db.conn().await?;
                crate::store::plugins::state_keys(&mut conn, &plugin, &tenant).await
            })
            .unwrap_or_default()
    }
}

impl secrets::Host for CallState {
    fn get(&mut self, name: String) -> Result<String, String> {
        if !self.plugin.manifest.capabilities.secrets.contains(&name) {
            return Err(format!(
                "secret `{name}` is not requested in the plugin's manifest"
            ));
        }
        let Some(sealed) = self.plugin.grants.secrets.get(&name) else {
            return Err(format!(
                "secret `{name}` is not granted to plugin `{}`",
                self.plugin.name
            ));
        };
        self.ctx
            .keyring
            .open(sealed, &super::secret_context(&self.plugin.name, &name))
            .map_err(|_| format!("secret `{name}` cannot be opened on this server"))
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

/// Whether `url`'s host (and port) is requested and granted.
fn host_allowed(plugin: &LoadedPlugin, url: &url::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default();
    let matches = |pattern: &String| super::manifest::host_matches(pattern, host, port);
    plugin.manifest.capabilities.hosts.iter().any(matches)
        && plugin.grants.hosts.iter().any(matches)
}

impl http::Host for CallState {
    fn send(&mut self, request: http::Request) -> Result<http::Response, http::HttpError> {
        let config = &self.ctx.config.plugins;
        let mut url = url::Url::parse(&request.url)
            .map_err(|e| http::HttpError::Invalid(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(http::HttpError::Invalid("only http and https URLs".into()));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| http::HttpError::Invalid(format!("method `{}`", request.method)))?;
        let timeout = Duration::from_millis(
            request
                .timeout_ms
                .map_or(10_000, u64::from)
                .min(config.http_timeout_ms),
        );
        let max_body = config.http_max_response_bytes;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &request.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| http::HttpError::Invalid(format!("header name `{name}`")))?;
            let value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| http::HttpError::Invalid(format!("header value of `{name}`")))?;
            headers.append(name, value);
        }
        let plugin = self.plugin.clone();
        let client = self
            .http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| format!("the host's HTTP client cannot start: {e}"))
            })
            .clone()
            .map_err(http::HttpError::Connection)?;
        let body = request.body;
        self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut method = method;
            let mut body = body;
            for _ in 0..=MAX_REDIRECTS {
                if !host_allowed(&plugin, &url) {
                    return Err(http::HttpError::NotGranted(format!(
                        "{} is not a host granted to plugin `{}`",
                        url.host_str().unwrap_or("?"),
                        plugin.name
                    )));
                }
                let mut builder = client
                    .request(method.clone(), url.clone())
                    .headers(headers.clone());
                if let Some(body) = &body {
                    builder = builder.body(body.clone());
                }
                let response = tokio::time::timeout_at(deadline, builder.send())
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
                let status = response.status().as_u16();
                let response_headers = response
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
                let mut response = response;
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
                return Ok(http::Response {
                    status,
                    headers: response_headers,
                    body: collected,
                });
            }
            Err(http::HttpError::Invalid(format!(
                "more than {MAX_REDIRECTS} redirects"
            )))
        })
    }
}
