-- The master registry: clients, tenants, platform admins, the service registry and the
-- audit log. Portable SQL (SQLite and PostgreSQL): ids are UUIDv7 text, times are BIGINT
-- Unix milliseconds, JSON is text.

CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    client_id TEXT NOT NULL REFERENCES clients (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);

-- The list filters page by id within one client or one status.
CREATE INDEX tenants_by_client ON tenants (client_id, id);
CREATE INDEX tenants_by_status ON tenants (status, id);

CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE services (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    last_checked_at BIGINT
);

-- One row per event of any service; the id is the event id, so redelivery is a no-op.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    actor_id TEXT,
    actor_role TEXT NOT NULL,
    actor_name TEXT,
    tenant_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    request_id TEXT,
    ip TEXT,
    detail TEXT NOT NULL
);

-- Each filter of the audit API pages newest first by id within its key.
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);
CREATE INDEX audit_log_by_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_by_action ON audit_log (action, id);
