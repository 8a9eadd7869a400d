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

/// The root span of each request, and so the access log line. It names the matched route
/// (`/t/{slug}/setup/{token}`), never the target the client sent: paths and query strings
/// carry setup-link tokens, OAuth codes and states, which whoever reads the logs could use. The
/// client address is the one `http::client` trusts (behind a trusted proxy, the client's, never a
/// header anyone can send), and text the client chose (host, user agent) is escaped so that it
/// cannot forge a log line. `tenant` is recorded by the handlers that act on a tenant.
pub struct TenantRootSpan;

impl RootSpanBuilder for TenantRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        use actix_web::HttpMessage as _;
        let method = crate::metrics::method_label(request.method());
        let route = request
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let client = crate::client::of_service_request(request);
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .map(|v| escape_for_log(&String::from_utf8_lossy(v.as_bytes())).into_owned())
            .unwrap_or_default();
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = ?request.version(),
            http.scheme = %client.scheme,
            http.host = %escape_for_log(&client.host),
            http.client_ip = %client.address.map(|a| a.to_string()).unwrap_or_default(),
            http.user_agent = %user_agent,
            http.status_code = tracing::field::Empty,
            otel.name = %format!("HTTP {method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
            tenant = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// `text` with control characters written as escapes (`\n`, `\u{1b}`), so that text a client or
/// a plugin chose cannot start a new log line or colour the terminal of whoever reads it.
pub fn escape_for_log(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.escape_debug().to_string().into()
    } else {
        text.into()
    }
}

/// Records the tenant a request acts on, on the request's root span.
pub fn record_tenant(slug: &str) {
    Span::current().record("tenant", slug);
}
