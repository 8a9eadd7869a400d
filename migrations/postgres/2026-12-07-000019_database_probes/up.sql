-- The last probe of each tenant database tenantry knows (the tenant's own URI, or the connection
-- it was provisioned with): status, latency, the recent latencies its p95 is taken over, and
-- since when it fails. The probe job takes the tenants whose last probe is oldest first.
CREATE TABLE tenant_database_probes (
    tenant_id TEXT PRIMARY KEY NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    latency_ms DOUBLE PRECISION,
    recent_ms TEXT NOT NULL,
    detail TEXT,
    failing_since TIMESTAMP,
    checked_at TIMESTAMP NOT NULL
);
CREATE INDEX tenant_database_probes_checked ON tenant_database_probes (checked_at);
