-- The tenant list orders by every numeric column of the tenant summary. Each order walks an
-- index of (column, tenant_id) in either direction and continues after a row-value keyset
-- position, instead of sorting every tenant.

-- Successful logins of the last 24 hours as a column, so that it can be indexed: counted up
-- as logins arrive and down as they turn 24 hours old. The column counts the logins at or
-- after `login_window.counted_from` (Unix ms); CDX moves that mark to "24 hours ago" every
-- few seconds and before it counts new logins, taking off the logins it passes. Whoever
-- moves it locks its one row first.
ALTER TABLE tenant_summary ADD COLUMN logins_24h BIGINT NOT NULL DEFAULT 0;
CREATE TABLE login_window (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    counted_from BIGINT NOT NULL
);
-- From 0: every kept login counts until the first move takes off the older ones.
INSERT INTO login_window (id, counted_from) VALUES (1, 0);
UPDATE tenant_summary SET logins_24h =
    (SELECT COUNT(*) FROM tenant_logins l WHERE l.tenant_id = tenant_summary.tenant_id);

-- The CMS and analytics slots are NULL until their service's first event, and NULL cannot
-- take part in a row-value comparison: each orders by a twin that holds 0 instead, moved
-- together with the slot.
ALTER TABLE tenant_summary ADD COLUMN content_items_order BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tenant_summary ADD COLUMN analytics_events_order BIGINT NOT NULL DEFAULT 0;
UPDATE tenant_summary SET content_items_order = COALESCE(content_items, 0),
    analytics_events_order = COALESCE(analytics_events, 0);

-- users_total and customers have theirs since 0102.
CREATE INDEX tenant_summary_by_users_active ON tenant_summary (users_active, tenant_id);
CREATE INDEX tenant_summary_by_logins_24h ON tenant_summary (logins_24h, tenant_id);
CREATE INDEX tenant_summary_by_companies ON tenant_summary (companies, tenant_id);
CREATE INDEX tenant_summary_by_open_deals ON tenant_summary (open_deals, tenant_id);
CREATE INDEX tenant_summary_by_content_items ON tenant_summary (content_items_order, tenant_id);
CREATE INDEX tenant_summary_by_analytics_events
    ON tenant_summary (analytics_events_order, tenant_id);
