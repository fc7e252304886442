//! Whole-tenant operations.

use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::{record, Actor};
use platform::export::ExportTable;
use platform::ApiResult;
use serde_json::json;
use sqlx::AnyConnection;

use crate::events;

/// Every table holding tenant data, children before parents, with the primary key that
/// orders its rows after `tenant_id`. One list serves the purge and the export, so a new
/// table cannot be purged and forgotten by the export (or the reverse).
pub const TENANT_TABLES: &[ExportTable] = &[
    table("notes", &["id"]),
    table("stage_changes", &["id"]),
    table("deals", &["id"]),
    table("stages", &["id"]),
    table("pipelines", &["id"]),
    table("customer_tags", &["tag", "customer_id"]),
    table("customers", &["id"]),
    table("companies", &["id"]),
    table("field_definitions", &["id"]),
    table("tenant_users", &["user_id"]),
];

/// A CRM table exported whole: none of its columns is secret.
const fn table(name: &'static str, key: &'static [&'static str]) -> ExportTable {
    ExportTable {
        name,
        columns: "*",
        key,
    }
}

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
        let n = sqlx::query(&format!("DELETE FROM {} WHERE tenant_id = $1", table.name))
            .bind(scope.tenant_id())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        total += n;
        removed.insert(table.name.to_string(), json!(n));
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
