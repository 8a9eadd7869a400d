//! Start-up and the HTTP server: configuration → keyring → database (migrated) → platform tenant
//! and bootstrap administrator → actix-web with the API, the portal, metrics and request logging.
//!
//! The middleware, outermost first: `client::resolve` (who the request came from), the
//! `TracingLogger` root span, `web::site::route_tenant_hosts` (tenant hosts served as
//! `/t/<slug>/…`), `http::envelope::bound` (head size, body time), the request task (the rest
//! runs as a task of its own, so a client that goes away never cancels a database call halfway;
//! HTTP metrics, tenant traffic and `x-request-id` are recorded on the way out),
//! `http::tenant_id::by_id`, `http::authenticate` (API requests; a fixed principal instead in
//! [`start_unauthenticated`]), the security headers, `web::error::error_pages`, and
//! `http::head::as_get` next to the router.

use crate::plugin_host::World;
use std::net::{SocketAddr, TcpListener};
use std::time::Instant;

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpMessage as _, HttpServer, web};
use anyhow::Context as _;
use tracing::Instrument as _;
use tracing_actix_web::TracingLogger;

use crate::alerts::{AlertKind, AlertSeverity};
use crate::auth::{self, BootstrapAdmin};
use crate::config::Config;
use crate::context::Context;
use crate::secrets::{Keyring, KeyringNotes};
use crate::store::Db;
use crate::telemetry::TenantRootSpan;
use crate::{api, tenants};

/// A request no route took: 405 with `Allow` for a documented API path asked with another
/// method, else the portal's (or, under `/api/`, the API's) 404.
async fn unrouted(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if let Some(allowed) = api::openapi::allowed_methods(req.path())
        && !allowed.contains(&req.method().as_str())
    {
        use actix_web::ResponseError as _;
        return crate::error::AppError::MethodNotAllowed {
            method: req.method().to_string(),
            allowed: allowed.iter().map(|m| (*m).to_owned()).collect(),
        }
        .error_response();
    }
    crate::web::not_found(req).await
}

/// What start-up did that the operator should hear about.
#[derive(Debug)]
pub struct StartupReport {
    pub keyring: KeyringNotes,
    pub admin: BootstrapAdmin,
    pub admin_tenant_created: bool,
    pub migrations: Vec<String>,
}

/// Opens everything the server and the CLI need, running migrations and the start-up tasks
/// (platform tenant, bootstrap administrator).
pub async fn open(config: Config) -> anyhow::Result<(Context, StartupReport)> {
    let (keyring, notes) = Keyring::load(&config)?;
    let ctx = open_with_keyring(config, keyring).await?;
    let metric_names: Vec<String> = crate::quotas::metrics(&ctx)
        .into_iter()
        .map(|m| m.name)
        .collect();
    ctx.metrics.initialise_quota_series(
        tenants::Tier::WORDS,
        &metric_names.iter().map(String::as_str).collect::<Vec<_>>(),
        &ctx.config.quotas.policy,
        (AlertKind::WORDS, AlertSeverity::WORDS),
    );
    let migrations = ctx.db.migrate().await?;
    let admin_tenant_created = tenants::ensure_admin_tenant(&ctx).await?;
    let admin = auth::ensure_bootstrap_admin(&ctx).await?;
    crate::plugin_registry::record_builtins(&ctx).await?;
    let jobs: Vec<&str> = crate::jobs::specs(&ctx).iter().map(|j| j.name).collect();
    ctx.metrics.initialise_operations_series(&jobs);
    // Every enabled plugin's series at zero (an install or an enable does the same for its own).
    for &world in World::ALL {
        for name in ctx.plugins.enabled(world).await? {
            ctx.metrics
                .initialise_plugin_series(&name, world == World::Provisioner);
        }
    }
    Ok((
        ctx,
        StartupReport {
            keyring: notes,
            admin,
            admin_tenant_created,
            migrations,
        },
    ))
}

/// Connects to the database (without start-up tasks) with a given keyring.
pub async fn open_with_keyring(config: Config, keyring: Keyring) -> anyhow::Result<Context> {
    if crate::store::sqlite_path(&config.database_url()).is_some() && config.database_url.is_none()
    {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    let db =
        Db::connect_without_migrations(&config.database_url(), config.database_pool_size).await?;
    Context::new(db, keyring, config)
}

/// A running HTTP server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Stops the provisioning worker (notify it).
    pub worker_stop: std::sync::Arc<tokio::sync::Notify>,
    pub worker: tokio::task::JoinHandle<()>,
}

