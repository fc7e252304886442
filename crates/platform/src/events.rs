//! Events (rule 5): every change that matters is written to the service's outbox in the
//! same transaction as the change, delivered at least once and in order by a relay, and
//! applied once by each consumer (dedup by event id in the consumer's own transaction).
//!
//! In the all-in-one topology the relay hands events to an in-process [`Bus`]; the relay
//! wakes on commit ([`Outbox::notify`]) and polls as a fallback for rows written by other
//! processes (e.g. `metatron admin create` while the server runs). With the NATS JetStream
//! transport ([`nats`]) the relay publishes to JetStream instead, and a durable consumer feeds
//! each process's bus.

pub mod nats;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Any, AnyConnection, Row, Transaction};
use tokio::sync::{Mutex, Notify};

use crate::db::Db;
use crate::ids::{new_id, Timestamp};

/// Who did something and through which request; carried by every event into the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    /// User or admin id; `None` for the system itself.
    pub id: Option<String>,
    /// `superadmin`, `admin`, `user`, `system`, or `anonymous` (a failed login).
    pub role: String,
    /// Display name (user name or email) for the audit trail.
    pub name: Option<String>,
    /// Request id of the HTTP request that caused the change.
    pub request_id: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
}

impl Actor {
    /// The platform itself (seeding, background tasks, CLI).
    pub fn system(what: &str) -> Self {
        Actor {
            id: None,
            role: "system".into(),
            name: Some(what.to_string()),
            request_id: None,
            ip: None,
        }
    }
}

/// One event as it travels between services.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// UUIDv7; consumers dedup by it.
    pub id: String,
    /// Emitting service, e.g. `auth`.
    pub source: String,
    /// Dotted type, e.g. `auth.user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Tenant the change belongs to; `None` for platform-level changes.
    pub tenant_id: Option<String>,
    /// Id of the entity that changed; events of one aggregate are delivered in order.
    pub aggregate_id: String,
    /// Who caused it.
    pub actor: Actor,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Type-specific payload: ids and changed field names, never secrets.
    pub data: Value,
}

impl Event {
    /// A new event of `event_type` from `source` about `aggregate_id`.
    pub fn new(
        source: &str,
        event_type: &str,
        tenant_id: Option<&str>,
        aggregate_id: &str,
        actor: &Actor,
        data: Value,
    ) -> Self {
        Event {
            id: new_id(),
            source: source.to_string(),
            event_type: event_type.to_string(),
            tenant_id: tenant_id.map(str::to_string),
            aggregate_id: aggregate_id.to_string(),
            actor: actor.clone(),
            occurred_at: Timestamp::now(),
            data,
        }
    }
}

/// Auth's `auth.user.created`: a tenant user exists (`tenant_id`, `aggregate_id` = user id).
/// Named here because other services (the CRM's owner replica) consume it.
pub const USER_CREATED: &str = "auth.user.created";
/// Auth's `auth.user.deleted`: the user is gone.
pub const USER_DELETED: &str = "auth.user.deleted";

