//! Configuration: built-in defaults, then an optional TOML file, then `TENANTRY_*` environment
//! variables and `DATABASE_URL`. Unknown keys are an error so that a typo never silently falls
//! back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

mod admin_tenant;
mod alerts;
mod auth;
mod cache;
mod jobs;
mod quotas;
pub use admin_tenant::AdminTenantConfig;
pub use alerts::{AlertsConfig, WebhooksConfig};
pub use auth::AuthConfig;
pub use cache::CacheConfig;
pub use jobs::{DatabaseProbesConfig, JobsConfig, TrialEndAction, TrialsConfig};
pub use quotas::{
    BUILTIN_METRICS, BuiltinMetric, DEFAULT_MAX_VALUE, FailMode, MetricConfig, MetricKind,
    QuotasConfig, Window, valid_metric_name,
};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The plugin host: sandbox limits and pool sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Plugin calls running at once; more wait their turn. Also sizes the instance pool.
    pub max_concurrent_calls: usize,
    /// Linear memory one plugin instance may grow to, in MiB.
    pub max_memory_mib: u64,
    /// Deadline of a provisioner call (describe, plan, apply, …), in milliseconds.
    pub provisioner_deadline_ms: u64,
    /// Deadline of a renderer call, in milliseconds.
    pub renderer_deadline_ms: u64,
    /// Deadline of a quota-policy call, in milliseconds.
    pub quota_deadline_ms: u64,
    /// Longest a plugin's outbound HTTP request may take, in milliseconds.
    pub http_timeout_ms: u64,
    /// Largest HTTP response body a plugin may receive, in bytes.
    pub http_max_response_bytes: usize,
    /// Bytes of a call's stdout/stderr kept for the log.
    pub max_output_bytes: usize,
    /// Longest one SQL statement of a plugin may run on a granted database, in milliseconds.
    pub sql_statement_timeout_ms: u64,
    /// Most rows one query of a plugin may return.
    pub sql_max_rows: usize,
    /// Most bytes of values one query of a plugin may return.
    pub sql_max_result_bytes: usize,
    /// Most database connections one plugin call may open (one per granted alias, or per
    /// `alias/database` it names).
    pub sql_max_connections_per_call: usize,
    /// How long a renderer or quota-policy call may run on the thread that makes it, in
    /// milliseconds, before it is stopped and run again on the blocking pool with its full
    /// deadline (those worlds have no side effects, so running again is safe). 0: every call
    /// goes to the blocking pool.
    pub inline_budget_ms: u64,
    /// Most steps one plan may have.
    pub max_plan_steps: usize,
    /// Largest input of one planned step, in bytes.
    pub max_step_input_bytes: usize,
    /// Largest outcome of one step, transition or import (its output and manual follow-up
    /// together, as journaled), in bytes.
    pub max_step_output_bytes: usize,
    /// Largest result of one call, in bytes: a plan's inputs and descriptions together, a
    /// rendering, a drift report, a bundle part.
    pub max_result_bytes: usize,
    /// Most measurements one `measure` may report.
    pub max_measurements: usize,
    /// The renderer plugin every template is rendered through: the built-in
    /// `template-renderer`, or an installed renderer of the operator's (with its own syntax
    /// and escaping). A template is checked with it when saved, and rendered with it.
    pub template_renderer: String,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 32,
            max_memory_mib: 64,
            provisioner_deadline_ms: 30_000,
            renderer_deadline_ms: 1_000,
            quota_deadline_ms: 100,
            http_timeout_ms: 30_000,
            http_max_response_bytes: 4 * 1024 * 1024,
            max_output_bytes: 16 * 1024,
            sql_statement_timeout_ms: 10_000,
            sql_max_rows: 10_000,
            sql_max_result_bytes: 4 * 1024 * 1024,
            sql_max_connections_per_call: 4,
            inline_budget_ms: 5,
            max_plan_steps: 1_000,
            max_step_input_bytes: 256 * 1024,
            max_step_output_bytes: 256 * 1024,
            max_result_bytes: 4 * 1024 * 1024,
            max_measurements: 100,
            template_renderer: "template-renderer".into(),
        }
    }
}

