-- Deleted tenants and, per service, when it purged the tenant's data (reported by its
-- `<service>.tenant.purged` event). The tenant row itself is gone; this is what remains.
CREATE TABLE tenant_purges (
    tenant_id TEXT NOT NULL,
    service TEXT NOT NULL,
    slug TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    purged_at BIGINT,
    rows_removed BIGINT,
    PRIMARY KEY (tenant_id, service)
);
CREATE INDEX tenant_purges_by_slug ON tenant_purges (slug);
