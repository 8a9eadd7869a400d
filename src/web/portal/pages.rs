//! Login, logout and the dashboard.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::audit::{self, AuditQuery};
use crate::auth;
use crate::context::Context;
use crate::http::actor_for;
use crate::tenants::{self, TenantStatus, Tier};
use crate::web::error::PageResult;
use crate::web::portal::session::{self, LOGIN_CSRF_COOKIE, PortalForm, PortalSession};
use crate::web::{Flash, redirect_with, render_status, tera};

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// What a login page says went wrong: a sentence for a person and, for an administrator, the
/// reason code and a technical detail (never a secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoginError {
    pub message: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
}

impl LoginError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reason: None,
            detail: None,
        }
    }
}

impl From<&auth::login::LoginFailure> for LoginError {
    fn from(failure: &auth::login::LoginFailure) -> Self {
        Self {
            message: failure.message.clone(),
            reason: Some(failure.reason.to_owned()),
            detail: failure.detail.clone(),
        }
    }
}

/// Whether the portal's cookies must be `Secure`: `public_url` is https, or the request came
/// over TLS through a trusted proxy.
fn secure(req: &HttpRequest, ctx: &Context) -> bool {
    ctx.config.secure_cookies() || crate::client::Client::of(req).scheme == "https"
}

/// Where to go after login: `next` when it is a path on this server, else `/` (no open
/// redirect). `next` must be a relative reference with an absolute path and no scheme or host,
/// without control characters, whitespace or backslashes (browsers drop a tab or a newline and
/// read `\\` as `/`, so `/<TAB>/evil.example` would leave the site); it is returned as the URL
/// parser writes it, so the `Location` header carries nothing it did not check.
pub fn safe_next(next: Option<&str>) -> String {
    next.and_then(local_path).unwrap_or_else(|| "/".to_owned())
}

fn local_path(next: &str) -> Option<String> {
    if !next.starts_with('/')
        || next.starts_with("//")
        || next
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    {
        return None;
    }
    let base = url::Url::parse("http://tenantry.invalid/").expect("a valid base");
    let joined = base.join(next).ok()?;
    if joined.origin() != base.origin() {
        return None;
    }
    let mut path = joined.path().to_owned();
    if path.starts_with("//") {
        return None;
    }
    if let Some(query) = joined.query() {
        path.push('?');
        path.push_str(query);
    }
    if let Some(fragment) = joined.fragment() {
        path.push('#');
        path.push_str(fragment);
    }
    Some(path)
}

pub async fn login_form(
    req: HttpRequest,
    ctx: web::Data<Context>,
    query: web::Query<LoginQuery>,
) -> PageResult {
    login_page(
        &req,
        &ctx,
        query.next.as_deref(),
        None,
        actix_web::http::StatusCode::OK,
    )
    .await
}

/// The portal's login page: single sign-on through the platform's own tenant when it has an
/// identity provider, and the bootstrap administrator's password form.
pub async fn login_page(
    req: &HttpRequest,
    ctx: &Context,
    next: Option<&str>,
    error: Option<&LoginError>,
    status: actix_web::http::StatusCode,
) -> PageResult {
    let token = auth::new_token();
    let mut context = tera::Context::new();
    context.insert("login_csrf", &token);
    context.insert("next", &safe_next(next));
    context.insert("error", &error);
    let platform_sso = match tenants::get(ctx, tenants::ADMIN_SLUG).await {
        Ok(admin) if admin.oauth_issuer.is_some() && admin.client_id.is_some() => {
            let next: String =
                url::form_urlencoded::byte_serialize(safe_next(next).as_bytes()).collect();
            Some((
                admin.name,
                format!("/t/{}/login/oauth?next={next}", tenants::ADMIN_SLUG),
            ))
        }
        _ => None,
    };
    context.insert("platform_sso", &platform_sso);
    let flash = session::read_flash(req);
    let mut response = render_status(tera(), "login.html", status, None, flash, &mut context)?;
    let _ = response.add_cookie(&session::login_csrf_cookie(&token, secure(req, ctx)));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// Missing counts as wrong: refused like any bad token, not as a malformed form.
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    req: HttpRequest,
    ctx: web::Data<Context>,
    form: web::Form<LoginForm>,
) -> PageResult {
    let expected = req
        .cookie(LOGIN_CSRF_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if !auth::csrf_matches(&expected, &form.csrf) {
        return login_page(
            &req,
            &ctx,
            form.next.as_deref(),
            Some(&LoginError::new(
                "The login form expired. Please try again.",
            )),
            actix_web::http::StatusCode::FORBIDDEN,
        )
        .await;
    }
    let address = crate::client::Client::of(&req).address_text();
    let username = form.username.trim();
    use actix_web::http::StatusCode;
    let (message, status, retry_after) =
        match auth::password_login(&ctx, username, &form.password, address.as_deref()).await? {
            auth::PasswordLogin::Accepted(principal) => {
                return logged_in(&req, &ctx, principal, form.next.as_deref()).await;
            }
            auth::PasswordLogin::Refused { user } => {
                // Only a name that is a user's: anything else may be a password typed into the
                // wrong box.
                tracing::info!(
                    user = user.as_deref().unwrap_or("(not a user)"),
                    "portal login refused"
                );
                (
                    "Wrong user name or password.".to_owned(),
                    StatusCode::UNAUTHORIZED,
                    None,
                )
            }
            auth::PasswordLogin::Limited(wait) => (
                format!(
                    "Too many failed logins. Try again in {} seconds.",
                    wait.as_secs().max(1)
                ),
                StatusCode::TOO_MANY_REQUESTS,
                Some(wait.as_secs().max(1)),
            ),
            auth::PasswordLogin::Busy => (
                "Too many logins at once. Try again in a moment.".to_owned(),
                StatusCode::SERVICE_UNAVAILABLE,
                Some(1),
            ),
        };
    let mut page = login_page(
        &req,
        &ctx,
        form.next.as_deref(),
        Some(&LoginError::new(message)),
        status,
    )
    .await?;
    if let Some(seconds) = retry_after {
        page.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from(seconds),
        );
    }
    Ok(page)
}

