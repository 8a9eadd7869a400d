//! A tenant's own site: which tenant a request is for, how the tenant's pages are addressed, and
//! who is logged in to it.
//!
//! A tenant's pages are reached at `/t/<slug>/…` and, when `base_domain` is configured, at
//! `<slug>.<base_domain>/…` — [`route_tenant_hosts`] maps the second onto the first before
//! routing, and remembers that it did so that links keep the form the browser used. The slug in
//! the address only picks the login page; once logged in, what a page shows is decided by the
//! tenant of the session, which must be the tenant of the address (else: log in here).

pub mod home;
pub mod login;

use crate::roles::Role;
use crate::tenants::TenantScope;
use crate::web::error::PageError;
use crate::web::form::{CsrfForm, FormSession, NoFields};
use std::str::FromStr as _;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, Uri};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;

use crate::audit::Actor;
use crate::auth::login::LoginFailure;
use crate::auth::{self, Session, SessionKind};
use crate::context::Context;
use crate::error::AppError;
use crate::http::actor_for;
use crate::web::portal::session::{read_flash, tenant_session_cookie};
use crate::web::{Flash, tera};

use crate::tenants::{self, Tenant};

/// Set on requests that reached a tenant through its host name.
#[derive(Debug, Clone)]
pub struct HostTenant(pub String);

/// The tenant a host name `<slug>.<base_domain>` stands for (`admin.<base_domain>` and
/// `www.<base_domain>` are the platform's own portal).
pub fn tenant_of_host(host: &str, base_domain: &str) -> Option<String> {
    // Drop a port (host names here are DNS names, never IPv6 literals).
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.to_ascii_lowercase();
    let label = name.strip_suffix(base_domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.') && label != "admin" && label != "www")
        .then(|| label.to_owned())
}

/// Middleware: `acme.<base_domain>/login` is served as `/t/acme/login` (the API, static assets
/// and metrics stay where they are).
pub async fn route_tenant_hosts(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let domain = req
        .app_data::<web::Data<Context>>()
        .and_then(|ctx| ctx.config.base_domain.clone());
    if let Some(domain) = domain {
        let host = crate::client::of_service_request(&req).host;
        let path = req.path().to_owned();
        let keep = path.starts_with("/api/")
            || path.starts_with("/static/")
            || path.starts_with("/t/")
            || path == "/favicon.svg"
            || path == "/metrics";
        if let Some(slug) = tenant_of_host(&host, &domain)
            && !keep
        {
            let target = match req.uri().query() {
                Some(query) => format!("/t/{slug}{path}?{query}"),
                None => format!("/t/{slug}{path}"),
            };
            if let Ok(uri) = Uri::from_str(&target) {
                req.head_mut().uri = uri.clone();
                req.match_info_mut().get_mut().update(&uri);
                req.extensions_mut().insert(HostTenant(slug));
            }
        }
    }
    next.call(req).await
}

/// How this request addresses the tenant's pages.
#[derive(Debug, Clone)]
pub struct TenantSite {
    pub slug: String,
    /// `scheme://host[:port]` the pages are reached at.
    pub origin: String,
    /// `""` on the tenant's own host, `/t/<slug>` otherwise.
    pub prefix: String,
    /// Cookies must be `Secure` (reached over TLS).
    pub secure: bool,
}

impl TenantSite {
    pub fn of(req: &HttpRequest, ctx: &Context, slug: &str) -> Self {
        let origin = crate::http::request_origin(req);
        let host_style = req
            .extensions()
            .get::<HostTenant>()
            .is_some_and(|h| h.0 == slug);
        let secure =
            ctx.config.secure_cookies() || crate::client::Client::of(req).scheme == "https";
        if host_style {
            TenantSite {
                slug: slug.to_owned(),
                origin,
                prefix: String::new(),
                secure,
            }
        } else {
            TenantSite {
                slug: slug.to_owned(),
                origin: ctx
                    .config
                    .public_url
                    .clone()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .unwrap_or(origin),
                prefix: format!("/t/{slug}"),
                secure,
            }
        }
    }

    /// A local path of the tenant's site (`path` starts with `/`).
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// An absolute URL of the tenant's site.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, self.path(path))
    }
}

