//! The admin portal's pages: login and the dashboard, tenants, their SSO and keys, templates,
//! provisioning and runs, plugins, audit, platform tokens.

pub mod alerts;
pub mod audit;
pub mod catalog;
pub mod jobs;
pub mod pages;
pub mod plugins;
pub mod provisioning;
pub mod session;
pub mod tenant_actions;
pub mod tenant_import;
pub mod tenants;
pub mod tokens;
