-- Every change to a plugin or its grants bumps its revision, in the same transaction. A server
-- reads the revision before each call of the plugin and reloads what changed, so a change made
-- by the CLI or another replica binds its very next call.
ALTER TABLE plugins ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- Call statistics of each plugin, summed over every server (each adds what it counted).
CREATE TABLE plugin_call_stats (
    plugin TEXT PRIMARY KEY NOT NULL REFERENCES plugins (name) ON DELETE CASCADE,
    calls BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    total_us BIGINT NOT NULL DEFAULT 0,
    max_us BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL
);