/// A request for one of a tenant's pages: the tenant (known and available) and its site.
#[derive(Clone)]
pub struct TenantPage {
    pub tenant: Tenant,
    pub site: TenantSite,
}

/// The page that answers a request for an unknown or unavailable tenant.
pub fn unavailable_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let mut context = tera::Context::new();
    context.insert("title", title);
    context.insert("message", message);
    context.insert("tenant_name", &Option::<String>::None);
    context.insert("base", "");
    context.insert("flash", &Option::<Flash>::None);
    match tera().render("tenant/message.html", &context) {
        Ok(html) => crate::web::html_response(status, html, None, false),
        Err(err) => {
            tracing::error!("rendering tenant/message.html: {err:?}");
            HttpResponse::build(status).body(message.to_owned())
        }
    }
}

impl TenantPage {
    /// Resolves `slug`: a 404 page when no such tenant exists; a 403 page when it exists but
    /// its users cannot log in (suspended, canceled, deleted, not provisioned).
    pub async fn resolve(
        req: &HttpRequest,
        ctx: &Context,
        slug: &str,
    ) -> Result<TenantPage, HttpResponse> {
        let tenant = match tenants::get(ctx, slug).await {
            Ok(tenant) => tenant,
            Err(AppError::NotFound { .. }) => {
                return Err(unavailable_page(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    &format!(
                        "There is no organisation “{slug}” here. Please check the address you were given."
                    ),
                ));
            }
            Err(err) => return Err(crate::web::error_page(tera(), None, &err)),
        };
        if !tenant.status.is_active() {
            let failure = LoginFailure::tenant_unavailable(&tenant.name, tenant.status);
            return Err(unavailable_page(
                failure.status,
                "Not available",
                &failure.message,
            ));
        }
        Ok(TenantPage {
            site: TenantSite::of(req, ctx, slug),
            tenant,
        })
    }
}

/// A user logged in to the tenant of the address. Pages that take it send everyone else to the
/// tenant's login page. The extractor also leaves it in the request, for the error page (see
/// `web::error`).
#[derive(Clone)]
pub struct TenantSession {
    pub page: TenantPage,
    pub session: Session,
    pub actor: Actor,
    pub flash: Option<Flash>,
}

impl FormSession for TenantSession {
    fn csrf_token(&self) -> &str {
        &self.session.csrf_token
    }
}

/// A form of a tenant's site, from the logged-in user it was shown to.
pub type SiteForm<T = NoFields> = CsrfForm<TenantSession, T>;

impl TenantSession {
    /// The tenant of an admin of the tenant; others are refused (403).
    pub fn admin_scope(&self) -> Result<TenantScope, PageError> {
        let scope = self
            .session
            .principal
            .tenant
            .clone()
            .ok_or_else(|| AppError::forbidden("not a tenant session"))?;
        self.session.principal.require_tenant_admin(&scope.slug)?;
        Ok(scope)
    }

    /// The session of the tenant page `page`, if the browser holds one for that very tenant.
    pub async fn of(req: &HttpRequest, ctx: &Context, page: &TenantPage) -> Option<Session> {
        let cookie = req.cookie(&tenant_session_cookie(&page.tenant.slug))?;
        let session = auth::load_session(ctx, cookie.value(), SessionKind::Tenant)
            .await
            .ok()
            .flatten()?;
        session
            .principal
            .tenant
            .as_ref()
            .is_some_and(|t| t.id == page.tenant.id)
            .then_some(session)
    }
}

