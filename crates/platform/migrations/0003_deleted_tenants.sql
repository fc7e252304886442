-- Tenants CDX deleted, by id alone (UUIDv7, never reused). Events of different services travel
-- on different streams, so one about a tenant can arrive after the purge of that tenant; a
-- consumer writing the tenant's rows checks here first, or it would bring a row of the tenant
-- back. Kept forever: a row per deleted tenant, without name, slug or data.
CREATE TABLE deleted_tenants (
    id TEXT PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
