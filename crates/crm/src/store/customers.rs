//! Customers (contacts) and their tags.

use super::Removal;
use platform::caller::TenantScope;
use platform::db::{contains_pattern, Db};
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::group::GroupWriter;
use platform::ids::{new_id, Timestamp};
use platform::sql::{check_version, Conditions};
use platform::validate::Email;
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{
    check_reference, custom_from_text, field_definitions, tenant_conditions, Reference, Sort,
};
use crate::events;
use crate::model::{invalid_fields, merge_custom, sort_key, Customer, CustomerStatus, Entity};

/// Columns of a customer, read with its company's name (`c` customers, `co` companies).
pub(crate) const CUSTOMER_COLUMNS: &str = "c.id, c.first_name, c.last_name, c.email, c.phone, \
    c.company_id, co.name AS company_name, c.status, c.owner_id, c.tags, c.custom, \
    c.created_at, c.updated_at, c.version";
/// The join that adds the company's name.
pub(crate) const COMPANY_JOIN: &str =
    "LEFT JOIN companies co ON co.tenant_id = c.tenant_id AND co.id = c.company_id";

/// The sorts of the customer list: API name, column, numeric.
pub const CUSTOMER_SORTS: &[(&str, &str, bool)] = &[
    ("created", "created_at", true),
    ("updated", "updated_at", true),
    ("name", "name_key", false),
];

pub(crate) fn customer_from_row(row: &AnyRow) -> Result<Customer, sqlx::Error> {
    let status: String = row.try_get("status")?;
    let tags: String = row.try_get("tags")?;
    let custom: String = row.try_get("custom")?;
    Ok(Customer {
        id: row.try_get("id")?,
        first_name: row.try_get("first_name")?,
        last_name: row.try_get("last_name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        company_id: row.try_get("company_id")?,
        company_name: row.try_get("company_name")?,
        status: CustomerStatus::parse(&status).unwrap_or(CustomerStatus::Lead),
        owner_id: row.try_get("owner_id")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        custom: custom_from_text(&custom),
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

/// The sort value of a customer under `sort` (for its cursor).
pub fn customer_sort_value(c: &Customer, sort: &Sort) -> String {
    match sort.column {
        "updated_at" => c.updated_at.millis().to_string(),
        "name_key" => name_key(&c.first_name, &c.last_name),
        _ => c.created_at.millis().to_string(),
    }
}

/// The sort and search key of a customer's name (`name_key`).
pub(crate) fn name_key(first: &str, last: &str) -> String {
    sort_key(format!("{first} {last}").trim())
}

/// Filters of the customer list (all validated).
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Life-cycle stage.
    pub status: Option<CustomerStatus>,
    /// Has this tag (lower-cased).
    pub tag: Option<String>,
    /// Owned by this user.
    pub owner_id: Option<String>,
    /// Works for this company.
    pub company_id: Option<String>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_to: Option<Timestamp>,
    /// Case-insensitive substring of the name, email or company name.
    pub q: Option<String>,
}

impl CustomerFilter {
    /// Adds the filter's conditions (on table alias `c`).
    fn apply(&self, scope: &TenantScope, c: &mut Conditions) {
        if let Some(status) = self.status {
            let p = c.bind(status.as_str());
            c.and(format!("status = {p}"));
        }
        if let Some(tag) = &self.tag {
            let t = c.bind(scope.tenant_id());
            let p = c.bind(tag.as_str());
            c.and(format!(
                "id IN (SELECT customer_id FROM customer_tags WHERE tenant_id = {t} AND tag = {p})"
            ));
        }
        if let Some(owner) = &self.owner_id {
            let p = c.bind(owner.as_str());
            c.and(format!("owner_id = {p}"));
        }
        if let Some(company) = &self.company_id {
            let p = c.bind(company.as_str());
            c.and(format!("company_id = {p}"));
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
            let pattern = contains_pattern(q);
            let p1 = c.bind(pattern.as_str());
            let p2 = c.bind(pattern.as_str());
            let t = c.bind(scope.tenant_id());
            let p3 = c.bind(pattern);
            c.and(format!(
                "(name_key LIKE {p1} ESCAPE '\\' OR email_key LIKE {p2} ESCAPE '\\' \
                 OR company_id IN (SELECT id FROM companies WHERE tenant_id = {t} \
                 AND name_key LIKE {p3} ESCAPE '\\'))"
            ));
        }
    }
}

/// A page of the scope's customers matching `filter`, in `sort` order after `cursor`; at
/// most `limit` rows.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_customers(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &CustomerFilter,
    sort: &Sort,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Customer>> {
    // The page comes from the customers table alone (its indexes lead with tenant_id);
    // the company names are joined for those rows only.
    let mut c = tenant_conditions(scope);
    filter.apply(scope, &mut c);
    sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM (SELECT * FROM customers{where_sql}{inner} LIMIT {p}) c \
         {COMPANY_JOIN}{outer}",
        inner = sort.order_by(""),
        outer = sort.order_by("c."),
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(customer_from_row)
        .collect::<Result<_, _>>()?)
}

/// How many customers the tenant has.
pub async fn count_customers(pool: &AnyPool, scope: &TenantScope) -> ApiResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE tenant_id = $1")
            .bind(scope.tenant_id())
            .fetch_one(pool)
            .await?,
    )
}

