//! The SQL of the CSV import: what an import checks its rows against, read once before the
//! first row (a handful of queries, whatever the size of the file), and the whole import
//! written in one transaction with multi-row `INSERT`s and one outbox record.

use std::collections::{HashMap, HashSet};

use platform::caller::TenantScope;
use platform::db::{Backend, Db};
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::ids::Timestamp;
use platform::sql::{placeholders, values_list};
use platform::ApiResult;
use serde_json::{json, Value};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool, Row};

use super::{customer_from_row, field_definitions, name_key, COMPANY_JOIN, CUSTOMER_COLUMNS};
use crate::events;
use crate::model::{sort_key, Customer, Entity, FieldDefinition};

/// Rows per multi-row `INSERT` statement, by table. SQLite gets anonymous placeholders
/// (see [`values_list`]), which bind in constant time, and statements of a few thousand
/// values; PostgreSQL prefers fewer, larger statements (fewer round trips). Both stay below
/// SQLite's 32,766 and PostgreSQL's 65,535 bound values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Batches {
    /// Customers (12 bound values each, plus 2 shared).
    customers: usize,
    /// Tag rows (2 each, plus 1).
    tags: usize,
    /// Companies (3 each, plus 2).
    companies: usize,
}

impl Batches {
    fn for_backend(backend: Backend) -> Batches {
        match backend {
            Backend::Sqlite => Batches {
                customers: 256,
                tags: 1000,
                companies: 500,
            },
            Backend::Postgres => Batches {
                customers: 500,
                tags: 1000,
                companies: 500,
            },
        }
    }
}

/// Ids per `IN (...)` list when reading customers back.
const ID_BATCH: usize = 500;

/// What an import checks its rows against, read once before the first row.
#[derive(Debug, Default)]
pub struct ImportLookup {
    /// Ids of the tenant's customers by email key (lower-cased email).
    pub emails: HashMap<String, String>,
    /// Ids of the tenant's companies by name key; the oldest when names repeat.
    pub companies: HashMap<String, String>,
    /// Ids of all the tenant's companies.
    pub company_ids: HashSet<String>,
    /// The tenant's users (possible owners).
    pub users: HashSet<String>,
    /// The tenant's custom customer field definitions.
    pub customer_fields: Vec<FieldDefinition>,
    /// Whether companies have a required custom field: then an import cannot create one
    /// from a bare name.
    pub company_fields_required: bool,
}

/// Reads everything an import of the scope's tenant checks its rows against: existing
/// emails, companies by name, users and custom field definitions (one query each).
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn import_lookup(pool: &AnyPool, scope: &TenantScope) -> ApiResult<ImportLookup> {
    let tenant = scope.tenant_id();
    let mut lookup = ImportLookup::default();
    let rows = sqlx::query(
        "SELECT email_key, id FROM customers WHERE tenant_id = $1 AND email_key IS NOT NULL",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    lookup.emails.reserve(rows.len());
    for row in &rows {
        lookup
            .emails
            .insert(row.try_get("email_key")?, row.try_get("id")?);
    }
    let rows = sqlx::query("SELECT id, name_key FROM companies WHERE tenant_id = $1 ORDER BY id")
        .bind(tenant)
        .fetch_all(pool)
        .await?;
    for row in &rows {
        let id: String = row.try_get("id")?;
        lookup
            .companies
            .entry(row.try_get("name_key")?)
            .or_insert_with(|| id.clone());
        lookup.company_ids.insert(id);
    }
    let rows = sqlx::query("SELECT user_id FROM tenant_users WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_all(pool)
        .await?;
    for row in &rows {
        lookup.users.insert(row.try_get("user_id")?);
    }
    lookup.customer_fields = field_definitions(pool, scope, Entity::Customer).await?;
    lookup.company_fields_required = field_definitions(pool, scope, Entity::Company)
        .await?
        .iter()
        .any(|d| d.required);
    Ok(lookup)
}

/// The scope's customers with these ids (any order; unknown ids are left out), read in
/// batches of `IN` lists.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn customers_by_ids(
    pool: &AnyPool,
    scope: &TenantScope,
    ids: &[String],
) -> ApiResult<Vec<Customer>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ID_BATCH) {
        let list = placeholders(2, chunk.len());
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers c {COMPANY_JOIN} \
             WHERE c.tenant_id = $1 AND c.id IN ({list})"
        );
        let mut q = sqlx::query(&sql).bind(scope.tenant_id());
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(pool).await? {
            out.push(customer_from_row(&row)?);
        }
    }
    Ok(out)
}

