-- One-time tokens that activate a new tenant's first admin (issued by CDX with the tenant;
-- only their SHA-256 is stored). A used token keeps its row, marked, so it cannot be reused.
CREATE TABLE setup_tokens (
    token_hash TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
