//! The `config` capability (WIT 0.2.0, every world): the plugin's configuration, as the
//! operator set it, else the defaults of its manifest's schema. Values are JSON text.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::plugins::bindings::provisioner::tenantry::plugin::config;

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

/// The configuration in force when the operator set nothing: each property of the manifest's
/// schema that has a `default`, as JSON text.
pub fn defaults(schema: Option<&serde_json::Value>) -> BTreeMap<String, String> {
    schema
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|properties| {
            properties
                .iter()
                .filter_map(|(key, property)| {
                    property
                        .get("default")
                        .map(|d| (key.clone(), d.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn defaults_are_the_schemas_as_json_text() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "url": { "type": "string", "default": "http://superset:8088" },
                "port": { "type": "integer", "default": 8088 },
                "user": { "type": "string" },
            },
        });
        let defaults = super::defaults(Some(&schema));
        assert_eq!(defaults.len(), 2);
        assert_eq!(defaults["url"], r#""http://superset:8088""#);
        assert_eq!(defaults["port"], "8088");
        assert!(super::defaults(None).is_empty());
    }
}
