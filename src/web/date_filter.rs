//! The `date` filter of the portal's templates: formats a stored timestamp (RFC 3339, or a naive
//! `YYYY-MM-DDTHH:MM:SS[.f]` read as UTC, or seconds since the epoch) with a strftime format.
//! Tera's own `date` filter comes with its `builtins` feature, whose time-zone database would be
//! compiled into every build for one format string.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use tera::{Error, Result, Value};

const DEFAULT_FORMAT: &str = "%Y-%m-%d";

/// `{{ value | date(format="%Y-%m-%d %H:%M") }}`.
pub fn date(value: &Value, args: &HashMap<String, Value>) -> Result<Value> {
    let format = match args.get("format") {
        Some(Value::String(format)) => format.as_str(),
        Some(other) => {
            return Err(Error::msg(format!(
                "date: format must be a string, not {other}"
            )));
        }
        None => DEFAULT_FORMAT,
    };
    let at = parse(value).ok_or_else(|| Error::msg(format!("date: {value} is not a timestamp")))?;
    let mut out = String::new();
    write!(out, "{}", at.format(format))
        .map_err(|_| Error::msg(format!("date: {format:?} is not a valid format")))?;
    Ok(Value::String(out))
}

fn parse(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::Number(n) => DateTime::from_timestamp(n.as_i64()?, 0),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|at| at.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .ok()
                    .map(|at| at.and_utc())
            })
            .or_else(|| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|at| at.and_utc())
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(value: Value) -> Result<Value> {
        let args = HashMap::from([("format".to_owned(), Value::from("%Y-%m-%d %H:%M:%S UTC"))]);
        date(&value, &args)
    }

    #[test]
    fn formats_what_the_store_serialises() {
        for input in [
            "2026-12-07T13:04:05Z",
            "2026-12-07T14:04:05+01:00",
            "2026-12-07T13:04:05.123456",
            "2026-12-07 13:04:05",
        ] {
            assert_eq!(
                format(Value::from(input)).unwrap(),
                Value::from("2026-12-07 13:04:05 UTC"),
                "{input}"
            );
        }
        assert_eq!(
            format(Value::from(0)).unwrap(),
            Value::from("1970-01-01 00:00:00 UTC")
        );
        assert_eq!(
            date(&Value::from("2026-12-07"), &HashMap::new()).unwrap(),
            Value::from("2026-12-07")
        );
    }

    #[test]
    fn refuses_what_is_not_a_timestamp_or_a_format() {
        assert!(format(Value::from("yesterday")).is_err());
        assert!(format(Value::Bool(true)).is_err());
        let bad = HashMap::from([("format".to_owned(), Value::from("%Q"))]);
        assert!(date(&Value::from("2026-12-07"), &bad).is_err());
    }
}
