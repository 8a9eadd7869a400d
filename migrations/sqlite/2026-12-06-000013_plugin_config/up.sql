-- A plugin's configuration as the operator set it: one JSON value per key of the manifest's
-- schema (what is not set takes the schema's default). Never a secret: those are grants.
CREATE TABLE plugin_config (
    plugin TEXT NOT NULL REFERENCES plugins (name) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TIMESTAMP NOT NULL,
    PRIMARY KEY (plugin, key)
);
