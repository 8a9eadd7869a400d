-- Audit records of a tenant found by its id (`GET /api/v1/audit?tenant=<id>`): the id outlives
-- a slug, and webhooks and run records name tenants by it.
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, seq);
