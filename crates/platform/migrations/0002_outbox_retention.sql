-- Delivered events may be kept for a while ([events] outbox_retention_secs): a delivered row
-- carries its delivery time, and the relay reads only the rows still pending.
ALTER TABLE outbox ADD COLUMN delivered_at BIGINT;
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;
-- The dedup rows are pruned by age ([events] dedup_retention_secs).
CREATE INDEX processed_events_by_time ON processed_events (processed_at);
