-- Revoked sessions of deleted tenants, kept so that their access tokens stay refused (also by
-- a restarted process) until the session would have expired: the session id and times only,
-- no tenant, user, name or address, so that a deleted tenant leaves no row in this database.
CREATE TABLE revoked_sessions (
    session_id TEXT PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_by_revocation ON revoked_sessions (revoked_at);
CREATE INDEX revoked_sessions_by_expiry ON revoked_sessions (expires_at);

-- Purges before this migration kept such sessions in `sessions`, stripped of the subject's
-- name (the only sessions with an empty one); they move here.
INSERT INTO revoked_sessions (session_id, revoked_at, expires_at)
SELECT id, revoked_at, expires_at FROM sessions
WHERE tenant_id IS NOT NULL AND subject_name = '' AND revoked_at IS NOT NULL;
DELETE FROM refresh_tokens WHERE session_id IN
    (SELECT id FROM sessions WHERE tenant_id IS NOT NULL AND subject_name = '');
DELETE FROM sessions WHERE tenant_id IS NOT NULL AND subject_name = '';
