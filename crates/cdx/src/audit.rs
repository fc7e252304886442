//! The audit consumer: every event of every service becomes one `audit_log` row, keyed by the
//! event id so that at-least-once delivery still yields exactly one entry.

use async_trait::async_trait;
use platform::db::Db;
use platform::events::{Event, EventHandler, HandlerError};

use crate::store;

/// Writes every event it is handed into CDX's audit log.
#[derive(Debug, Clone)]
pub(crate) struct AuditConsumer {
    db: Db,
}

impl AuditConsumer {
    pub(crate) fn new(db: Db) -> Self {
        AuditConsumer { db }
    }
}

#[async_trait]
impl EventHandler for AuditConsumer {
    fn name(&self) -> &'static str {
        "cdx.audit"
    }

    fn wants(&self, _event_type: &str) -> bool {
        true
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.handle_batch(&[event]).await
    }

    async fn handle_batch(&self, events: &[&Event]) -> Result<(), HandlerError> {
        // The insert itself is idempotent (`ON CONFLICT (id) DO NOTHING`), so no separate
        // dedup row is needed.
        store::insert_audit(&self.db, events).await?;
        Ok(())
    }
}
