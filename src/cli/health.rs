//! `tenantry tenant health SLUG`: whether a tenant is serving, its identity provider, its own
//! database and each backend it holds resources in — one verdict, said first and last alike.

use super::{Output, app_error, print};
use crate::context::Context;
use crate::tenants;

pub(super) async fn tenant_health(ctx: &Context, out: Output, slug: &str) -> anyhow::Result<()> {
    let slug = slug.to_owned();
    let tenant = crate::tenant_health::tenant(ctx, &slug)
        .await
        .map_err(app_error)?;
    let database = crate::tenant_health::tenant_database(ctx, &slug)
        .await
        .map_err(app_error)?;
    let oauth = crate::auth::sso::oauth_health(ctx, &slug)
        .await
        .map_err(app_error)?;
    let backends = {
        let found = tenants::get(ctx, &slug).await.map_err(app_error)?;
        crate::provisioning::backend_health(ctx, &found)
            .await
            .map_err(app_error)?
    };
    // One verdict for the whole report, said first and last alike.
    let mut problems: Vec<String> = Vec::new();
    if tenant.status != "healthy" {
        problems.push(format!("serving: {}", tenant.status));
    }
    if !matches!(database.status.as_str(), "connected" | "not_configured") {
        problems.push(format!("database: {}", database.status.replace('_', " ")));
    }
    if !matches!(oauth.status.as_str(), "healthy" | "not_configured") {
        problems.push(format!("oauth: {}", oauth.status.replace('_', " ")));
    }
    for b in backends.backends.iter().filter(|b| b.status != "healthy") {
        problems.push(format!("backend {}: {}", b.plugin, b.status));
    }
    if backends.status != "healthy" && backends.backends.iter().all(|b| b.status == "healthy") {
        problems.push(format!("backends: {}", backends.status));
    }
    let verdict = if problems.is_empty() {
        "healthy".to_owned()
    } else {
        format!("not healthy ({})", problems.join("; "))
    };
    let report = serde_json::json!({
        "status": if problems.is_empty() { "healthy" } else { "unhealthy" },
        "problems": problems,
        "tenant": tenant, "database": database, "oauth": oauth, "backends": backends,
    });
    print(out, &report, || {
        let mut lines = Vec::new();
        for b in &backends.backends {
            lines.push(format!(
                "\nbackend {}: {} ({} resources, asked at {} in {} ms){}",
                b.plugin,
                b.status,
                b.resources,
                b.observed_at,
                b.duration_ms,
                b.error
                    .as_deref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            ));
            for d in &b.drift {
                lines.push(format!("\n  {} — {}", d.resource, d.problem));
            }
        }
        format!(
            "tenant {}: {verdict}\nserving: {} ({})\noauth: {}{}{}\ndatabase: {}{}{}{}",
            tenant.tenant,
            tenant.status,
            tenant.tenant_status,
            oauth.status.replace('_', " "),
            oauth
                .discovery
                .as_ref()
                .map(|d| format!(
                    " (discovery {} ms{})",
                    d.response_time_ms,
                    oauth
                        .jwks
                        .as_ref()
                        .map(|j| format!(", keys {} ms", j.response_time_ms))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
            if oauth.problems.is_empty() || oauth.status == "not_configured" {
                String::new()
            } else {
                format!(" — {}", oauth.problems.join("; "))
            },
            database.status.replace('_', " "),
            database
                .response_time_ms
                .map(|ms| format!(" in {ms:.1} ms"))
                .unwrap_or_default(),
            database
                .detail
                .as_deref()
                .map(|d| format!(" — {d}"))
                .unwrap_or_default(),
            lines.concat()
        )
    })?;
    anyhow::ensure!(
        problems.is_empty(),
        "tenant {slug} is not healthy: {}",
        problems.join("; ")
    );
    Ok(())
}
