//! The live feed of committed audit entries and changed tenant summaries: a bounded
//! broadcast channel that CDX's consumer fills after each transaction
//! commits, and that the SSE streams (`/api/cdx/stream`, `/api/cdx/tenant-stream`) read.
//!
//! One message per committed audit batch, entries in `seq` order; CDX's consumer
//! publishes under a lock held from before its transaction until after the send, so those
//! messages arrive in commit (and therefore `seq`) order. Summaries carry no position: they
//! are the current state of a tenant's aggregates, not entries of the trail. Sending never waits: a receiver that falls more than the
//! channel's capacity behind loses messages and is told so (`Lagged`), which the stream turns
//! into its final `dropped` event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, Mutex, OwnedSemaphorePermit, Semaphore};

use crate::model::{ActionFilter, AuditEntry};

/// One committed audit entry, encoded once for every stream.
#[derive(Debug)]
pub(crate) struct LiveEntry {
    /// Position in the chain.
    pub(crate) seq: i64,
    /// Event type.
    pub(crate) action: String,
    /// Tenant, if any.
    pub(crate) tenant_id: Option<String>,
    /// The entry as `GET /api/cdx/audit` returns it (JSON).
    pub(crate) json: String,
}

impl LiveEntry {
    pub(crate) fn new(entry: &AuditEntry) -> Option<LiveEntry> {
        Some(LiveEntry {
            seq: entry.seq?,
            action: entry.action.clone(),
            tenant_id: entry.tenant_id.clone(),
            json: serde_json::to_string(entry).ok()?,
        })
    }
}

/// The event name of a changed tenant summary on the stream (and in its `type` filter).
pub(crate) const SUMMARY_EVENT: &str = "tenant.summary";

/// A tenant's aggregates after a change, encoded once for every stream.
#[derive(Debug)]
pub(crate) struct LiveSummary {
    /// The tenant.
    pub(crate) tenant_id: String,
    /// The summary as `GET /api/cdx/tenants/{id}/summary` returns it (JSON).
    pub(crate) json: String,
}

/// One message of the feed.
#[derive(Debug)]
pub(crate) enum Live {
    /// The entries of one committed transaction, in `seq` order.
    Entries(Vec<LiveEntry>),
    /// Tenant summaries changed by one committed transaction.
    Summaries(Vec<LiveSummary>),
}

/// A message as every stream receives it.
pub(crate) type Batch = Arc<Live>;

/// Which entries a stream wants.
#[derive(Debug, Clone, Default)]
pub(crate) struct LiveFilter {
    /// Only this tenant.
    pub(crate) tenant_id: Option<String>,
    /// Only these event types.
    pub(crate) action: Option<ActionFilter>,
}

impl LiveFilter {
    /// Whether an entry passes (the same matching as the audit list's SQL).
    pub(crate) fn matches(&self, tenant_id: Option<&str>, action: &str) -> bool {
        if let Some(want) = &self.tenant_id {
            if tenant_id != Some(want.as_str()) {
                return false;
            }
        }
        match &self.action {
            Some(ActionFilter::Exact(a)) => action == a,
            Some(ActionFilter::Prefix(p)) => action.starts_with(p.as_str()),
            None => true,
        }
    }
}

/// The feed: its channel, the publication lock, and the limit on open streams.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: broadcast::Sender<Batch>,
    order: Arc<Mutex<()>>,
    streams: Arc<Semaphore>,
    /// Bumped whenever the aggregates changed (see [`Feed::aggregates_version`]).
    aggregates: Arc<AtomicU64>,
}

impl Feed {
    /// A feed holding up to `capacity` messages per receiver, serving up to `max_streams`.
    pub(crate) fn new(capacity: usize, max_streams: usize) -> Feed {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Feed {
            tx,
            order: Arc::new(Mutex::new(())),
            streams: Arc::new(Semaphore::new(max_streams)),
            aggregates: Arc::default(),
        }
    }

    /// Records that a transaction of CDX's consumer moved the aggregates.
    pub(crate) fn aggregates_changed(&self) {
        self.aggregates.fetch_add(1, Ordering::Release);
    }

    /// Changes with every committed change of the aggregates in this process: what was
    /// computed from them at one version is still current while it stays the same.
    pub(crate) fn aggregates_version(&self) -> u64 {
        self.aggregates.load(Ordering::Acquire)
    }

    /// Held by the audit writer from before its transaction until after [`Feed::publish`].
    pub(crate) async fn lock(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.order.clone().lock_owned().await
    }

    /// Hands committed entries to every open stream; never waits.
    pub(crate) fn publish(&self, entries: &[AuditEntry]) {
        if entries.is_empty() || !self.listened() {
            return;
        }
        let batch: Vec<LiveEntry> = entries.iter().filter_map(LiveEntry::new).collect();
        // No receiver is not an error: nobody is listening.
        let _ = self.tx.send(Arc::new(Live::Entries(batch)));
    }

    /// Hands changed tenant summaries to every open stream; never waits.
    pub(crate) fn publish_summaries(&self, summaries: Vec<LiveSummary>) {
        if summaries.is_empty() {
            return;
        }
        let _ = self.tx.send(Arc::new(Live::Summaries(summaries)));
    }

    /// Whether any stream is open (else there is nothing to prepare for it).
    pub(crate) fn listened(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// A receiver of everything published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Batch> {
        self.tx.subscribe()
    }

    /// A slot for one more open stream, if any is free.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_the_audit_list() {
        let all = LiveFilter::default();
        assert!(all.matches(None, "cdx.tenant.created"));
        let tenant = LiveFilter {
            tenant_id: Some("t1".into()),
            action: None,
        };
        assert!(tenant.matches(Some("t1"), "x"));
        assert!(!tenant.matches(Some("t2"), "x"));
        assert!(!tenant.matches(None, "x"));
        let prefix = LiveFilter {
            tenant_id: None,
            action: Some(ActionFilter::Prefix("crm.customer.".into())),
        };
        assert!(prefix.matches(None, "crm.customer.created"));
        assert!(!prefix.matches(None, "crm.company.created"));
        let exact = LiveFilter {
            tenant_id: None,
            action: Some(ActionFilter::Exact("crm.customer.created".into())),
        };
        assert!(exact.matches(None, "crm.customer.created"));
        assert!(!exact.matches(None, "crm.customer.created2"));
    }

    #[test]
    fn admission_is_limited() {
        let feed = Feed::new(4, 2);
        let a = feed.admit();
        let b = feed.admit();
        assert!(a.is_some() && b.is_some());
        assert!(feed.admit().is_none());
        drop(a);
        assert!(feed.admit().is_some());
    }
}
