//! Per-tenant health checks for monitoring: the tenant's own database
//! round trip, and a public per-tenant liveness summary.

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};
use serde::Serialize;
use utoipa::ToSchema;

use crate::context::Context;
use crate::error::AppResult;
use crate::store;
use crate::tenants::{self, secret_context};

/// How long a tenant database may take to answer.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a tenant database check. Never contains the URI.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDatabaseHealth {
    pub tenant: String,
    /// `connected`, `unreachable`, `not_configured` or `unsupported`.
    pub status: String,
    pub response_time_ms: Option<f64>,
    /// Why it is not `connected` (no secrets).
    pub detail: Option<String>,
}

/// Opens the tenant's database URI — its own, or the connection it was provisioned with from a
/// connection template — and times a round trip (PostgreSQL URIs; SQLAlchemy's
/// `postgresql+driver://` form too).
pub async fn tenant_database(ctx: &Context, slug: &str) -> AppResult<TenantDatabaseHealth> {
    let row = {
        let mut conn = ctx.db.conn().await?;
        store::tenants::find_by_slug(&mut conn, slug)
            .await?
            .ok_or_else(|| crate::error::AppError::not_found("tenant", slug))?
    };
    let report = |status: &str, time: Option<f64>, detail: Option<String>| TenantDatabaseHealth {
        tenant: row.slug.clone(),
        status: status.into(),
        response_time_ms: time,
        detail,
    };
    // The tenant's own database URI, or the connection it was provisioned with from a
    // connection template.
    let uri = match &row.db_uri {
        Some(sealed) => ctx
            .keyring
            .open(sealed, &secret_context(&row.id, "db_uri"))?,
        None => {
            let tenant = tenants::get(ctx, slug).await?;
            match crate::provisioning::provisioned_connection(ctx, &tenant).await {
                Ok(Some(uri)) => uri,
                Ok(None) => {
                    return Ok(report(
                        "not_configured",
                        None,
                        Some(
                            "the tenant has no database URI and was not provisioned from a connection template"
                                .into(),
                        ),
                    ));
                }
                Err(err) => {
                    return Ok(report(
                        "not_configured",
                        None,
                        Some(format!(
                            "the connection it was provisioned with cannot be rendered again: {}",
                            err
                        )),
                    ));
                }
            }
        }
    };
    let Ok(mut url) = url::Url::parse(&uri) else {
        return Ok(report(
            "unsupported",
            None,
            Some("the database URI does not parse".into()),
        ));
    };
    let scheme = url.scheme().split('+').next().unwrap_or("").to_owned();
    if scheme != "postgresql" && scheme != "postgres" {
        return Ok(report(
            "unsupported",
            None,
            Some(format!(
                "`{scheme}` databases cannot be checked yet; PostgreSQL can"
            )),
        ));
    }
    let _ = url.set_scheme("postgres");
    let started = Instant::now();
    let outcome = tokio::time::timeout(DATABASE_TIMEOUT, async {
        let mut conn = AsyncPgConnection::establish(url.as_str())
            .await
            .map_err(|e| e.to_string())?;
        conn.batch_execute("SELECT 1")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    let elapsed = (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    Ok(match outcome {
        Ok(Ok(())) => report("connected", Some(elapsed), None),
        Ok(Err(err)) => report("unreachable", Some(elapsed), Some(redact(&err, &uri))),
        Err(_) => report(
            "unreachable",
            Some(elapsed),
            Some(format!("no answer within {}s", DATABASE_TIMEOUT.as_secs())),
        ),
    })
}

/// Removes the URI and its password from a driver's message, should the driver echo them.
fn redact(message: &str, uri: &str) -> String {
    let mut message = message.replace(uri, "<database uri>");
    if let Ok(url) = url::Url::parse(uri)
        && let Some(password) = url.password()
        && !password.is_empty()
    {
        message = message.replace(password, "***");
    }
    message.lines().next().unwrap_or_default().to_owned()
}

/// Public liveness of one tenant (`/t/{slug}/health`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantHealth {
    /// `healthy` while the tenant is trial or active, else `unavailable`.
    pub status: String,
    pub tenant: String,
    pub tenant_status: tenants::TenantStatus,
    /// `configured` (its own database URI, or a connection it was provisioned with from a
    /// connection template) or `not_configured`.
    pub database: String,
    /// `configured` or `not_configured`.
    pub oauth: String,
}

pub async fn tenant(ctx: &Context, slug: &str) -> AppResult<TenantHealth> {
    let tenant = tenants::get(ctx, slug).await?;
    let configured = |yes: bool| if yes { "configured" } else { "not_configured" }.to_owned();
    Ok(TenantHealth {
        status: if tenant.is_active {
            "healthy"
        } else {
            "unavailable"
        }
        .into(),
        tenant: tenant.slug.clone(),
        tenant_status: tenant.status,
        database: configured(
            tenant.db_uri.set
                || crate::provisioning::has_provisioned_connection(ctx, &tenant).await?,
        ),
        oauth: configured(tenant.oauth_issuer.is_some() && tenant.client_id.is_some()),
    })
}
