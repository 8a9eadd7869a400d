-- What each tenant was last provisioned or applied with: its provisioning request (connection
-- template and its placeholder values, asset tags, backend settings), sealed with the master
-- key. A repair that asks for the current template versions renders them again from it.
CREATE TABLE tenant_requests (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    request TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
