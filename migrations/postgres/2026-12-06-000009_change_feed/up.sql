-- The change feed: a change to an API key, a session, a tenant or a plugin notifies every
-- server (NOTIFY tenantry_changes, '<kind>:<key>'), delivered when the writing transaction
-- commits, so that each server's caches forget the row at once. A touch (an API key's last use,
-- a session's last activity) notifies nobody. Keep in step with migrations/sqlite.

CREATE FUNCTION tenantry_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row JSONB;
    new_row JSONB;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE'
        AND old_row - 'last_used_at' - 'last_seen_at' = new_row - 'last_used_at' - 'last_seen_at' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('tenantry_changes', TG_ARGV[0] || ':' || (COALESCE(old_row, new_row) ->> TG_ARGV[1]));
    RETURN NULL;
END
$$;

-- Plugins carry their component: named directly rather than turned into JSON.
CREATE FUNCTION tenantry_notify_plugin_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tenantry_changes', 'plugin:' || OLD.name);
    ELSE
        PERFORM pg_notify('tenantry_changes', 'plugin:' || NEW.name);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantry_notify_change('key', 'prefix');
CREATE TRIGGER sessions_changed AFTER UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION tenantry_notify_change('session', 'id');
CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenantry_notify_change('tenant', 'id');
CREATE TRIGGER plugins_changed AFTER INSERT OR UPDATE OR DELETE ON plugins
    FOR EACH ROW EXECUTE FUNCTION tenantry_notify_plugin_change();
