//! `HEAD` wherever `GET` is answered (`curl -I`): a `HEAD` request is routed and handled as the
//! `GET` of the same address, and the connection sends its status and headers without the body
//! (actix-http leaves out the body of an answer to a request that arrived as `HEAD`).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// Middleware, innermost, next to the router: a `HEAD` request goes on as a `GET`.
pub async fn as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if req.method() == Method::HEAD {
        req.head_mut().method = Method::GET;
    }
    next.call(req).await
}
