//! Logging: `tracing` with a request id and the tenant's slug on every request span, human-
//! readable lines by default, JSON by setting `log_format = "json"`.

use std::io::IsTerminal as _;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Logs go to stderr; stdout is kept for command output. Text
/// lines are coloured only when stderr is a terminal and `NO_COLOR` is not set (a file or a pipe
/// gets plain text).
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // A line when each request span closes: the access log, with the request id, route, status,
    // tenant and timings as fields.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE);
    let _ = match config.log_format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The root span of each request: tracing-actix-web's fields plus `tenant`, recorded by the
/// handlers that act on a tenant.
pub struct TenantRootSpan;

impl RootSpanBuilder for TenantRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        tracing_actix_web::root_span!(request, tenant = tracing::field::Empty)
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Records the tenant a request acts on, on the request's root span.
pub fn record_tenant(slug: &str) {
    Span::current().record("tenant", slug);
}
