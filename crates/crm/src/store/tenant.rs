//! Whole-tenant operations.

use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::{record, Actor};
use platform::ApiResult;
use serde_json::json;
use sqlx::AnyConnection;

use crate::events;

/// Every table holding tenant data, children before parents.
pub const TENANT_TABLES: &[&str] = &[
    "notes",
    "stage_changes",
    "deals",
    "stages",
    "pipelines",
    "customer_tags",
    "customers",
    "companies",
    "field_definitions",
    "tenant_users",
];

/// Removes all of the tenant's CRM data in one transaction and records
/// `crm.tenant.purged` with the number of rows removed per table.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete_tenant_data(db: &Db, scope: &TenantScope, actor: &Actor) -> ApiResult<u64> {
    let mut tx = db.begin().await?;
    let total = delete_tenant_data_in(&mut tx, scope, actor).await?;
    tx.commit().await?;
    Ok(total)
}

/// [`delete_tenant_data`] inside the caller's transaction.
pub async fn delete_tenant_data_in(
    tx: &mut AnyConnection,
    scope: &TenantScope,
    actor: &Actor,
) -> ApiResult<u64> {
    let mut total = 0;
    let mut removed = serde_json::Map::new();
    for table in TENANT_TABLES {
        let n = sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
            .bind(scope.tenant_id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        total += n;
        removed.insert((*table).to_string(), json!(n));
    }
    record(
        tx,
        &events::record_event(
            "tenant",
            "purged",
            scope.tenant_id(),
            scope.tenant_id(),
            actor,
            json!({ "rows": total, "removed": removed }),
        ),
    )
    .await?;
    Ok(total)
}
