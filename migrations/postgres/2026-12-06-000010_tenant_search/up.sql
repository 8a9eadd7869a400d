-- Trigram indexes of tenants' slugs and names (pg_trgm, a trusted extension shipped with
-- PostgreSQL), so that a substring search (`lower(slug) LIKE '%…%'`) reads an index instead of
-- every tenant. Without a pending list (fastupdate off): tenants are created one at a time, and
-- a pending list of new entries is read in full by every search until a vacuum merges it (at
-- 100,000 tenants created in a row, ~100 ms a search).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX tenants_slug_trigrams ON tenants USING gin (lower(slug) gin_trgm_ops)
    WITH (fastupdate = off);
CREATE INDEX tenants_name_trigrams ON tenants USING gin (lower(name) gin_trgm_ops)
    WITH (fastupdate = off);
