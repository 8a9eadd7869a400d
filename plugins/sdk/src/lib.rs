//! The guest SDK of tenantry plugins.
//!
//! A plugin implements one trait — [`provisioner::Provisioner`], [`renderer::Renderer`] or
//! [`quota::QuotaPolicy`] — and registers it with the matching macro, which also embeds the
//! plugin's manifest (`tenantry-plugin.toml` beside its `Cargo.toml`) in the component:
//!
//! ```text
//! use tenantry_plugin_sdk::renderer::{Renderer, Template, RenderError};
//!
//! struct Upper;
//!
//! impl Renderer for Upper {
//!     fn render(template: Template, values: Vec<(String, String)>) -> Result<String, RenderError> {
//!         Ok(template.body.to_uppercase())
//!     }
//! }
//!
//! tenantry_plugin_sdk::register_renderer!(Upper);
//! ```
//!
//! The generated WIT bindings stay inside this crate; the types a plugin needs are re-exported
//! from each world's module, and the host interfaces are wrapped in [`log`], [`state`],
//! [`secrets`] and [`http`] (the last three for provisioners only). Plugins that drive a backend
//! over HTTP get the [`backend`] kit: error classes, a JSON client that classifies failures and
//! keeps secrets out of messages, granted secrets, and connection URLs.

pub mod backend;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod arena;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
#[global_allocator]
static ARENA: arena::Arena = arena::Arena::new();

/// The WIT package version this SDK builds plugins for.
pub const WIT_VERSION: &str = "0.2.0";

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// The embedded manifest's custom section name (read by the host before instantiation).
    pub const MANIFEST_SECTION: &str = "tenantry-manifest";

    /// The custom section with the crate's name, version and description (NUL-separated):
    /// what the manifest leaves out of those is taken from it.
    pub const PACKAGE_SECTION: &str = "tenantry-package";

    /// `N` bytes of `bytes`, as an array a `static` can hold.
    pub const fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = bytes[i];
            i += 1;
        }
        out
    }
}

/// Embeds the manifest file of the calling crate as the `tenantry-manifest` custom section, and
/// the crate's name, version and description as the `tenantry-package` one (so the manifest
/// need not repeat them).
#[doc(hidden)]
#[macro_export]
macro_rules! __embed_manifest {
    () => {
        const _: () = {
            const __BYTES: &[u8] =
                include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tenantry-plugin.toml"));
            #[used]
            #[unsafe(link_section = "tenantry-manifest")]
            static __TENANTRY_MANIFEST: [u8; __BYTES.len()] = $crate::__private::array(__BYTES);
            const __PACKAGE: &[u8] = concat!(
                env!("CARGO_PKG_NAME"),
                "\0",
                env!("CARGO_PKG_VERSION"),
                "\0",
                env!("CARGO_PKG_DESCRIPTION")
            )
            .as_bytes();
            #[used]
            #[unsafe(link_section = "tenantry-package")]
            static __TENANTRY_PACKAGE: [u8; __PACKAGE.len()] = $crate::__private::array(__PACKAGE);
        };
    };
}

