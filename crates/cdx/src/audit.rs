//! The audit consumer: every event of every service becomes one `audit_log` row, keyed by the
//! event id so that at-least-once delivery still yields exactly one entry, appended to the
//! audit hash chain ([`crate::chain`]).

use async_trait::async_trait;
use platform::db::Db;
use platform::events::{Event, EventHandler, HandlerError};

use crate::live::Feed;
use crate::store;

/// Writes every event it is handed into CDX's audit log, then hands the committed entries
/// to the live feed.
#[derive(Debug, Clone)]
pub(crate) struct AuditConsumer {
    db: Db,
    checkpoint_every: i64,
    feed: Feed,
}

impl AuditConsumer {
    pub(crate) fn new(db: Db, checkpoint_every: i64, feed: Feed) -> Self {
        AuditConsumer {
            db,
            checkpoint_every,
            feed,
        }
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
        // The append skips events already recorded (same id) inside its own transaction, so
        // no separate dedup row is needed.
        // Held across the commit and the send, so the feed carries entries in seq order.
        let _order = self.feed.lock().await;
        let appended = store::insert_audit(&self.db, events, self.checkpoint_every).await?;
        self.feed.publish(&appended);
        Ok(())
    }
}
