-- A trigram index of tenants' slugs and names, so that a substring search reads the index
-- instead of every tenant. Its own copy of (id, slug, name), kept by triggers; rows are found
-- by id through the index itself (an id is longer than three characters), never by rowid,
-- which a VACUUM may renumber.
CREATE VIRTUAL TABLE tenant_search USING fts5(
    id, slug, name,
    tokenize = 'trigram case_sensitive 0'
);

INSERT INTO tenant_search (id, slug, name) SELECT id, slug, name FROM tenants;

CREATE TRIGGER tenant_search_inserted AFTER INSERT ON tenants BEGIN
    INSERT INTO tenant_search (id, slug, name) VALUES (new.id, new.slug, new.name);
END;

CREATE TRIGGER tenant_search_deleted AFTER DELETE ON tenants BEGIN
    DELETE FROM tenant_search WHERE rowid IN (
        SELECT rowid FROM tenant_search WHERE tenant_search MATCH 'id : "' || replace(old.id, '"', '""') || '"'
    ) AND id = old.id;
END;

CREATE TRIGGER tenant_search_renamed AFTER UPDATE OF slug, name ON tenants BEGIN
    DELETE FROM tenant_search WHERE rowid IN (
        SELECT rowid FROM tenant_search WHERE tenant_search MATCH 'id : "' || replace(old.id, '"', '""') || '"'
    ) AND id = old.id;
    INSERT INTO tenant_search (id, slug, name) VALUES (new.id, new.slug, new.name);
END;
