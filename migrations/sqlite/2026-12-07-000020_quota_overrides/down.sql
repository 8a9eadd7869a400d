DROP TRIGGER quota_overrides_deleted;
DROP TRIGGER quota_overrides_changed;
DROP TRIGGER quota_overrides_inserted;
DROP INDEX quota_overrides_expires;
ALTER TABLE quota_overrides DROP COLUMN expires_at;
ALTER TABLE quota_overrides DROP COLUMN reason;
