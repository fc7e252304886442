//! All SQL of the CRM. Portable SQL through sqlx's `Any` driver (runs unchanged on SQLite and
//! PostgreSQL). Every function takes the caller's [`TenantScope`] and every statement is
//! limited to its tenant; writes run in one transaction together with their outbox rows.
//! Handlers never write SQL; they call these.

// Defined before the modules below so that they see it.
/// Applies each named field of `$changes` (an `Option` per field) to `$next` when it is
/// given and differs, naming it in `$changed` (the fields a change event reports).
macro_rules! apply_changes {
    ($changes:ident, $next:ident, $changed:ident; $($field:ident),+ $(,)?) => {
        $(
            if let Some(v) = &$changes.$field {
                if *v != $next.$field {
                    $next.$field = v.clone();
                    $changed.push(stringify!($field));
                }
            }
        )+
    };
}

mod companies;
mod customers;
mod deals;
mod fields;
mod import;
mod notes;
mod pipelines;
mod tenant;

pub use companies::*;
pub use customers::*;
pub use deals::*;
pub use fields::*;
pub use import::*;
pub use notes::*;
pub use pipelines::*;
pub use tenant::*;

use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::{record, Actor};
use platform::ids::is_uuid;
use platform::sql::{check_version, lost_race, Arg, Conditions};
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor};

/// A sort order of a list: a column with an index `(tenant_id, column, id)`, and a
/// direction. Pages continue after the last row's `(value, id)` (keyset), so rows inserted
/// between two page requests cause neither duplicates nor gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The column sorted by.
    pub column: &'static str,
    /// Whether the column holds integers (times, values) rather than text.
    pub numeric: bool,
    /// Newest / largest / last first.
    pub descending: bool,
}

impl Sort {
    /// Parses `?sort=`: one of `allowed` (API name, column, numeric), optionally prefixed
    /// with `-` for descending order; `default` when absent.
    pub fn parse(
        raw: Option<&str>,
        allowed: &[(&str, &'static str, bool)],
        default: &str,
    ) -> ApiResult<Sort> {
        let raw = raw
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default);
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw),
        };
        allowed
            .iter()
            .find(|(api, _, _)| *api == name)
            .map(|&(_, column, numeric)| Sort {
                column,
                numeric,
                descending,
            })
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|(api, _, _)| *api).collect();
                ApiError::bad_request(
                    "invalid_sort",
                    format!(
                        "sort must be one of {} (prefix - for descending)",
                        names.join(", ")
                    ),
                )
            })
    }

    /// Adds the keyset condition for a page after `cursor` (the decoded `value\nid` of the
    /// last row seen).
    pub fn continue_after(&self, c: &mut Conditions, cursor: Option<&str>) -> ApiResult<()> {
        let Some(cursor) = cursor else {
            return Ok(());
        };
        let invalid =
            || ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued");
        let (value, id) = cursor.rsplit_once('\n').ok_or_else(invalid)?;
        if !is_uuid(id) {
            return Err(invalid());
        }
        let value: Arg = if self.numeric {
            Arg::Int(value.parse().map_err(|_| invalid())?)
        } else {
            Arg::Text(value.to_string())
        };
        let v = c.bind(value);
        let i = c.bind(id);
        let op = if self.descending { "<" } else { ">" };
        c.and(format!("({col}, id) {op} ({v}, {i})", col = self.column));
        Ok(())
    }

    /// `ORDER BY …` for this sort, on columns of the table alias `prefix` (e.g. `c.`).
    pub fn order_by(&self, prefix: &str) -> String {
        let dir = if self.descending { "DESC" } else { "ASC" };
        format!(
            " ORDER BY {prefix}{col} {dir}, {prefix}id {dir}",
            col = self.column
        )
    }

    /// The cursor text of a row whose sort value is `value`.
    pub fn cursor(value: impl std::fmt::Display, id: &str) -> String {
        format!("{value}\n{id}")
    }
}

/// What deleting one record takes: its table, its noun (for errors and the
/// `crm.<noun>.deleted` event) and the statements that first detach or remove what refers to
/// it, each bound to `($1 tenant, $2 id)`.
#[derive(Debug)]
pub struct Removal {
    /// The record's table.
    pub table: &'static str,
    /// The record's noun.
    pub noun: &'static str,
    /// Clean-up statements, run in order before the record goes.
    pub cascade: &'static [&'static str],
}

/// The version of record `id` in `table`, if it exists in the scope's tenant.
async fn record_version(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    table: &str,
    id: &str,
) -> ApiResult<Option<i64>> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT version FROM {table} WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The error for a conditional write of record `id` in `table` that changed no row: a
/// concurrent writer committed first (409 with the version it left) or deleted the record
/// (404).
pub(crate) async fn lost_race_of(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    table: &str,
    noun: &str,
    id: &str,
) -> ApiResult<ApiError> {
    Ok(lost_race(
        record_version(conn, scope, table, id).await?,
        noun,
    ))
}

