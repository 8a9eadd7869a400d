DROP INDEX tenants_name_trigrams;
DROP INDEX tenants_slug_trigrams;
