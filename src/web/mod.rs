//! The pages: the admin portal (`portal/`) and each tenant's site (`site/`), server-rendered
//! tera pages that work without JavaScript, with every asset served by this server
//! (`assets`); their routes (`routes`) and the rendering they share (`render`). Sessions live
//! in the database; every form carries a CSRF token bound to the session (the login form: a
//! double-submit cookie). POST handlers end with a flash message and a 303 redirect.

mod assets;
mod date_filter;
pub mod error;
pub mod form;
mod keys;
mod portal;
mod render;
mod routes;
pub mod site;
mod sso;

pub use assets::{load_pages, tera};
pub use portal::session::{self, PortalSession, SESSION_COOKIE, tenant_session_cookie};
pub use render::{
    Flash, back_or_error, content_security_policy, error_message, error_page, html_response,
    not_found, query_error, redirect_with, render, render_status,
};
pub use routes::mount;