/// Deletes the record `id` of the scope's tenant when it is still at `expected` (if given),
/// with its clean-up, and records `crm.<noun>.deleted`, all in one transaction.
#[tracing::instrument(skip_all, fields(record = removal.noun), err(level = "debug"))]
pub async fn delete_record(
    db: &Db,
    scope: &TenantScope,
    removal: &Removal,
    id: &str,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<()> {
    if !is_uuid(id) {
        return Err(ApiError::not_found(removal.noun));
    }
    let mut tx = db.begin().await?;
    let current = record_version(&mut tx, scope, removal.table, id)
        .await?
        .ok_or_else(|| ApiError::not_found(removal.noun))?;
    check_version(expected, current)?;
    for sql in removal.cascade {
        sqlx::query(sql)
            .bind(scope.tenant_id())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let deleted = sqlx::query(&format!(
        "DELETE FROM {} WHERE tenant_id = $1 AND id = $2 AND version = $3",
        removal.table
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(lost_race_of(&mut tx, scope, removal.table, removal.noun, id).await?);
    }
    record(
        &mut tx,
        &crate::events::changed(removal.noun, "deleted", scope.tenant_id(), id, actor, &[]),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The row `id` of `table` in the scope's tenant, read as `columns` and decoded by
/// `decode`; `None` for an id that is not a UUID or not in the tenant.
pub(crate) async fn row_by_id<'e, T>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    table: &str,
    columns: &str,
    id: &str,
    decode: fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> ApiResult<Option<T>> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {columns} FROM {table} WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(decode).transpose()?)
}

/// Starts the conditions of a tenant's list: `tenant_id = $1` (a prefix of every index).
pub fn tenant_conditions(scope: &TenantScope) -> Conditions {
    let mut c = Conditions::default();
    let t = c.bind(scope.tenant_id());
    c.and(format!("tenant_id = {t}"));
    c
}

/// A record's custom values as stored (a JSON object in text).
pub(crate) fn custom_from_text(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Refuses a reference to a record that does not exist in the scope's tenant (as 422 on
/// `field`): another tenant's ids are indistinguishable from unknown ones.
pub(crate) async fn check_reference(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    table: Reference,
    field: &str,
    id: &str,
) -> ApiResult<()> {
    if !exists(&mut *conn, scope, table, id).await? {
        return Err(Invalid::new(field, format!("no such {} in this tenant", table.noun())).into());
    }
    Ok(())
}

/// Tables other records refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reference {
    Customer,
    Company,
    Deal,
    Owner,
}

impl Reference {
    fn noun(self) -> &'static str {
        match self {
            Reference::Customer => "customer",
            Reference::Company => "company",
            Reference::Deal => "deal",
            Reference::Owner => "user",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Reference::Customer => "SELECT 1 FROM customers WHERE tenant_id = $1 AND id = $2",
            Reference::Company => "SELECT 1 FROM companies WHERE tenant_id = $1 AND id = $2",
            Reference::Deal => "SELECT 1 FROM deals WHERE tenant_id = $1 AND id = $2",
            Reference::Owner => "SELECT 1 FROM tenant_users WHERE tenant_id = $1 AND user_id = $2",
        }
    }
}

/// Whether `id` names a row of `table` in the scope's tenant.
pub(crate) async fn exists<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    table: Reference,
    id: &str,
) -> ApiResult<bool> {
    if !is_uuid(id) {
        return Ok(false);
    }
    Ok(sqlx::query(table.sql())
        .bind(scope.tenant_id())
        .bind(id)
        .fetch_optional(ex)
        .await?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[(&str, &str, bool)] =
        &[("created", "created_at", true), ("name", "name_key", false)];

    #[test]
    fn sorts_parse_and_page() {
        let s = Sort::parse(Some("-created"), ALLOWED, "name").expect("valid");
        assert!(s.descending && s.numeric && s.column == "created_at");
        assert_eq!(
            Sort::parse(None, ALLOWED, "name").expect("valid").column,
            "name_key"
        );
        assert!(Sort::parse(Some("email"), ALLOWED, "name").is_err());
        let mut c = Conditions::default();
        let id = platform::ids::new_id();
        s.continue_after(&mut c, Some(&Sort::cursor(5, &id)))
            .expect("cursor");
        assert_eq!(c.where_sql(), " WHERE (created_at, id) < ($1, $2)");
        assert!(s
            .continue_after(&mut Conditions::default(), Some("x\ny"))
            .is_err());
        assert!(s
            .continue_after(&mut Conditions::default(), Some(&format!("x\n{id}")))
            .is_err());
        assert_eq!(s.order_by(""), " ORDER BY created_at DESC, id DESC");
        assert_eq!(s.order_by("c."), " ORDER BY c.created_at DESC, c.id DESC");
    }
}
