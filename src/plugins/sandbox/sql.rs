//! The `sql` capability (WIT 0.2.0, provisioners): statements on the databases the operator
//! granted to the plugin by alias. A grant is what makes an alias usable; a plugin without
//! database grants — every plugin until the operator grants one — is refused, naming the alias.

use crate::plugins::bindings::provisioner::tenantry::plugin::sql;

pub struct SqlUnit {
    plugin: String,
}

impl SqlUnit {
    pub fn new(plugin: &str) -> Self {
        SqlUnit {
            plugin: plugin.to_owned(),
        }
    }

    fn refused(&self, alias: &str) -> sql::SqlError {
        sql::SqlError::NotGranted(format!(
            "no database `{alias}` is granted to plugin `{}`",
            self.plugin
        ))
    }
}

impl sql::Host for SqlUnit {
    fn execute(
        &mut self,
        alias: String,
        _statement: String,
        _params: Vec<sql::Value>,
    ) -> Result<u64, sql::SqlError> {
        Err(self.refused(&alias))
    }

    fn query(
        &mut self,
        alias: String,
        _statement: String,
        _params: Vec<sql::Value>,
    ) -> Result<sql::Rows, sql::SqlError> {
        Err(self.refused(&alias))
    }
}
