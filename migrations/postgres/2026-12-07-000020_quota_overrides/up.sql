-- Temporary overrides: an override may carry its reason and the time it ends (falling back by
-- itself then). And a change of an override is heard by every server at once, as a change of
-- the tenant (its quota decision is asked again), not after the decision's time to live.
ALTER TABLE quota_overrides ADD COLUMN reason TEXT;
ALTER TABLE quota_overrides ADD COLUMN expires_at TIMESTAMP;
CREATE INDEX quota_overrides_expires ON quota_overrides (expires_at) WHERE expires_at IS NOT NULL;

CREATE TRIGGER quota_overrides_changed AFTER INSERT OR UPDATE OR DELETE ON quota_overrides
    FOR EACH ROW EXECUTE FUNCTION tenantry_notify_change('tenant', 'tenant_id');
