//! Manual follow-ups of plugins built against WIT 0.1.0, whose `compensate` returns no outcome:
//! such a plugin reports what a person must still do as `warn` lines that begin with
//! `manual follow-up:`.

use super::LogLine;

/// The follow-ups in `lines`, joined with `; `.
pub fn in_log_lines(lines: &[LogLine]) -> Option<String> {
    let found: Vec<&str> = lines
        .iter()
        .filter(|l| l.level == "warn")
        .filter_map(|l| {
            let m = l.message.trim_start();
            m.get(..17)
                .filter(|head| head.eq_ignore_ascii_case("manual follow-up:"))
                .map(|_| m[17..].trim())
        })
        .collect();
    (!found.is_empty()).then(|| found.join("; "))
}
