//! A tenant's data, exported by every service for data portability
//! (`GET /api/cdx/tenants/{id}/export` assembles one document from all of them).
//!
//! Each service answers a JSON object of its tenant-scoped tables, `{"<table>": [rows]}`,
//! leaving out what must never leave it (password hashes, tokens). CDX asks the services in
//! its own process directly ([`TenantExport`] on the service) and those in other processes
//! over HTTP ([`RemoteExport`], `GET /internal/<service>/tenants/{id}/export`).

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::db::Db;
use crate::error::ApiError;

/// Path of a service's internal export endpoint, for `service` and tenant `id`.
pub fn internal_path(service: &str, tenant_id: &str) -> String {
    format!("/internal/{service}/tenants/{tenant_id}/export")
}

/// Exports one service's data of a tenant.
#[async_trait]
pub trait TenantExport: Send + Sync {
    /// `{"<table>": [rows]}` of the tenant.
    async fn export_tenant(&self, tenant_id: &str) -> Result<Value, ApiError>;
}

/// One table of a service's export: its name and the columns that may leave the service.
pub type ExportTable = (&'static str, &'static str);

/// Reads `tables` (each `(table, "col1, col2, …")`, or `"*"`) of `tenant_id` from `db` as
/// JSON rows keyed by column, ordered by the first column.
pub async fn export_tables(
    db: &Db,
    tenant_id: &str,
    tables: &[ExportTable],
) -> Result<Value, ApiError> {
    let mut out = Map::new();
    for (table, columns) in tables {
        let rows = sqlx::query(&format!(
            "SELECT {columns} FROM {table} WHERE tenant_id = $1 ORDER BY 1"
        ))
        .bind(tenant_id)
        .fetch_all(db.reader())
        .await?;
        let rows: Vec<Value> = rows.iter().map(row_json).collect();
        out.insert((*table).to_string(), Value::Array(rows));
    }
    Ok(Value::Object(out))
}

/// One row as a JSON object; integers, reals and texts as themselves, NULL as `null`.
fn row_json(row: &sqlx::any::AnyRow) -> Value {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let is_null = row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
        let value = if is_null {
            Value::Null
        } else {
            let kind = column.type_info().name().to_ascii_uppercase();
            if kind.contains("BOOL") {
                row.try_get::<bool, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else if kind.contains("INT") {
                row.try_get::<i64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else if kind.contains("REAL") || kind.contains("FLOAT") || kind.contains("DOUBLE") {
                row.try_get::<f64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else {
                row.try_get::<String, _>(i)
                    .map(Value::from)
                    .or_else(|_| row.try_get::<i64, _>(i).map(Value::from))
                    .unwrap_or(Value::Null)
            }
        };
        object.insert(column.name().to_string(), value);
    }
    Value::Object(object)
}

/// A service in another process, asked over HTTP with this process's service token.
#[derive(Debug, Clone)]
pub struct RemoteExport {
    service: String,
    client: crate::remote::ServiceClient,
}

impl RemoteExport {
    /// The export of `service`, reached with `client`.
    pub fn new(service: &str, client: crate::remote::ServiceClient) -> Self {
        RemoteExport {
            service: service.to_string(),
            client,
        }
    }
}

#[async_trait]
impl TenantExport for RemoteExport {
    async fn export_tenant(&self, tenant_id: &str) -> Result<Value, ApiError> {
        if !crate::ids::is_uuid(tenant_id) {
            return Err(ApiError::not_found("tenant"));
        }
        self.client
            .get(&internal_path(&self.service, tenant_id))
            .await
    }
}
