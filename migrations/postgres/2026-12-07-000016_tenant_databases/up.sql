-- Which database each tenant's connection names, as a digest of `host:port/database` (never the
-- URI itself): a request whose connection names another tenant's database is refused.
ALTER TABLE tenant_requests ADD COLUMN database_key TEXT;
CREATE INDEX tenant_requests_database_key ON tenant_requests (database_key);
