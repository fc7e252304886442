-- The tenant list's orders walk an index and stop after one page instead of sorting every
-- tenant (10,000 tenants took tens of milliseconds per page).
CREATE INDEX tenants_by_name ON tenants (name, id);
CREATE INDEX tenants_by_created ON tenants (created_at, id);

-- Every tenant has a summary row from its creation on (before, only from its first event),
-- so lists sorted by a counter walk tenant_summary's indexes.
INSERT INTO tenant_summary (tenant_id, users_total, users_active, customers, companies,
    open_deals, updated_at)
SELECT id, 0, 0, 0, 0, 0, 0 FROM tenants
WHERE id NOT IN (SELECT tenant_id FROM tenant_summary);
