//! Logins of the last 24 hours per tenant, kept as the column `tenant_summary.logins_24h`
//! so that the tenant list can order by it through an index (a count over a sliding window
//! cannot be indexed).
//!
//! The column counts each tenant's logins (`tenant_logins`) at or after
//! `login_window.counted_from`. A login arriving inside the window adds one; moving the
//! window forward ([`advance_login_window`]) takes off the logins it passes. Whoever moves
//! it, or counts new logins, locks the window's row first, so that no login is counted in
//! and forgotten out of step across processes.

use platform::db::Db;
use platform::ids::Timestamp;
use sqlx::{AnyConnection, Row};

use super::aggregates::DAY_MS;

/// Moves the window to start 24 hours before `now` (never back), inside the caller's
/// transaction, taking the logins it passes off their tenants' counts; answers where the
/// window starts.
pub(crate) async fn advance_login_window(
    conn: &mut AnyConnection,
    now: Timestamp,
) -> sqlx::Result<i64> {
    let counted_from: i64 = sqlx::query_scalar(
        "UPDATE login_window SET counted_from = counted_from WHERE id = 1 RETURNING counted_from",
    )
    .fetch_one(&mut *conn)
    .await?;
    let start = now.millis() - DAY_MS;
    if start <= counted_from {
        return Ok(counted_from);
    }
    let passed = sqlx::query(
        "SELECT tenant_id, COUNT(*) AS n FROM tenant_logins WHERE at >= $1 AND at < $2 \
         GROUP BY tenant_id",
    )
    .bind(counted_from)
    .bind(start)
    .fetch_all(&mut *conn)
    .await?;
    for row in &passed {
        sqlx::query("UPDATE tenant_summary SET logins_24h = logins_24h - $2 WHERE tenant_id = $1")
            .bind(row.try_get::<String, _>("tenant_id")?)
            .bind(row.try_get::<i64, _>("n")?)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE login_window SET counted_from = $1 WHERE id = 1")
        .bind(start)
        .execute(&mut *conn)
        .await?;
    Ok(start)
}

/// Takes the logins that turned 24 hours old off the counts, in a transaction of its own
/// (the timer behind [`crate::aggregates::LOGIN_EXPIRY_EVERY`]).
pub async fn expire_logins(db: &Db, now: Timestamp) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    advance_login_window(&mut tx, now).await?;
    tx.commit().await
}
