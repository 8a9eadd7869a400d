-- The change feed: a change to an API key, a session, a tenant or a plugin is logged here by a
-- trigger, whoever made it (the server, the CLI), and the server reads the log every quarter
-- second so that its caches forget the row. A touch (an API key's last use, a session's last
-- activity) is not logged: the triggers name every other column. A new column of these tables
-- goes into its trigger's list. Keep in step with migrations/postgres.

CREATE TABLE cache_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX cache_changes_at ON cache_changes (at);

CREATE TRIGGER api_keys_changed AFTER UPDATE OF id, tenant_id, name, prefix, secret_hash, role,
    created_by, created_at, expires_at, revoked_at, rate_limit_per_minute, replaced_by ON api_keys
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('key:' || OLD.prefix);
END;
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('key:' || OLD.prefix);
END;

CREATE TRIGGER sessions_changed AFTER UPDATE OF id, principal, role, tenant_id, csrf_token,
    source_ip, user_agent, created_at, expires_at, handle, auth_method, subject, email,
    display_name, issuer, id_token ON sessions
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('session:' || OLD.id);
END;
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('session:' || OLD.id);
END;

CREATE TRIGGER tenants_changed AFTER UPDATE ON tenants
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('tenant:' || OLD.id);
END;
CREATE TRIGGER tenants_deleted AFTER DELETE ON tenants
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('tenant:' || OLD.id);
END;

CREATE TRIGGER plugins_inserted AFTER INSERT ON plugins
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('plugin:' || NEW.name);
END;
CREATE TRIGGER plugins_changed AFTER UPDATE ON plugins
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('plugin:' || OLD.name);
END;
CREATE TRIGGER plugins_deleted AFTER DELETE ON plugins
BEGIN
    INSERT INTO cache_changes (subject) VALUES ('plugin:' || OLD.name);
END;
