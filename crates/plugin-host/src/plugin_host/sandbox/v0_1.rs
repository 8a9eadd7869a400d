//! The host interfaces of `tenantry:plugin@0.1.0`, frozen: each forwards to the current
//! version's unit, converting what the versions spell apart (the records did not change).

use super::http::HttpUnit;
use super::log::LogUnit;
use super::secrets::SecretsUnit;
use super::state::StateUnit;
use crate::plugin_host::bindings::provisioner::tenantry::plugin as now;
use crate::plugin_host::bindings::v0_1::provisioner::tenantry::plugin as old;

impl old::log::Host for LogUnit {
    fn write(&mut self, level: old::log::Level, message: String) {
        let level = match level {
            old::log::Level::Trace => now::log::Level::Trace,
            old::log::Level::Debug => now::log::Level::Debug,
            old::log::Level::Info => now::log::Level::Info,
            old::log::Level::Warn => now::log::Level::Warn,
            old::log::Level::Error => now::log::Level::Error,
        };
        now::log::Host::write(self, level, message)
    }
}

impl old::state::Host for StateUnit {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        now::state::Host::get(self, key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        now::state::Host::set(self, key, value)
    }

    fn delete(&mut self, key: String) {
        now::state::Host::delete(self, key)
    }

    fn keys(&mut self) -> Vec<String> {
        now::state::Host::keys(self)
    }
}

impl old::secrets::Host for SecretsUnit {
    fn get(&mut self, name: String) -> Result<String, String> {
        now::secrets::Host::get(self, name)
    }
}

impl old::http::Host for HttpUnit {
    fn send(
        &mut self,
        request: old::http::Request,
    ) -> Result<old::http::Response, old::http::HttpError> {
        let request = now::http::Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        match now::http::Host::send(self, request) {
            Ok(response) => Ok(old::http::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(err) => Err(match err {
                now::http::HttpError::NotGranted(m) => old::http::HttpError::NotGranted(m),
                now::http::HttpError::Invalid(m) => old::http::HttpError::Invalid(m),
                now::http::HttpError::Timeout => old::http::HttpError::Timeout,
                now::http::HttpError::TooLarge => old::http::HttpError::TooLarge,
                now::http::HttpError::Connection(m) => old::http::HttpError::Connection(m),
            }),
        }
    }
}
