DROP TRIGGER plugins_changed ON plugins;
DROP TRIGGER tenants_changed ON tenants;
DROP TRIGGER sessions_changed ON sessions;
DROP TRIGGER api_keys_changed ON api_keys;
DROP FUNCTION tenantry_notify_plugin_change();
DROP FUNCTION tenantry_notify_change();
