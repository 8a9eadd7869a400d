//! What every service and handler is given, built once at start and cheap to clone: the
//! database (`db`), the caches of keys, sessions and tenants (`caches`), the keyring, the
//! configuration, the metrics, the plugin host (`plugins`), the wakers of this server's
//! provisioning worker and webhook deliverer (`runs_queued`, `deliveries_queued`), the rate
//! limits (`limits`), the identity providers (`providers`), the kept quota decisions
//! (`quota_decisions`), the API calls counted until written (`api_calls`) and what the alert
//! evaluator is told (`alert_signals`). A change of a tenant heard on the change feed forgets
//! its quota decision here.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugin_host::{HostServices, PluginHost};
use crate::secrets::Keyring;
use crate::store::Db;

#[derive(Clone)]
pub struct Context {
    pub db: Db,
    /// API keys, sessions and tenants as every request reads them (forgotten when they change).
    pub caches: Arc<crate::caches::Caches>,
    pub keyring: Arc<Keyring>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub plugins: Arc<PluginHost>,
    /// Wakes this server's provisioning worker when a run is queued.
    pub runs_queued: Arc<tokio::sync::Notify>,
    /// Rate limits: API keys' own, tenants' API calls a minute, abuse limits on logins and
    /// failed API-key attempts (this server's, or shared through Redis).
    pub limits: Arc<crate::throttle::Limits>,
    /// Identity providers' discovery documents and keys, cached by issuer.
    pub providers: Arc<crate::identity_providers::Providers>,
    /// Tenants' quota decisions, as their policies last gave them (this server's copy).
    pub quota_decisions: Arc<crate::throttle::QuotaDecisions>,
    /// Tenants' API calls as this server counts them, until they are written.
    pub api_calls: Arc<crate::throttle::ApiCallMeter>,
    /// What the alert evaluator is told: tenants to look at again, their traffic, failing
    /// policies (this server's view).
    pub alert_signals: Arc<crate::alert_signals::AlertSignals>,
    /// Wakes this server's webhook deliverer when a delivery is queued.
    pub deliveries_queued: Arc<tokio::sync::Notify>,
}

impl Context {
    pub fn new(db: Db, keyring: Keyring, config: Config) -> anyhow::Result<Self> {
        let keyring = Arc::new(keyring);
        let metrics = Arc::new(Metrics::new());
        let services = HostServices::new(
            db.clone(),
            keyring.clone(),
            config.plugins.clone(),
            metrics.clone(),
        );
        let plugins = PluginHost::new(services, Some(config.data_dir.join("plugin-cache")))?;
        let limits = Arc::new(crate::throttle::Limits::new(&config, metrics.clone())?);
        // A change of a tenant heard from any server (its tier, its status, an override of its
        // quotas) makes its quota decision be asked again on its next request here.
        let quota_decisions = Arc::new(crate::throttle::QuotaDecisions::default());
        let decisions = Arc::downgrade(&quota_decisions);
        db.changes().subscribe(move |change| {
            let Some(decisions) = decisions.upgrade() else {
                return;
            };
            match change {
                crate::store::changes::Change::Tenant(id) => decisions.forget(id),
                crate::store::changes::Change::Everything => decisions.forget_all(),
                _ => {}
            }
        });
        Ok(Self {
            caches: crate::caches::Caches::new(&db, &config.cache, metrics.clone()),
            db,
            limits,
            keyring,
            metrics,
            plugins: Arc::new(plugins),
            runs_queued: Arc::new(tokio::sync::Notify::new()),
            providers: Arc::new(crate::identity_providers::Providers::new(&config.auth)?),
            quota_decisions,
            api_calls: Arc::new(crate::throttle::ApiCallMeter::default()),
            alert_signals: Arc::new(crate::alert_signals::AlertSignals::new(
                config.alerts.traffic_window_minutes,
            )),
            deliveries_queued: Arc::new(tokio::sync::Notify::new()),
            config: Arc::new(config),
        })
    }
}
