//! Bounds on a request's envelope, before any handler: the size of its head, and the time its
//! body may take to arrive.
//!
//! - **The head.** actix-web reads a request head of up to 128 KiB; no route of the server needs
//!   more than [`MAX_TARGET`] bytes of path and query or [`MAX_HEADERS`] bytes of headers, and a
//!   larger one is refused (414, 431) before any handler or authentication runs.
//! - **The body.** A complete head followed by one body byte every few seconds would hold a
//!   connection (and a file descriptor) for as long as the client likes. The body must arrive
//!   within `body_timeout_seconds` of the head; a body still arriving then is cut off, the
//!   request refused (400, "the request body did not arrive in time") and the connection
//!   closed.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;

use crate::context::Context;

/// The longest path and query a request may name.
pub const MAX_TARGET: usize = 8 * 1024;
/// The most bytes of header names and values a request may carry.
pub const MAX_HEADERS: usize = 16 * 1024;

/// Middleware: refuses an oversized head, and puts the body under its deadline.
pub async fn bound(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET {
        return Ok(refuse(
            req,
            HttpResponse::UriTooLong(),
            "uri_too_long",
            format!("the path and query may be at most {MAX_TARGET} bytes"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers > MAX_HEADERS {
        return Ok(refuse(
            req,
            HttpResponse::build(actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
            "headers_too_large",
            format!("the headers may be at most {MAX_HEADERS} bytes"),
        ));
    }
    let timeout = req
        .app_data::<web::Data<Context>>()
        .map_or(Duration::from_secs(30), |ctx| {
            Duration::from_secs(ctx.config.body_timeout_seconds)
        });
    let payload = req.take_payload();
    req.set_payload(Payload::Stream {
        payload: Box::pin(Deadline {
            inner: payload,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            timed_out: false,
        }),
    });
    Ok(next.call(req).await?.map_into_left_body())
}

fn refuse<B>(
    req: ServiceRequest,
    mut builder: actix_web::HttpResponseBuilder,
    code: &str,
    message: String,
) -> ServiceResponse<EitherBody<B>> {
    let response = builder.json(serde_json::json!({
        "error": { "code": code, "message": message, "details": {} }
    }));
    req.into_response(response).map_into_right_body()
}

/// A request body that fails once its deadline has passed.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timed_out: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            )))));
        }
        Poll::Pending
    }
}