#[cfg(feature = "provisioner")]
pub mod provisioner {
    //! Backend plugins: plan, apply, compensate, observe, transition.

    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "provisioner",
            path: "../../wit/v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_provisioner",
            default_bindings_module: "tenantry_plugin_sdk::provisioner::bindings",
        });
    }

    pub use bindings::tenantry::plugin::types::{
        BundlePart, Drift, LifecycleChange, Measurement, Outcome, PluginError, PluginInfo, Step,
        Tenant,
    };

    /// A backend plugin. Only `describe` is required, so a plugin implements what its backend
    /// supports. The defaults: `plan` plans nothing; `apply` refuses every step as a permanent
    /// error (a plugin that plans steps applies them); `compensate` succeeds (nothing was
    /// made); `observe` reports no drift; `transition` succeeds with a manual follow-up saying
    /// the plugin has nothing to do in its backend; `measure` reports nothing; `export_tenant`
    /// has nothing to hand over; `import_tenant` refuses a part as a permanent error (a plugin
    /// that exports imports).
    pub trait Provisioner {
        /// Name, version and description (the name must match the manifest).
        fn describe() -> PluginInfo;

        /// The steps that provision `tenant`; must not change anything.
        fn plan(_tenant: Tenant, _request: String) -> Result<Vec<Step>, PluginError> {
            Ok(Vec::new())
        }

        /// Runs one step; idempotent for a given `idempotency_key`.
        fn apply(
            _tenant: Tenant,
            step: Step,
            _idempotency_key: String,
        ) -> Result<Outcome, PluginError> {
            Err(PluginError::Permanent(format!(
                "step `{}` is not supported by this plugin",
                step.id
            )))
        }

        /// Undoes an applied step; undoing something already gone succeeds. What a person
        /// must still do is the outcome's `manual_follow_up`.
        fn compensate(
            _tenant: Tenant,
            _step: Step,
            _outcome: Outcome,
            _idempotency_key: String,
        ) -> Result<Outcome, PluginError> {
            Ok(Outcome {
                output: "{}".into(),
                manual_follow_up: None,
            })
        }

        /// Differences between what was applied and what the backend holds now.
        fn observe(
            _tenant: Tenant,
            _applied: Vec<(Step, Outcome)>,
        ) -> Result<Vec<Drift>, PluginError> {
            Ok(Vec::new())
        }

        /// Carries a lifecycle change into the backend.
        fn transition(
            _tenant: Tenant,
            change: LifecycleChange,
            _reason: String,
        ) -> Result<Outcome, PluginError> {
            Ok(Outcome {
                output: "{}".into(),
                manual_follow_up: Some(format!(
                    "{change:?}: this plugin has nothing to do in its backend"
                )),
            })
        }

        /// The tenant's use of the backend now (metric → value), given the steps applied for
        /// it; must not change anything.
        fn measure(
            _tenant: Tenant,
            _applied: Vec<(Step, Outcome)>,
        ) -> Result<Vec<Measurement>, PluginError> {
            Ok(Vec::new())
        }

        /// What the backend holds of the tenant, for a whole-tenant bundle; `None` when there
        /// is nothing worth carrying. Must not change anything.
        fn export_tenant(
            _tenant: Tenant,
            _applied: Vec<(Step, Outcome)>,
        ) -> Result<Option<BundlePart>, PluginError> {
            Ok(None)
        }

        /// Restores what `export_tenant` handed over; restoring what is there changes nothing.
        fn import_tenant(_tenant: Tenant, part: BundlePart) -> Result<Outcome, PluginError> {
            Err(PluginError::Permanent(format!(
                "this plugin does not import bundle parts ({})",
                part.media_type
            )))
        }
    }

    #[doc(hidden)]
    pub use bindings::exports::tenantry::plugin::provision::Guest;

    /// Registers a [`Provisioner`] as the plugin's export and embeds its manifest.
    #[macro_export]
    macro_rules! register_provisioner {
        ($plugin:ty) => {
            $crate::__embed_manifest!();
            #[doc(hidden)]
            pub struct __TenantryProvisioner;
            impl $crate::provisioner::Guest for __TenantryProvisioner {
                fn describe() -> $crate::provisioner::PluginInfo {
                    <$plugin as $crate::provisioner::Provisioner>::describe()
                }
                fn plan(
                    tenant: $crate::provisioner::Tenant,
                    request: String,
                ) -> Result<Vec<$crate::provisioner::Step>, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::plan(tenant, request)
                }
                fn apply(
                    tenant: $crate::provisioner::Tenant,
                    step: $crate::provisioner::Step,
                    key: String,
                ) -> Result<$crate::provisioner::Outcome, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::apply(tenant, step, key)
                }
                fn compensate(
                    tenant: $crate::provisioner::Tenant,
                    step: $crate::provisioner::Step,
                    outcome: $crate::provisioner::Outcome,
                    key: String,
                ) -> Result<$crate::provisioner::Outcome, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::compensate(
                        tenant, step, outcome, key,
                    )
                }
                fn observe(
                    tenant: $crate::provisioner::Tenant,
                    applied: Vec<($crate::provisioner::Step, $crate::provisioner::Outcome)>,
                ) -> Result<Vec<$crate::provisioner::Drift>, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::observe(tenant, applied)
                }
                fn transition(
                    tenant: $crate::provisioner::Tenant,
                    change: $crate::provisioner::LifecycleChange,
                    reason: String,
                ) -> Result<$crate::provisioner::Outcome, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::transition(
                        tenant, change, reason,
                    )
                }
                fn measure(
                    tenant: $crate::provisioner::Tenant,
                    applied: Vec<($crate::provisioner::Step, $crate::provisioner::Outcome)>,
                ) -> Result<Vec<$crate::provisioner::Measurement>, $crate::provisioner::PluginError>
                {
                    <$plugin as $crate::provisioner::Provisioner>::measure(tenant, applied)
                }
                fn export_tenant(
                    tenant: $crate::provisioner::Tenant,
                    applied: Vec<($crate::provisioner::Step, $crate::provisioner::Outcome)>,
                ) -> Result<
                    Option<$crate::provisioner::BundlePart>,
                    $crate::provisioner::PluginError,
                > {
                    <$plugin as $crate::provisioner::Provisioner>::export_tenant(tenant, applied)
                }
                fn import_tenant(
                    tenant: $crate::provisioner::Tenant,
                    part: $crate::provisioner::BundlePart,
                ) -> Result<$crate::provisioner::Outcome, $crate::provisioner::PluginError> {
                    <$plugin as $crate::provisioner::Provisioner>::import_tenant(tenant, part)
                }
            }
            $crate::provisioner::bindings::__export_provisioner!(__TenantryProvisioner);
        };
    }
}

