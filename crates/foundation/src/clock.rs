//! Time as the registry stores it: UTC, microsecond precision (the finest both backends keep, so a
//! value reads back exactly as written; the audit chain hashes it).
//!
//! The registry's clock can be moved ahead for tests of what happens with time — trials that
//! end, retention periods that pass — across several server processes at once:
//! `TENANTRY_TEST_CLOCK_FILE` names a file holding a number of seconds added to the system's
//! time (read at every reading of the clock, so a test moves every server by rewriting it). It
//! is not a configuration key, and nothing else reads it: protocol times (token expiry, webhook
//! signatures) stay on the system's clock.

use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDateTime, SubsecRound as _, Utc};

/// The environment variable naming the test clock's offset file.
pub const TEST_CLOCK_FILE: &str = "TENANTRY_TEST_CLOCK_FILE";

fn offset_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| std::env::var_os(TEST_CLOCK_FILE).map(PathBuf::from))
        .as_ref()
}

/// Seconds the test clock is ahead of the system's (0 without a test clock, or when its file
/// is missing or does not hold a whole number).
fn offset_seconds() -> i64 {
    offset_file()
        .and_then(|file| std::fs::read_to_string(file).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc().trunc_subsecs(6);
    match offset_file() {
        None => now,
        Some(_) => now + chrono::Duration::seconds(offset_seconds()),
    }
}

pub fn to_utc(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

/// RFC 3339 with microseconds, the form hashed into the audit chain.
pub fn rfc3339(at: NaiveDateTime) -> String {
    at.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
