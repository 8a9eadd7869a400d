//! Webhooks: endpoints operators register for events, and the outbox that delivers to them.
//!
//! An event is written as one delivery per listening endpoint in the transaction that made it
//! (an alert raised or resolved), so an event is never lost to a crash between the change and
//! its notification. Deliveries are leased by one server at a time, sent signed as the
//! Standard Webhooks specification describes, and retried with exponential backoff until they
//! are delivered (a 2xx answer) or every attempt is spent.
//!
//! Signing: `webhook-id` (the delivery's id, the same on every retry), `webhook-timestamp`
//! (Unix seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `<id>.<timestamp>.<body>`, keyed with the endpoint's secret (`whsec_<base64>`, shown once).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::{self, Actor, AuditEvent};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult, FieldError};
use crate::store::models::{DeliveryRow, WebhookRow};
use crate::store::vocabulary::DeliveryStatus;
use crate::store::{self, Conn};
use crate::transaction;

pub const ALERT_RAISED: &str = "alert.raised";
pub const ALERT_RESOLVED: &str = "alert.resolved";
pub const PING: &str = "webhook.ping";
/// The events an endpoint can ask for.
pub const EVENT_TYPES: [&str; 3] = [ALERT_RAISED, ALERT_RESOLVED, PING];

/// What an endpoint's URL looks like: `http` or `https`, a DNS name or an IP address (IPv6 in
/// brackets), an optional port, path and query; no credentials, no fragment.
pub const URL_PATTERN: &str = r"^https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*)?(\?[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*)?$";

fn url_shape() -> &'static regex::Regex {
    static SHAPE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SHAPE.get_or_init(|| regex::Regex::new(URL_PATTERN).expect("the URL pattern compiles"))
}

/// A new endpoint.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `http` or `https`, without credentials in it.
    #[schema(example = "https://ops.example.com/hooks/tenantry")]
    pub url: String,
    /// The events to send (`alert.raised`, `alert.resolved`, `webhook.ping`); empty or absent:
    /// every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// Only this tenant's events; absent: every tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Deliveries of an endpoint by state.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// A registered endpoint (its secret is never shown again after creation).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// The tenant whose events it hears; none: every tenant's.
    pub tenant: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub deliveries: DeliveryCounts,
}

/// A new endpoint, with its signing secret (shown this once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: verify `webhook-signature` with it. It is not shown again.
    pub secret: String,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Delivery {
    /// Also the `webhook-id` header: the same on every attempt.
    pub id: String,
    pub webhook_id: String,
    pub event_type: String,
    /// `failed`: every attempt spent.
    pub status: DeliveryStatus,
    pub attempts: u64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The endpoint's HTTP status at the last attempt.
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// What is sent: `{"type", "timestamp", "data"}`.
    pub payload: Value,
}

impl From<&DeliveryRow> for Delivery {
    fn from(row: &DeliveryRow) -> Self {
        Delivery {
            id: row.id.clone(),
            webhook_id: row.webhook_id.clone(),
            event_type: row.event_type.clone(),
            status: row.status,
            attempts: row.attempts.max(0) as u64,
            next_attempt_at: row
                .next_attempt_at
                .filter(|_| row.status == DeliveryStatus::Pending)
                .map(clock::to_utc),
            last_attempt_at: row.last_attempt_at.map(clock::to_utc),
            last_status_code: row.last_status_code.and_then(|c| u16::try_from(c).ok()),
            last_error: row.last_error.clone(),
            created_at: clock::to_utc(row.created_at),
            delivered_at: row.delivered_at.map(clock::to_utc),
            payload: serde_json::from_str(&row.payload).unwrap_or(Value::Null),
        }
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_before: Option<String>,
}

pub(crate) fn secret_context(id: &str) -> String {
    format!("webhook:{id}:secret")
}

/// The scheme, host and port of `url`: what logs and the audit name (a URL's path and query
/// can be a secret of its own, as chat services' incoming-webhook URLs are).
pub fn origin(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| "(invalid url)".into(),
        |u| u.origin().ascii_serialization(),
    )
}