/// The provisioning saga: workers, leases, retries, idempotency keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Runs one server moves forward at once.
    pub workers: usize,
    /// Runs one server may hold beside those while they wait: a run whose plugin call has
    /// lasted `step_aside_ms`, or that waits to retry a step, gives its worker to the next run
    /// and waits for one again when its call ends, so slow or sleeping plugins never hold the
    /// workers that other tenants' runs need.
    pub waiting_runs: usize,
    /// How long a plugin call holds its run's worker before the run steps aside, in
    /// milliseconds.
    pub step_aside_ms: u64,
    /// How long a server's claim on a run lasts without renewal, in seconds. A run whose server
    /// died is taken over by any server once its lease has expired.
    pub lease_seconds: u64,
    /// How often an idle server looks for runs to take over, in milliseconds.
    pub poll_interval_ms: u64,
    /// Attempts of a step (its first run included) before a transient failure counts as
    /// permanent.
    pub max_attempts: u32,
    /// Delay before the first retry of a step, in milliseconds; doubles with every attempt.
    pub backoff_base_ms: u64,
    /// Longest delay between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
    /// How long an idempotency key is remembered, in hours (at least 24).
    pub idempotency_ttl_hours: u32,
    /// FOR TESTS ONLY: makes the server stop at a point so that a test can kill it there (see
    /// [`Fault`]). The server writes `<data_dir>/fault-reached` and waits forever.
    pub fault_injection: Option<Fault>,
}

/// A point where a test makes the server stop, to kill it there
/// (`provisioning.fault_injection`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Fault {
    /// `pause-before-apply:<plugin>:<step>`: before the step's backend call.
    BeforeApply { plugin: String, step: String },
    /// `pause-after-apply:<plugin>:<step>`: after the backend call, before its result is
    /// journaled.
    AfterApply { plugin: String, step: String },
    /// `pause-after-lifecycle-commit`: after a lifecycle change (suspend, reactivate, cancel,
    /// delete, restore, purge) committed, before this server's worker hears of its run.
    AfterLifecycleCommit,
}

impl TryFrom<String> for Fault {
    type Error = String;

    fn try_from(text: String) -> Result<Fault, String> {
        if text == "pause-after-lifecycle-commit" {
            return Ok(Fault::AfterLifecycleCommit);
        }
        let parsed = text.split_once(':').and_then(|(when, rest)| {
            let (plugin, step) = rest.split_once(':')?;
            if plugin.is_empty() || step.is_empty() {
                return None;
            }
            let (plugin, step) = (plugin.to_owned(), step.to_owned());
            match when {
                "pause-before-apply" => Some(Fault::BeforeApply { plugin, step }),
                "pause-after-apply" => Some(Fault::AfterApply { plugin, step }),
                _ => None,
            }
        });
        parsed.ok_or_else(|| {
            format!(
                "`{text}` is not pause-before-apply:<plugin>:<step>, \
                 pause-after-apply:<plugin>:<step> or pause-after-lifecycle-commit"
            )
        })
    }
}

impl From<Fault> for String {
    fn from(fault: Fault) -> String {
        match fault {
            Fault::BeforeApply { plugin, step } => format!("pause-before-apply:{plugin}:{step}"),
            Fault::AfterApply { plugin, step } => format!("pause-after-apply:{plugin}:{step}"),
            Fault::AfterLifecycleCommit => "pause-after-lifecycle-commit".into(),
        }
    }
}

impl Fault {
    /// Stops here for good (until the process is killed), after telling the test through
    /// `<data_dir>/fault-reached`, which holds `what`.
    pub async fn pause(&self, data_dir: &Path, what: &str) {
        let _ = std::fs::write(data_dir.join("fault-reached"), format!("{what}\n"));
        tracing::warn!(fault = ?self, "fault injection: pausing here until the process is killed");
        std::future::pending::<()>().await;
    }
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            waiting_runs: 16,
            step_aside_ms: 1_000,
            lease_seconds: 30,
            poll_interval_ms: 1_000,
            max_attempts: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
            idempotency_ttl_hours: 24,
            fault_injection: None,
        }
    }
}

