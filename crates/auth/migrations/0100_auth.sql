-- Tenant users. Tenant-scoped: the primary key and indexes lead with tenant_id (rule 4).
CREATE TABLE users (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    email TEXT NOT NULL,
    name TEXT,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
-- Login by email without a tenant looks the address up across tenants.
CREATE INDEX users_by_email ON users (email);

-- Sessions of tenant users (tenant_id set) and superadmins (tenant_id NULL).
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT,
    subject_id TEXT NOT NULL,
    subject_name TEXT NOT NULL,
    role TEXT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_subject ON sessions (subject_id);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id);
CREATE INDEX sessions_by_revocation ON sessions (revoked_at);

-- Refresh tokens are stored as SHA-256 hashes; a used one stays (used_at set) so that its
-- reuse is recognised as theft and revokes the whole session.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Every login attempt; throttling is computed from this table, so it holds across restarts
-- and replicas.
CREATE TABLE login_attempts (
    id TEXT PRIMARY KEY,
    account_key TEXT NOT NULL,
    ip TEXT,
    tenant_id TEXT,
    succeeded BIGINT NOT NULL,
    reason TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX login_attempts_by_account ON login_attempts (account_key, at);
CREATE INDEX login_attempts_by_ip ON login_attempts (ip, at);

-- Ed25519 signing keys. The newest unretired key signs; retired keys stay published until
-- every token they signed has expired.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_pkcs8 TEXT NOT NULL,
    public_x TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
