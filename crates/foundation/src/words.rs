//! The closed sets of words the store keeps as text, and how they are declared: an enum per
//! set, written and read as the same words. Reading is strict: a stored word outside its set
//! is an error that names the word and the set (the query fails; nothing goes on with a
//! guess), and no caller may turn that error into a default — `tests/it/tidy.rs` refuses
//! `parse(..).unwrap_or(..)` on them.

/// A stored word that is not one of its set's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

/// Declares an enum kept in a text column: `as_str`, `Display`, a strict `FromStr`, serde as the
/// same words, an OpenAPI schema, and diesel's text mapping on both backends. The words are the
/// given words (serde's and the schema's names too). They are taken as token trees, not as
/// `literal` fragments: a fragment reaches the derives wrapped in an invisible group, which
/// utoipa's derive does not read as a `rename` (the schema then listed the variants' names).
#[macro_export]
macro_rules! stored_words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:tt ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
            diesel::expression::AsExpression, diesel::deserialize::FromSqlRow,
        )]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every stored word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($text),+];

            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::words::UnknownValue;

            fn from_str(text: &str) -> Result<Self, $crate::words::UnknownValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::words::UnknownValue {
                        what: $what,
                        value: other.to_owned(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl<DB> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, DB>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl<DB> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $name
        where
            DB: diesel::backend::Backend,
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = <String as diesel::deserialize::FromSql<
                    diesel::sql_types::Text,
                    DB,
                >>::from_sql(bytes)?;
                Ok(text.parse::<$name>()?)
            }
        }
    };
}

pub use crate::stored_words;

impl UnknownValue {
    /// The rule a request field breaks with this word: `must be one of: …`.
    pub fn rule(&self) -> String {
        format!("must be one of: {}", self.expected)
    }
}
