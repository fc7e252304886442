//! The audit log.

use platform::db::Db;
use platform::events::Event;
use platform::ids::Timestamp;
use platform::ApiResult;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use platform::db::escape_like;

use super::{Arg, Conditions, AUDIT_COLUMNS};
use crate::model::{ActionFilter, AuditActor, AuditEntry};

// Audit log

/// Audit rows per statement (11 values each).
const AUDIT_BATCH: usize = 40;

/// Writes audit entries for `events` in one transaction; an event already recorded (same
/// id) is left as it is, so redelivery is harmless.
pub async fn insert_audit(db: &Db, events: &[&Event]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for chunk in events.chunks(AUDIT_BATCH) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|r| {
                let p: Vec<String> = (1..=11).map(|c| format!("${}", r * 11 + c)).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
            rows.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for event in chunk {
            let detail = serde_json::to_string(&event.data)
                .map_err(|e| sqlx::Error::Protocol(format!("event data encoding: {e}")))?;
            q = q
                .bind(&event.id)
                .bind(event.occurred_at.millis())
                .bind(event.actor.id.clone())
                .bind(&event.actor.role)
                .bind(event.actor.name.clone())
                .bind(event.tenant_id.clone())
                .bind(&event.event_type)
                .bind(&event.aggregate_id)
                .bind(event.actor.request_id.clone())
                .bind(event.actor.ip.clone())
                .bind(detail);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Filters of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only this actor.
    pub actor_id: Option<String>,
    /// Only these event types.
    pub action: Option<ActionFilter>,
    /// Only entries at or after this time.
    pub from: Option<Timestamp>,
    /// Only entries before this time.
    pub to: Option<Timestamp>,
}

/// Audit entries newest first (by id) before `before`, at most `limit`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_audit(
    pool: &AnyPool,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<AuditEntry>> {
    let mut c = Conditions::default();
    if let Some(tenant_id) = &filter.tenant_id {
        let p = c.bind(Arg::Text(tenant_id.clone()));
        c.and(format!("tenant_id = {p}"));
    }
    if let Some(actor_id) = &filter.actor_id {
        let p = c.bind(Arg::Text(actor_id.clone()));
        c.and(format!("actor_id = {p}"));
    }
    match &filter.action {
        Some(ActionFilter::Exact(action)) => {
            let p = c.bind(Arg::Text(action.clone()));
            c.and(format!("action = {p}"));
        }
        Some(ActionFilter::Prefix(prefix)) if !prefix.is_empty() => {
            let p = c.bind(Arg::Text(format!("{}%", escape_like(prefix))));
            c.and(format!("action LIKE {p} ESCAPE '\\'"));
        }
        _ => {}
    }
    if let Some(from) = filter.from {
        let p = c.bind(Arg::Int(from.millis()));
        c.and(format!("occurred_at >= {p}"));
    }
    if let Some(to) = filter.to {
        let p = c.bind(Arg::Int(to.millis()));
        c.and(format!("occurred_at < {p}"));
    }
    if let Some(before) = before {
        let p = c.bind(Arg::Text(before.to_string()));
        c.and(format!("id < {p}"));
    }
    let where_sql = c.where_sql();
    let p = c.bind(Arg::Int(limit));
    let sql =
        format!("SELECT {AUDIT_COLUMNS} FROM audit_log{where_sql} ORDER BY id DESC LIMIT {p}");
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
}

fn audit_from_row(row: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    let detail: String = row.try_get("detail")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        occurred_at: Timestamp(row.try_get("occurred_at")?),
        actor: AuditActor {
            id: row.try_get("actor_id")?,
            role: row.try_get("actor_role")?,
            name: row.try_get("actor_name")?,
        },
        tenant_id: row.try_get("tenant_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        ip: row.try_get("ip")?,
        // Rows are written from serialized JSON; should one ever not parse, show it as text
        // rather than fail the whole page.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
    })
}
