//! The aggregates (read models) built from every service's events, and the reads of the
//! summary, the overview and the tenant list with its summary columns.

use std::collections::{BTreeMap, BTreeSet};

use platform::db::{Backend, Db};
use platform::events::Event;
use platform::facts::{TenantFacts, RECENT_LOGINS_MS};
use platform::ids::Timestamp;
use platform::sql::values_list;
use platform::ApiResult;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::login_window::advance_login_window;
use crate::aggregates::{
    DayActivity, Drift, Overview, OverviewTotals, PipelineValue, Revenue, ServiceSlots,
    SummaryColumns, TenantCounters, TenantSummary, TenantsByStatus,
};

/// One day in milliseconds.
pub(super) const DAY_MS: i64 = 86_400_000;

/// The UTC day (`YYYY-MM-DD`) of a moment.
pub(crate) fn day_of(at: Timestamp) -> String {
    at.to_rfc3339().chars().take(10).collect()
}

// Applying events

/// Applies the effect of `events` (fresh ones, in order) on the aggregates in the
/// transaction `conn` of a database on `backend` (the caller dedups and commits). A batch
/// costs a few statements, not a few per event: the activity per day and the summary
/// counters are folded in memory first, then written once per day and tenant.
pub(crate) async fn apply_events(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[&Event],
) -> sqlx::Result<()> {
    let deleted = deleted_tenants(conn, events).await?;
    count_activity(conn, backend, events, &deleted).await?;
    let logins = events
        .iter()
        .any(|event| event.event_type == "auth.login.succeeded");
    // Logins count into `logins_24h` when they are inside the window, which moves first.
    let login_window = match logins {
        true => Some(advance_login_window(conn, Timestamp::now()).await?),
        false => None,
    };
    let mut counters = PendingCounters::default();
    for event in events {
        apply_event(conn, event, &mut counters, &deleted, login_window).await?;
    }
    counters.flush(conn).await?;
    if logins {
        sqlx::query("DELETE FROM tenant_logins WHERE at < $1")
            .bind(Timestamp::now().millis() - RECENT_LOGINS_MS)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Tenants CDX deleted, among those `events` belong to: their events still arrive (the
/// services' purges, changes in flight), but must not bring back a row of the tenant.
async fn deleted_tenants(
    conn: &mut AnyConnection,
    events: &[&Event],
) -> sqlx::Result<BTreeSet<String>> {
    let tenants: Vec<&str> = events
        .iter()
        .filter_map(|event| event.tenant_id.as_deref())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut deleted = BTreeSet::new();
    for chunk in tenants.chunks(TENANT_CHUNK) {
        let sql = format!(
            "SELECT DISTINCT tenant_id FROM tenant_purges WHERE tenant_id IN ({})",
            platform::sql::placeholders(1, chunk.len())
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for tenant in chunk {
            query = query.bind(*tenant);
        }
        deleted.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(deleted)
}

/// Tenant ids per lookup of [`deleted_tenants`] (well under every backend's limit).
const TENANT_CHUNK: usize = 500;

/// Applies one event's effect on the aggregates, its counter changes into `counters`. Of a
/// tenant in `deleted` only the deletion itself and the services' purge reports count. A
/// login counts into `logins_24h` when it is at or after `login_window`.
async fn apply_event(
    conn: &mut AnyConnection,
    event: &Event,
    counters: &mut PendingCounters,
    deleted: &BTreeSet<String>,
    login_window: Option<i64>,
) -> sqlx::Result<()> {
    let at = event.occurred_at.millis();
    let Some(tenant) = event.tenant_id.as_deref() else {
        return Ok(());
    };
    let data = &event.data;
    if let Some(service) = event
        .event_type
        .strip_suffix(platform::tenants::TENANT_PURGED)
        .and_then(|s| s.strip_suffix('.'))
    {
        // One service is done with a deleted tenant.
        sqlx::query(
            "UPDATE tenant_purges SET purged_at = $1, rows_removed = $2 \
             WHERE tenant_id = $3 AND service = $4",
        )
        .bind(at)
        .bind(data["rows"].as_i64())
        .bind(tenant)
        .bind(service)
        .execute(&mut *conn)
        .await?;
    }
    if event.event_type == crate::events::TENANT_DELETED {
        return forget_tenant(conn, tenant, counters).await;
    }
    if deleted.contains(tenant) {
        return Ok(());
    }
    match event.event_type.as_str() {
        crate::events::TENANT_CREATED => ensure_summary(conn, tenant, at).await?,
        "auth.user.created" | "auth.user.updated" | "auth.user.deleted" => {
            apply_user(conn, tenant, event, counters).await?;
        }
        "auth.login.succeeded" => {
            // Keyed by the session the login opened, as auth's facts name it, so that a
            // rebuild and a late event count the login once.
            let login = data["session_id"].as_str().unwrap_or(&event.id);
            let new = sqlx::query(
                "INSERT INTO tenant_logins (login_id, tenant_id, at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(login)
            .bind(tenant)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                > 0;
            if new && login_window.is_some_and(|from| at >= from) {
                counters.add(tenant, &[("logins_24h", 1)], at);
            }
        }
        "crm.customer.created" => counters.add(tenant, &[("customers", 1)], at),
        "crm.customer.deleted" => counters.add(tenant, &[("customers", -1)], at),
        "crm.company.created" => counters.add(tenant, &[("companies", 1)], at),
        "crm.company.deleted" => counters.add(tenant, &[("companies", -1)], at),
        "crm.customers.imported" => {
            let customers = data["created"].as_i64().unwrap_or(0);
            let companies = data["companies_created"].as_i64().unwrap_or(0);
            counters.add(
                tenant,
                &[("customers", customers), ("companies", companies)],
                at,
            );
        }
        crate::aggregates::CMS_ITEM_CREATED => counters.add(tenant, &[("content_items", 1)], at),
        crate::aggregates::CMS_ITEM_DELETED => counters.add(tenant, &[("content_items", -1)], at),
        crate::aggregates::ANALYTICS_EVENTS_COUNTED => {
            let count = data["count"].as_i64().unwrap_or(0);
            counters.add(tenant, &[("analytics_events", count)], at);
        }
        crate::aggregates::BILLING_SUBSCRIPTION_CHANGED => {
            apply_subscription(conn, tenant, data, at, counters).await?;
        }
        "crm.deal.created"
        | "crm.deal.updated"
        | "crm.deal.stage_changed"
        | "crm.deal.closed"
        | "crm.deal.deleted" => apply_deal(conn, tenant, event, counters).await?,
        "crm.tenant.purged" => {
            // Only a tenant that still exists keeps a (zeroed) summary; CRM changes folded
            // before the purge are written first, then zeroed with the rest.
            counters.flush_tenant(conn, tenant).await?;
            sqlx::query(
                "UPDATE tenant_summary SET customers = 0, companies = 0, open_deals = 0, \
                 updated_at = $2 WHERE tenant_id = $1",
            )
            .bind(tenant)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            for table in ["tenant_pipeline", "tenant_deals"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(tenant)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The per-tenant aggregate tables besides the activity per day.
const TENANT_TABLES: &[&str] = &[
    "tenant_summary",
    "tenant_pipeline",
    "tenant_deals",
    "tenant_users",
    "tenant_logins",
];

/// Removes every aggregate row of a deleted tenant. Its activity per day is history the
/// platform overview still shows, so it moves to the platform's own rows (tenant `''`)
/// rather than staying under the tenant's id.
async fn forget_tenant(
    conn: &mut AnyConnection,
    tenant: &str,
    counters: &mut PendingCounters,
) -> sqlx::Result<()> {
    // Changes folded before the deletion must not bring the summary back.
    counters.forget(tenant);
    for table in TENANT_TABLES {
        sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(tenant)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(&format!(
        "INSERT INTO activity_daily (tenant_id, day, logins, events) \
         SELECT '', day, logins, events FROM activity_daily WHERE tenant_id = $1 {ADD_TO_DAY}"
    ))
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM activity_daily WHERE tenant_id = $1")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// How an activity row adds to the one of its tenant and day that exists.
const ADD_TO_DAY: &str = "ON CONFLICT (tenant_id, day) DO UPDATE SET \
     logins = activity_daily.logins + excluded.logins, \
     events = activity_daily.events + excluded.events";

/// Rows per activity upsert (4 parameters each).
const ACTIVITY_CHUNK: usize = 200;

/// Counts `events` (and the logins among them) into their tenant's day, one row per
/// tenant and day; platform events and those of `deleted` tenants into the platform's.
async fn count_activity(
    conn: &mut AnyConnection,
    backend: Backend,
    events: &[&Event],
    deleted: &BTreeSet<String>,
) -> sqlx::Result<()> {
    let mut days: BTreeMap<(&str, String), (i64, i64)> = BTreeMap::new();
    for event in events {
        let tenant = event
            .tenant_id
            .as_deref()
            .filter(|tenant| !deleted.contains(*tenant))
            .unwrap_or("");
        let count = days.entry((tenant, day_of(event.occurred_at))).or_default();
        count.0 += i64::from(event.event_type == "auth.login.succeeded");
        count.1 += 1;
    }
    let days: Vec<_> = days.into_iter().collect();
    for chunk in days.chunks(ACTIVITY_CHUNK) {
        let sql = format!(
            "INSERT INTO activity_daily (tenant_id, day, logins, events) VALUES {} {ADD_TO_DAY}",
            values_list(backend, chunk.len(), 4)
        );
        let mut upsert = sqlx::query(&sql);
        for ((tenant, day), (logins, events)) in chunk {
            upsert = upsert.bind(*tenant).bind(day).bind(*logins).bind(*events);
        }
        upsert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Gives `tenant` its summary row (all counters zero) unless it has one. Every tenant gets
/// it in the transaction that creates the tenant, so lists sorted by a counter can walk the
/// summary's indexes instead of sorting every tenant.
pub(super) async fn ensure_summary(
    conn: &mut AnyConnection,
    tenant: &str,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tenant_summary (tenant_id, users_total, users_active, customers, \
         companies, open_deals, updated_at) VALUES ($1, 0, 0, 0, 0, 0, $2) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The counters of `tenant_summary` (never NULL, unlike the slots): the ones the services'
/// facts determine.
const COUNTERS: &[&str] = &[
    "users_total",
    "users_active",
    "customers",
    "companies",
    "open_deals",
    "logins_24h",
];

/// The slots the tenant list orders by, each with the twin column that holds it as a number
/// (0 while the slot is NULL), moved with it here, its one writer.
const ORDERED_SLOTS: &[(&str, &str)] = &[
    ("content_items", "content_items_order"),
    ("analytics_events", "analytics_events_order"),
];

/// Summary changes of a batch not written yet, per tenant: what to add to which counter
/// (columns from a fixed list, never input), and the time of the last event that touched
/// the tenant (its `updated_at`).
#[derive(Debug, Default)]
struct PendingCounters {
    tenants: BTreeMap<String, (BTreeMap<&'static str, i64>, i64)>,
}

impl PendingCounters {
    /// Adds `deltas` to the tenant's counters, touched at `at`.
    fn add(&mut self, tenant: &str, deltas: &[(&'static str, i64)], at: i64) {
        let (sums, touched) = self.tenants.entry(tenant.to_string()).or_default();
        for (column, delta) in deltas {
            *sums.entry(column).or_default() += delta;
        }
        *touched = at;
    }

    /// Drops the tenant's changes.
    fn forget(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    /// Writes every tenant's changes.
    async fn flush(&mut self, conn: &mut AnyConnection) -> sqlx::Result<()> {
        for (tenant, (sums, at)) in std::mem::take(&mut self.tenants) {
            write_counters(conn, &tenant, &sums, at).await?;
        }
        Ok(())
    }

    /// Writes the tenant's changes now.
    async fn flush_tenant(&mut self, conn: &mut AnyConnection, tenant: &str) -> sqlx::Result<()> {
        match self.tenants.remove(tenant) {
            Some((sums, at)) => write_counters(conn, tenant, &sums, at).await,
            None => Ok(()),
        }
    }
}

/// Adds `sums` to the tenant's summary row (made when missing) and sets its `updated_at`:
/// one statement. A slot is NULL until its service's first change, which starts it from
/// zero.
async fn write_counters(
    conn: &mut AnyConnection,
    tenant: &str,
    sums: &BTreeMap<&'static str, i64>,
    at: i64,
) -> sqlx::Result<()> {
    let slots: Vec<&str> = sums
        .keys()
        .copied()
        .filter(|column| !COUNTERS.contains(column))
        .collect();
    let columns: Vec<&str> = COUNTERS.iter().copied().chain(slots).collect();
    let mut sets: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = COALESCE(tenant_summary.{c}, 0) + excluded.{c}"))
        .collect();
    sets.extend(
        ORDERED_SLOTS
            .iter()
            .filter(|(slot, _)| columns.contains(slot))
            .map(|(slot, twin)| format!("{twin} = tenant_summary.{twin} + excluded.{slot}")),
    );
    let sql = format!(
        "INSERT INTO tenant_summary (tenant_id, {}, updated_at) VALUES ({}) \
         ON CONFLICT (tenant_id) DO UPDATE SET {}, updated_at = excluded.updated_at",
        columns.join(", "),
        platform::sql::placeholders(1, columns.len() + 2),
        sets.join(", ")
    );
    let mut upsert = sqlx::query(&sql).bind(tenant);
    for column in &columns {
        upsert = upsert.bind(sums.get(column).copied().unwrap_or(0));
    }
    upsert.bind(at).execute(conn).await?;
    Ok(())
}

/// `billing.subscription.changed`: the tenant's plan and its revenue (`plan` `null`: no
/// subscription, no revenue).
async fn apply_subscription(
    conn: &mut AnyConnection,
    tenant: &str,
    data: &Value,
    at: i64,
    counters: &mut PendingCounters,
) -> sqlx::Result<()> {
    ensure_summary(conn, tenant, at).await?;
    counters.add(tenant, &[], at);
    let plan = data["plan"].as_str();
    let revenue = plan.and(data["mrr"].as_i64().zip(data["currency"].as_str()));
    sqlx::query(
        "UPDATE tenant_summary SET plan = $2, mrr = $3, mrr_currency = $4 WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(plan)
    .bind(revenue.map(|(mrr, _)| mrr))
    .bind(revenue.map(|(_, currency)| currency.to_ascii_uppercase()))
    .execute(conn)
    .await?;
    Ok(())
}

/// `auth.user.*`: the user's status moves the total and active counters.
async fn apply_user(
    conn: &mut AnyConnection,
    tenant: &str,
    event: &Event,
    counters: &mut PendingCounters,
) -> sqlx::Result<()> {
    let user = &event.aggregate_id;
    let old: Option<String> =
        sqlx::query_scalar("SELECT status FROM tenant_users WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
    let new = if event.event_type == "auth.user.deleted" {
        None
    } else {
        Some(
            event.data["status"]
                .as_str()
                .map(str::to_string)
                .or_else(|| old.clone())
                .unwrap_or_else(|| "active".to_string()),
        )
    };
    sqlx::query("DELETE FROM tenant_users WHERE tenant_id = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    if let Some(status) = &new {
        sqlx::query("INSERT INTO tenant_users (tenant_id, user_id, status) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(user)
            .bind(status)
            .execute(&mut *conn)
            .await?;
    }
    let exists = |s: &Option<String>| i64::from(s.is_some());
    let active = |s: &Option<String>| i64::from(s.as_deref() == Some("active"));
    counters.add(
        tenant,
        &[
            ("users_total", exists(&new) - exists(&old)),
            ("users_active", active(&new) - active(&old)),
        ],
        event.occurred_at.millis(),
    );
    Ok(())
}

/// A deal's status, value and currency as last seen.
#[derive(Debug, Clone, PartialEq)]
struct DealState {
    status: String,
    value: i64,
    currency: String,
}

impl DealState {
    fn is_open(&self) -> bool {
        self.status == "open"
    }
}

/// `crm.deal.*`: moves the deal's value out of the pipeline as it was and into it as it is.
async fn apply_deal(
    conn: &mut AnyConnection,
    tenant: &str,
    event: &Event,
    counters: &mut PendingCounters,
) -> sqlx::Result<()> {
    let deal = &event.aggregate_id;
    let at = event.occurred_at.millis();
    let old = sqlx::query(
        "SELECT status, value, currency FROM tenant_deals WHERE tenant_id = $1 AND deal_id = $2",
    )
    .bind(tenant)
    .bind(deal)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row: AnyRow| -> sqlx::Result<DealState> {
        Ok(DealState {
            status: row.try_get("status")?,
            value: row.try_get("value")?,
            currency: row.try_get("currency")?,
        })
    })
    .transpose()?;
    let new = if event.event_type == "crm.deal.deleted" {
        None
    } else {
        let data: &Value = &event.data;
        let base = old.clone().unwrap_or(DealState {
            status: "open".into(),
            value: 0,
            currency: String::new(),
        });
        Some(DealState {
            status: data["status"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(base.status),
            value: data["value"].as_i64().unwrap_or(base.value),
            currency: data["currency"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(base.currency),
        })
    };
    if old == new {
        return Ok(());
    }
    sqlx::query("DELETE FROM tenant_deals WHERE tenant_id = $1 AND deal_id = $2")
        .bind(tenant)
        .bind(deal)
        .execute(&mut *conn)
        .await?;
    if let Some(state) = &new {
        sqlx::query(
            "INSERT INTO tenant_deals (tenant_id, deal_id, status, value, currency) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(deal)
        .bind(&state.status)
        .bind(state.value)
        .bind(&state.currency)
        .execute(&mut *conn)
        .await?;
    }
    let mut open_delta = 0;
    if let Some(o) = old.as_ref().filter(|o| o.is_open()) {
        open_delta -= 1;
        add_pipeline(conn, tenant, &o.currency, -o.value).await?;
    }
    if let Some(n) = new.as_ref().filter(|n| n.is_open()) {
        open_delta += 1;
        add_pipeline(conn, tenant, &n.currency, n.value).await?;
    }
    counters.add(tenant, &[("open_deals", open_delta)], at);
    Ok(())
}

async fn add_pipeline(
    conn: &mut AnyConnection,
    tenant: &str,
    currency: &str,
    delta: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tenant_pipeline (tenant_id, currency, open_value) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id, currency) DO UPDATE SET \
         open_value = tenant_pipeline.open_value + excluded.open_value",
    )
    .bind(tenant)
    .bind(currency)
    .bind(delta)
    .execute(conn)
    .await?;
    Ok(())
}

// Reads

fn counters_from_row(row: &AnyRow) -> Result<TenantCounters, sqlx::Error> {
    Ok(TenantCounters {
        users_total: row.try_get("s_users_total")?,
        users_active: row.try_get("s_users_active")?,
        customers: row.try_get("s_customers")?,
        companies: row.try_get("s_companies")?,
        open_deals: row.try_get("s_open_deals")?,
    })
}

fn slots_from_row(row: &AnyRow) -> Result<ServiceSlots, sqlx::Error> {
    let mrr: Option<i64> = row.try_get("s_mrr")?;
    let currency: Option<String> = row.try_get("s_mrr_currency")?;
    Ok(ServiceSlots {
        content_items: row.try_get("s_content_items")?,
        plan: row.try_get("s_plan")?,
        mrr: mrr
            .zip(currency)
            .map(|(mrr, currency)| Revenue { currency, mrr })
            .into_iter()
            .collect(),
        analytics_events: row.try_get("s_analytics_events")?,
    })
}

/// The summary columns, named `s_*`, of the joined `tenant_summary s` (zero, or NULL for the
/// slots, without a row).
pub(super) const SUMMARY_COLUMNS: &str = "COALESCE(s.users_total, 0) AS s_users_total, \
     COALESCE(s.users_active, 0) AS s_users_active, COALESCE(s.customers, 0) AS s_customers, \
     COALESCE(s.companies, 0) AS s_companies, COALESCE(s.open_deals, 0) AS s_open_deals, \
     COALESCE(s.logins_24h, 0) AS s_logins_24h, \
     s.content_items AS s_content_items, s.plan AS s_plan, s.mrr AS s_mrr, \
     s.mrr_currency AS s_mrr_currency, s.analytics_events AS s_analytics_events";

/// A tenant's aggregates from a row with [`SUMMARY_COLUMNS`], and its open `pipeline`.
pub(super) fn columns_from_row(
    row: &AnyRow,
    pipeline: Vec<PipelineValue>,
) -> Result<SummaryColumns, sqlx::Error> {
    Ok(SummaryColumns {
        counters: counters_from_row(row)?,
        logins_24h: row.try_get("s_logins_24h")?,
        pipeline,
        slots: slots_from_row(row)?,
    })
}

/// The summary of the tenant with id or slug `key` (`None` for an unknown tenant).
pub async fn tenant_summary(pool: &AnyPool, key: &str) -> ApiResult<Option<TenantSummary>> {
    let Some(tenant) = super::tenant_by_key(pool, key).await? else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {SUMMARY_COLUMNS}, s.updated_at FROM tenant_summary s WHERE s.tenant_id = $1"
    ))
    .bind(&tenant.id)
    .fetch_optional(pool)
    .await?;
    let pipeline = pipeline(pool, Some(&tenant.id)).await?;
    let (columns, updated_at) = match row {
        Some(row) => (
            columns_from_row(&row, pipeline)?,
            Some(Timestamp(row.try_get("updated_at")?)),
        ),
        None => (
            SummaryColumns {
                pipeline,
                ..SummaryColumns::default()
            },
            None,
        ),
    };
    Ok(Some(TenantSummary {
        tenant_id: tenant.id,
        slug: tenant.slug,
        name: tenant.name,
        status: tenant.status,
        columns,
        updated_at,
    }))
}

/// Value of the open deals per currency (of one tenant, or of all), without zero amounts.
pub async fn pipeline(pool: &AnyPool, tenant_id: Option<&str>) -> ApiResult<Vec<PipelineValue>> {
    let rows = match tenant_id {
        Some(tenant) => {
            sqlx::query(
                "SELECT currency, open_value FROM tenant_pipeline \
                 WHERE tenant_id = $1 AND open_value <> 0 ORDER BY currency",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(
                "SELECT currency, CAST(SUM(open_value) AS BIGINT) AS open_value \
                 FROM tenant_pipeline GROUP BY currency \
                 HAVING CAST(SUM(open_value) AS BIGINT) <> 0 ORDER BY currency",
            )
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|row| -> Result<PipelineValue, sqlx::Error> {
            Ok(PipelineValue {
                currency: row.try_get("currency")?,
                open_value: row.try_get("open_value")?,
            })
        })
        .collect::<Result<_, _>>()?)
}

/// The platform overview at `now`: tenants by status, totals, activity of the last `days`.
pub async fn overview(pool: &AnyPool, now: Timestamp, days: i64) -> ApiResult<Overview> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM tenants GROUP BY status")
        .fetch_all(pool)
        .await?;
    let mut by_status = BTreeMap::new();
    let mut total = 0;
    for row in &rows {
        let status: String = row.try_get("status")?;
        let n: i64 = row.try_get("n")?;
        total += n;
        by_status.insert(status, n);
    }
    for status in ["active", "suspended"] {
        by_status.entry(status.to_string()).or_insert(0);
    }
    let sum = |c: &str| format!("COALESCE(CAST(SUM(s.{c}) AS BIGINT), 0) AS s_{c}");
    let row = sqlx::query(&format!(
        "SELECT {} FROM tenant_summary s JOIN tenants t ON t.id = s.tenant_id",
        COUNTERS
            .iter()
            .map(|c| sum(c))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .fetch_one(pool)
    .await?;
    let counters = counters_from_row(&row)?;
    let logins_24h: i64 = row.try_get("s_logins_24h")?;
    // SUM of NULLs is NULL: a slot stays `null` until some tenant's service filled it.
    let slot_totals = sqlx::query(
        "SELECT CAST(SUM(s.content_items) AS BIGINT) AS content_items, \
         CAST(SUM(s.analytics_events) AS BIGINT) AS analytics_events \
         FROM tenant_summary s JOIN tenants t ON t.id = s.tenant_id",
    )
    .fetch_one(pool)
    .await?;
    let mut plans = BTreeMap::new();
    let rows = sqlx::query(
        "SELECT s.plan, COUNT(*) AS n FROM tenant_summary s JOIN tenants t ON t.id = s.tenant_id \
         WHERE s.plan IS NOT NULL GROUP BY s.plan",
    )
    .fetch_all(pool)
    .await?;
    for row in &rows {
        plans.insert(
            row.try_get::<String, _>("plan")?,
            row.try_get::<i64, _>("n")?,
        );
    }
    let rows = sqlx::query(
        "SELECT s.mrr_currency AS currency, CAST(SUM(s.mrr) AS BIGINT) AS mrr \
         FROM tenant_summary s JOIN tenants t ON t.id = s.tenant_id \
         WHERE s.mrr_currency IS NOT NULL GROUP BY s.mrr_currency ORDER BY s.mrr_currency",
    )
    .fetch_all(pool)
    .await?;
    let mrr = rows
        .iter()
        .map(|row| -> Result<Revenue, sqlx::Error> {
            Ok(Revenue {
                currency: row.try_get("currency")?,
                mrr: row.try_get("mrr")?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let first_day = day_of(Timestamp(now.millis() - (days - 1) * DAY_MS));
    let rows = sqlx::query(
        "SELECT day, CAST(SUM(logins) AS BIGINT) AS logins, CAST(SUM(events) AS BIGINT) AS events \
         FROM activity_daily WHERE day >= $1 GROUP BY day",
    )
    .bind(&first_day)
    .fetch_all(pool)
    .await?;
    let mut seen = BTreeMap::new();
    for row in &rows {
        let day: String = row.try_get("day")?;
        seen.insert(day, (row.try_get("logins")?, row.try_get("events")?));
    }
    let activity = (0..days)
        .rev()
        .map(|back| {
            let day = day_of(Timestamp(now.millis() - back * DAY_MS));
            let (logins, events) = seen.get(&day).copied().unwrap_or((0, 0));
            DayActivity {
                day,
                logins,
                events,
            }
        })
        .collect();
    Ok(Overview {
        tenants: TenantsByStatus { total, by_status },
        totals: OverviewTotals {
            counters,
            logins_24h,
            pipeline: pipeline(pool, None).await?,
            content_items: slot_totals.try_get("content_items")?,
            plans,
            mrr,
            analytics_events: slot_totals.try_get("analytics_events")?,
        },
        activity,
    })
}

// Rebuild

/// The per-record tables a rebuild refills from the services' facts.
const RECORD_TABLES: &[&str] = &[
    "tenant_pipeline",
    "tenant_deals",
    "tenant_users",
    "tenant_logins",
];

/// Every fact-backed counter of every tenant: `(tenant, counter)` → value; pipeline values as
/// `pipeline.<currency>`.
async fn snapshot(conn: &mut AnyConnection) -> sqlx::Result<BTreeMap<(String, String), i64>> {
    let mut out = BTreeMap::new();
    let rows = sqlx::query(&format!(
        "SELECT tenant_id, {} FROM tenant_summary",
        COUNTERS.join(", ")
    ))
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let tenant: String = row.try_get("tenant_id")?;
        for counter in COUNTERS {
            out.insert(
                (tenant.clone(), counter.to_string()),
                row.try_get(*counter)?,
            );
        }
    }
    let rows = sqlx::query("SELECT tenant_id, currency, open_value FROM tenant_pipeline")
        .fetch_all(&mut *conn)
        .await?;
    for row in &rows {
        let currency: String = row.try_get("currency")?;
        out.insert(
            (row.try_get("tenant_id")?, format!("pipeline.{currency}")),
            row.try_get("open_value")?,
        );
    }
    out.retain(|_, value| *value != 0);
    Ok(out)
}

/// Writes one tenant's per-record state and counters as its facts say; its logins count
/// from `login_window` on.
async fn write_facts(
    conn: &mut AnyConnection,
    tenant: &str,
    facts: &TenantFacts,
    now: Timestamp,
    login_window: i64,
) -> sqlx::Result<()> {
    for user in &facts.users {
        sqlx::query("INSERT INTO tenant_users (tenant_id, user_id, status) VALUES ($1, $2, $3)")
            .bind(tenant)
            .bind(&user.id)
            .bind(&user.status)
            .execute(&mut *conn)
            .await?;
    }
    let horizon = now.millis() - RECENT_LOGINS_MS;
    for login in facts.logins.iter().filter(|l| l.at >= horizon) {
        sqlx::query(
            "INSERT INTO tenant_logins (login_id, tenant_id, at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&login.session_id)
        .bind(tenant)
        .bind(login.at)
        .execute(&mut *conn)
        .await?;
    }
    let mut pipeline: BTreeMap<&str, i64> = BTreeMap::new();
    for deal in &facts.deals {
        sqlx::query(
            "INSERT INTO tenant_deals (tenant_id, deal_id, status, value, currency) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(&deal.id)
        .bind(&deal.status)
        .bind(deal.value)
        .bind(&deal.currency)
        .execute(&mut *conn)
        .await?;
        if deal.status == "open" {
            *pipeline.entry(deal.currency.as_str()).or_default() += deal.value;
        }
    }
    for (currency, open_value) in &pipeline {
        add_pipeline(conn, tenant, currency, *open_value).await?;
    }
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    ensure_summary(conn, tenant, now.millis()).await?;
    sqlx::query(
        "UPDATE tenant_summary SET users_total = $2, users_active = $3, customers = $4, \
         companies = $5, open_deals = $6, logins_24h = $7 WHERE tenant_id = $1",
    )
    .bind(tenant)
    .bind(count(facts.users.len()))
    .bind(count(
        facts.users.iter().filter(|u| u.status == "active").count(),
    ))
    .bind(facts.customers)
    .bind(facts.companies)
    .bind(count(
        facts.deals.iter().filter(|d| d.status == "open").count(),
    ))
    .bind(count(
        facts.logins.iter().filter(|l| l.at >= login_window).count(),
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recomputes the aggregates of every tenant from `facts` (the services' own data, per
/// tenant; a tenant without facts has none of their records) and reports where the kept
/// counters differed. With `apply` the recomputed aggregates replace the kept ones, else
/// nothing changes. The activity per day is history from the audit trail and stays.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn rebuild_aggregates(
    db: &Db,
    facts: &BTreeMap<String, TenantFacts>,
    now: Timestamp,
    apply: bool,
) -> ApiResult<Vec<Drift>> {
    let mut tx = db.begin().await?;
    // Kept and recomputed `logins_24h` both count from the window's start, moved to
    // 24 hours before `now` (and held, locked) for the whole rebuild.
    let login_window = advance_login_window(&mut tx, now).await?;
    let before = snapshot(&mut tx).await?;
    for table in RECORD_TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *tx)
            .await?;
    }
    // Summaries of tenants that no longer exist go; the others keep their slots.
    sqlx::query("DELETE FROM tenant_summary WHERE tenant_id NOT IN (SELECT id FROM tenants)")
        .execute(&mut *tx)
        .await?;
    let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
        .fetch_all(&mut *tx)
        .await?;
    let none = TenantFacts::default();
    for tenant in &tenants {
        let facts = facts.get(tenant).unwrap_or(&none);
        write_facts(&mut tx, tenant, facts, now, login_window).await?;
    }
    let after = snapshot(&mut tx).await?;
    let mut drift = Vec::new();
    let keys: std::collections::BTreeSet<&(String, String)> =
        before.keys().chain(after.keys()).collect();
    for key in keys {
        let kept = before.get(key).copied().unwrap_or(0);
        let recomputed = after.get(key).copied().unwrap_or(0);
        if kept != recomputed {
            drift.push(Drift {
                tenant_id: key.0.clone(),
                counter: key.1.clone(),
                kept,
                recomputed,
            });
        }
    }
    if apply {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(drift)
}