/// Starts the portal session of a login that succeeded and sends the browser on.
async fn logged_in(
    req: &HttpRequest,
    ctx: &Context,
    principal: auth::Principal,
    next: Option<&str>,
) -> PageResult {
    let actor = actor_for(req, &principal.name);
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    let (cookie, _) = auth::start_session(ctx, &principal, &actor, user_agent, None, None).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", safe_next(next)))
        .cookie(session::session_cookie(&cookie, secure(req, ctx)))
        .finish())
}

/// Ends the portal session; a session of the platform's identity provider is ended there too
/// (RP-initiated logout), which sends the browser back to `/t/admin/logged-out`.
pub async fn logout(req: HttpRequest, ctx: web::Data<Context>, form: PortalForm) -> PageResult {
    let portal = form.session;
    let provider = auth::end_session(&ctx, &portal.session, &portal.actor).await?;
    let at_provider = match provider {
        Some(logout) => {
            let site = crate::web::site::TenantSite::of(&req, &ctx, tenants::ADMIN_SLUG);
            let client_id = tenants::get(&ctx, tenants::ADMIN_SLUG)
                .await
                .ok()
                .and_then(|t| t.client_id);
            crate::identity_providers::end_session_url(
                &ctx.providers,
                &logout.issuer,
                client_id.as_deref(),
                logout.id_token.as_deref(),
                &site.url("/logged-out"),
            )
            .await
        }
        None => None,
    };
    let mut response = match at_provider {
        Some(url) => HttpResponse::SeeOther()
            .insert_header(("Location", url))
            .finish(),
        None => redirect_with("/login", Flash::success("You are logged out.")),
    };
    let _ = response.add_cookie(&session::clear_session_cookie());
    Ok(response)
}

pub async fn dashboard(ctx: web::Data<Context>, portal: PortalSession) -> PageResult {
    {
        let counts = tenants::counts(&ctx).await?;
        let by_status: Vec<(String, i64)> = TenantStatus::ALL
            .iter()
            .map(|s| {
                (
                    s.to_string(),
                    counts
                        .iter()
                        .filter(|c| c.0 == s.as_str())
                        .map(|c| c.2)
                        .sum(),
                )
            })
            .collect();
        let by_tier: Vec<(String, i64)> = Tier::ALL
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    counts
                        .iter()
                        .filter(|c| c.1 == t.as_str())
                        .map(|c| c.2)
                        .sum(),
                )
            })
            .collect();
        let total: i64 = counts.iter().map(|c| c.2).sum();
        let recent = audit::list(
            &ctx.db,
            &AuditQuery {
                limit: Some(10),
                ..AuditQuery::default()
            },
        )
        .await?;
        let mut context = tera::Context::new();
        context.insert("total", &total);
        context.insert("by_status", &by_status);
        context.insert("by_tier", &by_tier);
        context.insert("recent", &recent.items);
        context.insert("alert_counts", &crate::alerts::open_counts(&ctx).await?);
        let at_risk = crate::alerts::list(
            &ctx,
            &crate::alerts::AlertQuery {
                kind: Some("at_risk".into()),
                limit: Some(20),
                ..Default::default()
            },
        )
        .await?;
        context.insert("at_risk", &at_risk.items);
        context.insert("nav", "dashboard");
        Ok(portal.page("dashboard.html", context)?)
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_paths_on_this_server_are_followed() {
        for (next, expected) in [
            ("/tenants?status=active", "/tenants?status=active"),
            ("/t/acme/keys#new", "/t/acme/keys#new"),
            ("/a/../b", "/b"),
            ("/%09/evil.example", "/%09/evil.example"),
        ] {
            assert_eq!(safe_next(Some(next)), expected, "{next:?}");
        }
        for next in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/x",
            "/\0/x",
            "/ /evil.example",
            "https://evil.example/",
            "evil.example",
            "/x\\y",
            "",
        ] {
            assert_eq!(safe_next(Some(next)), "/", "{next:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
