-- Slots of the tenant summary that services without a release yet fill through their events
-- (docs/api.md, "Aggregates"): NULL until the first such event of the tenant.
-- cms.item.created/deleted
ALTER TABLE tenant_summary ADD COLUMN content_items BIGINT;
-- billing.subscription.changed: the plan and its monthly recurring revenue (minor units).
ALTER TABLE tenant_summary ADD COLUMN plan TEXT;
ALTER TABLE tenant_summary ADD COLUMN mrr BIGINT;
ALTER TABLE tenant_summary ADD COLUMN mrr_currency TEXT;
-- analytics.events.counted
ALTER TABLE tenant_summary ADD COLUMN analytics_events BIGINT;
