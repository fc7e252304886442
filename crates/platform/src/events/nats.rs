//! The NATS JetStream transport (distributed topology, or all-in-one through NATS).
//!
//! - **Streams**: one per service, `<PREFIX>_<SERVICE>` (e.g. `METATRON_AUTH`), holding the
//!   subjects `<prefix>.<service>.>`; created or updated idempotently before first use, with
//!   the retention limits of `[events]` (`nats_max_age_secs`, `nats_max_bytes`): the oldest
//!   messages are discarded beyond them, so a stream stays bounded although every consumer
//!   acknowledges (the stream keeps acknowledged messages for consumers yet to come).
//! - **Subjects**: `<prefix>.<service>.<event type without the service>`, e.g. auth's
//!   `auth.user.created` is published on `metatron.auth.user.created`.
//! - **Publishing** ([`NatsPublisher`], an outbox [`Destination`]): the relay publishes its
//!   rows in order, one at a time, with the `Nats-Msg-Id` header set to the event id (the
//!   stream's duplicate window drops re-publishes), awaits each ack, and deletes the rows only
//!   after their acks. When NATS is down, publishing fails, the rows stay, and the relay
//!   retries with back-off.
//! - **Consuming** ([`NatsConsumer`]): one durable pull consumer per stream, named after the
//!   consuming process, explicit acks after the process's [`Bus`] applied the events. One task
//!   per stream keeps each stream's order; a failing handler is retried in place with
//!   back-off (the messages' ack deadline is extended meanwhile), so a later event never
//!   overtakes a failing one. After a crash, unacknowledged messages come again after the ack
//!   wait; handlers dedup by event id, so a redelivery has no second effect.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Bus, Destination, Event, HandlerError};

/// Which transport carries events between services (`[events] transport`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// The in-process bus (all-in-one).
    #[default]
    Local,
    /// NATS JetStream.
    Nats,
}

/// Event transport settings (`[events]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// `local` (in-process bus) or `nats` (JetStream).
    pub transport: Transport,
    /// NATS server URL.
    pub nats_url: String,
    /// Prefix of stream names (upper-cased) and subjects.
    pub prefix: String,
    /// Durable consumer name of this process; default `<prefix>-<process>`.
    pub consumer: Option<String>,
    /// How often a relay looks for rows committed by other processes (it also wakes on
    /// commit).
    pub poll_ms: u64,
    /// How long a publish waits for its ack (and a flush for the local consumer).
    pub request_timeout_ms: u64,
    /// How long delivered events stay in the outbox (0: deleted at delivery).
    pub outbox_retention_secs: u64,
    /// How long consumers remember the events they applied (redeliveries within it are
    /// recognised and skipped).
    pub dedup_retention_secs: u64,
    /// How long a service's JetStream stream keeps a message (0: no limit). A consumer that
    /// stays away longer misses the older events.
    pub nats_max_age_secs: u64,
    /// How many bytes a service's stream may hold before its oldest messages are discarded
    /// (0: no limit).
    pub nats_max_bytes: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            transport: Transport::Local,
            nats_url: "nats://127.0.0.1:4222".into(),
            prefix: "metatron".into(),
            consumer: None,
            poll_ms: 1000,
            request_timeout_ms: 5000,
            outbox_retention_secs: 0,
            dedup_retention_secs: 7 * 24 * 3600,
            nats_max_age_secs: 7 * 24 * 3600,
            nats_max_bytes: 0,
        }
    }
}

impl EventSettings {
    /// What the outboxes keep.
    pub fn retention(&self) -> crate::events::Retention {
        crate::events::Retention {
            outbox: Duration::from_secs(self.outbox_retention_secs),
            dedup: Duration::from_secs(self.dedup_retention_secs),
        }
    }

    /// The relay's poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms.max(1))
    }

    /// The retention limits of every stream.
    fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            // JetStream reads 0 as "no limit" for both.
            max_age: Duration::from_secs(self.nats_max_age_secs),
            max_bytes: i64::try_from(self.nats_max_bytes).unwrap_or(i64::MAX),
        }
    }

    /// The durable consumer name of process `process` (e.g. `all`, `auth`).
    pub fn consumer_name(&self, process: &str) -> String {
        self.consumer
            .clone()
            .unwrap_or_else(|| format!("{}-{process}", self.prefix))
    }
}

/// How much a stream keeps before it discards its oldest messages.
#[derive(Debug, Clone, Copy)]
struct StreamLimits {
    max_age: Duration,
    max_bytes: i64,
}