#[cfg(feature = "renderer")]
pub mod renderer {
    //! Template renderers: pure substitution, no network.

    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "renderer",
            path: "../../wit/v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_renderer",
            default_bindings_module: "tenantry_plugin_sdk::renderer::bindings",
        });
    }

    pub use bindings::tenantry::plugin::types::{RenderError, Template};

    /// A template renderer.
    pub trait Renderer {
        /// Substitutes `values` into `template`, escaping each for the template's format.
        fn render(template: Template, values: Vec<(String, String)>)
        -> Result<String, RenderError>;
    }

    #[doc(hidden)]
    pub use bindings::exports::tenantry::plugin::render::Guest;

    /// Registers a [`Renderer`] as the plugin's export and embeds its manifest.
    #[macro_export]
    macro_rules! register_renderer {
        ($plugin:ty) => {
            $crate::__embed_manifest!();
            #[doc(hidden)]
            pub struct __TenantryRenderer;
            impl $crate::renderer::Guest for __TenantryRenderer {
                fn render(
                    template: $crate::renderer::Template,
                    values: Vec<(String, String)>,
                ) -> Result<String, $crate::renderer::RenderError> {
                    <$plugin as $crate::renderer::Renderer>::render(template, values)
                }
            }
            $crate::renderer::bindings::__export_renderer!(__TenantryRenderer);
        };
    }
}

#[cfg(feature = "quota-policy")]
pub mod quota {
    //! Quota policies: a pure decision on a tenant's usage, no network.

    #[doc(hidden)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "quota-policy",
            path: "../../wit/v0.2.0",
            pub_export_macro: true,
            export_macro_name: "__export_quota_policy",
            default_bindings_module: "tenantry_plugin_sdk::quota::bindings",
        });
    }

    pub use bindings::tenantry::plugin::types::{
        Decision, MetricDecision, PluginError, Severity, Tenant, Usage,
    };

    /// A quota policy.
    pub trait QuotaPolicy {
        /// Decides, per metric, how close `tenant` is to its limit.
        fn evaluate(tenant: Tenant, usage: Vec<Usage>) -> Result<Decision, PluginError>;
    }

    #[doc(hidden)]
    pub use bindings::exports::tenantry::plugin::policy::Guest;

    /// Registers a [`QuotaPolicy`] as the plugin's export and embeds its manifest.
    #[macro_export]
    macro_rules! register_quota_policy {
        ($plugin:ty) => {
            $crate::__embed_manifest!();
            #[doc(hidden)]
            pub struct __TenantryQuotaPolicy;
            impl $crate::quota::Guest for __TenantryQuotaPolicy {
                fn evaluate(
                    tenant: $crate::quota::Tenant,
                    usage: Vec<$crate::quota::Usage>,
                ) -> Result<$crate::quota::Decision, $crate::quota::PluginError> {
                    <$plugin as $crate::quota::QuotaPolicy>::evaluate(tenant, usage)
                }
            }
            $crate::quota::bindings::__export_quota_policy!(__TenantryQuotaPolicy);
        };
    }
}

/// The host interfaces every world imports, from the bindings of the world the plugin is built
/// for (a provisioner's, else a quota policy's, else a renderer's).
#[cfg(any(
    feature = "provisioner",
    feature = "renderer",
    feature = "quota-policy"
))]
mod world_host {
    #[cfg(feature = "provisioner")]
    pub use crate::provisioner::bindings::tenantry::plugin::{config, log};
    #[cfg(all(feature = "quota-policy", not(feature = "provisioner")))]
    pub use crate::quota::bindings::tenantry::plugin::{config, log};
    #[cfg(all(
        feature = "renderer",
        not(feature = "provisioner"),
        not(feature = "quota-policy")
    ))]
    pub use crate::renderer::bindings::tenantry::plugin::{config, log};
}

