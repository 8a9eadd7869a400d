//! Names and literals written into SQL that takes no parameters (CREATE ROLE, CREATE DATABASE,
//! CREATE POLICY...): identifiers checked, then quoted; literals quoted.

/// A name the plugin accepts for a role, database, schema, table or column: 1–63 bytes of
/// letters, digits, `_` and `-`, starting with a letter or `_`.
pub fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name this plugin makes: 1–63 letters, digits, `_` and `-`, \
             starting with a letter or `_`"
        ))
    }
}

/// `name` as a quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a string literal (an escape string when it holds a backslash, so that it reads
/// the same whatever `standard_conforming_strings` is).
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_quoted() {
        for good in [
            "acme_user",
            "Acme-2",
            "_x",
            "a23456789012345678901234567890123456789012345678901234567890123",
        ] {
            assert!(valid_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "a b", "a\"b", "a;b", "é", &"a".repeat(64)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
        assert_eq!(ident("acme-2"), "\"acme-2\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn literals_are_quoted_whatever_they_hold() {
        assert_eq!(literal("p@ss"), "'p@ss'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }
}
