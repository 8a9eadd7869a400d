//! The `log` capability: lines to the server's log, with the plugin and tenant as fields, and to
//! the call's journal (a provisioning step keeps them). Every world has it. At most
//! [`MAX_LOG_LINES`] lines of at most [`MAX_LOG_LINE`] bytes per call.

use crate::plugin_host::bindings::provisioner::tenantry::plugin::log;
use crate::plugin_host::{LogLine, PluginTenant};

const MAX_LOG_LINE: usize = 4096;
const MAX_LOG_LINES: usize = 256;

pub struct LogUnit {
    plugin: String,
    tenant: String,
    written: usize,
    /// The log lines of this call, kept for callers that journal them (provisioning steps).
    pub captured: Vec<LogLine>,
}

impl LogUnit {
    pub fn new(plugin: &str, tenant: Option<&PluginTenant>) -> Self {
        LogUnit {
            plugin: plugin.to_owned(),
            tenant: tenant.map(|t| t.slug.clone()).unwrap_or_default(),
            written: 0,
            captured: Vec::new(),
        }
    }
}

impl log::Host for LogUnit {
    fn write(&mut self, level: log::Level, message: String) {
        self.written += 1;
        if self.written > MAX_LOG_LINES {
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
        let (plugin, tenant) = (&self.plugin, &self.tenant);
        // The plugin's text, with its control characters escaped: a line of the server's log
        // is the server's, and a plugin cannot start one of its own or colour a terminal.
        let shown = crate::telemetry::escape_for_log(&message);
        let name = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        match level {
            log::Level::Trace => {
                tracing::trace!(plugin = %plugin, tenant = %tenant, "plugin: {shown}")
            }
            log::Level::Debug => {
                tracing::debug!(plugin = %plugin, tenant = %tenant, "plugin: {shown}")
            }
            log::Level::Info => {
                tracing::info!(plugin = %plugin, tenant = %tenant, "plugin: {shown}")
            }
            log::Level::Warn => {
                tracing::warn!(plugin = %plugin, tenant = %tenant, "plugin: {shown}")
            }
            log::Level::Error => {
                tracing::error!(plugin = %plugin, tenant = %tenant, "plugin: {shown}")
            }
        }
        self.captured.push(LogLine {
            level: name.to_owned(),
            message,
        });
    }
}
