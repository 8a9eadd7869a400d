//! Secrets kept out of messages.

use super::uri;

/// Values that must never appear in a message a plugin returns or logs: each is replaced by
/// `***`, as it is and percent-encoded (a password travels encoded in URLs and bodies).
/// Values shorter than three characters are not taken (they would blank ordinary words).
#[derive(Debug, Default, Clone)]
pub struct Redactor(Vec<String>);

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Hides `value` from now on.
    pub fn add(&mut self, value: &str) {
        if value.chars().count() >= 3 && !self.0.iter().any(|v| v == value) {
            self.0.push(value.to_string());
        }
    }

    /// Hides the password of a connection URL, as written and decoded, even when the URL does
    /// not parse (a URL that fails to parse still must not leak).
    pub fn add_uri_password(&mut self, url: &str) {
        if let Some(raw) = uri::raw_password(url) {
            self.add(raw);
            if let Ok(decoded) = uri::percent_decode(raw, false) {
                self.add(&decoded);
            }
        }
    }

    /// `text` with every hidden value replaced by `***`.
    pub fn clean(&self, text: &str) -> String {
        let mut variants: Vec<String> = Vec::with_capacity(self.0.len() * 2);
        for value in &self.0 {
            variants.push(value.clone());
            let encoded = uri::percent_encode(value);
            if encoded != *value {
                variants.push(encoded);
            }
        }
        // Longest first, so that a secret containing another is hidden whole.
        variants.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut text = text.to_string();
        for value in variants {
            text = text.replace(&value, "***");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_raw_and_encoded_longest_first() {
        let mut r = Redactor::new();
        r.add("p@ss/w");
        r.add("p@ss/word");
        r.add("ab");
        assert_eq!(
            r.clean("failed for p@ss/word, p@ss/w and p%40ss%2Fw; ab stays"),
            "failed for ***, *** and ***; ab stays"
        );
    }

    #[test]
    fn a_uri_password_is_hidden_even_when_the_uri_is_bad() {
        let mut r = Redactor::new();
        r.add_uri_password("postgresql://u:s%40cret@h:99999/db");
        assert_eq!(r.clean("s@cret and s%40cret"), "*** and ***");
        let mut r = Redactor::new();
        r.add_uri_password("postgresql://u:bad%zzpw@h/db");
        assert_eq!(r.clean("bad%zzpw"), "***");
    }
}
