//! What the benchmarks share: their settings from the environment and the configuration of a
//! server of their own (a temporary data directory, logging off).
#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use tenantry::config::Config;

/// A number from the environment variable `name`, or `default`.
pub fn env_num<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A server's configuration: data in `dir`, the database at `database_url` (none: SQLite in
/// `dir`), a fresh master key, no logging.
pub fn config(dir: &Path, database_url: Option<String>) -> Config {
    let key: [u8; 32] = rand::random();
    Config {
        data_dir: dir.to_path_buf(),
        database_url,
        bootstrap_admin_password: Some("benchmark-password".into()),
        master_key: Some(base64::engine::general_purpose::STANDARD.encode(key)),
        log_level: "off".into(),
        ..Config::default()
    }
}
