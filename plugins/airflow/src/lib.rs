//! The `airflow` backend plugin. Its provisioning steps come with the provisioning issue; today it
//! describes itself and plans nothing.

use tenantry_plugin_sdk::provisioner::{PluginInfo, Provisioner};

struct Airflow;

impl Provisioner for Airflow {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "airflow".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: env!("CARGO_PKG_DESCRIPTION").into(),
        }
    }
}

tenantry_plugin_sdk::register_provisioner!(Airflow);
