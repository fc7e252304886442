-- Read models of every tenant, built only from the services' events (the `cdx.aggregates`
-- consumer); CDX never reads another service's database. Counters are kept incrementally;
-- the per-record state tables hold just what keeps them exact under updates and deletes.

-- One row per tenant that has seen an event: the counters its summary shows.
CREATE TABLE tenant_summary (
    tenant_id TEXT PRIMARY KEY,
    users_total BIGINT NOT NULL DEFAULT 0,
    users_active BIGINT NOT NULL DEFAULT 0,
    customers BIGINT NOT NULL DEFAULT 0,
    companies BIGINT NOT NULL DEFAULT 0,
    open_deals BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tenant_summary_by_customers ON tenant_summary (customers, tenant_id);
CREATE INDEX tenant_summary_by_users ON tenant_summary (users_total, tenant_id);

-- Value of the open deals per currency (minor units).
CREATE TABLE tenant_pipeline (
    tenant_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    open_value BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, currency)
);

-- Each deal's last known status, value and currency, so that a change or delete moves the
-- right amount out of the pipeline.
CREATE TABLE tenant_deals (
    tenant_id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    status TEXT NOT NULL,
    value BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (tenant_id, deal_id)
);

-- Each user's last known status (`active` or `disabled`).
CREATE TABLE tenant_users (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);

-- Successful logins of the last days (pruned after two days), for "logins in the last 24 h".
CREATE TABLE tenant_logins (
    event_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX tenant_logins_by_tenant ON tenant_logins (tenant_id, at);
CREATE INDEX tenant_logins_by_time ON tenant_logins (at);

-- Activity per tenant and UTC day (`YYYY-MM-DD`); platform-level events count under the
-- tenant id '' (empty).
CREATE TABLE activity_daily (
    tenant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    logins BIGINT NOT NULL DEFAULT 0,
    events BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX activity_daily_by_day ON activity_daily (day);
