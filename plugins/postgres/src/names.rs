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

/// A column type a table of `rls.tables` may be created with, in its canonical spelling; an
/// error naming the accepted types for anything else. Column definitions are data, never SQL
/// text: a type is one of these words, with digits only where it takes a length or precision.
pub fn column_type(kind: &str) -> Result<String, String> {
    const PLAIN: [&str; 17] = [
        "smallint",
        "integer",
        "bigint",
        "serial",
        "bigserial",
        "numeric",
        "real",
        "double precision",
        "boolean",
        "text",
        "varchar",
        "uuid",
        "date",
        "timestamp",
        "timestamptz",
        "jsonb",
        "bytea",
    ];
    let lower = kind.trim().to_ascii_lowercase();
    let alias = match lower.as_str() {
        "int" | "int4" => "integer",
        "int2" => "smallint",
        "int8" => "bigint",
        "bool" => "boolean",
        "float8" => "double precision",
        "float4" => "real",
        other => other,
    };
    if PLAIN.contains(&alias) {
        return Ok(alias.to_owned());
    }
    // `varchar(n)`, `numeric(p)` and `numeric(p,s)`: digits only between the parentheses.
    let digits = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(args) = alias.strip_suffix(')') {
        if let Some(n) = args.strip_prefix("varchar(")
            && digits(n)
        {
            return Ok(format!("varchar({n})"));
        }
        if let Some(ps) = args.strip_prefix("numeric(") {
            let parts: Vec<&str> = ps.split(',').map(str::trim).collect();
            if (1..=2).contains(&parts.len()) && parts.iter().all(|p| digits(p)) {
                return Ok(format!("numeric({})", parts.join(",")));
            }
        }
    }
    Err(format!(
        "`{kind}` is not a column type this plugin creates: one of {}, varchar(n), numeric(p) or \
         numeric(p,s)",
        PLAIN.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_are_words_from_a_list_never_sql() {
        assert_eq!(column_type("INT").unwrap(), "integer");
        assert_eq!(column_type("double precision").unwrap(), "double precision");
        assert_eq!(column_type("varchar(64)").unwrap(), "varchar(64)");
        assert_eq!(column_type("numeric(10, 2)").unwrap(), "numeric(10,2)");
        for bad in [
            "",
            "int primary key",
            "text) AS SELECT rolpassword FROM pg_authid --",
            "varchar(x)",
            "numeric(1,2,3)",
            "int[]",
            "text collate \"C\"",
        ] {
            assert!(column_type(bad).is_err(), "{bad}");
        }
    }

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