/// Per-stream positions: the last sequence this process published, and the last one its
/// consumer applied, so a flush can wait until its own events are applied (read-your-writes
/// all-in-one).
#[derive(Debug)]
struct Position {
    published: u64,
    applied: watch::Sender<u64>,
    consumed_here: bool,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    prefix: String,
    timeout: Duration,
    limits: StreamLimits,
    positions: Mutex<HashMap<String, Position>>,
    ready_streams: Mutex<Vec<String>>,
}

/// A connection to NATS JetStream; cheap to clone.
#[derive(Clone)]
pub struct Nats(Arc<Inner>);

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("prefix", &self.0.prefix)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> HandlerError {
    HandlerError(format!("nats: {e}"))
}

impl Nats {
    /// Connects to `settings.nats_url`. An unreachable server is not an error: the client
    /// keeps reconnecting in the background, and publishing fails (events wait in the
    /// outbox) until it is back.
    pub async fn connect(settings: &EventSettings) -> Result<Nats, HandlerError> {
        let client = async_nats::ConnectOptions::new()
            .name("metatron")
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            // Back soon after an outage: at most a second between reconnect attempts.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((25u64 << attempts.min(6)).min(1000))
            })
            .connect(settings.nats_url.as_str())
            .await
            .map_err(err)?;
        let timeout = Duration::from_millis(settings.request_timeout_ms.max(1));
        // Give a reachable server the time to answer, so the first publish finds it.
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(2));
        while client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        Ok(Nats(Arc::new(Inner {
            client,
            js,
            prefix: settings.prefix.clone(),
            timeout,
            limits: settings.stream_limits(),
            positions: Mutex::new(HashMap::new()),
            ready_streams: Mutex::new(Vec::new()),
        })))
    }

    /// The stream name of `service`, e.g. `METATRON_AUTH`.
    pub fn stream_name(&self, service: &str) -> String {
        format!("{}_{}", self.0.prefix, service)
            .to_ascii_uppercase()
            .replace(['.', '-', ' ', '*', '>'], "_")
    }

    /// The subject of `event` from `service`.
    pub fn subject(&self, service: &str, event: &Event) -> String {
        let kind = event
            .event_type
            .strip_prefix(service)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(&event.event_type);
        format!("{}.{service}.{kind}", self.0.prefix)
    }

    fn check_connected(&self) -> Result<(), HandlerError> {
        match self.0.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err(err("not connected")),
        }
    }

    /// Creates the stream of `service`, or updates it to this process's settings (e.g. its
    /// retention limits), once per process.
    pub async fn ensure_stream(&self, service: &str) -> Result<stream::Stream, HandlerError> {
        self.check_connected()?;
        tokio::time::timeout(self.0.timeout, self.ensure_stream_now(service))
            .await
            .map_err(|_| err("stream set-up timed out"))?
    }

    fn stream_known(&self, service: &str) -> bool {
        let name = self.stream_name(service);
        self.0
            .ready_streams
            .lock()
            .map(|s| s.contains(&name))
            .unwrap_or(false)
    }

    fn forget_stream(&self, service: &str) {
        let name = self.stream_name(service);
        if let Ok(mut ready) = self.0.ready_streams.lock() {
            ready.retain(|s| *s != name);
        }
    }

    async fn ensure_stream_now(&self, service: &str) -> Result<stream::Stream, HandlerError> {
        let name = self.stream_name(service);
        if self.stream_known(service) {
            if let Ok(stream) = self.0.js.get_stream(&name).await {
                return Ok(stream);
            }
        }
        self.0
            .js
            .create_or_update_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.{service}.>", self.0.prefix)],
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                max_age: self.0.limits.max_age,
                max_bytes: self.0.limits.max_bytes,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        if let Ok(mut ready) = self.0.ready_streams.lock() {
            ready.push(name.clone());
        }
        self.0.js.get_stream(&name).await.map_err(err)
    }

    fn with_position<T>(&self, service: &str, f: impl FnOnce(&mut Position) -> T) -> Option<T> {
        let mut positions = self.0.positions.lock().ok()?;
        let position = positions
            .entry(service.to_string())
            .or_insert_with(|| Position {
                published: 0,
                applied: watch::channel(0).0,
                consumed_here: false,
            });
        Some(f(position))
    }

    /// Waits until this process's consumer applied everything this process published to
    /// `service`'s stream (no wait when no consumer of that stream runs here).
    pub async fn settle(&self, service: &str) -> Result<(), HandlerError> {
        let Some((target, mut applied)) = self
            .with_position(service, |p| {
                p.consumed_here
                    .then(|| (p.published, p.applied.subscribe()))
            })
            .flatten()
        else {
            return Ok(());
        };
        let outcome =
            tokio::time::timeout(self.0.timeout, applied.wait_for(|seen| *seen >= target))
                .await
                .map_err(|_| err(format!("{service} events not applied locally in time")))?
                .map(|_| ())
                .map_err(err);
        outcome
    }

    /// How many messages the stream of `service` holds.
    pub async fn stream_messages(&self, service: &str) -> Result<u64, HandlerError> {
        let mut stream = self
            .0
            .js
            .get_stream(self.stream_name(service))
            .await
            .map_err(err)?;
        Ok(stream.info().await.map_err(err)?.state.messages)
    }

    /// Deletes the stream of `service` with its messages and consumers (tests, teardown).
    pub async fn delete_stream(&self, service: &str) -> Result<(), HandlerError> {
        self.forget_stream(service);
        self.0
            .js
            .delete_stream(self.stream_name(service))
            .await
            .map_err(err)?;
        Ok(())
    }

    /// Publishes `event` of `service` and waits for its ack; answers the stream sequence.
    pub async fn publish(&self, service: &str, event: &Event) -> Result<u64, HandlerError> {
        let ack = self.send(service, event).await?;
        self.acknowledged(service, ack).await
    }

    /// Sends `event` of `service` without waiting for the server's ack, which the answer
    /// awaits ([`Nats::acknowledged`]).
    async fn send(
        &self,
        service: &str,
        event: &Event,
    ) -> Result<jetstream::context::PublishAckFuture, HandlerError> {
        // While disconnected the client would buffer the message and send it on reconnect,
        // possibly after a later one; failing now keeps the order (the row stays).
        self.check_connected()?;
        let payload = serde_json::to_vec(event).map_err(err)?;
        let send = self.0.js.send_publish(
            self.subject(service, event),
            jetstream::context::Publish::build()
                .payload(payload.into())
                .message_id(&event.id),
        );
        tokio::time::timeout(self.0.timeout, send)
            .await
            .map_err(|_| err("publish not sent in time"))?
            .map_err(err)
    }

    /// Waits for the server's ack of a sent event of `service`; answers its stream sequence.
    async fn acknowledged(
        &self,
        service: &str,
        ack: jetstream::context::PublishAckFuture,
    ) -> Result<u64, HandlerError> {
        let ack = tokio::time::timeout(self.0.timeout, ack)
            .await
            .map_err(|_| err("publish not acknowledged in time"))?
            .map_err(err)?;
        self.with_position(service, |p| p.published = p.published.max(ack.sequence));
        Ok(ack.sequence)
    }
}

