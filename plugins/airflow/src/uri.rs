//! A rendered connection URI taken apart into the fields of an Airflow connection, the way
//! Airflow's own `Connection(uri=…)` does: `scheme://login:password@host:port/schema?extra`.

use serde_json::{Map, Value};

/// The fields of an Airflow connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub login: Option<String>,
    pub password: Option<String>,
    pub schema: Option<String>,
    /// The query parameters as a JSON object (Airflow's `extra`), when there are any.
    pub extra: Option<String>,
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`). Errors never quote the
/// text: it may be a password.
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

/// Encodes everything but unreserved characters, for one segment of a URL path.
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

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Airflow's connection type for a URI scheme: `postgresql` is `postgres`, a `+driver` suffix
/// is dropped, hyphens become underscores.
pub fn conn_type(scheme: &str) -> String {
    let scheme = scheme.to_ascii_lowercase();
    let base = scheme.split('+').next().unwrap_or_default();
    match base {
        "postgresql" => "postgres".into(),
        other => other.replace('-', "_"),
    }
}

/// Parses a connection URI. The error says what is wrong without quoting the URI (it carries a
/// password).
pub fn parse(uri: &str) -> Result<Parsed, String> {
    let (scheme, rest) = uri.split_once("://").ok_or("the URI has no `scheme://`")?;
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
    let (login, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((l, p)) => (
                non_empty(percent_decode(l, false).map_err(|e| format!("the login has {e}"))?),
                Some(percent_decode(p, false).map_err(|e| format!("the password has {e}"))?),
            ),
            None => (
                non_empty(percent_decode(u, false).map_err(|e| format!("the login has {e}"))?),
                None,
            ),
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
            Some((h, p)) => (percent_decode(h, false)?, Some(p)),
            None => (percent_decode(hostport, false)?, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(
            p.parse::<u16>()
                .map_err(|_| "the URI's port is not a number from 0 to 65535".to_string())?,
        ),
    };
    let schema = non_empty(percent_decode(path, false).map_err(|e| format!("the path has {e}"))?);
    let extra = match query {
        None | Some("") => None,
        Some(q) => {
            let mut map = Map::new();
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = percent_decode(k, true).map_err(|e| format!("the query has {e}"))?;
                let v = percent_decode(v, true).map_err(|e| format!("the query has {e}"))?;
                map.insert(k, Value::String(v));
            }
            if map.is_empty() {
                None
            } else {
                Some(Value::Object(map).to_string())
            }
        }
    };
    Ok(Parsed {
        conn_type: conn_type(scheme),
        host: non_empty(host),
        port,
        login,
        password,
        schema,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_uri_with_an_encoded_password() {
        let p = parse("postgresql://acme_user:p%40ss%2Fw%3Ard%231@db.example.com:5432/acme%20db")
            .unwrap();
        assert_eq!(p.conn_type, "postgres");
        assert_eq!(p.login.as_deref(), Some("acme_user"));
        assert_eq!(p.password.as_deref(), Some("p@ss/w:rd#1"));
        assert_eq!(p.host.as_deref(), Some("db.example.com"));
        assert_eq!(p.port, Some(5432));
        assert_eq!(p.schema.as_deref(), Some("acme db"));
        assert_eq!(p.extra, None);
    }

    #[test]
    fn query_parameters_become_extra_and_drivers_are_dropped() {
        let p = parse("mysql+pymysql://u@h/db?charset=utf8mb4&ssl+mode=a%26b").unwrap();
        assert_eq!(p.conn_type, "mysql");
        assert_eq!(p.password, None);
        assert_eq!(p.port, None);
        let extra: Value = serde_json::from_str(p.extra.as_deref().unwrap()).unwrap();
        assert_eq!(extra["charset"], "utf8mb4");
        assert_eq!(extra["ssl mode"], "a&b");
    }

    #[test]
    fn ipv6_hosts_and_bad_ports() {
        let p = parse("http-api://[::1]:8080").unwrap();
        assert_eq!(p.conn_type, "http_api");
        assert_eq!(p.host.as_deref(), Some("::1"));
        assert_eq!(p.port, Some(8080));
        let err = parse("postgresql://u:secret@h:99999/db").unwrap_err();
        assert!(err.contains("port"), "{err}");
        assert!(!err.contains("secret"));
        assert!(parse("no scheme here").is_err());
        assert!(
            parse("postgresql://u:bad%zzpw@h/db")
                .unwrap_err()
                .contains("password")
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(percent_encode("tenant_a-b.c~"), "tenant_a-b.c~");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