impl FromRequest for TenantSession {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        // A task of its own, like the portal's session extractor: never cancelled mid-query.
        let task = actix_web::rt::spawn(async move {
            let ctx = req
                .app_data::<web::Data<Context>>()
                .cloned()
                .ok_or_else(|| HttpResponse::InternalServerError().finish())?;
            let slug = req.match_info().get("slug").unwrap_or_default().to_owned();
            let page = TenantPage::resolve(&req, &ctx, &slug).await?;
            let Some(session) = TenantSession::of(&req, &ctx, &page).await else {
                let here = req
                    .uri()
                    .path_and_query()
                    .map_or("/".to_owned(), |p| p.to_string());
                // The address as the browser knows it (without the host mapping's prefix).
                let here = here
                    .strip_prefix(&format!("/t/{slug}"))
                    .filter(|_| page.site.prefix.is_empty())
                    .map(str::to_owned)
                    .unwrap_or(here);
                let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
                return Err(HttpResponse::SeeOther()
                    .insert_header((
                        "Location",
                        format!("{}?next={next}", page.site.path("/login")),
                    ))
                    .finish());
            };
            let actor = actor_for(&req, &session.principal.name);
            let ts = TenantSession {
                page,
                session,
                actor,
                flash: read_flash(&req),
            };
            req.extensions_mut().insert(ts.clone());
            Ok(ts)
        });
        Box::pin(async move {
            match task.await {
                Ok(Ok(session)) => Ok(session),
                Ok(Err(page)) => {
                    Err(actix_web::error::InternalError::from_response("tenant page", page).into())
                }
                Err(e) => Err(actix_web::error::ErrorInternalServerError(e)),
            }
        })
    }
}

/// Renders one of the tenant site's pages with what every page shows: the tenant, who is
/// logged in, the CSRF token of their session, a flash message.
pub fn render(
    template: &str,
    page: &TenantPage,
    session: Option<&TenantSession>,
    flash: Option<Flash>,
    mut context: tera::Context,
    status: StatusCode,
) -> HttpResponse {
    context.insert("tenant_name", &page.tenant.name);
    context.insert("tenant_slug", &page.tenant.slug);
    context.insert("base", &page.site.prefix);
    if let Some(ts) = session {
        let principal = &ts.session.principal;
        let user = ts.session.user.as_ref();
        context.insert(
            "user",
            &user
                .and_then(|u| u.name.clone().or_else(|| u.email.clone()))
                .unwrap_or_else(|| principal.name.clone()),
        );
        context.insert("user_email", &user.and_then(|u| u.email.clone()));
        context.insert("user_subject", &user.map(|u| u.subject.clone()));
        context.insert("role", principal.role.as_str());
        context.insert("csrf", &ts.session.csrf_token);
        context.insert("is_tenant_admin", &(principal.role == Role::TenantAdmin));
        context.insert("session_handle", &ts.session.handle);
    }
    let flash_shown = flash.is_some();
    context.insert("flash", &flash);
    match tera().render(template, &context) {
        Ok(html) => crate::web::html_response(
            status,
            html,
            session.and_then(|ts| ts.session.user.as_ref().map(|u| u.issuer.as_str())),
            flash_shown,
        ),
        Err(err) => {
            tracing::error!("rendering {template}: {err:?}");
            HttpResponse::InternalServerError().body("internal error")
        }
    }
}

/// An error on a logged-in tenant page.
pub(crate) fn error(ts: &TenantSession, err: &AppError) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut context = tera::Context::new();
    context.insert("title", "Not possible");
    context.insert("message", &crate::web::error_message(err));
    render(
        "tenant/message.html",
        &ts.page,
        Some(ts),
        None,
        context,
        err.status_code(),
    )
}

#[cfg(test)]
mod tests {
    use super::tenant_of_host;

    #[test]
    fn a_tenant_host_names_its_tenant() {
        assert_eq!(
            tenant_of_host("acme.example.com", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(
            tenant_of_host("ACME.example.com:8443", "example.com").as_deref(),
            Some("acme")
        );
        assert_eq!(tenant_of_host("example.com", "example.com"), None);
        assert_eq!(tenant_of_host("admin.example.com", "example.com"), None);
        assert_eq!(tenant_of_host("a.b.example.com", "example.com"), None);
        assert_eq!(tenant_of_host("evilexample.com", "example.com"), None);
    }
}
