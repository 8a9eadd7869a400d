-- Trigram indexes of tenants' slugs and names (pg_trgm, a trusted extension shipped with
-- PostgreSQL), so that a substring search (`lower(slug) LIKE '%…%'`) reads an index instead of
-- every tenant.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX tenants_slug_trigrams ON tenants USING gin (lower(slug) gin_trgm_ops);
CREATE INDEX tenants_name_trigrams ON tenants USING gin (lower(name) gin_trgm_ops);
