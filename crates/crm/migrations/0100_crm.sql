-- The CRM: companies, customers (contacts), pipelines with stages, deals, notes and
-- activities, per-tenant custom field definitions, and the tenant users CRM records may be
-- assigned to (a replica of auth's users, built from its events).
--
-- Portable SQL (SQLite and PostgreSQL): ids are UUIDv7 text, times BIGINT Unix
-- milliseconds, dates ISO text, flags 0/1 integers, JSON as text. Every table leads its
-- primary key and every index with tenant_id (rule 4): a tenant's rows can be sharded
-- together, and every lookup is a range scan inside one tenant. `*_key` columns hold the
-- lower-cased sort and search text.

CREATE TABLE field_definitions (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    entity TEXT NOT NULL CHECK (entity IN ('customer', 'company', 'deal')),
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'number', 'date', 'boolean', 'select')),
    options TEXT NOT NULL DEFAULT '[]',
    required INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX field_definitions_by_name ON field_definitions (tenant_id, entity, name);

CREATE TABLE companies (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    domain TEXT,
    industry TEXT,
    size TEXT,
    address TEXT,
    custom TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX companies_by_name ON companies (tenant_id, name_key, id);
CREATE INDEX companies_by_updated ON companies (tenant_id, updated_at, id);
CREATE INDEX companies_by_created ON companies (tenant_id, created_at, id);

CREATE TABLE customers (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    email TEXT,
    email_key TEXT,
    phone TEXT,
    company_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('lead', 'prospect', 'customer', 'churned')),
    owner_id TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    custom TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
-- Emails are unique per tenant when present (NULLs never collide).
CREATE UNIQUE INDEX customers_by_email ON customers (tenant_id, email_key);
CREATE INDEX customers_by_name ON customers (tenant_id, name_key, id);
CREATE INDEX customers_by_updated ON customers (tenant_id, updated_at, id);
CREATE INDEX customers_by_created ON customers (tenant_id, created_at, id);
CREATE INDEX customers_by_status ON customers (tenant_id, status, id);
CREATE INDEX customers_by_company ON customers (tenant_id, company_id, id);
CREATE INDEX customers_by_owner ON customers (tenant_id, owner_id, id);

-- One row per tag of a customer, for the tag filter; `customers.tags` holds the list.
CREATE TABLE customer_tags (
    tenant_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tag, customer_id)
);
CREATE INDEX customer_tags_by_customer ON customer_tags (tenant_id, customer_id);

CREATE TABLE pipelines (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX pipelines_by_name ON pipelines (tenant_id, name);
-- At most one default pipeline per tenant; creating it twice is a no-op.
CREATE UNIQUE INDEX pipelines_default ON pipelines (tenant_id) WHERE is_default = 1;

CREATE TABLE stages (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    pipeline_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX stages_by_pipeline ON stages (tenant_id, pipeline_id, position);

CREATE TABLE deals (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    title_key TEXT NOT NULL,
    value BIGINT NOT NULL,
    currency TEXT NOT NULL,
    pipeline_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'won', 'lost')),
    customer_id TEXT,
    company_id TEXT,
    owner_id TEXT,
    expected_close TEXT,
    closed_at BIGINT,
    close_reason TEXT,
    custom TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX deals_by_stage ON deals (tenant_id, stage_id, id);
-- The board: a pipeline's deals stage by stage, newest first (and its totals).
CREATE INDEX deals_by_pipeline ON deals (tenant_id, pipeline_id, stage_id, created_at, id);
CREATE INDEX deals_by_customer ON deals (tenant_id, customer_id, id);
CREATE INDEX deals_by_company ON deals (tenant_id, company_id, id);
CREATE INDEX deals_by_owner ON deals (tenant_id, owner_id, id);
CREATE INDEX deals_by_value ON deals (tenant_id, value, id);
CREATE INDEX deals_by_title ON deals (tenant_id, title_key, id);
CREATE INDEX deals_by_updated ON deals (tenant_id, updated_at, id);
CREATE INDEX deals_by_created ON deals (tenant_id, created_at, id);

-- Every move of a deal between stages, for the customer timeline.
CREATE TABLE stage_changes (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    deal_id TEXT NOT NULL,
    customer_id TEXT,
    company_id TEXT,
    from_stage TEXT,
    to_stage TEXT NOT NULL,
    actor_id TEXT,
    occurred_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX stage_changes_by_customer ON stage_changes (tenant_id, customer_id, occurred_at, id);
CREATE INDEX stage_changes_by_deal ON stage_changes (tenant_id, deal_id, id);

-- Notes and activities: a text note, a call, a meeting or a task (due date, done flag),
-- attached to a customer, a company and/or a deal.
CREATE TABLE notes (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('note', 'call', 'meeting', 'task')),
    body TEXT NOT NULL,
    customer_id TEXT,
    company_id TEXT,
    deal_id TEXT,
    due_on TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    author_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX notes_by_customer ON notes (tenant_id, customer_id, created_at, id);
CREATE INDEX notes_by_created ON notes (tenant_id, created_at, id);
CREATE INDEX notes_by_due ON notes (tenant_id, due_on, id);
CREATE INDEX notes_by_company ON notes (tenant_id, company_id, id);
CREATE INDEX notes_by_deal ON notes (tenant_id, deal_id, id);

-- The tenant users CRM records may be owned by, from auth's user events.
CREATE TABLE tenant_users (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
