//! The tenant list with each tenant's aggregates, in one of its orders
//! ([`crate::tenant_list::TenantSort`]).

use std::collections::BTreeMap;

use platform::db::contains_pattern;
use platform::ApiResult;
use sqlx::AnyPool;

use super::aggregates::{columns_from_row, SUMMARY_COLUMNS};
use super::{tenant_from_row, Arg, Conditions, TenantFilter, TENANT_COLUMNS};
use crate::aggregates::PipelineValue;
use crate::tenant_list::{TenantListItem, TenantSort};

/// A position in a sorted tenant list: the sort value and the id of the last item seen.
#[derive(Debug, Clone)]
pub enum SortValue {
    /// Of a text column.
    Text(String),
    /// Of a number column.
    Int(i64),
}

/// Tenants with their aggregates, in `sort` order after `after`, at most `limit`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_tenant_items(
    pool: &AnyPool,
    filter: &TenantFilter,
    sort: TenantSort,
    after: Option<(SortValue, String)>,
    limit: i64,
) -> ApiResult<Vec<TenantListItem>> {
    let mut c = Conditions::default();
    if let Some(status) = filter.status {
        let p = c.bind(Arg::Text(status.as_str().to_string()));
        c.and(format!("t.status = {p}"));
    }
    if let Some(client_id) = &filter.client_id {
        let p = c.bind(Arg::Text(client_id.clone()));
        c.and(format!("t.client_id = {p}"));
    }
    if let Some(q) = &filter.q {
        let pattern = contains_pattern(q);
        let p1 = c.bind(Arg::Text(pattern.clone()));
        let p2 = c.bind(Arg::Text(pattern));
        c.and(format!(
            "(LOWER(t.slug) LIKE {p1} ESCAPE '\\' OR LOWER(t.name) LIKE {p2} ESCAPE '\\')"
        ));
    }
    let key = sort.key_sql();
    let tiebreak = sort.tiebreak_sql();
    let (cmp, dir) = if sort.descending() {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((value, id)) = after {
        let v = c.bind(match value {
            SortValue::Text(s) => Arg::Text(s),
            SortValue::Int(n) => Arg::Int(n),
        });
        let p = c.bind(Arg::Text(id));
        // A row-value comparison, so that the order's index gives the range.
        c.and(format!("({key}, {tiebreak}) {cmp} ({v}, {p})"));
    }
    let where_sql = c.where_sql();
    let p = c.bind(Arg::Int(limit));
    let columns: Vec<String> = TENANT_COLUMNS
        .split(',')
        .map(|col| format!("t.{}", col.trim()))
        .collect();
    let sql = format!(
        "SELECT {}, {SUMMARY_COLUMNS} FROM {}{where_sql} \
         ORDER BY {key} {dir}, {tiebreak} {dir} LIMIT {p}",
        columns.join(", "),
        sort.tables_sql()
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    let tenants: Vec<String> = rows
        .iter()
        .map(|row| sqlx::Row::try_get(row, "id"))
        .collect::<Result<_, _>>()?;
    let mut pipelines = pipelines_of(pool, &tenants).await?;
    Ok(rows
        .iter()
        .map(|row| -> Result<TenantListItem, sqlx::Error> {
            let tenant = tenant_from_row(row)?;
            let pipeline = pipelines.remove(&tenant.id).unwrap_or_default();
            Ok(TenantListItem {
                summary: columns_from_row(row, pipeline)?,
                tenant,
            })
        })
        .collect::<Result<_, _>>()?)
}

/// The open pipeline per currency (non-zero values) of each of `tenants`, in one query.
async fn pipelines_of(
    pool: &AnyPool,
    tenants: &[String],
) -> ApiResult<BTreeMap<String, Vec<PipelineValue>>> {
    let mut out: BTreeMap<String, Vec<PipelineValue>> = BTreeMap::new();
    if tenants.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT tenant_id, currency, open_value FROM tenant_pipeline \
         WHERE tenant_id IN ({}) AND open_value <> 0 ORDER BY tenant_id, currency",
        platform::sql::placeholders(1, tenants.len())
    );
    let mut query = sqlx::query(&sql);
    for tenant in tenants {
        query = query.bind(tenant);
    }
    for row in query.fetch_all(pool).await? {
        let tenant: String = sqlx::Row::try_get(&row, "tenant_id")?;
        out.entry(tenant).or_default().push(PipelineValue {
            currency: sqlx::Row::try_get(&row, "currency")?,
            open_value: sqlx::Row::try_get(&row, "open_value")?,
        });
    }
    Ok(out)
}
