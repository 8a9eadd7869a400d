//! A renderer built against `tenantry:plugin@0.0.9`, a WIT version the host does not support.

wit_bindgen::generate!({ world: "renderer", path: "wit" });

struct Old;

impl exports::tenantry::plugin::render::Guest for Old {
    fn render(
        template: tenantry::plugin::types::Template,
        _values: Vec<(String, String)>,
    ) -> Result<String, tenantry::plugin::types::RenderError> {
        Ok(template.body)
    }
}

export!(Old);
