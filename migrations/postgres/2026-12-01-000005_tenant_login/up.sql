-- Tenant login: per-tenant claim → role mapping, OpenID Connect login attempts (state, nonce and
-- PKCE verifier bound to one browser, tenant and issuer), what a session knows of its user, and
-- single-use SSO setup links. Portable types only; keep in step with the other backend.

ALTER TABLE tenants ADD COLUMN role_mapping TEXT;

ALTER TABLE sessions ADD COLUMN handle TEXT;
ALTER TABLE sessions ADD COLUMN auth_method TEXT;
ALTER TABLE sessions ADD COLUMN subject TEXT;
ALTER TABLE sessions ADD COLUMN email TEXT;
ALTER TABLE sessions ADD COLUMN display_name TEXT;
ALTER TABLE sessions ADD COLUMN issuer TEXT;
ALTER TABLE sessions ADD COLUMN id_token TEXT;
UPDATE sessions SET handle = substr(id, 1, 16), auth_method = 'password' WHERE handle IS NULL;
CREATE UNIQUE INDEX sessions_handle ON sessions (handle);
CREATE INDEX sessions_tenant ON sessions (tenant_id, created_at);

CREATE TABLE login_attempts (
    state_hash TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    next_path TEXT,
    source_ip TEXT,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);

CREATE TABLE sso_setup_links (
    id TEXT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    used_by TEXT,
    revoked_at TIMESTAMP
);
CREATE INDEX sso_setup_links_tenant ON sso_setup_links (tenant_id, created_at);
