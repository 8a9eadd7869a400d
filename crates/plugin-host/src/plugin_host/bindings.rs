//! Generated bindings of the WIT contract, one module per world and per WIT version (as Zed's
//! extension host keeps them): the current version (0.2.0) at the top, each frozen version in
//! a module of its own. `types`, `log` and `config` are shared by every world of a version. The
//! host's own types are the current version's; a frozen version's bindings reuse them (the
//! records and variants did not change), and its host interfaces forward to the current ones
//! (`sandbox::v0_1`).

pub mod provisioner {
    wasmtime::component::bindgen!({ world: "provisioner", path: "../../wit/v0.2.0" });
}

pub mod renderer {
    wasmtime::component::bindgen!({
        world: "renderer",
        path: "../../wit/v0.2.0",
        with: {
            "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
            "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            "tenantry:plugin/config": super::provisioner::tenantry::plugin::config,
        },
    });
}

pub mod quota {
    wasmtime::component::bindgen!({
        world: "quota-policy",
        path: "../../wit/v0.2.0",
        with: {
            "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
            "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            "tenantry:plugin/config": super::provisioner::tenantry::plugin::config,
        },
    });
}

/// `tenantry:plugin@0.1.0`, frozen.
pub mod v0_1 {
    pub mod provisioner {
        wasmtime::component::bindgen!({
            world: "provisioner",
            path: "../../wit/v0.1.0",
            with: {
                "tenantry:plugin/types": crate::plugin_host::bindings::provisioner::tenantry::plugin::types,
            },
        });
    }

    pub mod renderer {
        wasmtime::component::bindgen!({
            world: "renderer",
            path: "../../wit/v0.1.0",
            with: {
                "tenantry:plugin/types": crate::plugin_host::bindings::provisioner::tenantry::plugin::types,
                "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            },
        });
    }

    pub mod quota {
        wasmtime::component::bindgen!({
            world: "quota-policy",
            path: "../../wit/v0.1.0",
            with: {
                "tenantry:plugin/types": crate::plugin_host::bindings::provisioner::tenantry::plugin::types,
                "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
            },
        });
    }
}
