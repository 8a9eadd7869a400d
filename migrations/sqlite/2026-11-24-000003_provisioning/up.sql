-- Templates (versioned), provisioning runs and their journaled steps, idempotency keys, and what
-- each tenant holds in each backend.

CREATE TABLE templates (
    name TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    format TEXT NOT NULL,
    description TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE template_versions (
    template TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    placeholders TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (template, version)
);

CREATE TABLE provisioning_runs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    tenant_slug TEXT NOT NULL,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    backends TEXT NOT NULL,
    error TEXT,
    lease_owner TEXT,
    lease_expires_at TIMESTAMP,
    executions BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX provisioning_runs_tenant ON provisioning_runs (tenant_id, created_at);
CREATE INDEX provisioning_runs_open ON provisioning_runs (status, lease_expires_at);

CREATE TABLE provisioning_steps (
    run_id TEXT NOT NULL REFERENCES provisioning_runs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    plugin TEXT NOT NULL,
    step_id TEXT NOT NULL,
    action TEXT NOT NULL,
    description TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    output TEXT,
    manual_follow_up TEXT,
    error TEXT,
    log TEXT NOT NULL,
    next_attempt_at TIMESTAMP,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE tenant_resources (
    tenant_id TEXT NOT NULL,
    plugin TEXT NOT NULL,
    step_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    description TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    template TEXT,
    template_version BIGINT,
    fingerprint TEXT,
    applied_at TIMESTAMP NOT NULL,
    PRIMARY KEY (tenant_id, plugin, step_id)
);
