DROP TRIGGER quota_overrides_changed ON quota_overrides;
DROP INDEX quota_overrides_expires;
ALTER TABLE quota_overrides DROP COLUMN expires_at;
ALTER TABLE quota_overrides DROP COLUMN reason;