/// Writes `event` to the outbox inside the caller's transaction.
pub async fn record(conn: &mut AnyConnection, event: &Event) -> Result<(), sqlx::Error> {
    let envelope = serde_json::to_string(event)
        .map_err(|e| sqlx::Error::Protocol(format!("event encoding: {e}")))?;
    sqlx::query(
        "INSERT INTO outbox (id, aggregate_id, event_type, envelope, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.id)
    .bind(&event.aggregate_id)
    .bind(&event.event_type)
    .bind(envelope)
    .bind(event.occurred_at.millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// A consumer's failure to apply an event; the event is redelivered later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<crate::ApiError> for HandlerError {
    fn from(e: crate::ApiError) -> Self {
        HandlerError(format!("{}: {}", e.code, e.message))
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError(e.to_string())
    }
}

/// A consumer of events.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Stable consumer name, the dedup key together with the event id.
    fn name(&self) -> &'static str;
    /// Whether this consumer wants events of this type.
    fn wants(&self, event_type: &str) -> bool;
    /// Applies the event; must be idempotent (use [`begin_once`]).
    async fn handle(&self, event: &Event) -> Result<(), HandlerError>;

    /// Applies several events in order (those this consumer wants, from one pass of a
    /// relay). A consumer that can apply them together (one transaction) overrides this; a
    /// failure may leave some applied, and they are delivered again one by one.
    async fn handle_batch(&self, events: &[&Event]) -> Result<(), HandlerError> {
        for event in events {
            self.handle(event).await?;
        }
        Ok(())
    }
}

/// Begins a transaction that applies `event` for `consumer`, or `None` when that consumer
/// already applied it. The dedup row commits or rolls back with the effect.
pub async fn begin_once(
    db: &Db,
    consumer: &str,
    event: &Event,
) -> Result<Option<Transaction<'static, Any>>, sqlx::Error> {
    let mut tx = db.begin().await?;
    if claim(db, &mut tx, consumer, &[event]).await?.is_empty() {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}

/// Rows per dedup insert (3 parameters each, well under every backend's limit).
const CLAIM_CHUNK: usize = 500;

/// Writes `consumer`'s dedup rows for `events` in the transaction `conn` of `db` and
/// answers the events not applied before, in order, each once (a repeat within `events`
/// counts as applied): the ones the caller applies in that same transaction.
pub async fn claim<'e>(
    db: &Db,
    conn: &mut AnyConnection,
    consumer: &str,
    events: &[&'e Event],
) -> Result<Vec<&'e Event>, sqlx::Error> {
    let now = Timestamp::now().millis();
    let mut fresh: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in events.chunks(CLAIM_CHUNK) {
        let sql = format!(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING event_id",
            crate::sql::values_list(db.backend(), chunk.len(), 3)
        );
        let mut insert = sqlx::query_scalar::<_, String>(&sql);
        for event in chunk {
            insert = insert.bind(consumer).bind(&event.id).bind(now);
        }
        fresh.extend(insert.fetch_all(&mut *conn).await?);
    }
    Ok(events
        .iter()
        .filter(|event| fresh.remove(&event.id))
        .copied()
        .collect())
}

/// The in-process event bus: delivers each event to every interested handler.
#[derive(Default)]
pub struct Bus {
    handlers: RwLock<Vec<Arc<dyn EventHandler>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Arc<Bus> {
        Arc::new(Bus::default())
    }

    /// Adds a consumer.
    pub fn subscribe(&self, handler: Arc<dyn EventHandler>) {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.push(handler);
        }
    }

    /// Delivers `events`, in order, to every interested handler, each handler taking all of
    /// its events at once; fails if any handler fails.
    pub async fn publish_batch(&self, events: &[Event]) -> Result<(), HandlerError> {
        let handlers: Vec<Arc<dyn EventHandler>> = match self.handlers.read() {
            Ok(h) => h.iter().cloned().collect(),
            Err(_) => return Err(HandlerError("event bus poisoned".into())),
        };
        for handler in handlers {
            let wanted: Vec<&Event> = events
                .iter()
                .filter(|e| handler.wants(&e.event_type))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            handler.handle_batch(&wanted).await.map_err(|e| {
                HandlerError(format!("{} failed on a batch: {}", handler.name(), e.0))
            })?;
        }
        Ok(())
    }

    /// Delivers `event` to every interested handler; fails if any of them fails.
    pub async fn publish(&self, event: &Event) -> Result<(), HandlerError> {
        let handlers: Vec<Arc<dyn EventHandler>> = match self.handlers.read() {
            Ok(h) => h
                .iter()
                .filter(|h| h.wants(&event.event_type))
                .cloned()
                .collect(),
            Err(_) => return Err(HandlerError("event bus poisoned".into())),
        };
        for handler in handlers {
            handler.handle(event).await.map_err(|e| {
                HandlerError(format!(
                    "{} failed on {}: {}",
                    handler.name(),
                    event.event_type,
                    e.0
                ))
            })?;
        }
        Ok(())
    }
}

/// Where a relay hands its outbox's events: the in-process [`Bus`] or a transport such as
/// [`nats::NatsPublisher`].
#[async_trait]
pub trait Destination: Send + Sync + std::fmt::Debug {
    /// Hands on `events` of `service`, in order. Answers how many of them (a prefix) were
    /// handed on, and the error that stopped it, if any.
    async fn deliver(&self, service: &str, events: &[Event]) -> (usize, Option<HandlerError>);

    /// Waits until events handed on earlier are applied by this process's consumers (a
    /// transport whose consumer runs in this process; the in-process bus applies them in
    /// [`Destination::deliver`] already).
    async fn settle(&self, _service: &str) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[async_trait]
impl Destination for Bus {
    async fn deliver(&self, _service: &str, events: &[Event]) -> (usize, Option<HandlerError>) {
        // The whole pass at once first (consumers may apply it in one transaction); after a
        // failure, one event at a time, to stop exactly at the failing one.
        if self.publish_batch(events).await.is_ok() {
            return (events.len(), None);
        }
        for (i, event) in events.iter().enumerate() {
            if let Err(e) = self.publish(event).await {
                return (i, Some(e));
            }
        }
        (events.len(), None)
    }
}

/// A consumer whose effects may record events in an outbox: see [`Outbox::waking_after`].
struct WakesRelay {
    consumer: Arc<dyn EventHandler>,
    wake: Arc<Notify>,
}

#[async_trait]
impl EventHandler for WakesRelay {
    fn name(&self) -> &'static str {
        self.consumer.name()
    }

