-- Plugins: installed components (built-ins are embedded in the binary and have no bytes here),
-- the capabilities operators granted them, and their per-tenant key-value state.

CREATE TABLE plugins (
    name TEXT PRIMARY KEY NOT NULL,
    version TEXT NOT NULL,
    world TEXT NOT NULL,
    wit_version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    manifest TEXT NOT NULL,
    component BYTEA,
    builtin BOOLEAN NOT NULL,
    enabled BOOLEAN NOT NULL,
    deadline_ms BIGINT,
    installed_by TEXT NOT NULL,
    installed_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE plugin_grants (
    plugin TEXT NOT NULL REFERENCES plugins (name) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed_value TEXT,
    granted_by TEXT NOT NULL,
    granted_at TIMESTAMP NOT NULL,
    PRIMARY KEY (plugin, kind, name)
);

CREATE TABLE plugin_state (
    plugin TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (plugin, tenant_id, key)
);
