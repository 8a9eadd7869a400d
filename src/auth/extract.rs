//! actix-web extractors for the API: who is calling, and the request facts every audit record
//! carries (source address, request id).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use super::Principal;
use crate::audit::Actor;
use crate::context::Context;
use crate::error::AppError;

/// An authenticated API caller (`Authorization: Bearer …`); 401 otherwise.
pub struct ApiCaller {
    pub principal: Principal,
    pub actor: Actor,
}

/// The source address and request id of a request, as an audit [`Actor`] named `name`.
pub fn actor_for(req: &HttpRequest, name: &str) -> Actor {
    Actor {
        name: name.to_owned(),
        source_ip: req.peer_addr().map(|addr| addr.ip().to_string()),
        request_id: req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|id| id.to_string()),
    }
}

impl FromRequest for ApiCaller {
    type Error = AppError;
    type Future = LocalBoxFuture<'static, Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        // A task of its own: when a sibling extractor (the body) fails first, actix drops this
        // future; the database lookup must still run to its end (see `app::start`).
        let task = actix_web::rt::spawn(async move {
            let ctx = req
                .app_data::<web::Data<Context>>()
                .ok_or_else(|| AppError::internal(anyhow::anyhow!("context missing")))?
                .clone();
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(AppError::Unauthorized)?;
            let token = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))
                .ok_or(AppError::Unauthorized)?;
            let principal = super::authenticate_token(&ctx, token.trim())
                .await?
                .ok_or(AppError::Unauthorized)?;
            let actor = actor_for(&req, &principal.name);
            Ok(ApiCaller { principal, actor })
        });
        Box::pin(async move { task.await.map_err(|e| AppError::internal(anyhow::anyhow!("authentication task: {e}")))? })
    }
}
