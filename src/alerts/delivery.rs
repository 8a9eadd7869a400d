//! Delivering the outbox: each server leases the deliveries that are due, sends each signed
//! (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
//! HMAC-SHA256 of "<id>.<timestamp>.<body>">`), and records the outcome: delivered on a 2xx,
//! else retried with exponential backoff and jitter until `alerts.webhooks.max_attempts` are
//! spent. Errors are recorded without the endpoint's URL (its path can be a secret).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use sha2::Sha256;

use super::webhooks::{origin, secret_context};
use crate::clock;
use crate::context::Context;
use crate::error::{AppError, AppResult};
use crate::store::models::DeliveryRow;
use crate::store::vocabulary::DeliveryStatus;
use crate::store::{self, webhooks::Attempt};
use crate::transaction;

/// Deliveries leased at a time by one server.
const CLAIM_BATCH: i64 = 16;
/// How long a leased delivery is this server's before another may take it over.
const LEASE: Duration = Duration::from_secs(120);

/// The `webhook-signature` of `body` sent as `id` at `timestamp` (Unix seconds) with `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> AppResult<String> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| AppError::internal(anyhow::anyhow!("a webhook secret is not base64")))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(AppError::internal)?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// The wait before attempt `attempts + 1`: the base doubled per attempt, at most an hour,
/// ±20 % jitter so that endpoints coming back are not hit by every retry at once.
fn backoff(base_ms: u64, attempts: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let capped = exp.min(3_600_000) as f64;
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    Duration::from_millis((capped * jitter) as u64)
}

/// Leases the deliveries that are due and attempts each once; how many were attempted.
pub async fn deliver_due(ctx: &Context, client: &reqwest::Client, owner: &str) -> AppResult<usize> {
    let now = clock::now();
    let until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
    let claimed = transaction!(ctx.db, |tx| {
        store::webhooks::claim_due(tx, owner, now, until, CLAIM_BATCH).await
    })?;
    let n = claimed.len();
    let attempts = claimed.iter().map(|d| attempt(ctx, client, owner, d));
    for result in futures_util::future::join_all(attempts).await {
        if let Err(err) = result {
            tracing::warn!("webhooks: cannot record a delivery attempt: {err}");
        }
    }
    Ok(n)
}

async fn attempt(
    ctx: &Context,
    client: &reqwest::Client,
    owner: &str,
    delivery: &DeliveryRow,
) -> AppResult<()> {
    let hook = {
        let mut conn = ctx.db.conn().await?;
        store::webhooks::get(&mut conn, &delivery.webhook_id).await?
    };
    let Some(hook) = hook else { return Ok(()) };
    let secret = ctx.keyring.open(&hook.secret, &secret_context(&hook.id))?;
    let timestamp = Utc::now().timestamp();
    let signature = sign(&secret, &delivery.id, timestamp, &delivery.payload)?;
    let sent = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("tenantry/", env!("CARGO_PKG_VERSION")),
        )
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(delivery.payload.clone())
        .send()
        .await;
    let (code, error) = match sent {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("the endpoint answered {}", response.status())),
        ),
        // Without the URL: its path or query may be a secret.
        Err(err) => (None, Some(err.without_url().to_string())),
    };
    let attempts = u32::try_from(delivery.attempts + 1).unwrap_or(u32::MAX);
    let config = &ctx.config.alerts.webhooks;
    let now = clock::now();
    let (status, next, result) = match &error {
        None => (DeliveryStatus::Delivered, None, "delivered"),
        Some(_) if attempts >= config.max_attempts => (DeliveryStatus::Failed, None, "failed"),
        Some(_) => {
            let wait = chrono::Duration::from_std(backoff(config.retry_base_ms, attempts))
                .unwrap_or_default();
            (DeliveryStatus::Pending, Some(now + wait), "retry")
        }
    };
    ctx.metrics
        .webhook_deliveries
        .with_label_values(&[result])
        .inc();
    if let Some(error) = &error {
        tracing::warn!(webhook = %hook.id, origin = %origin(&hook.url), delivery = %delivery.id, attempts, "webhook delivery failed: {error}");
    }
    let mut conn = ctx.db.conn().await?;
    store::webhooks::record_attempt(
        &mut conn,
        &delivery.id,
        owner,
        &Attempt {
            status,
            status_code: code.map(i64::from),
            error,
            next_attempt_at: next,
            at: now,
        },
    )
    .await?;
    Ok(())
}

/// Delivers what is due whenever something is queued, and at least every second (retries come
/// due by time), until the server stops.
pub fn spawn_deliverer(ctx: &Context) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(
            ctx.config.alerts.webhooks.timeout_seconds,
        ))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let ctx = ctx.clone();
    let owner = format!(
        "webhooks-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    Ok(tokio::spawn(async move {
        loop {
            match deliver_due(&ctx, &client, &owner).await {
                // A full batch: there may be more due at once.
                Ok(n) if n as i64 == CLAIM_BATCH => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!("webhooks: cannot lease deliveries: {err}"),
            }
            tokio::select! {
                _ = ctx.deliveries_queued.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let signature = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        let first = backoff(10_000, 1);
        assert!(first >= Duration::from_secs(8) && first <= Duration::from_secs(12));
        let third = backoff(10_000, 3);
        assert!(third >= Duration::from_secs(32) && third <= Duration::from_secs(48));
        assert!(backoff(10_000, 30) <= Duration::from_secs(4320));
    }
}
