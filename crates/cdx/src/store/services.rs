//! The service registry.

use platform::db::Db;
use platform::ids::Timestamp;
use platform::{ApiError, ApiResult};
use sqlx::{AnyPool, Row};

use crate::model::ServiceEntry;

// Service registry

/// Registers a service or updates its version and URL, keeping its health.
pub async fn upsert_service(db: &Db, name: &str, version: &str, url: &str) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO services (name, version, url, status, last_checked_at) \
         VALUES ($1, $2, $3, 'unknown', NULL) \
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, url = excluded.url",
    )
    .bind(name)
    .bind(version)
    .bind(url)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records a health check; `false` when no such service is registered.
pub async fn record_health(db: &Db, name: &str, status: &str, at: Timestamp) -> ApiResult<bool> {
    let mut tx = db.begin().await?;
    let updated =
        sqlx::query("UPDATE services SET status = $1, last_checked_at = $2 WHERE name = $3")
            .bind(status)
            .bind(at.millis())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok(updated > 0)
}

/// Every registered service, by name.
pub async fn list_services(pool: &AnyPool) -> ApiResult<Vec<ServiceEntry>> {
    let rows = sqlx::query(
        "SELECT name, version, url, status, last_checked_at FROM services ORDER BY name",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| -> Result<ServiceEntry, sqlx::Error> {
            Ok(ServiceEntry {
                name: r.try_get("name")?,
                version: r.try_get("version")?,
                url: r.try_get("url")?,
                status: r.try_get("status")?,
                last_checked_at: r
                    .try_get::<Option<i64>, _>("last_checked_at")?
                    .map(Timestamp),
            })
        })
        .collect::<Result<_, _>>()
        .map_err(ApiError::from)
}
