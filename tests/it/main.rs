//! The integration tests, in one crate: one build and one link for all of them (a test binary
//! per file would link the whole server some forty times). Each module is the file of the same
//! name; nextest runs every test in a process of its own, so tests still share no state.
//!
//! Select tests by module path, e.g. `scripts/test -E 'test(/^cli::/)'` or
//! `cargo nextest run -E 'test(/^backend_superset::/)'`.

#[macro_use]
mod common;

mod abuse;
mod api_access;
mod api_alerts;
mod api_keys;
mod api_quotas;
mod api_sso;
mod api_tenants;
mod backend_airflow;
mod backend_crm;
mod backend_postgres;
mod backend_superset;
mod backends_e2e;
mod cache_invalidation;
mod cli;
mod cli_plugin_call;
mod cli_provisioning;
mod cli_quotas;
mod crash;
mod database_probes;
mod jobs;
mod oidc_harness;
mod oidc_login;
mod operations;
mod plugins_api;
mod plugins_config;
mod plugins_js;
mod plugins_sandbox;
mod plugins_sql;
mod plugins_versions;
mod portal_alerts_browser;
mod portal_browser;
mod portal_http;
mod portal_login_browser;
mod portal_provisioning;
mod portal_sso;
mod provisioning;
mod redis_limits;
mod replicas;
mod secrets_at_rest;
mod tidy;
mod usage_measure;