/// The outbox destination that publishes to JetStream.
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    nats: Nats,
}

impl NatsPublisher {
    /// Publishes through `nats`.
    pub fn new(nats: Nats) -> Arc<NatsPublisher> {
        Arc::new(NatsPublisher { nats })
    }
}

#[async_trait]
impl Destination for NatsPublisher {
    async fn deliver(&self, service: &str, events: &[Event]) -> (usize, Option<HandlerError>) {
        if events.is_empty() {
            return (0, None);
        }
        // The stream is set up once; after a failure (e.g. a server that lost its storage)
        // it is set up again.
        if !self.nats.stream_known(service) {
            if let Err(e) = self.nats.ensure_stream(service).await {
                return (0, Some(e));
            }
        }
        // Up to `IN_FLIGHT` events are sent before the first ack is awaited, so the round
        // trips overlap; the server stores them in the order they were sent on the one
        // connection, and a message id makes a resent event a duplicate it drops. The
        // events handed on are those acked before the first failure.
        let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
        let mut failure = None;
        for (i, event) in events.iter().enumerate() {
            if in_flight.len() == IN_FLIGHT {
                if let Some((j, ack)) = in_flight.pop_front() {
                    if let Err(e) = self.nats.acknowledged(service, ack).await {
                        failure = Some((j, e));
                        break;
                    }
                }
            }
            match self.nats.send(service, event).await {
                Ok(ack) => in_flight.push_back((i, ack)),
                Err(e) => {
                    failure = Some((i, e));
                    break;
                }
            }
        }
        // Every ack sent before a failure is still awaited: an earlier event may have
        // failed too, and the prefix handed on ends at the first failure.
        for (j, ack) in in_flight {
            if failure.as_ref().is_some_and(|(first, _)| *first < j) {
                break;
            }
            if let Err(e) = self.nats.acknowledged(service, ack).await {
                failure = Some((j, e));
                break;
            }
        }
        match failure {
            Some((i, e)) => {
                self.nats.forget_stream(service);
                (i, Some(e))
            }
            None => (events.len(), None),
        }
    }

    async fn settle(&self, service: &str) -> Result<(), HandlerError> {
        self.nats.settle(service).await
    }
}

