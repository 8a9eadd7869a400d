//! The `secrets` capability: a secret is readable when the plugin's manifest requests it and the
//! operator granted it. Granted values stay sealed until the plugin reads one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::plugin_host::bindings::provisioner::tenantry::plugin::secrets;
use crate::plugin_host::{HostServices, LoadedPlugin, secret_context};
use crate::secrets::Keyring;

pub struct SecretsUnit {
    keyring: Arc<Keyring>,
    plugin: String,
    requested: Vec<String>,
    /// Secret name → sealed value.
    granted: HashMap<String, String>,
}

impl SecretsUnit {
    pub fn new(services: &HostServices, plugin: &LoadedPlugin) -> Self {
        SecretsUnit {
            keyring: services.keyring.clone(),
            plugin: plugin.name.clone(),
            requested: plugin.manifest.capabilities.secrets.clone(),
            granted: plugin.grants.secrets.clone(),
        }
    }
}

impl secrets::Host for SecretsUnit {
    fn get(&mut self, name: String) -> Result<String, String> {
        if !self.requested.contains(&name) {
            return Err(format!(
                "secret `{name}` is not requested in the plugin's manifest"
            ));
        }
        let Some(sealed) = self.granted.get(&name) else {
            return Err(format!(
                "secret `{name}` is not granted to plugin `{}`",
                self.plugin
            ));
        };
        self.keyring
            .open(sealed, &secret_context(&self.plugin, &name))
            .map_err(|_| format!("secret `{name}` cannot be opened on this server"))
    }
}
