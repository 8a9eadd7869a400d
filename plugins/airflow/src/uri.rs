//! A rendered connection URI taken apart into the fields of an Airflow connection, the way
//! Airflow's own `Connection(uri=…)` does: `scheme://login:password@host:port/schema?extra`
//! (the parsing itself is the SDK's).

use serde_json::{Map, Value};
use tenantry_plugin_sdk::backend::uri::DatabaseUrl;

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

/// Airflow's connection type for a URI scheme: `postgresql` is `postgres`, a `+driver` suffix
/// is dropped, hyphens become underscores.
pub fn conn_type(url: &DatabaseUrl) -> String {
    match url.dialect().as_str() {
        "postgresql" => "postgres".into(),
        other => other.replace('-', "_"),
    }
}

/// Parses a connection URI. The error says what is wrong without quoting the URI (it carries a
/// password).
pub fn parse(uri: &str) -> Result<Parsed, String> {
    let url = DatabaseUrl::parse(uri)?;
    let extra = if url.query.is_empty() {
        None
    } else {
        let map: Map<String, Value> = url
            .query
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Some(Value::Object(map).to_string())
    };
    Ok(Parsed {
        conn_type: conn_type(&url),
        host: url.host,
        port: url.port,
        login: url.username,
        password: url.password,
        schema: url.database,
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
}