fn validate(input: &NewWebhook) -> Result<(), AppError> {
    let mut errors = Vec::new();
    match url::Url::parse(&input.url) {
        _ if input.url.len() > 2048 => {
            errors.push(FieldError::new(
                "url",
                "max_length",
                "must be at most 2048 characters",
            ));
        }
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            errors.push(FieldError::new(
                "url",
                "scheme",
                "must be an http or https URL",
            ));
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            errors.push(FieldError::new(
                "url",
                "no_credentials",
                "must not carry credentials: the endpoint checks the signature instead",
            ))
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            errors.push(FieldError::new("url", "host", "must name a host"));
        }
        Ok(_) if !url_shape().is_match(&input.url) => errors.push(FieldError::new(
            "url",
            "pattern",
            "must be http(s)://host[:port][/path][?query] with a DNS name or an IP address, no fragment",
        )),
        Ok(_) => {}
        Err(_) => errors.push(FieldError::new(
            "url",
            "url",
            "must be an absolute http or https URL",
        )),
    }
    for (i, event) in input.events.iter().enumerate() {
        if !EVENT_TYPES.contains(&event.as_str()) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                "one_of",
                format!("`{event}` is not an event: use {}", EVENT_TYPES.join(", ")),
            ));
        }
    }
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        errors.push(FieldError::new(
            "description",
            "max_length",
            "must be at most 200 characters",
        ));
    } else if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().any(char::is_control))
    {
        errors.push(FieldError::new(
            "description",
            "pattern",
            "must not contain control characters",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// Registers an endpoint (audited as `webhook.created`, without its secret).
pub async fn create(ctx: &Context, actor: &Actor, input: &NewWebhook) -> AppResult<CreatedWebhook> {
    validate(input)?;
    let tenant = match &input.tenant {
        None => None,
        Some(slug) => Some(
            crate::tenants::get(ctx, slug)
                .await
                .map_err(|err| match err {
                    AppError::NotFound { .. } => AppError::invalid(
                        "tenant",
                        "exists",
                        format!("there is no tenant `{slug}`"),
                    ),
                    other => other,
                })?,
        ),
    };
    let id = uuid::Uuid::now_v7().to_string();
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill(&mut bytes);
    let secret = format!("whsec_{}", BASE64.encode(bytes));
    let mut events = input.events.clone();
    events.sort();
    events.dedup();
    let now = clock::now();
    let row = WebhookRow {
        id: id.clone(),
        url: input.url.clone(),
        secret: ctx.keyring.seal(&secret, &secret_context(&id)),
        events: serde_json::to_string(&events).map_err(AppError::internal)?,
        tenant_id: tenant.as_ref().map(|t| t.id.clone()),
        description: input.description.clone().unwrap_or_default(),
        enabled: true,
        created_by: actor.name.clone(),
        created_at: now,
        updated_at: now,
    };
    transaction!(ctx.db, |tx| {
        store::webhooks::insert(tx, &row).await?;
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "webhook.created",
                json!({
                    "id": id,
                    "origin": origin(&row.url),
                    "events": events,
                    "tenant": tenant.as_ref().map(|t| t.slug.clone()),
                }),
            ),
        )
        .await?;
        Ok(())
    })?;
    Ok(CreatedWebhook {
        webhook: view(ctx, &row, &[]).await?,
        secret,
    })
}

async fn view(
    ctx: &Context,
    row: &WebhookRow,
    counts: &[(String, DeliveryStatus, i64)],
) -> AppResult<Webhook> {
    let tenant = match &row.tenant_id {
        None => None,
        Some(id) => crate::tenants::get_by_id(ctx, id).await?.map(|t| t.slug),
    };
    let of = |status: DeliveryStatus| {
        counts
            .iter()
            .filter(|(w, s, _)| *w == row.id && *s == status)
            .map(|(_, _, n)| (*n).max(0) as u64)
            .sum()
    };
    Ok(Webhook {
        id: row.id.clone(),
        url: row.url.clone(),
        events: serde_json::from_str(&row.events).unwrap_or_default(),
        tenant,
        description: row.description.clone(),
        enabled: row.enabled,
        created_by: row.created_by.clone(),
        created_at: clock::to_utc(row.created_at),
        deliveries: DeliveryCounts {
            pending: of(DeliveryStatus::Pending),
            delivered: of(DeliveryStatus::Delivered),
            failed: of(DeliveryStatus::Failed),
        },
    })
}

/// Every registered endpoint, oldest first.
pub async fn list(ctx: &Context) -> AppResult<Vec<Webhook>> {
    let (rows, counts) = {
        let mut conn = ctx.db.conn().await?;
        let rows = store::webhooks::list(&mut conn).await?;
        let counts = store::webhooks::count_by_status(&mut conn).await?;
        (rows, counts)
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(view(ctx, row, &counts).await?);
    }
    Ok(out)
}

async fn find(ctx: &Context, id: &str) -> AppResult<WebhookRow> {
    let mut conn = ctx.db.conn().await?;
    store::webhooks::get(&mut conn, id)
        .await?
        .ok_or_else(|| AppError::not_found("webhook", id))
}

pub async fn get(ctx: &Context, id: &str) -> AppResult<Webhook> {
    let row = find(ctx, id).await?;
    let counts = {
        let mut conn = ctx.db.conn().await?;
        store::webhooks::count_by_status(&mut conn).await?
    };
    view(ctx, &row, &counts).await
}

/// Removes an endpoint and its deliveries (audited as `webhook.deleted`).
pub async fn delete(ctx: &Context, actor: &Actor, id: &str) -> AppResult<()> {
    let row = find(ctx, id).await?;
    transaction!(ctx.db, |tx| {
        if !store::webhooks::delete(tx, id).await? {
            return Err(AppError::not_found("webhook", id));
        }
        audit::record(
            tx,
            actor,
            AuditEvent::platform(
                "webhook.deleted",
                json!({ "id": id, "origin": origin(&row.url) }),
            ),
        )
        .await?;
        Ok(())
    })
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(
    ctx: &Context,
    id: &str,
    before: Option<&str>,
    limit: Option<i64>,
) -> AppResult<DeliveryPage> {
    let limit = match limit {
        None => 50,
        Some(n) if (1..=500).contains(&n) => n,
        Some(_) => return Err(AppError::invalid("limit", "range", "must be from 1 to 500")),
    };
    find(ctx, id).await?;
    let mut conn = ctx.db.conn().await?;
    let rows = store::webhooks::deliveries(&mut conn, id, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let items: Vec<Delivery> = rows
        .iter()
        .take(limit as usize)
        .map(Delivery::from)
        .collect();
    let next_before = more.then(|| items.last().map(|d| d.id.clone())).flatten();
    Ok(DeliveryPage { items, next_before })
}

/// Sends a `webhook.ping` to one endpoint (whatever events it asked for): a check that it
/// receives and verifies.
pub async fn ping(ctx: &Context, id: &str) -> AppResult<Delivery> {
    let row = find(ctx, id).await?;
    let now = clock::now();
    let delivery = delivery_row(&row, PING, None, json!({ "webhook_id": id }), now)?;
    transaction!(ctx.db, |tx| {
        store::webhooks::enqueue(tx, std::slice::from_ref(&delivery)).await
    })?;
    ctx.deliveries_queued.notify_one();
    Ok(Delivery::from(&delivery))
}

/// Makes a pending or failed delivery due now (a failed one gets its attempts again).
pub async fn retry(ctx: &Context, id: &str, delivery: &str) -> AppResult<()> {
    find(ctx, id).await?;
    let done = {
        let mut conn = ctx.db.conn().await?;
        store::webhooks::retry_now(&mut conn, id, delivery, clock::now()).await?
    };
    if !done {
        return Err(AppError::not_found("delivery", delivery));
    }
    ctx.deliveries_queued.notify_one();
    Ok(())
}

fn delivery_row(
    webhook: &WebhookRow,
    event_type: &str,
    tenant_id: Option<&str>,
    data: Value,
    now: NaiveDateTime,
) -> AppResult<DeliveryRow> {
    let payload = json!({
        "type": event_type,
        "timestamp": clock::to_utc(now),
        "data": data,
    });
    Ok(DeliveryRow {
        id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
        webhook_id: webhook.id.clone(),
        event_type: event_type.to_owned(),
        tenant_id: tenant_id.map(str::to_owned),
        payload: serde_json::to_string(&payload).map_err(AppError::internal)?,
        status: DeliveryStatus::Pending,
        attempts: 0,
        next_attempt_at: Some(now),
        lease_owner: None,
        lease_expires_at: None,
        last_attempt_at: None,
        last_status_code: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    })
}

/// Writes `event` for every endpoint listening to `tenant_id`'s events, in the caller's
/// transaction (the outbox). The caller wakes the deliverer once it has committed.
pub async fn enqueue(
    tx: &mut Conn,
    tenant_id: Option<&str>,
    event_type: &str,
    data: Value,
    now: NaiveDateTime,
) -> AppResult<usize> {
    let hooks = store::webhooks::listening(tx, tenant_id).await?;
    let mut rows = Vec::new();
    for hook in hooks {
        let events: Vec<String> = serde_json::from_str(&hook.events).unwrap_or_default();
        if events.is_empty() || events.iter().any(|e| e == event_type) {
            rows.push(delivery_row(
                &hook,
                event_type,
                tenant_id,
                data.clone(),
                now,
            )?);
        }
    }
    store::webhooks::enqueue(tx, &rows).await?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_endpoints_are_refused_by_field() {
        let new = |url: &str, events: &[&str]| NewWebhook {
            url: url.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            tenant: None,
            description: None,
        };
        for good in [
            "https://ops.example.com/h",
            "http://127.0.0.1:8080/hooks?token=abc",
            "http://[::1]:9000/",
        ] {
            assert!(validate(&new(good, &["alert.raised"])).is_ok(), "{good}");
        }
        for (input, field, rule) in [
            (new("ftp://x/h", &[]), "url", "scheme"),
            (new("not a url", &[]), "url", "url"),
            (new("https://user:pw@x/h", &[]), "url", "no_credentials"),
            (new("http://0*", &[]), "url", "pattern"),
            (new("https://x/h#frag", &[]), "url", "pattern"),
            (
                new("https://x/h", &["alert.raised", "nope"]),
                "events[1]",
                "one_of",
            ),
            (
                NewWebhook {
                    description: Some("pager\u{84}".into()),
                    ..new("https://x/h", &[])
                },
                "description",
                "pattern",
            ),
        ] {
            match validate(&input) {
                Err(AppError::Validation(errors)) => {
                    assert_eq!(
                        (errors[0].field.as_str(), errors[0].rule.as_str()),
                        (field, rule)
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
