DROP TABLE plugin_config;
