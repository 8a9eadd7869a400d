//! Rows as stored. Services turn them into domain types; the API never serialises a row directly.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::{admin_users, api_keys, audit_log, sessions, tenant_status_history, tenants};
use super::vocabulary::{
    AlertKind, AlertSeverity, AlertStatus, DeliveryStatus, TenantStatus, Tier, World,
};
use crate::roles::Role;

#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    Identifiable,
    Serialize,
    Deserialize,
)]
#[diesel(table_name = tenants, treat_none_as_null = true)]
pub struct TenantRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub tier: Tier,
    pub status: TenantStatus,
    pub status_reason: Option<String>,
    pub status_changed_at: NaiveDateTime,
    pub trial_ends_at: Option<NaiveDateTime>,
    pub contact: String,
    pub metadata: String,
    pub oauth_issuer: Option<String>,
    pub client_id: Option<String>,
    /// Sealed with the keyring; never plaintext.
    pub client_secret: Option<String>,
    pub client_secret_fp: Option<String>,
    /// Sealed; the secret before the last rotation, kept for rollback.
    pub client_secret_previous: Option<String>,
    pub client_secret_previous_fp: Option<String>,
    pub scopes: String,
    /// Sealed; database URIs carry passwords.
    pub db_uri: Option<String>,
    pub db_uri_fp: Option<String>,
    pub default_schema: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub version: i64,
    /// JSON of the tenant's claim → role mapping (the tenants' `RoleMapping`); none:
    /// the default mapping.
    #[serde(default)]
    pub role_mapping: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tenant_status_history)]
pub struct StatusChangeRow {
    pub id: String,
    pub tenant_id: String,
    pub from_status: Option<TenantStatus>,
    pub to_status: TenantStatus,
    pub reason: String,
    pub actor: String,
    pub at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub seq: i64,
    pub at: NaiveDateTime,
    pub actor: String,
    pub tenant_id: Option<String>,
    pub tenant_slug: Option<String>,
    pub action: String,
    pub details: String,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = admin_users)]
pub struct AdminUserRow {
    pub username: String,
    pub password_hash: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    pub prefix: String,
    pub secret_hash: String,
    pub role: Role,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    /// Requests per minute this key may make (this server); none: no limit of its own.
    pub rate_limit_per_minute: Option<i64>,
    /// The key that replaced this one by a rotation (this one works until its `expires_at`).
    pub replaced_by: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions)]
pub struct SessionRow {
    pub id: String,
    pub principal: String,
    pub role: Role,
    pub tenant_id: Option<String>,
    pub csrf_token: String,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    /// The session's public id (what lists show and revocations name); never the cookie.
    pub handle: Option<String>,
    /// `password` (the bootstrap administrator) or `oidc`.
    pub auth_method: Option<String>,
    /// The user's `sub` at `issuer` (OIDC sessions).
    pub subject: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub issuer: Option<String>,
    /// Sealed: the id_token, sent back as `id_token_hint` at logout.
    pub id_token: Option<String>,
}

/// An OpenID Connect login in progress: created when the browser is sent to the provider,
/// consumed (deleted) by the callback, whatever its outcome.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::login_attempts)]
pub struct LoginAttemptRow {
    /// SHA-256 of the `state` parameter.
    pub state_hash: String,
    pub tenant_id: String,
    /// The issuer the browser was sent to, and the client it was sent for.
    pub issuer: String,
    pub client_id: String,
    /// SHA-256 of the browser-binding cookie.
    pub browser_hash: String,
    pub nonce: String,
    /// Sealed PKCE code verifier.
    pub pkce_verifier: String,
    pub redirect_uri: String,
    /// Local path to return to after the login.
    pub next_path: Option<String>,
    pub source_ip: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

/// A single-use link that lets a tenant's IT administrator configure its SSO settings.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::sso_setup_links)]
pub struct SetupLinkRow {
    pub id: String,
    pub tenant_id: String,
    /// SHA-256 of the link's token.
    pub token_hash: String,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub used_at: Option<NaiveDateTime>,
    /// Source address of the browser that used it.
    pub used_by: Option<String>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = super::schema::plugins, treat_none_as_null = true)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub world: World,
    pub wit_version: String,
    pub sha256: String,
    /// The manifest as JSON.
    pub manifest: String,
    /// The component's bytes; none for built-ins (embedded in the binary).
    pub component: Option<Vec<u8>>,
    pub builtin: bool,
    pub enabled: bool,
    /// The operator's deadline for this plugin's calls, overriding the world's default.
    pub deadline_ms: Option<i64>,
    pub installed_by: String,
    pub installed_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A plugin's row without its component bytes (what a server reloads after a change), with its
/// revision.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::plugins)]
pub struct PluginMetaRow {
    pub name: String,
    pub version: String,
    pub world: World,
    pub wit_version: String,
    pub sha256: String,
    pub manifest: String,
    pub builtin: bool,
    pub enabled: bool,
    pub deadline_ms: Option<i64>,
    pub installed_by: String,
    pub installed_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Bumped by every change of the plugin or its grants.
    pub revision: i64,
}

/// Call statistics of a plugin, over every server (or, as a delta, what one server adds).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::plugin_call_stats)]
pub struct PluginCallStatsRow {
    pub plugin: String,
    pub calls: i64,
    pub failures: i64,
    /// Time spent in calls, in microseconds.
    pub total_us: i64,
    pub max_us: i64,
    pub updated_at: NaiveDateTime,
}

/// One key of a plugin's configuration, as the operator set it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::plugin_config)]
pub struct PluginConfigRow {
    pub plugin: String,
    pub key: String,
    /// The value as JSON.
    pub value: String,
    pub set_by: String,
    pub set_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::plugin_grants)]