/// Everything the server and the CLI read from the outside world.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: String,
    /// Directory for the embedded database, the dev master key and other local state.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: `sqlite://<data_dir>/tenantry.db`.
    pub database_url: Option<String>,
    /// Maximum connections in the database pool.
    pub database_pool_size: usize,
    /// `redis://host:6379/0`: rate limits shared by every server (each tenant's and each
    /// key's budget, and the abuse limits of logins and failed keys). Without it, each server
    /// keeps its own.
    pub redis_url: Option<String>,
    /// What a request gets while Redis cannot be reached: `open` decides it with this server's
    /// own budgets (as without Redis), `closed` refuses it with 503.
    pub redis_on_failure: FailMode,
    /// Milliseconds a rate-limit check waits for Redis before it counts as unreachable.
    pub redis_timeout_ms: u64,
    /// What the keys of the shared budgets start with: installations sharing one Redis need
    /// prefixes of their own.
    pub redis_prefix: String,
    /// Password of the bootstrap administrator (`admin`), applied at start when set.
    pub bootstrap_admin_password: Option<String>,
    /// Base64 of a 32-byte master key that seals secrets at rest.
    pub master_key: Option<String>,
    /// File holding the master key (base64); default `<data_dir>/master.key`, generated if absent.
    pub master_key_file: Option<PathBuf>,
    /// Older master keys (base64), only used to open secrets sealed before a rotation.
    pub previous_master_keys: Vec<String>,
    /// Days a canceled or deleted tenant is kept before it may be purged without `force`.
    pub retention_days: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Seconds a request's body may take to arrive after its head.
    pub body_timeout_seconds: u64,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `tenantry=debug,info`.
    pub log_level: String,
    /// Public base URL of the server (used for links and to decide on `Secure` cookies).
    pub public_url: Option<String>,
    /// When set, `/metrics` answers only a request with `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
    /// The proxies in front of the server (addresses or CIDR ranges): only from these are the
    /// client's address, scheme and host taken from `Forwarded` / `X-Forwarded-*` headers.
    pub trusted_proxies: Vec<String>,
    /// Tenants are also reached at `<slug>.<base_domain>` (e.g. `acme.example.com/login`);
    /// without it, only at `/t/<slug>/…`.
    pub base_domain: Option<String>,
    /// Minutes of inactivity after which a portal session ends.
    pub session_idle_minutes: u32,
    /// Hours after which a portal session ends regardless of activity.
    pub session_absolute_hours: u32,
    /// The platform's own tenant.
    pub admin_tenant: AdminTenantConfig,
    /// Logins, sessions and API keys.
    pub auth: AuthConfig,
    /// The plugin host.
    pub plugins: PluginsConfig,
    /// The provisioning saga.
    pub provisioning: ProvisioningConfig,
    /// Quotas and usage metering.
    pub quotas: QuotasConfig,
    /// Alerts on tenants, and the webhooks told about them.
    pub alerts: AlertsConfig,
    /// The caches of API keys, sessions and tenants.
    pub cache: CacheConfig,
    /// The scheduled jobs.
    pub jobs: JobsConfig,
    /// The end of trials.
    pub trials: TrialsConfig,
    /// Probes of the tenants' databases.
    pub database_probes: DatabaseProbesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_pool_size: 8,
            redis_url: None,
            redis_on_failure: FailMode::Open,
            redis_timeout_ms: 100,
            redis_prefix: "tenantry".into(),
            bootstrap_admin_password: None,
            master_key: None,
            master_key_file: None,
            previous_master_keys: Vec::new(),
            retention_days: 30,
            max_body_bytes: 256 * 1024,
            body_timeout_seconds: 30,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            public_url: None,
            metrics_token: None,
            trusted_proxies: Vec::new(),
            base_domain: None,
            session_idle_minutes: 60,
            session_absolute_hours: 12,
            admin_tenant: AdminTenantConfig::default(),
            auth: AuthConfig::default(),
            plugins: PluginsConfig::default(),
            provisioning: ProvisioningConfig::default(),
            quotas: QuotasConfig::default(),
            alerts: AlertsConfig::default(),
            cache: CacheConfig::default(),
            jobs: JobsConfig::default(),
            trials: TrialsConfig::default(),
            database_probes: DatabaseProbesConfig::default(),
        }
    }
}

/// Environment variables read by [`Config::load`] that are not configuration keys themselves.
const ENV_NOT_KEYS: &[&str] = &["config", "test_clock_file"];

