//! The `config` capability (WIT 0.2.0, every world): the plugin's configuration, as the
//! operator set it, else the defaults of its manifest's schema. Values are JSON text.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::plugin_host::bindings::provisioner::tenantry::plugin::config;

pub struct ConfigUnit {
    values: Arc<BTreeMap<String, String>>,
}

impl ConfigUnit {
    pub fn new(values: Arc<BTreeMap<String, String>>) -> Self {
        ConfigUnit { values }
    }
}

impl config::Host for ConfigUnit {
    fn get(&mut self, key: String) -> Option<String> {
        self.values.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