pub struct PluginGrantRow {
    pub plugin: String,
    /// `host` or `secret`.
    pub kind: String,
    pub name: String,
    /// Sealed value of a granted secret.
    pub sealed_value: Option<String>,
    pub granted_by: String,
    pub granted_at: NaiveDateTime,
}

use super::schema::{
    idempotency_keys, provisioning_runs, provisioning_steps, template_versions, templates,
    tenant_resources,
};
use super::vocabulary::{RunKind, RunStatus, StepAction, StepState};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = templates, treat_none_as_null = true)]
pub struct TemplateRow {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub latest_version: i64,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = template_versions)]
pub struct TemplateVersionRow {
    pub template: String,
    pub version: i64,
    pub body: String,
    /// JSON array of names.
    pub placeholders: String,
    /// JSON array of tags.
    pub tags: String,
    pub created_by: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = provisioning_runs, treat_none_as_null = true)]
pub struct RunRow {
    pub id: String,
    pub kind: RunKind,
    pub tenant_id: String,
    pub tenant_slug: String,
    /// JSON snapshot of the tenant as the plugins see it.
    pub tenant: String,
    pub status: RunStatus,
    /// JSON array of plugin names.
    pub backends: String,
    pub error: Option<String>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    /// How many times a server took the run up (1 unless a server died while running it).
    pub executions: i64,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = provisioning_steps, treat_none_as_null = true)]
pub struct StepRow {
    pub run_id: String,
    pub seq: i64,
    pub plugin: String,
    pub step_id: String,
    pub action: StepAction,
    pub description: String,
    /// Sealed JSON input of the step (it may carry credentials of the tenant's database).
    pub input: String,
    pub state: StepState,
    pub attempts: i64,
    pub output: Option<String>,
    pub manual_follow_up: Option<String>,
    pub error: Option<String>,
    /// JSON array of the plugin's log lines, all attempts.
    pub log: String,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRow {
    pub key: String,
    pub fingerprint: String,
    pub run_id: String,
    pub response: String,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = tenant_resources)]
pub struct ResourceRow {
    pub tenant_id: String,
    pub plugin: String,
    pub step_id: String,
    pub seq: i64,
    pub run_id: String,
    pub description: String,
    /// Sealed JSON input of the step that created it.
    pub input: String,
    pub output: String,
    pub template: Option<String>,
    pub template_version: Option<i64>,
    pub fingerprint: Option<String>,
    pub applied_at: NaiveDateTime,
}

/// A usage counter of one tenant, metric and period (`current` for a gauge).
#[derive(Debug, Clone, Queryable, Selectable, Insertable, Serialize, Deserialize)]
#[diesel(table_name = super::schema::usage_counters)]
pub struct UsageCounterRow {
    pub tenant_id: String,
    pub metric: String,
    pub period: String,
    pub value: i64,
    pub measured_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A reported usage event's id, remembered so that it is counted once.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::usage_events)]
pub struct UsageEventRow {
    pub tenant_id: String,
    pub event_id: String,
    pub metric: String,
    pub period: String,
    pub amount: i64,
    pub received_at: NaiveDateTime,
}

/// An operator's limit for one tenant and metric.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset, Serialize, Deserialize)]
#[diesel(table_name = super::schema::quota_overrides, treat_none_as_null = true)]
pub struct QuotaOverrideRow {
    pub tenant_id: String,
    pub metric: String,
    pub limit_value: Option<i64>,
    pub hard: bool,
    pub updated_by: String,
    pub updated_at: NaiveDateTime,
    /// Why it was set (a temporary raise says why).
    #[serde(default)]
    pub reason: Option<String>,
    /// When it ends by itself (a temporary override); none: until changed.
    #[serde(default)]
    pub expires_at: Option<NaiveDateTime>,
}

/// An alert on a tenant, open or resolved.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = super::schema::alerts, treat_none_as_null = true)]
pub struct AlertRow {
    pub id: String,
    pub tenant_id: String,
    pub kind: AlertKind,
    pub subject: String,
    pub period: String,
    pub threshold: String,
    pub severity: AlertSeverity,
    pub status: AlertStatus,
    pub value: f64,
    pub raised_value: f64,
    pub message: String,
    pub times_raised: i64,
    pub raised_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    pub resolved_at: Option<NaiveDateTime>,
}

/// An endpoint registered for events; its secret is sealed.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = super::schema::webhooks)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub events: String,
    pub tenant_id: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// One event to deliver to one endpoint: the outbox.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, QueryableByName)]
#[diesel(table_name = super::schema::webhook_deliveries)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    pub tenant_id: Option<String>,
    pub payload: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub next_attempt_at: Option<NaiveDateTime>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<NaiveDateTime>,
    pub last_attempt_at: Option<NaiveDateTime>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}
