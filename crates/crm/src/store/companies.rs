//! Companies: the organisations customers work for and deals are made with.

use super::Removal;
use platform::caller::TenantScope;
use platform::db::{contains_pattern, Db};
use platform::events::{record, Actor};
use platform::ids::{new_id, Timestamp};
use platform::sql::{check_version, Conditions};
use platform::{ApiError, ApiResult};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{custom_from_text, field_definitions, tenant_conditions, Sort};
use crate::events;
use crate::model::{invalid_fields, merge_custom, sort_key, Company, Entity};

/// Columns of a company.
const COMPANY_COLUMNS: &str =
    "id, name, domain, industry, size, address, custom, created_at, updated_at, version";

/// The sorts of the company list: API name, column, numeric.
pub const COMPANY_SORTS: &[(&str, &str, bool)] = &[
    ("created", "created_at", true),
    ("updated", "updated_at", true),
    ("name", "name_key", false),
];

/// The fields a company is created with, as `changed` of its creation event.
const COMPANY_FIELDS: &[&str] = &["name", "domain", "industry", "size", "address", "custom"];

pub(crate) fn company_from_row(row: &AnyRow) -> Result<Company, sqlx::Error> {
    let custom: String = row.try_get("custom")?;
    Ok(Company {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        domain: row.try_get("domain")?,
        industry: row.try_get("industry")?,
        size: row.try_get("size")?,
        address: row.try_get("address")?,
        custom: custom_from_text(&custom),
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

/// The sort value of a company under `sort` (for its cursor).
pub fn company_sort_value(c: &Company, sort: &Sort) -> String {
    match sort.column {
        "updated_at" => c.updated_at.millis().to_string(),
        "name_key" => sort_key(&c.name),
        _ => c.created_at.millis().to_string(),
    }
}

/// Filters of the company list (all validated).
#[derive(Debug, Clone, Default)]
pub struct CompanyFilter {
    /// Exactly this industry.
    pub industry: Option<String>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_to: Option<Timestamp>,
    /// Case-insensitive substring of the name or the domain (lower-cased).
    pub q: Option<String>,
}

impl CompanyFilter {
    /// Adds the filter's conditions.
    fn apply(&self, c: &mut Conditions) {
        if let Some(industry) = &self.industry {
            let p = c.bind(industry.as_str());
            c.and(format!("industry = {p}"));
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
            // Domains are stored lower-cased, so both sides compare in lower case.
            let pattern = contains_pattern(q);
            let p1 = c.bind(pattern.as_str());
            let p2 = c.bind(pattern);
            c.and(format!(
                "(name_key LIKE {p1} ESCAPE '\\' OR domain LIKE {p2} ESCAPE '\\')"
            ));
        }
    }
}

/// A page of the scope's companies matching `filter`, in `sort` order after `cursor`; at
/// most `limit` rows.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_companies(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &CompanyFilter,
    sort: &Sort,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Company>> {
    let mut c = tenant_conditions(scope);
    filter.apply(&mut c);
    sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT {COMPANY_COLUMNS} FROM companies{where_sql}{order} LIMIT {p}",
        order = sort.order_by(""),
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(company_from_row)
        .collect::<Result<_, _>>()?)
}

/// The company with this id in the scope's tenant.
pub async fn company_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<Company>> {
    super::row_by_id(
        ex,
        scope,
        "companies",
        COMPANY_COLUMNS,
        id,
        company_from_row,
    )
    .await
}

/// A new company (validated; custom values checked here).
#[derive(Debug, Clone)]
pub struct NewCompany {
    /// Name.
    pub name: String,
    /// Web domain.
    pub domain: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Size.
    pub size: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Custom values.
    pub custom: Map<String, Value>,
}

/// Checks a company's custom values against the tenant's company field definitions;
/// answers the complete new set.
async fn check_custom(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    current: &Map<String, Value>,
    changes: &Map<String, Value>,
) -> ApiResult<Map<String, Value>> {
    let defs = field_definitions(&mut *conn, scope, Entity::Company).await?;
    merge_custom(&defs, current, changes).map_err(invalid_fields)
}

/// Creates a company and records `crm.company.created`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_company(
    db: &Db,
    scope: &TenantScope,
    new: NewCompany,
    actor: &Actor,
) -> ApiResult<Company> {
    let now = Timestamp::now();
    let mut company = Company {
        id: new_id(),
        name: new.name,
        domain: new.domain,
        industry: new.industry,
        size: new.size,
        address: new.address,
        custom: Map::new(),
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let mut tx = db.begin().await?;
    company.custom = check_custom(&mut tx, scope, &Map::new(), &new.custom).await?;
    sqlx::query(
        "INSERT INTO companies (tenant_id, id, name, name_key, domain, industry, size, address, \
         custom, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(scope.tenant_id())
    .bind(&company.id)
    .bind(&company.name)
    .bind(sort_key(&company.name))
    .bind(&company.domain)
    .bind(&company.industry)
    .bind(&company.size)
    .bind(&company.address)
    .bind(Value::Object(company.custom.clone()).to_string())
    .bind(company.created_at.millis())
    .bind(company.updated_at.millis())
    .bind(company.version)
    .execute(&mut *tx)
    .await?;
    record(
        &mut tx,
        &events::changed(
            "company",
            "created",
            scope.tenant_id(),
            &company.id,
            actor,
            COMPANY_FIELDS,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(company)
}

/// Changes to a company (validated); `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct CompanyChanges {
    /// Name.
    pub name: Option<String>,
    /// Web domain.
    pub domain: Option<Option<String>>,
    /// Industry.
    pub industry: Option<Option<String>>,
    /// Size.
    pub size: Option<Option<String>>,
    /// Address.
    pub address: Option<Option<String>>,
    /// Custom values to set (`null` removes one).
    pub custom: Option<Map<String, Value>>,
}

/// Applies `changes` when the company is still at `expected` (if given) and records
/// `crm.company.updated` naming the fields that really changed. No change, no event.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_company(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: CompanyChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Company> {
    let mut tx = db.begin().await?;
    let current = company_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("company"))?;
    check_version(expected, current.version)?;
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    apply_changes!(changes, next, changed; name, domain, industry, size, address);
    let custom_changes = changes.custom.unwrap_or_default();
    next.custom = check_custom(&mut tx, scope, &current.custom, &custom_changes).await?;
    if next.custom != current.custom {
        changed.push("custom");
    }
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE companies SET name = $1, name_key = $2, domain = $3, industry = $4, size = $5, \
         address = $6, custom = $7, updated_at = $8, version = $9 \
         WHERE tenant_id = $10 AND id = $11 AND version = $12",
    )
    .bind(&next.name)
    .bind(sort_key(&next.name))
    .bind(&next.domain)
    .bind(&next.industry)
    .bind(&next.size)
    .bind(&next.address)
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
        return Err(super::lost_race_of(&mut tx, scope, "companies", "company", id).await?);
    }
    record(
        &mut tx,
        &events::changed("company", "updated", scope.tenant_id(), id, actor, &changed),
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// Deleting a company: notes only about it go with it; its customers, deals, stage history
/// and the notes also attached elsewhere lose the link.
pub const COMPANY_REMOVAL: Removal = Removal {
    table: "companies",
    noun: "company",
    cascade: &[
        "DELETE FROM notes WHERE tenant_id = $1 AND company_id = $2 \
         AND customer_id IS NULL AND deal_id IS NULL",
        "UPDATE notes SET company_id = NULL WHERE tenant_id = $1 AND company_id = $2",
        "UPDATE customers SET company_id = NULL WHERE tenant_id = $1 AND company_id = $2",
        "UPDATE deals SET company_id = NULL WHERE tenant_id = $1 AND company_id = $2",
        "UPDATE stage_changes SET company_id = NULL WHERE tenant_id = $1 AND company_id = $2",
    ],
};
