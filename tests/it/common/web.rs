//! [`Browser`]: a browser without JavaScript for the tests of the portal and the tenants' sites
//! — a cookie jar, redirects followed one at a time (so a test can stop anywhere and look), forms
//! posted with their CSRF token — and the [`Page`] it got. (The pages in a real Chromium are
//! [`super::browser`].)

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::cookie::{CookieStore as _, Jar};
use reqwest::header::{LOCATION, SET_COOKIE};
use url::Url;

use super::{ADMIN_PASSWORD, TestApp};
use tenantry::audit::Actor;
use tenantry::auth::{self, Principal};

/// One answer, as a browser sees it before following a redirect.
#[derive(Debug)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    /// The `Location` header resolved against the page's URL.
    pub location: Option<Url>,
    /// The `Location` header as sent (`/tenants/acme`).
    pub redirect: Option<String>,
    pub set_cookies: Vec<String>,
    /// The body as sent.
    pub body: String,
    /// The body with the templates' HTML escapes undone (`&#x2F;` → `/`…), as a person reads it.
    pub html: String,
}

impl Page {
    /// [`Page::html`], for code that wants a method.
    pub fn text(&self) -> String {
        self.html.clone()
    }

    /// Whether the page shows `text` (compared with the unescaped body).
    pub fn has(&self, text: &str) -> bool {
        self.html.contains(text)
    }

    pub fn assert_status(&self, expected: StatusCode) {
        assert_eq!(self.status, expected, "{}:\n{}", self.url, self.body);
    }

    /// The value of the first `<input … name="{name}" value="…">`, unescaped.
    pub fn hidden(&self, name: &str) -> Option<String> {
        hidden_value(&self.body, name)
    }

    /// The value of the page's first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        self.hidden("csrf")
            .unwrap_or_else(|| panic!("no CSRF field on {}:\n{}", self.url, self.body))
    }

    /// The reason code a refused login page shows.
    pub fn reason(&self) -> Option<String> {
        let marker = r#"id="login-error-reason">"#;
        let start = self.body.find(marker)? + marker.len();
        let end = self.body[start..].find('<')? + start;
        Some(self.body[start..end].to_owned())
    }

    /// The `Set-Cookie` header of cookie `name`, if the answer set it.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// The `value` of the `<input … name="{name}" value="…">` in `html`, unescaped.
pub fn hidden_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(unescape(&html[start..end]))
}

/// Undoes tera's HTML escaping (`& < > " ' /`), as a browser reading the page does.
pub fn unescape(text: &str) -> String {
    text.replace("&#x2F;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A browser without JavaScript: a cookie jar and one request at a time. Paths that start with
/// `/` are on the server it was opened at; other targets are whole URLs.
#[derive(Clone)]
pub struct Browser {
    pub http: reqwest::Client,
    pub jar: Arc<Jar>,
    base: Option<Url>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self::with(reqwest::Client::builder())
    }

    /// With a client builder of the test's (e.g. `resolve` for host names).
    pub fn with(builder: reqwest::ClientBuilder) -> Self {
        let jar = Arc::new(Jar::default());
        let http = builder
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        Browser {
            http,
            jar,
            base: None,
        }
    }

    /// A browser on the test server `app`, not logged in.
    pub fn at(app: &TestApp) -> Self {
        let mut browser = Self::new();
        browser.base = Some(Url::parse(&app.base).expect("the server's URL"));
        browser
    }

    /// Logged in to the portal as the bootstrap administrator, through the login form.
    pub async fn admin(app: &TestApp) -> Self {
        let browser = Self::at(app);
        let answer = browser.submit_login("admin", ADMIN_PASSWORD).await;
        answer.assert_status(StatusCode::SEE_OTHER);
        browser
    }

    /// With a portal session of `principal` (made by the server's own session code), for the
    /// roles no login form gives.
    pub async fn with_session(app: &TestApp, principal: &Principal) -> Self {
        let (cookie, _) =
            auth::start_session(&app.ctx, principal, &Actor::system(), None, None, None)
                .await
                .expect("a portal session");
        let browser = Self::at(app);
        browser.jar.add_cookie_str(
            &format!("tenantry_session={cookie}; Path=/"),
            &app.base.parse().expect("base url"),
        );
        browser
    }

    fn url(&self, target: &str) -> Url {
        match (&self.base, target.starts_with('/')) {
            (Some(base), true) => base.join(target).expect("a path on the server"),
            _ => Url::parse(target).unwrap_or_else(|e| panic!("{target}: {e}")),
        }
    }

    pub async fn get(&self, target: &str) -> Page {
        let url = self.url(target);
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Self::page(url, response).await
    }

    pub async fn post(&self, target: &str, form: &[(&str, &str)]) -> Page {
        let url = self.url(target);
        let response = self
            .http
            .post(url.clone())
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        Self::page(url, response).await
    }

    /// Sends a `multipart/form-data` form (a file upload).
    pub async fn post_multipart(&self, target: &str, form: reqwest::multipart::Form) -> Page {
        let url = self.url(target);
        let response = self
            .http
            .post(url.clone())
            .multipart(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        Self::page(url, response).await
    }

    async fn page(url: Url, response: reqwest::Response) -> Page {
        let status = response.status();
        let redirect = response
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().expect("an ASCII Location").to_owned());
        let location = redirect
            .as_deref()
            .map(|l| url.join(l).expect("a Location URL"));
        let set_cookies = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("an ASCII cookie").to_owned())
            .collect();
        let body = response.text().await.unwrap_or_default();
        Page {
            url,
            status,
            location,
            redirect,
            set_cookies,
            html: unescape(&body),
            body,
        }
    }

    /// Follows the 303 of `page` the way a browser does (GETs its Location).
    pub async fn see_other(&self, page: &Page) -> Page {
        page.assert_status(StatusCode::SEE_OTHER);
        let next = page.location.as_ref().expect("a redirect has a Location");
        self.get(next.as_str()).await
    }

    /// Follows redirects from `target` (GETs) until a page that is not one.
    pub async fn follow(&self, target: &str) -> Page {
        let mut page = self.get(target).await;
        for _ in 0..20 {
            match &page.location {
                Some(next) if page.status.is_redirection() => page = self.get(next.as_str()).await,
                _ => return page,
            }
        }
        panic!("more than 20 redirects from {target}")
    }

    /// The CSRF token of this session (from the form on `path`).
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        page.assert_status(StatusCode::OK);
        page.csrf()
    }

    /// Submits a form of the page at `path` to `action`, with the page's CSRF token and
    /// `fields`.
    pub async fn submit(&self, path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf(path).await;
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(action, &form).await
    }

    /// Fills in the portal's login form; the answer to the POST.
    pub async fn submit_login(&self, username: &str, password: &str) -> Page {
        let form = self.get("/login").await;
        form.assert_status(StatusCode::OK);
        let csrf = form.csrf();
        let next = form.hidden("next").unwrap_or_else(|| "/".into());
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("next", &next),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    /// The value of cookie `name` this browser sends to `url`.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = self.url(url);
        let header = self.jar.cookies(&url)?;
        header.to_str().ok()?.split("; ").find_map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        })
    }
}
