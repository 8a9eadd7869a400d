DROP INDEX tenant_requests_database_key;
ALTER TABLE tenant_requests DROP COLUMN database_key;
