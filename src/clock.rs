//! Time as the registry stores it: UTC, microsecond precision (the finest both backends keep, so a
//! value reads back exactly as written; the audit chain hashes it).

use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};

pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

pub fn to_utc(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

/// RFC 3339 with microseconds, the form hashed into the audit chain.
pub fn rfc3339(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
