//! The OpenAPI document's shared parts: its description and security scheme, the error
//! answers every operation can give (added here once rather than on each handler), and the
//! methods each documented path allows (an undeclared method is answered 405 with `Allow`).
//!
//! What each operation can answer besides its own responses, all as [`ErrorBody`]:
//!
//! | status | when | operations |
//! | --- | --- | --- |
//! | 400 | a malformed JSON body | with a body |
//! | 401 | no valid credentials | authenticated |
//! | 403 | a role that may not do this (a viewer changing, a tenant key elsewhere) | authenticated |
//! | 404 | a path naming nothing | with path parameters |
//! | 409 | a tenant changed meanwhile, or in a state that refuses the change; a stored word this version does not know (`unknown_stored_word`) | changes of a tenant |
//! | 413, 415 | a body over the size limit, or not JSON | with a body |
//! | 422 | a value breaking a rule, or a query parameter that does not parse (the field and the rule are named) | with parameters or a body |
//! | 429 | an exhausted rate or abuse limit (`Retry-After`) | authenticated |
//! | 503 | the database or a plugin is unavailable | all but liveness |

use std::sync::OnceLock;

use utoipa::openapi::Required;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema as _, ToSchema as _};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantry",
        description = "Multi-tenant platform control plane: tenant registry, lifecycle, audit.",
    ),
    modifiers(&BearerAuth),
    // Every operation needs a token but those that say otherwise (`security(())`).
    security(("bearer" = [])),
    tags(
        (name = "tenants", description = "The tenant registry and lifecycle"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "admin", description = "Platform API tokens"),
        (name = "sso", description = "A tenant's single sign-on: settings, test connection, setup links, sessions, OAuth health"),
        (name = "plugins", description = "Wasm plugins: install, inspect, enable, grant"),
        (name = "templates", description = "Connection and asset templates, versioned"),
        (name = "provisioning", description = "Provisioning runs: the saga that brings tenants into backends"),
        (name = "quotas", description = "Metrics, limits and overrides, reported usage and the usage summary"),
        (name = "alerts", description = "Alerts on tenants' quotas, policies and traffic, and the webhooks that hear about them"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token: tny_<prefix>_<secret>"))
                    .build(),
            ),
        );
    }
}

/// The shared error answers, added to every operation that can give them and does not
/// document them itself.
pub fn complete(api: &mut utoipa::openapi::OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(
        crate::error::ErrorBody::name().into_owned(),
        crate::error::ErrorBody::schema(),
    )];
    crate::error::ErrorBody::schemas(&mut schemas);
    for (name, schema) in schemas {
        components.schemas.entry(name).or_insert(schema);
    }
    for (path, item) in api.paths.paths.iter_mut() {
        let has_path_params = path.contains('{');
        for (method, operation) in operations_mut(item) {
            // Without a `security` of its own an operation takes the document's (a token).
            let secured = operation.security.as_ref().is_none_or(|s| {
                serde_json::to_value(s).is_ok_and(|v| {
                    v.as_array().is_some_and(|a| {
                        a.iter()
                            .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                    })
                })
            });
            // A parameter an extractor reads from the route (the tenant's `{slug}` of
            // `TenantPath`) rather than from a `web::Path` argument is declared here.
            let parameters = operation.parameters.get_or_insert_with(Vec::new);
            for (at, name) in path_names(path).into_iter().enumerate() {
                let declared = parameters
                    .iter()
                    .any(|p| p.parameter_in == ParameterIn::Path && p.name == name);
                if !declared {
                    let parameter = ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build();
                    parameters.insert(at.min(parameters.len()), parameter);
                }
            }
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.parameter_in == ParameterIn::Path && parameter.description.is_none() {
                    parameter.description = path_parameter(&parameter.name).map(str::to_owned);
                }
            }
            let has_body = operation.request_body.is_some();
            let has_query = operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Query);
            let liveness = path == "/health";
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| RefOr::T(error_response(description)));
            };
            if has_body || has_query || has_path_params {
                add("400", "The query string or the body is malformed");
                add(
                    "422",
                    "A value breaks a rule; `details.fields` names each field and rule",
                );
            }
            if secured {
                add("401", "No valid credentials");
                add("403", "The caller's role may not do this");
                add(
                    "429",
                    "A rate or abuse limit is exhausted; retry after `Retry-After` seconds",
                );
            }
            if has_path_params {
                add("404", "Nothing of that name");
            }
            if method != "GET" && path.starts_with("/api/v1/tenant/{slug}") {
                add(
                    "409",
                    "The tenant changed meanwhile, or is in a state (or is the platform's own) that refuses this",
                );
            }
            if has_body {
                add("413", "The body is larger than the limit");
                add("415", "The body is not JSON");
            }
            if !liveness {
                add("503", "The database or a plugin is unavailable; retry");
            }
        }
    }
}

/// The names of a path's `{parameters}`, in order.
fn path_names(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// What a path parameter of a given name is, where the handler does not say.
fn path_parameter(name: &str) -> Option<&'static str> {
    Some(match name {
        "slug" => "The tenant's slug",
        "name" => "The name",
        "id" => "The id",
        _ => return None,
    })
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
    .collect()
}

/// A documented path as segments (`None`: a `{parameter}`) with the methods it allows.
struct Route {
    segments: Vec<Option<String>>,
    methods: Vec<&'static str>,
}

fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut api = super::openapi();
        api.paths
            .paths
            .iter_mut()
            .map(|(path, item)| Route {
                segments: path
                    .trim_matches('/')
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then(|| s.to_owned()))
                    .collect(),
                methods: operations_mut(item).into_iter().map(|(m, _)| m).collect(),
            })
            .collect()
    })
}

/// The methods a documented path allows, when `path` is one; `None` for anything else.
pub fn allowed_methods(path: &str) -> Option<Vec<&'static str>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // The most specific documented path: `/tenant/import` rather than `/tenant/{slug}`.
    routes()
        .iter()
        .filter(|route| {
            route.segments.len() == segments.len()
                && route
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(pattern, segment)| match pattern {
                        Some(literal) => literal == segment,
                        None => !segment.is_empty(),
                    })
        })
        .max_by_key(|route| route.segments.iter().filter(|s| s.is_some()).count())
        .map(|route| route.methods.clone())
}
