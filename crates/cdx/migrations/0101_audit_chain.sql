-- The audit log becomes a tamper-evident hash chain (docs/decisions/0006-audit-hash-chain.md).
-- Each entry gets a gap-free position `seq` (from 1), the hash of the entry before it and its
-- own hash: hex SHA-256 over the previous hash followed by the entry's canonical encoding.
-- Rows written before this migration have no position yet; CDX chains them once, in order
-- of id, when it next starts (or on the first audit write), before any new entry.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
-- Names of the changed fields (JSON array text), when the event listed them.
ALTER TABLE audit_log ADD COLUMN changed TEXT;

CREATE UNIQUE INDEX audit_log_by_seq ON audit_log (seq);
CREATE INDEX audit_log_by_target ON audit_log (target, id);

-- The chain's head: one row, locked (updated) by every writer first, so concurrent writers
-- append one after the other. `backfilled` is 1 once the pre-chain rows are chained.
CREATE TABLE audit_chain_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    checkpoint_seq BIGINT NOT NULL,
    checkpoint_at BIGINT NOT NULL,
    backfilled BIGINT NOT NULL
);

INSERT INTO audit_chain_head (id, seq, hash, checkpoint_seq, checkpoint_at, backfilled)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0, 0, 0);
-- A new database has nothing to chain.
UPDATE audit_chain_head SET backfilled = 1 WHERE NOT EXISTS (SELECT 1 FROM audit_log);

-- CDX's own Ed25519 keys for signing checkpoints, generated on first use.
CREATE TABLE audit_signing_keys (
    id TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    public_key TEXT NOT NULL,
    private_pkcs8 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Signed checkpoints: the chain's hash at `seq`, signed with key `key_id`.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES audit_signing_keys (id),
    signed_at BIGINT NOT NULL
);