/// Binds `listener` and serves until stopped.
pub fn start(ctx: Context, listener: TcpListener) -> anyhow::Result<RunningServer> {
    start_with(ctx, listener, None)
}

/// FOR BENCHMARKS ONLY: the same server, but every API request runs as `principal` without
/// authenticating — the baseline the cost of authentication is measured against
/// (`benches/auth.rs`). Never used by `serve`.
#[doc(hidden)]
pub fn start_unauthenticated(
    ctx: Context,
    listener: TcpListener,
    principal: auth::Principal,
) -> anyhow::Result<RunningServer> {
    start_with(ctx, listener, Some(principal))
}

/// Puts the fixed principal of [`start_unauthenticated`] on every API request.
async fn fixed_principal(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if let Some(principal) = req.app_data::<web::Data<auth::Principal>>() {
        let principal = principal.get_ref().clone();
        req.extensions_mut().insert(principal);
    }
    next.call(req).await
}

fn start_with(
    ctx: Context,
    listener: TcpListener,
    fixed: Option<auth::Principal>,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    crate::web::load_pages()?;
    let worker_stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let worker = crate::provisioning::saga::spawn(ctx.clone(), worker_stop.clone());
    crate::store::changes::spawn_listener(&ctx.db);
    ctx.plugins.spawn_stats_reporter();
    crate::quotas::meter::spawn_flusher(&ctx);
    crate::jobs::spawn(&ctx);
    crate::throttle::Limits::spawn(&ctx.limits);
    crate::alerts::evaluate::spawn(&ctx);
    crate::alerts::delivery::spawn_deliverer(&ctx)?;
    let trusted_proxies = crate::client::TrustedProxies::parse(&ctx.config.trusted_proxies)
        .map_err(|err| anyhow::anyhow!("trusted_proxies: {err}"))?;
    let server = HttpServer::new(move || {
        let metrics = ctx.metrics.clone();
        let alerting = ctx.alert_signals.clone();
        let mut app = App::new()
            .app_data(web::Data::new(ctx.clone()))
            .app_data(web::Data::new(trusted_proxies.clone()));
        if let Some(principal) = &fixed {
            app = app.app_data(web::Data::new(principal.clone()));
        }
        let app = app
            .app_data(web::QueryConfig::default().error_handler(crate::web::query_error))
            .app_data(web::FormConfig::default().limit(ctx.config.max_body_bytes))
            .app_data(web::PayloadConfig::new(ctx.config.max_body_bytes))
            .app_data(web::PathConfig::default());
        crate::web::mount(api::mount(app))
            .default_service(web::to(unrouted))
            // Innermost: `HEAD` routed as `GET` (the connection leaves out the body).
            .wrap(actix_web::middleware::from_fn(crate::http::head::as_get))
            // A page handler's error becomes the page of where it happened.
            .wrap(actix_web::middleware::from_fn(
                crate::web::error::error_pages,
            ))
            .wrap(
                DefaultHeaders::new()
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add((
                        "Content-Security-Policy",
                        crate::web::content_security_policy(None),
                    )),
            )
            .wrap(actix_web::middleware::Condition::new(
                fixed.is_none(),
                actix_web::middleware::from_fn(crate::http::authenticate),
            ))
            .wrap(actix_web::middleware::Condition::new(
                fixed.is_some(),
                actix_web::middleware::from_fn(fixed_principal),
            ))
            // A tenant addressed by its id is served at its slug's address.
            .wrap(actix_web::middleware::from_fn(
                crate::http::tenant_id::by_id,
            ))
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let method = crate::metrics::method_label(req.method());
                // The request runs as a task of its own on the worker: a client that goes away
                // does not cancel it halfway through a database call (diesel-async's SQLite
                // wrapper cannot be cancelled on actix's single-threaded worker runtimes).
                let fut = actix_web::rt::spawn(srv.call(req).instrument(tracing::Span::current()));
                let metrics = metrics.clone();
                let alerting = alerting.clone();
                async move {
                    let mut res = fut
                        .await
                        .map_err(actix_web::error::ErrorInternalServerError)??;
                    if let Some(slug) = res.request().match_info().get("slug") {
                        crate::telemetry::record_tenant(slug);
                    }
                    // A tenant's own API requests: the base of its error-rate and
                    // response-time alerts.
                    if let Some(tenant) = res
                        .request()
                        .extensions()
                        .get::<crate::auth::Principal>()
                        .and_then(|p| p.tenant.as_ref())
                    {
                        alerting.record_request(
                            &tenant.id,
                            res.status().as_u16(),
                            started.elapsed(),
                        );
                    }
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    let status = res.status().as_u16().to_string();
                    metrics
                        .http_requests
                        .with_label_values(&[&route, method, &status])
                        .inc();
                    metrics
                        .http_duration
                        .with_label_values(&[&route, method])
                        .observe(started.elapsed().as_secs_f64());
                    let request_id = res
                        .request()
                        .extensions()
                        .get::<tracing_actix_web::RequestId>()
                        .map(|id| id.to_string());
                    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
                        res.headers_mut()
                            .insert(HeaderName::from_static("x-request-id"), id);
                    }
                    Ok(res)
                }
            })
            // Before authentication: an oversized head is refused, the body put under its
            // deadline.
            .wrap(actix_web::middleware::from_fn(crate::http::envelope::bound))
            // Before routing: `<slug>.<base_domain>/…` is served as `/t/<slug>/…`.
            .wrap(actix_web::middleware::from_fn(
                crate::web::site::route_tenant_hosts,
            ))
            .wrap(TracingLogger::<TenantRootSpan>::new())
            // Outermost: who the request came from, before anything logs or counts it.
            .wrap(actix_web::middleware::from_fn(crate::client::resolve))
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .disable_signals()
    .run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    Ok(RunningServer {
        addr,
        handle,
        task,
        worker_stop,
        worker,
    })
}

