//! A third-party renderer for tests: `{name}` becomes the value of `name` in capitals; a
//! placeholder without a value is `missing`. Nothing is escaped.

use tenantry_plugin_sdk::renderer::{RenderError, Renderer, Template};

struct Shout;

impl Renderer for Shout {
    fn render(template: Template, values: Vec<(String, String)>) -> Result<String, RenderError> {
        let mut out = String::new();
        let mut rest = template.body.as_str();
        let mut missing = Vec::new();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                return Err(RenderError::Invalid("an unclosed `{`".into()));
            };
            let name = &rest[open + 1..open + close];
            match values.iter().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(&value.to_uppercase()),
                None => missing.push(name.to_owned()),
            }
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(RenderError::Missing(missing))
        }
    }
}

tenantry_plugin_sdk::register_renderer!(Shout);
