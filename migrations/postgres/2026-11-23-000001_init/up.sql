-- The foundation schema: tenants and their status history, the audit chain, platform
-- administrators, API keys and portal sessions. Portable types only (TEXT, BIGINT, TIMESTAMP);
-- JSON is stored as TEXT, ids are text UUIDs. Keep in step with migrations/sqlite.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    status_changed_at TIMESTAMP NOT NULL,
    trial_ends_at TIMESTAMP,
    contact TEXT NOT NULL,
    metadata TEXT NOT NULL,
    oauth_issuer TEXT,
    client_id TEXT,
    client_secret TEXT,
    client_secret_fp TEXT,
    client_secret_previous TEXT,
    client_secret_previous_fp TEXT,
    scopes TEXT NOT NULL,
    db_uri TEXT,
    db_uri_fp TEXT,
    default_schema TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX tenants_status_tier ON tenants (status, tier);
CREATE INDEX tenants_tier_slug ON tenants (tier, slug);
CREATE INDEX tenants_status_slug ON tenants (status, slug);

CREATE TABLE tenant_status_history (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    from_status TEXT,
    to_status TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TIMESTAMP NOT NULL
);
CREATE INDEX tenant_status_history_tenant ON tenant_status_history (tenant_id, at);

CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY NOT NULL,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    tenant_id TEXT,
    tenant_slug TEXT,
    action TEXT NOT NULL,
    details TEXT NOT NULL,
    source_ip TEXT,
    request_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_slug, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- One row: the newest link of the audit chain. Writers lock it, so the chain never forks.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE admin_users (
    username TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    secret_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    source_ip TEXT,
    user_agent TEXT,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
