DROP TRIGGER tenant_search_renamed;
DROP TRIGGER tenant_search_deleted;
DROP TRIGGER tenant_search_inserted;
DROP TABLE tenant_search;