#[cfg(any(
    feature = "provisioner",
    feature = "renderer",
    feature = "quota-policy"
))]
pub mod log {
    //! The plugin's log lines, written to the server's log with the plugin and tenant. Usable
    //! from every world.
    use crate::world_host::log as host;

    pub fn trace(message: &str) {
        host::write(host::Level::Trace, message);
    }
    pub fn debug(message: &str) {
        host::write(host::Level::Debug, message);
    }
    pub fn info(message: &str) {
        host::write(host::Level::Info, message);
    }
    pub fn warn(message: &str) {
        host::write(host::Level::Warn, message);
    }
    pub fn error(message: &str) {
        host::write(host::Level::Error, message);
    }
}

#[cfg(any(
    feature = "provisioner",
    feature = "renderer",
    feature = "quota-policy"
))]
pub mod config {
    //! The plugin's configuration, as the operator set it (`tenantry plugin configure`) or as
    //! the manifest's `config_schema` defaults it; checked against the schema when it was set.
    //! Usable from every world.
    use crate::world_host::config as host;

    /// The value of `key` as JSON text (`"https://bi.internal"`, `8088`, `true`); `None` when
    /// neither the operator nor the schema's default gives it one.
    pub fn raw(key: &str) -> Option<String> {
        host::get(key)
    }

    /// A string field's value.
    pub fn string(key: &str) -> Option<String> {
        match serde_json::from_str(&raw(key)?) {
            Ok(serde_json::Value::String(text)) => Some(text),
            _ => None,
        }
    }

    /// An integer field's value.
    pub fn integer(key: &str) -> Option<i64> {
        serde_json::from_str::<serde_json::Value>(&raw(key)?)
            .ok()?
            .as_i64()
    }

    /// A number field's value.
    pub fn number(key: &str) -> Option<f64> {
        serde_json::from_str::<serde_json::Value>(&raw(key)?)
            .ok()?
            .as_f64()
    }

    /// A boolean field's value.
    pub fn boolean(key: &str) -> Option<bool> {
        serde_json::from_str::<serde_json::Value>(&raw(key)?)
            .ok()?
            .as_bool()
    }

    /// Every field that has a value, as JSON text, in key order.
    pub fn all() -> Vec<(String, String)> {
        host::all()
    }
}

#[cfg(feature = "provisioner")]
pub mod json;

#[cfg(feature = "provisioner")]
pub mod sql {
    //! SQL on the databases the operator granted to the plugin by alias
    //! (`tenantry plugin grant NAME --database ALIAS --url-file FILE`; provisioners only). The
    //! plugin never sees the URL; the connection logs in with the role the operator put in it.
    //! Each statement runs on its own (autocommit) within the host's time and size limits.
    //! A [`SqlError`] displays as its message.
    use crate::provisioner::bindings::tenantry::plugin::sql as host;
    pub use crate::provisioner::bindings::tenantry::plugin::sql::{Rows, SqlError, Value};

    /// Runs `statement` with `params` (`$1`, `$2`...); the number of rows it changed.
    pub fn execute(alias: &str, statement: &str, params: &[Value]) -> Result<u64, SqlError> {
        host::execute(alias, statement, params)
    }

    /// Runs a query; its rows.
    pub fn query(alias: &str, statement: &str, params: &[Value]) -> Result<Rows, SqlError> {
        host::query(alias, statement, params)
    }
}

#[cfg(feature = "provisioner")]
pub mod state {
    //! The plugin's key-value state for the current tenant (provisioners only).
    use crate::provisioner::bindings::tenantry::plugin::state as host;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::get(key)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        host::set(key, value)
    }
    pub fn delete(key: &str) {
        host::delete(key)
    }
    pub fn keys() -> Vec<String> {
        host::keys()
    }
}

#[cfg(feature = "provisioner")]
pub mod secrets {
    //! Secrets granted to the plugin (provisioners only).
    use crate::provisioner::bindings::tenantry::plugin::secrets as host;

    /// The value of a granted secret; an error names a secret that is not granted.
    pub fn get(name: &str) -> Result<String, String> {
        host::get(name)
    }
}

#[cfg(feature = "provisioner")]
pub mod http {
    //! Outbound HTTP to granted hosts (provisioners only).
    use crate::provisioner::bindings::tenantry::plugin::http as host;
    pub use crate::provisioner::bindings::tenantry::plugin::http::{HttpError, Request, Response};

    /// Sends a request to a granted host and waits for the whole response.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        host::send(request)
    }

    /// A GET with no headers.
    pub fn get(url: &str) -> Result<Response, HttpError> {
        send(&Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: None,
        })
    }
}