    fn wants(&self, event_type: &str) -> bool {
        self.consumer.wants(event_type)
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let applied = self.consumer.handle(event).await;
        // After a failure too: what a batch committed before it must not wait for the poll.
        self.wake.notify_one();
        applied
    }

    async fn handle_batch(&self, events: &[&Event]) -> Result<(), HandlerError> {
        let applied = self.consumer.handle_batch(events).await;
        self.wake.notify_one();
        applied
    }
}

/// How long delivered events and consumers' dedup rows are kept (`[events]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Delivered outbox rows are kept this long (for inspection); 0 deletes them at once.
    pub outbox: Duration,
    /// Consumers remember the events they applied this long, so a redelivery within it is
    /// recognised; older dedup rows are pruned.
    pub dedup: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            outbox: Duration::ZERO,
            dedup: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How often the relay prunes what retention lets go.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A service's outbox and its relay to the bus (or another [`Destination`]).
#[derive(Clone, Debug)]
pub struct Outbox {
    db: Db,
    destination: Arc<dyn Destination>,
    wake: Arc<Notify>,
    delivering: Arc<Mutex<()>>,
    retention: Retention,
}

const BATCH: i64 = 256;

impl Outbox {
    /// The outbox of `db`, relaying to `bus`.
    pub fn new(db: Db, bus: Arc<Bus>) -> Self {
        Self::with_destination(db, bus)
    }

    /// The outbox of `db`, relaying to `destination`.
    pub fn with_destination(db: Db, destination: Arc<dyn Destination>) -> Self {
        Outbox {
            db,
            destination,
            wake: Arc::new(Notify::new()),
            delivering: Arc::new(Mutex::new(())),
            retention: Retention::default(),
        }
    }

