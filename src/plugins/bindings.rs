//! Generated bindings of the WIT contract, one module per world (and, as versions are frozen,
//! per WIT version). `types` and `log` are shared by every world.

pub mod provisioner {
    wasmtime::component::bindgen!({ world: "provisioner", path: "wit/v0.1.0" });
}

pub mod renderer {
    wasmtime::component::bindgen!({
        world: "renderer",
        path: "wit/v0.1.0",
        with: {
            "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
            "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
        },
    });
}

pub mod quota {
    wasmtime::component::bindgen!({
        world: "quota-policy",
        path: "wit/v0.1.0",
        with: {
            "tenantry:plugin/types": super::provisioner::tenantry::plugin::types,
            "tenantry:plugin/log": super::provisioner::tenantry::plugin::log,
        },
    });
}
