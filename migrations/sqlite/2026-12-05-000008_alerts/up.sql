-- Alerts and the webhooks that tell operators about them. Keep in step with the other
-- backend's migration.

-- One alert per tenant, kind, subject, period and threshold: raised once, resolved when what
-- it watches falls back (with hysteresis), raised again only after it was resolved.
--   kind: quota (subject: the metric; period: the metric's), at_risk, policy_failing (subject:
--   the policy), error_rate, latency.
CREATE TABLE alerts (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    threshold TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    -- What was measured: a percent of the limit, an error rate in percent, a p95 in ms.
    value DOUBLE PRECISION NOT NULL,
    -- The value when it was (last) raised: resolution waits until the value falls below the
    -- line by the hysteresis.
    raised_value DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL,
    times_raised BIGINT NOT NULL,
    raised_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    resolved_at TIMESTAMP
);
CREATE UNIQUE INDEX alerts_key ON alerts (tenant_id, kind, subject, period, threshold);
CREATE INDEX alerts_status ON alerts (status, severity);

-- Endpoints operators registered for events (all tenants', or one tenant's).
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    -- The signing secret, sealed with the master key.
    secret TEXT NOT NULL,
    -- JSON array of event types; empty: every event.
    events TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- The outbox: one delivery per event and endpoint, written in the transaction that made the
-- event, sent (signed) and retried with backoff by whichever server leases it.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    tenant_id TEXT,
    payload TEXT NOT NULL,
    -- pending, delivered, failed (every attempt spent)
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TIMESTAMP,
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    last_attempt_at TIMESTAMP,
    last_status_code BIGINT,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at);