    /// Keeps delivered events and dedup rows as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Removes delivered events and dedup rows older than their retention; answers how many
    /// rows went.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let now = crate::ids::Timestamp::now().millis();
        let age = |d: Duration| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let outbox =
            sqlx::query("DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at <= $1")
                .bind(age(self.retention.outbox))
                .execute(self.db.writer())
                .await?;
        let dedup = sqlx::query("DELETE FROM processed_events WHERE processed_at <= $1")
            .bind(age(self.retention.dedup))
            .execute(self.db.writer())
            .await?;
        Ok(outbox.rows_affected() + dedup.rows_affected())
    }

    /// Wakes the relay; call after committing a transaction that recorded events.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// `consumer`, waking this outbox's relay after every delivery to it. A service
    /// subscribes each of its consumers through this, so that the events a consumer records
    /// in the service's outbox (a purge reporting that it is done, a suspension revoking
    /// sessions) leave at once instead of at the relay's next poll, and a consumer added
    /// later cannot forget to wake it.
    pub fn waking_after(&self, consumer: Arc<dyn EventHandler>) -> Arc<dyn EventHandler> {
        Arc::new(WakesRelay {
            consumer,
            wake: self.wake.clone(),
        })
    }

    /// Delivers every pending event now and returns when done (or on the first failure,
    /// which keeps the remaining events, in order, for the next attempt). A caller that
    /// needs its own committed events applied everywhere before answering calls this.
    pub async fn flush(&self) -> Result<usize, HandlerError> {
        let delivered = self.relay_pending().await?;
        self.destination.settle(self.db.service()).await?;
        Ok(delivered)
    }

    async fn relay_pending(&self) -> Result<usize, HandlerError> {
        let _only_one = self.delivering.lock().await;
        let mut delivered = 0;
        loop {
            let rows = sqlx::query(
                "SELECT id, envelope FROM outbox WHERE delivered_at IS NULL ORDER BY id LIMIT $1",
            )
            .bind(BATCH)
            .fetch_all(self.db.reader())
            .await?;
            if rows.is_empty() {
                return Ok(delivered);
            }
            // Every row's id, and whether it decoded into the event of `events` at its turn.
            let mut decoded: Vec<(String, bool)> = Vec::with_capacity(rows.len());
            let mut events: Vec<Event> = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id")?;
                let envelope: String = row.try_get("envelope")?;
                match serde_json::from_str::<Event>(&envelope) {
                    Ok(event) => {
                        events.push(event);
                        decoded.push((id, true));
                    }
                    // An undecodable row can never be delivered; dropping it keeps the
                    // rest of the outbox moving, and it is logged for the operator.
                    Err(e) => {
                        tracing::error!(event_id = %id, error = %e, "dropping undecodable outbox row");
                        decoded.push((id, false));
                    }
                }
            }
            let (handed_on, error) = self.destination.deliver(self.db.service(), &events).await;
            // Rows before the first event not handed on are done (undecodable rows among them
            // too); the failing row stays, counted, with everything after it.
            let mut done: Vec<String> = Vec::with_capacity(rows.len());
            let mut failure = None;
            let mut seen = 0;
            for (id, is_event) in decoded {
                if is_event {
                    if seen == handed_on {
                        if let Some(e) = error {
                            failure = Some((id, e));
                        }
                        break;
                    }
                    seen += 1;
                }
                done.push(id);
            }
            // One statement removes (or, with a retention, marks) everything this pass
            // delivered; a failure also counts the attempt, atomically with that.
            let mut tx = match failure {
                Some(_) => Some(self.db.begin().await?),
                None => None,
            };
            if !done.is_empty() {
                let keep = !self.retention.outbox.is_zero();
                let ids = crate::sql::placeholders(if keep { 2 } else { 1 }, done.len());
                let sql = if keep {
                    format!("UPDATE outbox SET delivered_at = $1 WHERE id IN ({ids})")
                } else {
                    format!("DELETE FROM outbox WHERE id IN ({ids})")
                };
                let mut delete = sqlx::query(&sql);
                if keep {
                    delete = delete.bind(crate::ids::Timestamp::now().millis());
                }
                for id in &done {
                    delete = delete.bind(id);
                }
                match tx.as_mut() {
                    Some(tx) => delete.execute(&mut **tx).await?,
                    None => delete.execute(self.db.writer()).await?,
                };
            }
            if let (Some((id, _)), Some(mut tx)) = (&failure, tx) {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            delivered += done.len();
            if let Some((_, e)) = failure {
                return Err(e);
            }
        }
    }

    /// Runs the relay until the task is aborted: delivers on every wake-up, and polls every
    /// `poll` for rows committed by other processes. Failed deliveries back off up to 5 s.
    pub fn spawn_relay(&self, poll: Duration) -> tokio::task::JoinHandle<()> {
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            let mut pruned = tokio::time::Instant::now();
            loop {
                if pruned.elapsed() >= PRUNE_EVERY {
                    pruned = tokio::time::Instant::now();
                    if let Err(e) = outbox.prune().await {
                        tracing::warn!(service = outbox.db.service(), error = %e, "pruning delivered events failed");
                    }
                }
                match outbox.relay_pending().await {
                    Ok(_) => {
                        backoff = Duration::from_millis(50);
                        tokio::select! {
                            _ = outbox.wake.notified() => {}
                            _ = tokio::time::sleep(poll) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(service = outbox.db.service(), error = %e.0, "event delivery failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseSettings, PoolDefaults};
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        db: Db,
        seen: AtomicUsize,
        fail_first: AtomicUsize,
    }

    #[async_trait]
    impl EventHandler for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn wants(&self, event_type: &str) -> bool {
            event_type.starts_with("test.")
        }
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err(HandlerError("transient".into()));
            }
            if let Some(tx) = begin_once(&self.db, self.name(), event).await? {
                tx.commit().await?;
                self.seen.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }

    /// Answers every `test.ping` with a `test.pong` recorded in its own service's outbox.
    struct Echo {
        db: Db,
    }

    #[async_trait]
    impl EventHandler for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn wants(&self, event_type: &str) -> bool {
            event_type == "test.ping"
        }
        async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
            if let Some(mut tx) = begin_once(&self.db, self.name(), event).await? {
                let pong = Event::new(
                    "t",
                    "test.pong",
                    None,
                    &event.aggregate_id,
                    &Actor::system("echo"),
                    Value::Null,
                );
                record(&mut tx, &pong).await?;
                tx.commit().await?;
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn events_a_consumer_records_leave_on_commit_not_at_the_next_poll() {
        let (upstream_dir, own_dir) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (upstream, own) = (db(&upstream_dir).await, db(&own_dir).await);
        let bus = Bus::new();
        let upstream_outbox = Outbox::new(upstream.clone(), bus.clone());
        let own_outbox = Outbox::new(own.clone(), bus.clone());
        bus.subscribe(own_outbox.waking_after(Arc::new(Echo { db: own.clone() })));
        let relay = own_outbox.spawn_relay(Duration::from_secs(60));
        // Lets the relay finish its first pass, so only a wake-up can deliver the pong.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let ping = Event::new(
            "t",
            "test.ping",
            None,
            "a1",
            &Actor::system("test"),
            Value::Null,
        );
        let mut tx = upstream.begin().await.expect("begin");
        record(&mut tx, &ping).await.expect("record");
        tx.commit().await.expect("commit");
        assert_eq!(upstream_outbox.flush().await.expect("deliver"), 1);

        // Far sooner than the 60 s poll, with room for a loaded machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while own.count_rows("outbox").await.expect("count") > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pong waits for the poll"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.abort();
    }

    async fn db(dir: &tempfile::TempDir) -> Db {
        let url = crate::db::database_url("t", &DatabaseSettings::default(), dir.path());
        let db = Db::connect("t", &url, None, &PoolDefaults::default())
            .await
            .expect("connect");
        db.migrate(&[]).await.expect("migrate");
        db
    }

    #[tokio::test]
    async fn delivers_in_order_once_and_survives_a_failing_consumer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db(&dir).await;
        let bus = Bus::new();
        let handler = Arc::new(Counting {
            db: db.clone(),
            seen: AtomicUsize::new(0),
            // Fails the batch delivery and the one-by-one retry of the same pass.
            fail_first: AtomicUsize::new(2),
        });
        bus.subscribe(handler.clone());
        let outbox = Outbox::new(db.clone(), bus.clone());
        let event = Event::new(
            "t",
            "test.thing",
            None,
            "a1",
            &Actor::system("test"),
            Value::Null,
        );
        let mut tx = db.begin().await.expect("begin");
        record(&mut tx, &event).await.expect("record");
        record(
            &mut tx,
            &Event::new(
                "t",
                "other.thing",
                None,
                "a1",
                &Actor::system("t"),
                Value::Null,
            ),
        )
        .await
        .expect("record");
        tx.commit().await.expect("commit");

        assert!(outbox.flush().await.is_err(), "first delivery fails");
        assert_eq!(
            db.count_rows("outbox").await.expect("count"),
            2,
            "nothing lost"
        );
        assert_eq!(outbox.flush().await.expect("retry"), 2);
        assert_eq!(db.count_rows("outbox").await.expect("count"), 0);
        // A redelivery of the same event (at-least-once) has no second effect.
        bus.publish(&event).await.expect("redeliver");
        assert_eq!(handler.seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retention_keeps_delivered_events_until_pruned_and_never_redelivers_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db(&dir).await;
        let bus = Bus::new();
        let handler = Arc::new(Counting {
            db: db.clone(),
            seen: AtomicUsize::new(0),
            fail_first: AtomicUsize::new(0),
        });
        bus.subscribe(handler.clone());
        let keep = Retention {
            outbox: Duration::from_secs(3600),
            dedup: Duration::from_secs(3600),
        };
        let outbox = Outbox::new(db.clone(), bus.clone()).with_retention(keep);
        let mut tx = db.begin().await.expect("begin");
        for n in 0..3 {
            let event = Event::new(
                "t",
                "test.kept",
                None,
                &format!("a{n}"),
                &Actor::system("test"),
                Value::Null,
            );
            record(&mut tx, &event).await.expect("record");
        }
        tx.commit().await.expect("commit");
        assert_eq!(outbox.flush().await.expect("deliver"), 3);
        // Delivered, kept, and not delivered again.
        assert_eq!(db.count_rows("outbox").await.expect("count"), 3);
        assert_eq!(outbox.flush().await.expect("again"), 0);
        assert_eq!(handler.seen.load(Ordering::SeqCst), 3);
        // Within the retention nothing is pruned; with none, everything delivered goes.
        assert_eq!(outbox.prune().await.expect("prune"), 0);
        let none = Retention {
            outbox: Duration::ZERO,
            dedup: Duration::ZERO,
        };
        let pruning = Outbox::new(db.clone(), bus.clone()).with_retention(none);
        // Three outbox rows and three dedup rows.
        assert_eq!(pruning.prune().await.expect("prune"), 6);
        assert_eq!(db.count_rows("outbox").await.expect("count"), 0);
        assert_eq!(db.count_rows("processed_events").await.expect("count"), 0);
    }
}
