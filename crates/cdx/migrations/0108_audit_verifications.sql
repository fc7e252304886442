-- Verifications of the audit chain run in the background (`POST /api/cdx/audit/verify`), one
-- at a time across every CDX process: `running` is 1 while a run walks the chain and NULL
-- once it finished, and its unique index admits one running row. A run whose process stopped
-- stops beating (`heartbeat_at`) and is taken over by the next start.
CREATE TABLE audit_verifications (
    id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    running BIGINT UNIQUE,
    heartbeat_at BIGINT NOT NULL,
    -- Entries verified so far, and how many the chain held when the run started.
    entries_checked BIGINT NOT NULL DEFAULT 0,
    entries_total BIGINT NOT NULL DEFAULT 0,
    finished_at BIGINT,
    -- The walk's report (JSON) once it reached a verdict, or why it stopped without one.
    report TEXT,
    error TEXT
);