/// A customer an import changes: its complete new state (version already incremented).
#[derive(Debug, Clone)]
pub struct ImportUpdate {
    /// The new state.
    pub customer: Customer,
    /// The version the change is based on (the row is left alone if it moved on).
    pub expected_version: i64,
    /// Whether the tag rows must be rewritten.
    pub tags_changed: bool,
}

/// Everything one import writes.
#[derive(Debug, Default)]
pub struct ImportWrite {
    /// Companies to create, named by the file: id and name.
    pub companies: Vec<(String, String)>,
    /// New customers (`created_at` = `updated_at` = `now`, version 1).
    pub created: Vec<Customer>,
    /// Changed existing customers.
    pub updated: Vec<ImportUpdate>,
    /// How many existing customers the file named without changing them.
    pub unchanged: usize,
    /// How many rows were skipped as invalid.
    pub skipped: usize,
}

/// Writes an import in one transaction: the companies it names, its new customers and
/// their tags in multi-row `INSERT`s, its updates (each conditional on the version read),
/// and one `crm.customers.imported` event with the counts. An email taken meanwhile
/// answers 409 `email_taken`, an update raced by another writer 409 with the current
/// version; either way nothing is written.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn write_import(
    db: &Db,
    scope: &TenantScope,
    import_id: &str,
    write: &ImportWrite,
    now: Timestamp,
    actor: &Actor,
) -> ApiResult<()> {
    let batches = Batches::for_backend(db.backend());
    let mut tx = db.begin().await?;
    let backend = db.backend();
    insert_companies(
        &mut tx,
        backend,
        scope,
        &write.companies,
        now,
        batches.companies,
    )
    .await?;
    insert_customers(
        &mut tx,
        backend,
        scope,
        &write.created,
        now,
        batches.customers,
    )
    .await?;
    let tag_rows: Vec<(&str, &str)> = write
        .created
        .iter()
        .flat_map(|c| c.tags.iter().map(|t| (c.id.as_str(), t.as_str())))
        .collect();
    insert_tag_rows(&mut tx, backend, scope, &tag_rows, batches.tags).await?;
    for update in &write.updated {
        update_customer_row(&mut tx, scope, update).await?;
    }
    let retagged: Vec<(&str, &str)> = write
        .updated
        .iter()
        .filter(|u| u.tags_changed)
        .flat_map(|u| {
            u.customer
                .tags
                .iter()
                .map(|t| (u.customer.id.as_str(), t.as_str()))
        })
        .collect();
    insert_tag_rows(&mut tx, backend, scope, &retagged, batches.tags).await?;
    record(
        &mut tx,
        &events::record_event(
            "customers",
            "imported",
            scope.tenant_id(),
            import_id,
            actor,
            json!({
                "created": write.created.len(),
                "updated": write.updated.len() + write.unchanged,
                "skipped": write.skipped,
                "companies_created": write.companies.len(),
            }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn email_taken(e: sqlx::Error) -> platform::ApiError {
    on_unique(
        "email_taken",
        "a customer with an email of the file was created meanwhile; nothing was imported",
    )(e)
}

/// Creates companies named by the file (no custom values), `batch` rows per statement.
async fn insert_companies(
    conn: &mut AnyConnection,
    backend: Backend,
    scope: &TenantScope,
    companies: &[(String, String)],
    now: Timestamp,
    batch: usize,
) -> ApiResult<()> {
    for chunk in companies.chunks(batch) {
        let sql = format!(
            "INSERT INTO companies (tenant_id, id, name, name_key, custom, created_at, \
             updated_at, version) VALUES {}",
            values_list(backend, chunk.len(), 8)
        );
        let mut q = sqlx::query(&sql);
        for (id, name) in chunk {
            q = q
                .bind(scope.tenant_id())
                .bind(id)
                .bind(name)
                .bind(sort_key(name))
                .bind("{}")
                .bind(now.millis())
                .bind(now.millis())
                .bind(1_i64);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Binds one customer's 16 values (in the column order of [`insert_customers`]).
fn bind_customer<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    scope: &'q TenantScope,
    c: &'q Customer,
    now: Timestamp,
) -> Query<'q, Any, AnyArguments<'q>> {
    q.bind(scope.tenant_id())
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
        .bind(now.millis())
        .bind(now.millis())
        .bind(1_i64)
}

/// Inserts new customers, `batch` rows per statement.
async fn insert_customers(
    conn: &mut AnyConnection,
    backend: Backend,
    scope: &TenantScope,
    customers: &[Customer],
    now: Timestamp,
    batch: usize,
) -> ApiResult<()> {
    let mut full_sql: Option<String> = None;
    for chunk in customers.chunks(batch) {
        let sql = match &full_sql {
            Some(sql) if chunk.len() == batch => sql.clone(),
            _ => {
                let sql = customer_insert_sql(backend, chunk.len());
                if chunk.len() == batch {
                    full_sql = Some(sql.clone());
                }
                sql
            }
        };
        let mut q = sqlx::query(&sql);
        for c in chunk {
            q = bind_customer(q, scope, c, now);
        }
        q.execute(&mut *conn).await.map_err(email_taken)?;
    }
    Ok(())
}

/// `INSERT INTO customers … VALUES` for `n` rows of 16 values.
fn customer_insert_sql(backend: Backend, n: usize) -> String {
    format!(
        "INSERT INTO customers (tenant_id, id, first_name, last_name, name_key, email, \
         email_key, phone, company_id, status, owner_id, tags, custom, created_at, updated_at, \
         version) VALUES {}",
        values_list(backend, n, 16)
    )
}

/// Inserts `(customer id, tag)` rows, `batch` per statement.
async fn insert_tag_rows(
    conn: &mut AnyConnection,
    backend: Backend,
    scope: &TenantScope,
    rows: &[(&str, &str)],
    batch: usize,
) -> ApiResult<()> {
    for chunk in rows.chunks(batch) {
        let sql = format!(
            "INSERT INTO customer_tags (tenant_id, customer_id, tag) VALUES {}",
            values_list(backend, chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for (id, tag) in chunk {
            q = q.bind(scope.tenant_id()).bind(*id).bind(*tag);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes one changed customer when it is still at the version read, and clears its tag
/// rows when the tags changed (the caller inserts the new ones).
async fn update_customer_row(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    u: &ImportUpdate,
) -> ApiResult<()> {
    let c = &u.customer;
    let updated = sqlx::query(
        "UPDATE customers SET first_name = $1, last_name = $2, name_key = $3, email = $4, \
         email_key = $5, phone = $6, company_id = $7, status = $8, owner_id = $9, tags = $10, \
         custom = $11, updated_at = $12, version = $13 \
         WHERE tenant_id = $14 AND id = $15 AND version = $16",
    )
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
    .bind(c.updated_at.millis())
    .bind(c.version)
    .bind(scope.tenant_id())
    .bind(&c.id)
    .bind(u.expected_version)
    .execute(&mut *conn)
    .await
    .map_err(email_taken)?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(conn, scope, "customers", "customer", &c.id).await?);
    }
    if u.tags_changed {
        sqlx::query("DELETE FROM customer_tags WHERE tenant_id = $1 AND customer_id = $2")
            .bind(scope.tenant_id())
            .bind(&c.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_number_their_placeholders() {
        let sql = customer_insert_sql(Backend::Postgres, 2);
        assert!(sql.ends_with("$15, $16), ($17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32)"));
        // The largest statements stay below the limits of bound values.
        for (backend, limit) in [(Backend::Sqlite, 32_766), (Backend::Postgres, 65_535)] {
            let b = Batches::for_backend(backend);
            assert!(b.customers * 16 <= limit);
            assert!(b.tags * 3 <= limit);
            assert!(b.companies * 8 <= limit);
        }
    }
}