impl Config {
    /// Loads defaults, then `file` (or `$TENANTRY_CONFIG`, or `tenantry.toml` when it exists),
    /// then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("TENANTRY_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &file {
            Some(path) => {
                anyhow::ensure!(
                    path.is_file(),
                    "config file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new("tenantry.toml").is_file() => {
                figment = figment.merge(Toml::file("tenantry.toml"));
            }
            None => {}
        }
        figment = figment
            .merge(Env::prefixed("TENANTRY_").ignore(ENV_NOT_KEYS).split("__"))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            );
        let mut config: Config = figment.extract().map_err(|err| {
            // figment's message names the key and its source (file or variable).
            anyhow::anyhow!(
                "invalid configuration: {}",
                err.to_string().replace('\n', "; ")
            )
        })?;
        config.admin_tenant.fold_db_uri()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values (not only their types); [`Config::load`] calls it, and so must whoever
    /// changes the configuration after loading it (`serve --bind`).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.bind.parse::<SocketAddr>().map_err(|_| {
            anyhow::anyhow!(
                "invalid configuration: bind `{}` is not an address like 127.0.0.1:8080",
                self.bind
            )
        })?;
        anyhow::ensure!(
            self.database_pool_size >= 1,
            "invalid configuration: database_pool_size must be at least 1"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.redis_timeout_ms),
            "invalid configuration: redis_timeout_ms must be from 1 to 10000"
        );
        anyhow::ensure!(
            !self.redis_prefix.is_empty()
                && self.redis_prefix.len() <= 64
                && self
                    .redis_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)),
            "invalid configuration: redis_prefix must be 1 to 64 letters, digits, '-', '_', '.' or ':'"
        );
        if let Some(url) = &self.redis_url {
            anyhow::ensure!(
                url.starts_with("redis://")
                    || url.starts_with("rediss://")
                    || url.starts_with("redis+unix://"),
                "invalid configuration: redis_url must be a redis://, rediss:// or redis+unix:// URL"
            );
        }
        anyhow::ensure!(
            self.max_body_bytes >= 1024,
            "invalid configuration: max_body_bytes must be at least 1024"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.body_timeout_seconds),
            "invalid configuration: body_timeout_seconds must be from 1 to 3600"
        );
        if let Some(url) = &self.public_url {
            url::Url::parse(url)
                .map_err(|err| anyhow::anyhow!("invalid configuration: public_url: {err}"))?;
        }
        if let Some(token) = &self.metrics_token {
            anyhow::ensure!(
                token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()),
                "invalid configuration: metrics_token must be at least 16 visible ASCII characters"
            );
        }
        crate::client::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|err| anyhow::anyhow!("invalid configuration: trusted_proxies: {err}"))?;
        if let Some(domain) = &self.base_domain {
            let valid = !domain.is_empty()
                && domain.len() <= 200
                && domain.split('.').count() >= 2
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                });
            anyhow::ensure!(
                valid,
                "invalid configuration: base_domain `{domain}` is not a lowercase domain name like example.com"
            );
        }
        let a = &self.auth;
        for (name, value) in [
            ("auth.login_attempt_minutes", a.login_attempt_minutes),
            (
                "auth.logins_per_address_per_minute",
                a.logins_per_address_per_minute,
            ),
            (
                "auth.logins_per_tenant_per_minute",
                a.logins_per_tenant_per_minute,
            ),
            (
                "auth.key_failures_per_address_per_minute",
                a.key_failures_per_address_per_minute,
            ),
            (
                "auth.key_failures_per_key_per_minute",
                a.key_failures_per_key_per_minute,
            ),
            (
                "auth.password_failures_per_address_per_minute",
                a.password_failures_per_address_per_minute,
            ),
            (
                "auth.password_failures_per_user_per_minute",
                a.password_failures_per_user_per_minute,
            ),
            (
                "auth.callback_failures_per_address_per_minute",
                a.callback_failures_per_address_per_minute,
            ),
            (
                "auth.max_concurrent_password_checks",
                a.max_concurrent_password_checks,
            ),
            ("auth.setup_link_hours", a.setup_link_hours),
        ] {
            anyhow::ensure!(
                value >= 1,
                "invalid configuration: {name} must be at least 1"
            );
        }
        anyhow::ensure!(
            a.setup_link_hours <= 168,
            "invalid configuration: auth.setup_link_hours must be at most 168 (a week)"
        );
        anyhow::ensure!(
            a.provider_timeout_ms >= 100,
            "invalid configuration: auth.provider_timeout_ms must be at least 100"
        );
        if let Some(mapping) = &self.admin_tenant.role_mapping {
            mapping.validate(true).map_err(|errors| {
                anyhow::anyhow!(
                    "invalid configuration: admin_tenant.{}",
                    errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        }
        let p = &self.provisioning;
        anyhow::ensure!(
            p.workers >= 1,
            "invalid configuration: provisioning.workers must be at least 1"
        );
        anyhow::ensure!(
            p.lease_seconds >= 2,
            "invalid configuration: provisioning.lease_seconds must be at least 2"
        );
        anyhow::ensure!(
            p.max_attempts >= 1,
            "invalid configuration: provisioning.max_attempts must be at least 1"
        );
        anyhow::ensure!(
            p.idempotency_ttl_hours >= 24,
            "invalid configuration: provisioning.idempotency_ttl_hours must be at least 24"
        );
        self.quotas.validate()?;
        self.alerts.validate()?;
        self.cache.validate()?;
        self.jobs.validate()?;
        self.trials.validate()?;
        self.database_probes.validate()?;
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("tenantry.db").display()),
        }
    }

    /// Whether cookies must carry `Secure` (the server is reached over TLS).
    pub fn secure_cookies(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    }
}
