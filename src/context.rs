//! What every service and handler is given: the database, the keyring, the configuration and the
//! metrics. Built once at start; cheap to clone.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::secrets::Keyring;
use crate::store::Db;

#[derive(Clone)]
pub struct Context {
    pub db: Db,
    pub keyring: Arc<Keyring>,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(db: Db, keyring: Keyring, config: Config) -> Self {
        Self {
            db,
            keyring: Arc::new(keyring),
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
        }
    }
}
