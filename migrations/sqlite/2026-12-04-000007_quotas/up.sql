-- Usage metering and quota overrides. Keep in step with the other backend's migration.

-- One counter per tenant, metric and period: `2026-12-04T09:15` (a minute), `2026-12-04` (a
-- day), `2026-12` (a calendar month), or `current` for a gauge. Increments are atomic upserts.
CREATE TABLE usage_counters (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    period TEXT NOT NULL,
    value BIGINT NOT NULL,
    -- For a gauge: the time of the reported value (a late report does not overwrite a newer one).
    measured_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, metric, period)
);

-- The ids of reported usage events, written in the same transaction as the counter change they
-- made: an id is counted once, however often it is sent. Kept at least 35 days.
CREATE TABLE usage_events (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    period TEXT NOT NULL,
    amount BIGINT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX usage_events_received_at ON usage_events (received_at);

-- The distinct users who have logged in to a tenant (the `users` metric), by subject at the
-- tenant's identity provider.
CREATE TABLE tenant_users (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, issuer, subject)
);

-- An operator's limit for one tenant and metric, over the tier's default. A null limit with
-- `hard = false` keeps the default limit and only makes it soft.
CREATE TABLE quota_overrides (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    limit_value BIGINT,
    hard BOOLEAN NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, metric)
);

-- Which quota-policy plugin decides for a tenant (`tenant:<id>`) or a tier (`tier:<tier>`),
-- instead of `quotas.policy`. Read at every decision, so a change needs no restart.
CREATE TABLE quota_policy_choices (
    scope TEXT PRIMARY KEY NOT NULL,
    policy TEXT NOT NULL,
    chosen_by TEXT NOT NULL,
    chosen_at TIMESTAMP NOT NULL
);
