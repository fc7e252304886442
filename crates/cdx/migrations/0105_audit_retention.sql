-- Audit retention: entries older than `[cdx.audit] retention_days` are removed up to a signed
-- checkpoint, which stays as the chain's anchor. `pruned_seq`/`pruned_hash` record it (0 and
-- the genesis hash while nothing was pruned); `audit verify` starts its walk there and checks
-- that a valid signed checkpoint covers exactly that position and hash.
ALTER TABLE audit_chain_head ADD COLUMN pruned_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE audit_chain_head ADD COLUMN pruned_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