/// `tenantry serve`: starts, tells the operator where and how, and serves until Ctrl-C/SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    // Listen first: a port in use fails before anything is created (the first start's generated
    // admin password is announced only once).
    let bind = config.bind.clone();
    let listener = TcpListener::bind(&bind).with_context(|| format!("cannot listen on {bind}"))?;
    let (ctx, report) = open(config).await?;
    let running = start(ctx.clone(), listener)?;
    let base = ctx
        .config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", running.addr));
    if let Some(path) = &report.keyring.generated_dev_key {
        tracing::warn!(
            "generated a development master key at {} (mode 0600); set TENANTRY_MASTER_KEY or TENANTRY_MASTER_KEY_FILE in production and keep the key safe",
            path.display()
        );
    }
    if let Some(path) = &report.keyring.loose_permissions {
        tracing::warn!(
            "master key file {} is readable by other users; chmod 600 it",
            path.display()
        );
    }
    for migration in &report.migrations {
        tracing::info!(migration = %migration, "applied migration");
    }
    println!("tenantry {} listening on {base}", env!("CARGO_PKG_VERSION"));
    println!("database: {} ({})", ctx.db.display_url(), ctx.db.backend());
    println!("admin portal: {base}/   API: {base}/api/v1   OpenAPI: {base}/api/v1/openapi.json");
    match &report.admin {
        BootstrapAdmin::Generated(path) => {
            println!(
                "first start: log in to {base}/login as `admin` with the password in {} \
                 (change it with `tenantry admin set-password`)",
                path.display()
            );
            println!("API token for scripts: tenantry admin token create --name NAME");
        }
        BootstrapAdmin::FromConfig => {
            println!("log in to {base}/login as `admin` with TENANTRY_BOOTSTRAP_ADMIN_PASSWORD");
        }
        BootstrapAdmin::Existing => {}
    }
    {
        let plugins = ctx.plugins.clone();
        tokio::spawn(async move { plugins.warm_up().await });
    }
    let handle = running.handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        handle.stop(true).await;
    });
    running.task.await??;
    // No new provisioning run starts; what this server counted is written last.
    running.worker_stop.notify_one();
    let _ = running.worker.await;
    if let Err(err) = crate::quotas::meter::flush(&ctx).await {
        tracing::warn!("cannot write the last counted API calls: {err}");
    }
    ctx.limits.give_back_all().await;
    if let Err(err) = ctx.plugins.report_stats().await {
        tracing::warn!("cannot record the last plugin call statistics: {err}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
