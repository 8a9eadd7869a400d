-- The audit list filtered by tenant and action (newest first) reads only that tenant's records
-- of that action: with (tenant_slug, seq) or (action, seq) alone, the planner could pick the
-- action's index and walk every record of the action to find the tenant's.
CREATE INDEX audit_log_tenant_action ON audit_log (tenant_slug, action, seq);