/// The customer with this id in the scope's tenant.
pub async fn customer_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<Customer>> {
    if !platform::ids::is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {CUSTOMER_COLUMNS} FROM customers c {COMPANY_JOIN} \
         WHERE c.tenant_id = $1 AND c.id = $2"
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(customer_from_row).transpose()?)
}

/// A new customer (validated, but references and custom values not yet checked).
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// First name.
    pub first_name: String,
    /// Last name (may be empty).
    pub last_name: String,
    /// Email.
    pub email: Option<Email>,
    /// Phone.
    pub phone: Option<String>,
    /// Company id.
    pub company_id: Option<String>,
    /// Status.
    pub status: CustomerStatus,
    /// Owner (a user of the tenant).
    pub owner_id: Option<String>,
    /// Tags (normalized).
    pub tags: Vec<String>,
    /// Custom values (checked against the definitions here).
    pub custom: Map<String, Value>,
}

/// The fields a customer is created with, as `changed` of its creation event.
const CUSTOMER_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "status",
    "owner_id",
    "tags",
    "custom",
];

fn email_taken(e: sqlx::Error) -> ApiError {
    on_unique("email_taken", "a customer with this email already exists")(e)
}

/// Inserts a customer row and its tag rows.
pub(crate) async fn insert_customer(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    c: &Customer,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, id, first_name, last_name, name_key, email, \
         email_key, phone, company_id, status, owner_id, tags, custom, created_at, updated_at, \
         version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(scope.tenant_id())
    .bind(&c.id)
    .bind(&c.first_name)
    .bind(&c.last_name)
    .bind(name_key(&c.first_name, &c.last_name))
    .bind(&c.email)
    .bind(c.email.as_deref().map(sort_key))
    .bind(&c.phone)
    .bind(&c.company_id)
    .bind(c.status.as_str())
    .bind(&c.owner_id)
    .bind(serde_json::to_string(&c.tags).unwrap_or_else(|_| "[]".into()))
    .bind(Value::Object(c.custom.clone()).to_string())
    .bind(c.created_at.millis())
    .bind(c.updated_at.millis())
    .bind(c.version)
    .execute(&mut *conn)
    .await
    .map_err(email_taken)?;
    insert_tags(conn, scope, &c.id, &c.tags).await
}

