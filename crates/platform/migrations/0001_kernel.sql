-- Kernel tables present in every service database.

-- Transactional outbox: rows are written in the same transaction as the change they
-- describe and removed once the relay has delivered them. Ids are UUIDv7 (time-ordered).
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    aggregate_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0
);

-- Consumer-side dedup: an event id is recorded in the same transaction that applies it.
CREATE TABLE processed_events (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

-- This service's replica of the tenant registry, fed by cdx.tenant.* events.
CREATE TABLE tenant_replica (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
