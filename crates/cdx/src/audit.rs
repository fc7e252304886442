//! CDX's consumer: every event of every service becomes one `audit_log` row, keyed by the
//! event id so that at-least-once delivery still yields exactly one entry, appended to the
//! audit hash chain ([`crate::chain`]); in the same transaction the event moves the
//! aggregates ([`crate::aggregates`]).
//!
//! One transaction serves both because the audit entry doubles as the aggregates' dedup
//! record: an event whose entry exists was applied, so no separate dedup row is written, and
//! a batch costs one commit instead of two. That halves the statements on the path every
//! event takes from its service's outbox to the overview (the sync lag).

use std::collections::BTreeSet;

use async_trait::async_trait;
use platform::db::Db;
use platform::events::{Event, EventHandler, HandlerError};

use crate::aggregates::Aggregates;
use crate::live::Feed;
use crate::store;

/// Appends every event it is handed to CDX's audit log and applies it to the aggregates,
/// then hands the committed entries and the changed summaries to the live feed.
#[derive(Debug, Clone)]
pub(crate) struct CdxConsumer {
    db: Db,
    checkpoint_every: i64,
    feed: Feed,
    aggregates: Aggregates,
}

impl CdxConsumer {
    pub(crate) fn new(db: Db, checkpoint_every: i64, feed: Feed) -> Self {
        CdxConsumer {
            aggregates: Aggregates::new(db.clone(), feed.clone()),
            db,
            checkpoint_every,
            feed,
        }
    }
}

#[async_trait]
impl EventHandler for CdxConsumer {
    fn name(&self) -> &'static str {
        "cdx"
    }

    fn wants(&self, _event_type: &str) -> bool {
        // Every event is audited and counts towards the activity per day.
        true
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        self.handle_batch(&[event]).await
    }

    async fn handle_batch(&self, events: &[&Event]) -> Result<(), HandlerError> {
        // Held across the commit and the send, so the feed carries entries in seq order.
        let order = self.feed.lock().await;
        let mut tx = self.db.begin().await?;
        let appended =
            store::append_audit(&self.db, &mut tx, events, self.checkpoint_every).await?;
        if appended.events.is_empty() {
            tx.commit().await?;
            return Ok(());
        }
        store::apply_events(&mut tx, self.db.backend(), &appended.events).await?;
        tx.commit().await?;
        self.feed.publish(&appended.entries);
        drop(order);
        let tenants: BTreeSet<String> = appended
            .events
            .iter()
            .filter_map(|event| event.tenant_id.clone())
            .collect();
        self.aggregates.applied(tenants).await;
        Ok(())
    }
}