async fn insert_tags(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
    tags: &[String],
) -> ApiResult<()> {
    if tags.is_empty() {
        return Ok(());
    }
    // One statement for all of them: `$1` the tenant, `$2` the customer, then one per tag.
    let rows: Vec<String> = (0..tags.len())
        .map(|i| format!("($1, ${}, $2)", i + 3))
        .collect();
    let sql = format!(
        "INSERT INTO customer_tags (tenant_id, tag, customer_id) VALUES {}",
        rows.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(scope.tenant_id()).bind(id);
    for tag in tags {
        q = q.bind(tag);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Checks the references and custom values of a customer about to be written.
async fn check_customer(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    c: &Customer,
    current_custom: &Map<String, Value>,
    custom_changes: &Map<String, Value>,
    check_company: bool,
) -> ApiResult<Map<String, Value>> {
    // The owner was checked against the user replica by the caller (the API).
    if let (true, Some(company)) = (check_company, &c.company_id) {
        check_reference(conn, scope, Reference::Company, "company_id", company).await?;
    }
    let defs = field_definitions(&mut *conn, scope, Entity::Customer).await?;
    merge_custom(&defs, current_custom, custom_changes).map_err(invalid_fields)
}

/// Creates a customer and records `crm.customer.created`. The write joins the next group
/// commit; custom values are checked against the definitions as they are now, the company
/// inside the writing transaction.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_customer(
    db: &Db,
    writes: &GroupWriter,
    scope: &TenantScope,
    new: NewCustomer,
    actor: &Actor,
) -> ApiResult<Customer> {
    let defs = field_definitions(db.reader(), scope, Entity::Customer).await?;
    let custom = merge_custom(&defs, &Map::new(), &new.custom).map_err(invalid_fields)?;
    let now = Timestamp::now();
    let mut customer = Customer {
        id: new_id(),
        first_name: new.first_name,
        last_name: new.last_name,
        email: new.email.map(Email::into_string),
        phone: new.phone,
        company_id: new.company_id,
        company_name: None,
        status: new.status,
        owner_id: new.owner_id,
        tags: new.tags,
        custom,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let event = events::changed(
        "customer",
        "created",
        scope.tenant_id(),
        &customer.id,
        actor,
        CUSTOMER_FIELDS,
    );
    let (row, scope) = (customer.clone(), scope.clone());
    customer.company_name = writes
        .write(move |conn| {
            let (row, scope, event) = (row.clone(), scope.clone(), event.clone());
            Box::pin(async move {
                let company_name = match &row.company_id {
                    Some(company) => Some(company_name(conn, &scope, company).await?),
                    None => None,
                };
                insert_customer(conn, &scope, &row).await?;
                record(conn, &event).await?;
                Ok(company_name)
            })
        })
        .await?;
    Ok(customer)
}

/// The name of a company of the scope's tenant; 422 on `company_id` when there is none.
async fn company_name(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    company_id: &str,
) -> ApiResult<String> {
    sqlx::query_scalar("SELECT name FROM companies WHERE tenant_id = $1 AND id = $2")
        .bind(scope.tenant_id())
        .bind(company_id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Invalid::new("company_id", "no such company in this tenant").into())
}

/// Changes to a customer (validated); `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct CustomerChanges {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Email.
    pub email: Option<Option<Email>>,
    /// Phone.
    pub phone: Option<Option<String>>,
    /// Company.
    pub company_id: Option<Option<String>>,
    /// Status.
    pub status: Option<CustomerStatus>,
    /// Owner.
    pub owner_id: Option<Option<String>>,
    /// Tags (the whole new list).
    pub tags: Option<Vec<String>>,
    /// Custom values to set (`null` removes one).
    pub custom: Option<Map<String, Value>>,
}

/// Applies `changes` when the customer is still at `expected` (if given) and records
/// `crm.customer.updated` naming the fields that really changed. No change, no event.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_customer(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: CustomerChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Customer> {
    let mut tx = db.begin().await?;
    let current = customer_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    check_version(expected, current.version)?;
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    apply_changes!(changes, next, changed; first_name, last_name, phone, company_id, status, owner_id, tags);
    if let Some(email) = changes.email {
        let email = email.map(Email::into_string);
        if email != next.email {
            next.email = email;
            changed.push("email");
        }
    }
    let custom_changes = changes.custom.unwrap_or_default();
    next.custom = check_customer(
        &mut tx,
        scope,
        &next,
        &current.custom,
        &custom_changes,
        changed.contains(&"company_id"),
    )
    .await?;
    if next.custom != current.custom {
        changed.push("custom");
    }
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE customers SET first_name = $1, last_name = $2, name_key = $3, email = $4, \
         email_key = $5, phone = $6, company_id = $7, status = $8, owner_id = $9, tags = $10, \
         custom = $11, updated_at = $12, version = $13 \
         WHERE tenant_id = $14 AND id = $15 AND version = $16",
    )
    .bind(&next.first_name)
    .bind(&next.last_name)
    .bind(name_key(&next.first_name, &next.last_name))
    .bind(&next.email)
    .bind(next.email.as_deref().map(sort_key))
    .bind(&next.phone)
    .bind(&next.company_id)
    .bind(next.status.as_str())
    .bind(&next.owner_id)
    .bind(serde_json::to_string(&next.tags).unwrap_or_else(|_| "[]".into()))
    .bind(Value::Object(next.custom.clone()).to_string())
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await
    .map_err(email_taken)?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "customers", "customer", id).await?);
    }
    if changed.contains(&"tags") {
        sqlx::query("DELETE FROM customer_tags WHERE tenant_id = $1 AND customer_id = $2")
            .bind(scope.tenant_id())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_tags(&mut tx, scope, id, &next.tags).await?;
    }
    record(
        &mut tx,
        &events::changed(
            "customer",
            "updated",
            scope.tenant_id(),
            id,
            actor,
            &changed,
        ),
    )
    .await?;
    let updated = customer_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    tx.commit().await?;
    Ok(updated)
}

/// Deleting a customer: its tags and the notes only about it go with it; its deals, stage
/// history and the notes also attached elsewhere lose the link.
pub const CUSTOMER_REMOVAL: Removal = Removal {
    table: "customers",
    noun: "customer",
    cascade: &[
        "DELETE FROM customer_tags WHERE tenant_id = $1 AND customer_id = $2",
        "DELETE FROM notes WHERE tenant_id = $1 AND customer_id = $2 \
         AND company_id IS NULL AND deal_id IS NULL",
        "UPDATE notes SET customer_id = NULL WHERE tenant_id = $1 AND customer_id = $2",
        "UPDATE deals SET customer_id = NULL WHERE tenant_id = $1 AND customer_id = $2",
        "UPDATE stage_changes SET customer_id = NULL WHERE tenant_id = $1 AND customer_id = $2",
    ],
};
