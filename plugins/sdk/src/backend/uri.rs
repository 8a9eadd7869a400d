//! Connection URLs in SQLAlchemy's form, `scheme[+driver]://user:password@host:port/database?key=value`,
//! the way SQLAlchemy's `make_url` and Airflow's `Connection(uri=…)` read them, and the
//! percent-encoding of URL parts.
//!
//! No error quotes the URL: it carries a password.

/// A connection URL taken apart; every part percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseUrl {
    /// As written, with its driver: `postgresql+psycopg2`.
    pub scheme: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// An IPv6 host without its brackets.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The path after the host (SQLAlchemy's database, Airflow's schema).
    pub database: Option<String>,
    /// The query parameters in order (`+` is a space in them).
    pub query: Vec<(String, String)>,
}

impl DatabaseUrl {
    /// Parses `url`; the error says which part is wrong.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or("the URI has no `scheme://`")?;
        if scheme.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
        {
            return Err("the URI's scheme is not valid".into());
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i + 1..]),
            None => (before_query, ""),
        };
        // The last `@` ends the user information (a raw `@` in a password is tolerated).
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let decode = |text: &str, part: &str| {
            percent_decode(text, false).map_err(|e| format!("the {part} has {e}"))
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((l, p)) => (non_empty(decode(l, "login")?), Some(decode(p, "password")?)),
                None => (non_empty(decode(u, "login")?), None),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("the URI's IPv6 host has no closing `]`")?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err("the URI's host is not valid".into()),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (decode(h, "host")?, Some(p)),
                None => (decode(hostport, "host")?, None),
            }
        };
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| "the URI's port is not a number from 0 to 65535".to_string())?,
            ),
        };
        let mut pairs = Vec::new();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k, true).map_err(|e| format!("the query has {e}"))?;
            let v = percent_decode(v, true).map_err(|e| format!("the query has {e}"))?;
            pairs.push((k, v));
        }
        Ok(DatabaseUrl {
            scheme: scheme.to_string(),
            username,
            password,
            host: non_empty(host),
            port,
            database: non_empty(decode(path, "path")?),
            query: pairs,
        })
    }

    /// The scheme without its driver, lower-case: `postgresql` of `PostgreSQL+psycopg2`.
    pub fn dialect(&self) -> String {
        self.scheme
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`). The error never quotes the
/// text.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("an invalid %-escape")?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes that are not UTF-8".to_string())
}

/// Encodes everything but RFC 3986's unreserved characters (`A–Z a–z 0–9 - . _ ~`): a path
/// segment or a query value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host and port of a URL, for messages (never its user information or path).
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, h)| h)
        .to_string()
}

/// The user information's range in `url` (between `://` and the last `@` before the path).
fn userinfo(url: &str) -> Option<(usize, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some((start, &rest[..at]))
}

/// The password of `url` as written (still encoded), if it has one; works on URLs that do not
/// parse.
pub fn raw_password(url: &str) -> Option<&str> {
    let (_, info) = userinfo(url)?;
    info.split_once(':')
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty())
}

/// `url` with its password replaced by `***`, for messages and descriptions.
pub fn redact(url: &str) -> String {
    match userinfo(url) {
        Some((start, info)) => match info.split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..start], &url[start + info.len()..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_with_an_encoded_password() {
        let u = DatabaseUrl::parse(
            "postgresql+psycopg2://acme_user:p%40ss%2Fw%3Ard%231@db.example.com:5432/acme%20db",
        )
        .unwrap();
        assert_eq!(u.scheme, "postgresql+psycopg2");
        assert_eq!(u.dialect(), "postgresql");
        assert_eq!(u.username.as_deref(), Some("acme_user"));
        assert_eq!(u.password.as_deref(), Some("p@ss/w:rd#1"));
        assert_eq!(u.host.as_deref(), Some("db.example.com"));
        assert_eq!(u.port, Some(5432));
        assert_eq!(u.database.as_deref(), Some("acme db"));
        assert!(u.query.is_empty());
    }

    #[test]
    fn query_parameters_in_order_with_plus_as_space() {
        let u =
            DatabaseUrl::parse("mysql+pymysql://u@h/db?charset=utf8mb4&ssl+mode=a%26b").unwrap();
        assert_eq!(u.password, None);
        assert_eq!(u.port, None);
        assert_eq!(
            u.query,
            vec![
                ("charset".to_string(), "utf8mb4".to_string()),
                ("ssl mode".to_string(), "a&b".to_string())
            ]
        );
    }

    #[test]
    fn ipv6_hosts_and_errors_that_never_quote_the_url() {
        let u = DatabaseUrl::parse("http-api://[::1]:8080").unwrap();
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(8080));
        let err = DatabaseUrl::parse("postgresql://u:secret@h:99999/db").unwrap_err();
        assert!(err.contains("port"), "{err}");
        assert!(!err.contains("secret"));
        assert!(DatabaseUrl::parse("no scheme here").is_err());
        let err = DatabaseUrl::parse("postgresql://u:bad%zzpw@h/db").unwrap_err();
        assert!(err.contains("password") && !err.contains("zz"), "{err}");
        assert!(DatabaseUrl::parse("postgresql://u:p@[::1/db").is_err());
        assert!(percent_decode("%+1", false).is_err());
    }

    #[test]
    fn passwords_are_found_and_redacted_as_written() {
        let url = "postgresql://u:p%40ss@h:1/d?x=1@2";
        assert_eq!(raw_password(url), Some("p%40ss"));
        assert_eq!(redact(url), "postgresql://u:***@h:1/d?x=1@2");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(redact("postgresql://u@h/d"), "postgresql://u@h/d");
        assert_eq!(raw_password("postgresql://u@h/d"), None);
        // A raw `@` in the password: the last `@` of the authority ends it.
        assert_eq!(raw_password("postgresql://u:a@b@h/d"), Some("a@b"));
    }

    #[test]
    fn hosts_of_urls_never_carry_user_information() {
        assert_eq!(
            host_of("https://u:pw@db.example.com:8443/api?x"),
            "db.example.com:8443"
        );
        assert_eq!(host_of("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(host_of("localhost:1/x"), "localhost:1");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(percent_encode("tenant_a-b.c~"), "tenant_a-b.c~");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert_eq!(percent_encode("(a:'b c')"), "%28a%3A%27b%20c%27%29");
    }
}
