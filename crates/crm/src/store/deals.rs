//! Deals and their stage changes, the deal list and the board's queries.
//!
//! A deal's `status` follows the kind of its stage; entering a won or lost stage sets
//! `closed_at`, entering an open one clears it (and the close reason). Every stage a deal
//! enters, the first one included, is a row of `stage_changes` written in the same
//! transaction.

use super::Removal;
use platform::caller::TenantScope;
use platform::db::{contains_pattern, Db};
use platform::events::{record, Actor};
use platform::ids::{new_id, Timestamp};
use platform::sql::{check_version, Conditions};
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde_json::{json, Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{
    check_reference, custom_from_text, ensure_default_pipeline, field_definitions, pipeline_exists,
    take_first_stage, take_stage, tenant_conditions, Reference, Sort,
};
use crate::events;
use crate::model::{invalid_fields, merge_custom, sort_key, Deal, Entity, Stage, StageKind};

/// Columns of a deal.
const DEAL_COLUMNS: &str = "id, title, value, currency, pipeline_id, stage_id, status, \
    customer_id, company_id, owner_id, expected_close, closed_at, close_reason, custom, \
    created_at, updated_at, version";

/// The sorts of the deal list: API name, column, numeric.
pub const DEAL_SORTS: &[(&str, &str, bool)] = &[
    ("created", "created_at", true),
    ("updated", "updated_at", true),
    ("name", "title_key", false),
    ("title", "title_key", false),
    ("value", "value", true),
];

/// The fields a deal is created with, as `changed` of its creation event.
const DEAL_FIELDS: &[&str] = &[
    "title",
    "value",
    "currency",
    "pipeline_id",
    "stage_id",
    "status",
    "customer_id",
    "company_id",
    "owner_id",
    "expected_close",
    "close_reason",
    "custom",
];

/// A deal from a row of [`DEAL_COLUMNS`].
pub(crate) fn deal_from_row(row: &AnyRow) -> Result<Deal, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let custom: String = row.try_get("custom")?;
    let closed_at: Option<i64> = row.try_get("closed_at")?;
    Ok(Deal {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        value: row.try_get("value")?,
        currency: row.try_get("currency")?,
        pipeline_id: row.try_get("pipeline_id")?,
        stage_id: row.try_get("stage_id")?,
        status: StageKind::parse(&status).unwrap_or(StageKind::Open),
        customer_id: row.try_get("customer_id")?,
        company_id: row.try_get("company_id")?,
        owner_id: row.try_get("owner_id")?,
        expected_close: row.try_get("expected_close")?,
        closed_at: closed_at.map(Timestamp),
        close_reason: row.try_get("close_reason")?,
        custom: custom_from_text(&custom),
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

/// The sort value of a deal under `sort` (for its cursor).
pub fn deal_sort_value(d: &Deal, sort: &Sort) -> String {
    match sort.column {
        "updated_at" => d.updated_at.millis().to_string(),
        "title_key" => sort_key(&d.title),
        "value" => d.value.to_string(),
        _ => d.created_at.millis().to_string(),
    }
}

/// Filters of the deal list and the board (all validated).
#[derive(Debug, Clone, Default)]
pub struct DealFilter {
    /// In this stage.
    pub stage_id: Option<String>,
    /// In this pipeline.
    pub pipeline_id: Option<String>,
    /// Open, won or lost.
    pub status: Option<StageKind>,
    /// Owned by this user.
    pub owner_id: Option<String>,
    /// With this customer.
    pub customer_id: Option<String>,
    /// With this company.
    pub company_id: Option<String>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_to: Option<Timestamp>,
    /// Case-insensitive substring of the title.
    pub q: Option<String>,
}

impl DealFilter {
    /// Adds the filter's conditions (on unqualified deal columns).
    fn apply(&self, c: &mut Conditions) {
        let columns = [
            ("stage_id", &self.stage_id),
            ("pipeline_id", &self.pipeline_id),
            ("owner_id", &self.owner_id),
            ("customer_id", &self.customer_id),
            ("company_id", &self.company_id),
        ];
        for (column, value) in columns {
            if let Some(value) = value {
                let p = c.bind(value.as_str());
                c.and(format!("{column} = {p}"));
            }
        }
        if let Some(status) = self.status {
            let p = c.bind(status.as_str());
            c.and(format!("status = {p}"));
        }
        if let Some(from) = self.created_from {
            let p = c.bind(from.millis());
            c.and(format!("created_at >= {p}"));
        }
        if let Some(to) = self.created_to {
            let p = c.bind(to.millis());
            c.and(format!("created_at < {p}"));
        }
        if let Some(q) = &self.q {
            let p = c.bind(contains_pattern(q));
            c.and(format!("title_key LIKE {p} ESCAPE '\\'"));
        }
    }
}

/// A page of the scope's deals matching `filter`, in `sort` order after `cursor`; at most
/// `limit` rows.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_deals(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &DealFilter,
    sort: &Sort,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Deal>> {
    let mut c = tenant_conditions(scope);
    filter.apply(&mut c);
    sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT {DEAL_COLUMNS} FROM deals{where_sql}{order} LIMIT {p}",
        order = sort.order_by("")
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(deal_from_row).collect::<Result<_, _>>()?)
}

/// The newest `per_stage` deals of every stage among those matching `filter` (the board's
/// cards), grouped by stage, newest first within each.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn board_deals(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &DealFilter,
    per_stage: i64,
) -> ApiResult<Vec<Deal>> {
    let mut c = tenant_conditions(scope);
    filter.apply(&mut c);
    let where_sql = c.where_sql();
    let p = c.bind(per_stage);
    let sql = format!(
        "SELECT {DEAL_COLUMNS} FROM (SELECT d.*, ROW_NUMBER() OVER (PARTITION BY stage_id \
         ORDER BY created_at DESC, id DESC) AS board_rank FROM deals d{where_sql}) ranked \
         WHERE board_rank <= {p} ORDER BY stage_id, created_at DESC, id DESC"
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(deal_from_row).collect::<Result<_, _>>()?)
}

/// How many deals matching a filter one stage holds in one currency, and their total value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageTotal {
    /// The stage.
    pub stage_id: String,
    /// The currency.
    pub currency: String,
    /// Number of deals.
    pub deals: i64,
    /// Sum of their values, in minor units.
    pub value: i64,
}

