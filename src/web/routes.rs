//! The routes of both places this module serves: the admin portal (at `/`: `/login`,
//! `/tenants`, …) and each tenant's site (`/t/{slug}/…`, or the tenant's own host).

use actix_web::web;

use super::assets::{favicon, stylesheet};
use super::portal::{
    alerts, audit, catalog, pages, plugins, provisioning, tenant_actions, tenant_import, tenants,
    tokens,
};
use super::site::{home, login as site_login};
use super::{portal, sso};

/// Adds the portal's routes to an actix `App`.
// Long function: the table of the pages' routes, a route a line.
pub fn mount<T>(app: actix_web::App<T>) -> actix_web::App<T>
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Error = actix_web::Error,
            InitError = (),
        >,
{
    app.route("/static/app.css", web::get().to(stylesheet))
        .route("/favicon.svg", web::get().to(favicon))
        .route("/login", web::get().to(pages::login_form))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/", web::get().to(pages::dashboard))
        .route("/tenants", web::get().to(tenants::list))
        .route("/tenants", web::post().to(tenants::create))
        .route("/tenants/new", web::get().to(tenants::new_form))
        .route("/tenants/import", web::get().to(tenant_import::import_form))
        .route("/tenants/import", web::post().to(tenant_import::import))
        .route("/tenants/{slug}", web::get().to(tenants::detail))
        .route("/tenants/{slug}/edit", web::get().to(tenants::edit_form))
        .route("/tenants/{slug}/edit", web::post().to(tenants::update))
        .route(
            "/tenants/{slug}/lifecycle",
            web::post().to(tenant_actions::lifecycle),
        )
        .route(
            "/tenants/{slug}/purge",
            web::post().to(tenant_actions::purge),
        )
        .route(
            "/tenants/{slug}/bundle",
            web::post().to(tenant_actions::bundle),
        )
        .route(
            "/tenants/{slug}/reconcile",
            web::post().to(tenant_actions::reconcile),
        )
        .route(
            "/tenants/{slug}/provision/retry",
            web::post().to(tenant_actions::retry_provision),
        )
        .route(
            "/tenants/{slug}/api-keys",
            web::post().to(tenant_actions::create_key),
        )
        .route(
            "/tenants/{slug}/api-keys/{id}/revoke",
            web::post().to(tenant_actions::revoke_key),
        )
        .route(
            "/tenants/{slug}/api-keys/{id}/rotate",
            web::post().to(tenant_actions::rotate_key),
        )
        .route(
            "/tenants/{slug}/export",
            web::post().to(tenant_actions::export),
        )
        .route(
            "/tenants/{slug}/client-secret/rollback",
            web::post().to(tenant_actions::rollback_secret),
        )
        .route(
            "/tenants/{slug}/health/database",
            web::post().to(tenant_actions::check_database),
        )
        .route("/templates", web::get().to(catalog::list))
        .route("/templates", web::post().to(catalog::create))
        .route("/templates/new", web::get().to(catalog::new_form))
        .route("/templates/{name}", web::get().to(catalog::detail))
        .route("/templates/{name}/edit", web::get().to(catalog::edit_form))
        .route("/templates/{name}/edit", web::post().to(catalog::update))
        .route(
            "/templates/{name}/render",
            web::post().to(catalog::render_preview),
        )
        .route("/templates/{name}/delete", web::post().to(catalog::delete))
        .route("/provision", web::get().to(provisioning::form))
        .route("/provision", web::post().to(provisioning::submit))
        .route("/runs", web::get().to(provisioning::runs))
        .route("/runs/{id}", web::get().to(provisioning::run))
        .route("/audit", web::get().to(audit::list))
        .route("/jobs", web::get().to(portal::jobs::list))
        .route("/alerts", web::get().to(alerts::list))
        .route(
            "/tenants/{slug}/quotas",
            web::post().to(alerts::save_quotas),
        )
        .route("/plugins", web::get().to(plugins::list))
        .route("/plugins/{name}/config", web::post().to(plugins::configure))
        .route("/tokens", web::get().to(tokens::list))
        .route("/tokens", web::post().to(tokens::create))
        .route("/tokens/{id}/revoke", web::post().to(tokens::revoke))
        .route("/tokens/{id}/rotate", web::post().to(tokens::rotate))
        .route("/tenants/{slug}/sso", web::get().to(sso::admin_form))
        .route("/tenants/{slug}/sso", web::post().to(sso::admin_submit))
        .route(
            "/tenants/{slug}/sso/setup-links",
            web::post().to(sso::create_link),
        )
        .route(
            "/tenants/{slug}/sso/setup-links/{id}/revoke",
            web::post().to(sso::revoke_link),
        )
        .route(
            "/tenants/{slug}/sessions/{handle}/revoke",
            web::post().to(sso::revoke_session),
        )
        .route(
            "/tenants/{slug}/health/oauth",
            web::post().to(sso::check_oauth),
        )
        // A tenant's own site (also at `<slug>.<base_domain>/…`, see `site`).
        .route("/t/{slug}", web::get().to(home::home_redirect))
        .route("/t/{slug}/", web::get().to(home::home))
        .route("/t/{slug}/login", web::get().to(site_login::login))
        .route("/t/{slug}/login/oauth", web::get().to(site_login::start))
        .route("/t/{slug}/callback", web::get().to(site_login::callback))
        .route("/t/{slug}/logout", web::post().to(site_login::logout))
        .route(
            "/t/{slug}/logged-out",
            web::get().to(site_login::logged_out),
        )
        .route(
            "/t/{slug}/sessions/{handle}/revoke",
            web::post().to(home::revoke_session),
        )
        .route("/t/{slug}/api-keys", web::post().to(home::create_key))
        .route(
            "/t/{slug}/api-keys/{id}/revoke",
            web::post().to(home::revoke_key),
        )
        .route(
            "/t/{slug}/api-keys/{id}/rotate",
            web::post().to(home::rotate_key),
        )
        .route("/t/{slug}/settings/sso", web::get().to(home::sso_form))
        .route("/t/{slug}/settings/sso", web::post().to(home::sso_submit))
        .route("/t/{slug}/setup/{token}", web::get().to(home::setup_form))
        .route(
            "/t/{slug}/setup/{token}",
            web::post().to(home::setup_submit),
        )
}
