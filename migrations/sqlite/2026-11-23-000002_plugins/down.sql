DROP TABLE plugin_state;
DROP TABLE plugin_grants;
DROP TABLE plugins;