const BATCH: usize = 256;
/// Events a relay sends to JetStream before it waits for the first ack.
const IN_FLIGHT: usize = 64;
/// How long an idle consumer's pull request waits for a message.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Collects the messages of one pull request.
async fn pull_batch<F, S, E1, E2>(request: F) -> Result<Vec<jetstream::Message>, HandlerError>
where
    F: std::future::Future<Output = Result<S, E1>>,
    S: futures_util::Stream<Item = Result<jetstream::Message, E2>> + Unpin,
    E1: std::fmt::Display,
    E2: std::fmt::Display,
{
    let collect = async {
        let mut messages = request.await.map_err(err)?;
        let mut batch = Vec::new();
        while let Some(message) = messages.next().await {
            batch.push(message.map_err(err)?);
        }
        Ok(batch)
    };
    // A pull request left unanswered (e.g. the server went away) must not hang the task.
    tokio::time::timeout(IDLE_WAIT + Duration::from_millis(500), collect)
        .await
        .map_err(|_| err("pull request unanswered"))?
}

/// The durable consumers of one process: one task per service stream feeding its [`Bus`].
#[derive(Debug, Clone)]
pub struct NatsConsumer {
    nats: Nats,
    bus: Arc<Bus>,
    durable: String,
    services: Vec<String>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl NatsConsumer {
    /// Consumers named `durable` of the streams of `services`, applying to `bus`.
    pub fn new(nats: Nats, bus: Arc<Bus>, durable: &str, services: &[&str]) -> NatsConsumer {
        NatsConsumer {
            nats,
            bus,
            durable: durable.to_string(),
            services: services.iter().map(|s| s.to_string()).collect(),
            tasks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts the consumer tasks (once; later calls do nothing).
    pub fn start(&self) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        if !tasks.is_empty() {
            return;
        }
        for service in &self.services {
            self.nats.with_position(service, |p| p.consumed_here = true);
            let this = self.clone();
            let service = service.clone();
            tasks.push(tokio::spawn(async move { this.run(&service).await }));
        }
    }

    /// Stops the consumer tasks.
    pub fn stop(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        for service in &self.services {
            self.nats
                .with_position(service, |p| p.consumed_here = false);
        }
    }

    async fn run(&self, service: &str) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.consume(service, &mut backoff).await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    tracing::warn!(service, consumer = %self.durable, error = %e.0, "event consumer failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Consumes until the message stream ends or fails.
    async fn consume(&self, service: &str, backoff: &mut Duration) -> Result<(), HandlerError> {
        let stream = self.nats.ensure_stream(service).await?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.durable,
                pull::Config {
                    durable_name: Some(self.durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 4096,
                    ..Default::default()
                },
            )
            .await
            .map_err(err)?;
        // Only what is about to be applied is pulled (no prefetch): a process that stops
        // leaves no fetched-but-unapplied messages waiting for their ack wait to expire.
        loop {
            let mut batch = pull_batch(consumer.fetch().max_messages(BATCH).messages()).await?;
            if batch.is_empty() {
                // Nothing pending: wait (a while) for the next message.
                batch = pull_batch(
                    consumer
                        .batch()
                        .max_messages(1)
                        .expires(IDLE_WAIT)
                        .messages(),
                )
                .await?;
            }
            if !batch.is_empty() {
                self.apply(service, batch).await?;
                *backoff = Duration::from_millis(50);
            }
        }
    }

    /// Applies one batch in order, then acks it.
    async fn apply(
        &self,
        service: &str,
        batch: Vec<jetstream::Message>,
    ) -> Result<(), HandlerError> {
        let mut events = Vec::with_capacity(batch.len());
        let mut last_sequence = 0;
        for message in &batch {
            if let Ok(info) = message.info() {
                last_sequence = last_sequence.max(info.stream_sequence);
            }
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::error!(subject = %message.subject, error = %e, "dropping undecodable event");
                }
            }
        }
        if self.bus.publish_batch(&events).await.is_err() {
            // One at a time, retrying the failing one in place: order is kept.
            let mut backoff = Duration::from_millis(50);
            for event in &events {
                while let Err(e) = self.bus.publish(event).await {
                    tracing::warn!(service, event_id = %event.id, error = %e.0, "applying an event failed; retrying");
                    for message in &batch {
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.nats.with_position(service, |p| {
            p.applied.send_if_modified(|seen| {
                let newer = last_sequence > *seen;
                if newer {
                    *seen = last_sequence;
                }
                newer
            })
        });
        for message in &batch {
            message.ack().await.map_err(err)?;
        }
        Ok(())
    }
}