/// Deal counts and value totals per stage and currency among the deals matching `filter`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn stage_totals(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &DealFilter,
) -> ApiResult<Vec<StageTotal>> {
    let mut c = tenant_conditions(scope);
    filter.apply(&mut c);
    let sql = format!(
        "SELECT stage_id, currency, COUNT(*) AS deals, CAST(SUM(value) AS BIGINT) AS total \
         FROM deals{where_sql} GROUP BY stage_id, currency ORDER BY stage_id, currency",
        where_sql = c.where_sql()
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|row| {
            Ok(StageTotal {
                stage_id: row.try_get("stage_id")?,
                currency: row.try_get("currency")?,
                deals: row.try_get("deals")?,
                value: row.try_get("total")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

/// The deal with this id in the scope's tenant.
pub async fn deal_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<Deal>> {
    super::row_by_id(ex, scope, "deals", DEAL_COLUMNS, id, deal_from_row).await
}

/// A new deal (validated; references, stage and custom values checked here).
#[derive(Debug, Clone)]
pub struct NewDeal {
    /// Title.
    pub title: String,
    /// Value in minor units.
    pub value: i64,
    /// Currency.
    pub currency: String,
    /// Pipeline; the tenant's default when absent.
    pub pipeline_id: Option<String>,
    /// Stage; the pipeline's first open stage when absent.
    pub stage_id: Option<String>,
    /// Customer.
    pub customer_id: Option<String>,
    /// Company.
    pub company_id: Option<String>,
    /// Owner.
    pub owner_id: Option<String>,
    /// Expected close date.
    pub expected_close: Option<String>,
    /// Custom values.
    pub custom: Map<String, Value>,
}

/// Refuses a close reason on a deal that ends up open.
fn check_close_reason(deal: &Deal) -> ApiResult<()> {
    if deal.status == StageKind::Open && deal.close_reason.is_some() {
        return Err(
            Invalid::new("close_reason", "only a won or lost deal has a close reason").into(),
        );
    }
    Ok(())
}

/// Puts `deal` in `stage`: its stage, status and `closed_at` (set when it closes, kept while
/// it stays closed, cleared when it reopens). A change of status also drops the close
/// reason, which explained the previous one.
fn enter_stage(deal: &mut Deal, stage: &Stage, now: Timestamp) {
    let was = deal.status;
    deal.stage_id = stage.id.clone();
    deal.status = stage.kind;
    if stage.kind != was {
        deal.close_reason = None;
    }
    match stage.kind {
        StageKind::Open => deal.closed_at = None,
        kind if kind != was || deal.closed_at.is_none() => deal.closed_at = Some(now),
        _ => {}
    }
}

/// Writes the `stage_changes` row of `deal` entering its current stage from `from`.
async fn insert_stage_change(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    deal: &Deal,
    from: Option<&str>,
    actor: &Actor,
    at: Timestamp,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO stage_changes (tenant_id, id, deal_id, customer_id, company_id, from_stage, \
         to_stage, actor_id, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(scope.tenant_id())
    .bind(new_id())
    .bind(&deal.id)
    .bind(&deal.customer_id)
    .bind(&deal.company_id)
    .bind(from)
    .bind(&deal.stage_id)
    .bind(&actor.id)
    .bind(at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `crm.deal.closed`: the status reached, and whether a reason was given (not the reason).
fn closed_event(scope: &TenantScope, deal: &Deal, actor: &Actor) -> platform::events::Event {
    events::record_event(
        "deal",
        "closed",
        scope.tenant_id(),
        &deal.id,
        actor,
        json!({
            "status": deal.status.as_str(),
            "has_reason": deal.close_reason.is_some(),
            "value": deal.value,
            "currency": deal.currency,
        }),
    )
}

/// `crm.deal.<action>` naming the changed fields, with the deal's current status, value and
/// currency (non-personal facts the CDX aggregates keep the pipeline from).
fn deal_event(
    scope: &TenantScope,
    deal: &Deal,
    action: &str,
    changed: &[&str],
    actor: &Actor,
) -> platform::events::Event {
    events::record_event(
        "deal",
        action,
        scope.tenant_id(),
        &deal.id,
        actor,
        json!({
            "changed": changed,
            "status": deal.status.as_str(),
            "value": deal.value,
            "currency": deal.currency,
        }),
    )
}

/// Checks the references and custom values of a deal about to be written.
async fn check_deal(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    deal: &Deal,
    current_custom: &Map<String, Value>,
    custom_changes: &Map<String, Value>,
    check: (bool, bool),
) -> ApiResult<Map<String, Value>> {
    // The owner was checked against the user replica by the caller (the API).
    if let (true, Some(customer)) = (check.0, &deal.customer_id) {
        check_reference(conn, scope, Reference::Customer, "customer_id", customer).await?;
    }
    if let (true, Some(company)) = (check.1, &deal.company_id) {
        check_reference(conn, scope, Reference::Company, "company_id", company).await?;
    }
    let defs = field_definitions(&mut *conn, scope, Entity::Deal).await?;
    merge_custom(&defs, current_custom, custom_changes).map_err(invalid_fields)
}

/// 422 on `stage_id`: not a stage of the deal's pipeline (nor of this tenant).
fn no_such_stage() -> ApiError {
    Invalid::new("stage_id", "no such stage in this pipeline").into()
}

/// 422 on `pipeline_id`: not a pipeline of this tenant.
fn no_such_pipeline() -> ApiError {
    Invalid::new("pipeline_id", "no such pipeline in this tenant").into()
}

/// Inserts a deal row.
async fn insert_deal(conn: &mut AnyConnection, scope: &TenantScope, d: &Deal) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO deals (tenant_id, id, title, title_key, value, currency, pipeline_id, \
         stage_id, status, customer_id, company_id, owner_id, expected_close, closed_at, \
         close_reason, custom, created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, \
         $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(scope.tenant_id())
    .bind(&d.id)
    .bind(&d.title)
    .bind(sort_key(&d.title))
    .bind(d.value)
    .bind(&d.currency)
    .bind(&d.pipeline_id)
    .bind(&d.stage_id)
    .bind(d.status.as_str())
    .bind(&d.customer_id)
    .bind(&d.company_id)
    .bind(&d.owner_id)
    .bind(&d.expected_close)
    .bind(d.closed_at.map(Timestamp::millis))
    .bind(&d.close_reason)
    .bind(Value::Object(d.custom.clone()).to_string())
    .bind(d.created_at.millis())
    .bind(d.updated_at.millis())
    .bind(d.version)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates a deal and records `crm.deal.created`.
pub async fn create_deal(
    db: &Db,
    scope: &TenantScope,
    new: NewDeal,
    actor: &Actor,
) -> ApiResult<Deal> {
    create_deal_with_reason(db, scope, new, None, actor).await
}

/// Creates a deal (with a close reason when it starts in a won or lost stage), writes its
/// first `stage_changes` row and records `crm.deal.created` (and `crm.deal.closed` when it
/// starts closed). The tenant's default pipeline is created on first use.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_deal_with_reason(
    db: &Db,
    scope: &TenantScope,
    new: NewDeal,
    close_reason: Option<String>,
    actor: &Actor,
) -> ApiResult<Deal> {
    let now = Timestamp::now();
    let mut deal = Deal {
        id: new_id(),
        title: new.title,
        value: new.value,
        currency: new.currency,
        pipeline_id: String::new(),
        stage_id: String::new(),
        status: StageKind::Open,
        customer_id: new.customer_id,
        company_id: new.company_id,
        owner_id: new.owner_id,
        expected_close: new.expected_close,
        closed_at: None,
        close_reason: None,
        custom: Map::new(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let mut tx = db.begin().await?;
    deal.custom = check_deal(
        &mut tx,
        scope,
        &deal,
        &Map::new(),
        &new.custom,
        (true, true),
    )
    .await?;
    deal.pipeline_id = match new.pipeline_id {
        Some(id) if pipeline_exists(&mut tx, scope, &id).await? => id,
        Some(_) => return Err(no_such_pipeline()),
        None => ensure_default_pipeline(&mut tx, scope, actor).await?,
    };
    let stage = match &new.stage_id {
        Some(id) => take_stage(&mut tx, scope, &deal.pipeline_id, id)
            .await?
            .ok_or_else(no_such_stage)?,
        None => take_first_stage(&mut tx, scope, &deal.pipeline_id, StageKind::Open)
            .await?
            .ok_or_else(|| Invalid::new("pipeline_id", "the pipeline has no open stage"))?,
    };
    enter_stage(&mut deal, &stage, now);
    deal.close_reason = close_reason;
    check_close_reason(&deal)?;
    insert_deal(&mut tx, scope, &deal).await?;
    insert_stage_change(&mut tx, scope, &deal, None, actor, now).await?;
    record(
        &mut tx,
        &deal_event(scope, &deal, "created", DEAL_FIELDS, actor),
    )
    .await?;
    if deal.status != StageKind::Open {
        record(&mut tx, &closed_event(scope, &deal, actor)).await?;
    }
    let created = deal_by_id(&mut *tx, scope, &deal.id)
        .await?
        .ok_or_else(|| ApiError::not_found("deal"))?;
    tx.commit().await?;
    Ok(created)
}

/// Changes to a deal (validated); `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct DealChanges {
    /// Title.
    pub title: Option<String>,
    /// Value in minor units.
    pub value: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
    /// Move to this pipeline (to `stage_id`, or its first stage of the deal's status).
    pub pipeline_id: Option<String>,
    /// Move to this stage of the (new) pipeline.
    pub stage_id: Option<String>,
    /// Move to the pipeline's first stage of this kind (unless the deal has it already);
    /// must agree with `stage_id` when both are given.
    pub status: Option<StageKind>,
    /// Customer.
    pub customer_id: Option<Option<String>>,
    /// Company.
    pub company_id: Option<Option<String>>,
    /// Owner.
    pub owner_id: Option<Option<String>>,
    /// Expected close date.
    pub expected_close: Option<Option<String>>,
    /// Why it was won or lost.
    pub close_reason: Option<Option<String>>,
    /// Custom values to set (`null` removes one).
    pub custom: Option<Map<String, Value>>,
}

/// The stage a deal moves to under `changes`, if it moves: the named stage, else the first of
/// the requested status, else (moving pipelines) the first of its current status.
async fn target_stage(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    current: &Deal,
    pipeline_id: &str,
    changes: &DealChanges,
) -> ApiResult<Option<Stage>> {
    let moved_pipeline = pipeline_id != current.pipeline_id;
    if let Some(id) = &changes.stage_id {
        if id == &current.stage_id && !moved_pipeline {
            if changes.status.is_some_and(|s| s != current.status) {
                return Err(Invalid::new("status", "does not match the kind of stage_id").into());
            }
            return Ok(None);
        }
        let stage = take_stage(conn, scope, pipeline_id, id)
            .await?
            .ok_or_else(no_such_stage)?;
        if changes.status.is_some_and(|s| s != stage.kind) {
            return Err(Invalid::new("status", "does not match the kind of stage_id").into());
        }
        return Ok(Some(stage));
    }
    let kind = match changes.status {
        Some(kind) if kind != current.status || moved_pipeline => kind,
        Some(_) => return Ok(None),
        None if moved_pipeline => current.status,
        None => return Ok(None),
    };
    let stage = take_first_stage(conn, scope, pipeline_id, kind)
        .await?
        .ok_or_else(|| {
            Invalid::new(
                "status",
                format!("the pipeline has no {} stage", kind.as_str()),
            )
        })?;
    Ok(Some(stage))
}

/// Applies `changes` when the deal is still at `expected` (if given) and records
/// `crm.deal.updated` naming the fields that really changed; a stage move also writes a
/// `stage_changes` row and records `crm.deal.stage_changed` (and `crm.deal.closed` when the
/// deal becomes won or lost). No change, no event.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_deal(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: DealChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Deal> {
    let mut tx = db.begin().await?;
    let current = deal_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deal"))?;
    check_version(expected, current.version)?;
    let now = Timestamp::now();
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    apply_changes!(changes, next, changed; title, value, currency, customer_id, company_id, owner_id, expected_close);
    let pipeline_id = changes
        .pipeline_id
        .clone()
        .unwrap_or_else(|| current.pipeline_id.clone());
    if pipeline_id != current.pipeline_id && !pipeline_exists(&mut tx, scope, &pipeline_id).await? {
        return Err(no_such_pipeline());
    }
    let custom_changes = changes.custom.clone().unwrap_or_default();
    next.custom = check_deal(
        &mut tx,
        scope,
        &next,
        &current.custom,
        &custom_changes,
        (
            changed.contains(&"customer_id"),
            changed.contains(&"company_id"),
        ),
    )
    .await?;
    if next.custom != current.custom {
        changed.push("custom");
    }
    let moved = target_stage(&mut tx, scope, &current, &pipeline_id, &changes).await?;
    if let Some(stage) = &moved {
        next.pipeline_id = pipeline_id;
        enter_stage(&mut next, stage, now);
    }
    if let Some(reason) = changes.close_reason {
        next.close_reason = reason;
    }
    check_close_reason(&next)?;
    for (field, differs) in [
        ("pipeline_id", next.pipeline_id != current.pipeline_id),
        ("stage_id", next.stage_id != current.stage_id),
        ("status", next.status != current.status),
        ("closed_at", next.closed_at != current.closed_at),
        ("close_reason", next.close_reason != current.close_reason),
    ] {
        if differs {
            changed.push(field);
        }
    }
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = now;
    let updated = sqlx::query(
        "UPDATE deals SET title = $1, title_key = $2, value = $3, currency = $4, \
         pipeline_id = $5, stage_id = $6, status = $7, customer_id = $8, company_id = $9, \
         owner_id = $10, expected_close = $11, closed_at = $12, close_reason = $13, \
         custom = $14, updated_at = $15, version = $16 \
         WHERE tenant_id = $17 AND id = $18 AND version = $19",
    )
    .bind(&next.title)
    .bind(sort_key(&next.title))
    .bind(next.value)
    .bind(&next.currency)
    .bind(&next.pipeline_id)
    .bind(&next.stage_id)
    .bind(next.status.as_str())
    .bind(&next.customer_id)
    .bind(&next.company_id)
    .bind(&next.owner_id)
    .bind(&next.expected_close)
    .bind(next.closed_at.map(Timestamp::millis))
    .bind(&next.close_reason)
    .bind(Value::Object(next.custom.clone()).to_string())
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "deals", "deal", id).await?);
    }
    record(
        &mut tx,
        &deal_event(scope, &next, "updated", &changed, actor),
    )
    .await?;
    if moved.is_some() {
        insert_stage_change(&mut tx, scope, &next, Some(&current.stage_id), actor, now).await?;
        record(
            &mut tx,
            &events::record_event(
                "deal",
                "stage_changed",
                scope.tenant_id(),
                id,
                actor,
                json!({
                    "from": current.stage_id,
                    "to": next.stage_id,
                    "status": next.status.as_str(),
                    "value": next.value,
                    "currency": next.currency,
                }),
            ),
        )
        .await?;
        if next.status != StageKind::Open && next.status != current.status {
            record(&mut tx, &closed_event(scope, &next, actor)).await?;
        }
    }
    let updated = deal_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deal"))?;
    tx.commit().await?;
    Ok(updated)
}

/// Deleting a deal: its stage history and the notes only about it go with it; notes also
/// attached to a customer or company lose the link.
pub const DEAL_REMOVAL: Removal = Removal {
    table: "deals",
    noun: "deal",
    cascade: &[
        "DELETE FROM notes WHERE tenant_id = $1 AND deal_id = $2 \
         AND customer_id IS NULL AND company_id IS NULL",
        "UPDATE notes SET deal_id = NULL WHERE tenant_id = $1 AND deal_id = $2",
        "DELETE FROM stage_changes WHERE tenant_id = $1 AND deal_id = $2",
    ],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn deal() -> Deal {
        Deal {
            id: new_id(),
            title: "T".into(),
            value: 0,
            currency: "EUR".into(),
            pipeline_id: new_id(),
            stage_id: new_id(),
            status: StageKind::Open,
            customer_id: None,
            company_id: None,
            owner_id: None,
            expected_close: None,
            closed_at: None,
            close_reason: None,
            custom: Map::new(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
        }
    }

    fn stage(kind: StageKind) -> Stage {
        Stage {
            id: new_id(),
            name: kind.as_str().into(),
            position: 0,
            kind,
        }
    }

    #[test]
    fn entering_stages_closes_and_reopens() {
        let mut d = deal();
        enter_stage(&mut d, &stage(StageKind::Won), Timestamp(5));
        assert_eq!(
            (d.status, d.closed_at),
            (StageKind::Won, Some(Timestamp(5)))
        );
        // Another won stage keeps the closing time; a lost one closes anew.
        enter_stage(&mut d, &stage(StageKind::Won), Timestamp(6));
        assert_eq!(d.closed_at, Some(Timestamp(5)));
        enter_stage(&mut d, &stage(StageKind::Lost), Timestamp(7));
        assert_eq!(
            (d.status, d.closed_at),
            (StageKind::Lost, Some(Timestamp(7)))
        );
        d.close_reason = Some("price".into());
        assert!(check_close_reason(&d).is_ok());
        enter_stage(&mut d, &stage(StageKind::Open), Timestamp(8));
        assert_eq!(
            (d.status, d.closed_at, d.close_reason.clone()),
            (StageKind::Open, None, None)
        );
        d.close_reason = Some("x".into());
        assert!(check_close_reason(&d).is_err());
    }
}
