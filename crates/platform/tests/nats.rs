//! The NATS JetStream transport against the real server on 127.0.0.1:4222 (`.ci/run` starts
//! it). Each test uses its own stream prefix, so tests do not see each other's events. A
//! missing server fails these tests: publishing times out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use platform::config::PoolDefaults;
use platform::db::Db;
use platform::events::nats::{EventSettings, Nats, NatsConsumer, NatsPublisher, Transport};
use platform::events::{begin_once, record, Actor, Bus, Event, EventHandler, HandlerError, Outbox};
use platform::testing::TestDatabases;

const SERVICE: &str = "svc";

fn settings(url: &str) -> EventSettings {
    EventSettings {
        transport: Transport::Nats,
        nats_url: url.into(),
        prefix: format!("mtest{}", uuid::Uuid::now_v7().simple()),
        consumer: None,
        poll_ms: 50,
        request_timeout_ms: 2000,
        ..EventSettings::default()
    }
}

/// Records every delivery, and applies each event once (dedup by id, like every consumer).
struct Recorder {
    db: Db,
    deliveries: Mutex<Vec<String>>,
    applied: Mutex<Vec<String>>,
    /// How many calls fail before the handler works.
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl EventHandler for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn wants(&self, _event_type: &str) -> bool {
        true
    }
    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        use std::sync::atomic::Ordering;
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(HandlerError("transient".into()));
        }
        if let Ok(mut d) = self.deliveries.lock() {
            d.push(event.id.clone());
        }
        if let Some(tx) = begin_once(&self.db, self.name(), event).await? {
            tx.commit().await?;
            if let Ok(mut a) = self.applied.lock() {
                a.push(event.id.clone());
            }
        }
        Ok(())
    }
}

impl Recorder {
    fn applied(&self) -> Vec<String> {
        self.applied.lock().expect("lock").clone()
    }
    fn deliveries(&self) -> Vec<String> {
        self.deliveries.lock().expect("lock").clone()
    }
}

struct Fixture {
    _dbs: TestDatabases,
    db: Db,
    bus: Arc<Bus>,
    recorder: Arc<Recorder>,
}

async fn fixture() -> Fixture {
    let dbs = TestDatabases::new();
    let db = Db::connect(
        SERVICE,
        &dbs.url(SERVICE),
        Some(2),
        &PoolDefaults::default(),
    )
    .await
    .expect("connect");
    db.migrate(&[]).await.expect("migrate");
    let bus = Bus::new();
    let recorder = Arc::new(Recorder {
        db: db.clone(),
        deliveries: Mutex::new(Vec::new()),
        applied: Mutex::new(Vec::new()),
        failures: std::sync::atomic::AtomicUsize::new(0),
    });
    bus.subscribe(recorder.clone());
    Fixture {
        _dbs: dbs,
        db,
        bus,
        recorder,
    }
}

/// Records `n` events of one aggregate in one transaction; answers their ids in order.
async fn record_events(db: &Db, n: usize) -> Vec<Event> {
    let mut tx = db.begin().await.expect("begin");
    let mut events = Vec::new();
    for i in 0..n {
        let event = Event::new(
            SERVICE,
            "svc.thing.changed",
            Some("t1"),
            "agg-1",
            &Actor::system("test"),
            serde_json::json!({ "i": i }),
        );
        record(&mut tx, &event).await.expect("record");
        events.push(event);
    }
    tx.commit().await.expect("commit");
    events
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

async fn wait_applied(recorder: &Recorder, n: usize) {
    for _ in 0..600 {
        if recorder.applied().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("only {} of {n} events applied", recorder.applied().len());
}

#[tokio::test]
async fn publishes_and_consumes_each_event_once_in_order() {
    let f = fixture().await;
    let settings = settings("nats://127.0.0.1:4222");
    let nats = Nats::connect(&settings).await.expect("connect");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(nats.clone()));
    let consumer = NatsConsumer::new(nats.clone(), f.bus.clone(), "metatron-test", &[SERVICE]);
    consumer.start();

    let events = record_events(&f.db, 40).await;
    // The flush publishes, and waits until the consumer of this process applied them.
    assert_eq!(outbox.flush().await.expect("flush"), 40);
    assert_eq!(f.recorder.applied(), ids(&events), "applied once, in order");
    assert_eq!(f.db.count_rows("outbox").await.expect("count"), 0);

    // A re-publish of the same event (same id, e.g. after a crash between the ack and
    // the deletion of the row) is dropped by the stream's duplicate window.
    let seq = nats.publish(SERVICE, &events[3]).await.expect("republish");
    assert!(seq <= 40, "the original's sequence: {seq}");
    let later = record_events(&f.db, 1).await;
    outbox.flush().await.expect("flush");
    let mut expected = ids(&events);
    expected.extend(ids(&later));
    assert_eq!(f.recorder.deliveries(), expected, "no second delivery");
    assert_eq!(f.recorder.applied(), expected);

    consumer.stop();
    nats.delete_stream(SERVICE).await.expect("cleanup");
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_nats_is_unreachable() {
    let f = fixture().await;
    let mut down = settings("nats://127.0.0.1:1");
    down.request_timeout_ms = 300;
    let unreachable = Nats::connect(&down)
        .await
        .expect("connect in the background");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(unreachable));
    let events = record_events(&f.db, 5).await;
    assert!(outbox.flush().await.is_err(), "publishing fails");
    assert!(outbox.flush().await.is_err(), "and fails again");
    assert_eq!(
        f.db.count_rows("outbox").await.expect("count"),
        5,
        "nothing lost"
    );

    // The server is reachable again (here: the right URL); the waiting events flow, in order.
    let up = EventSettings {
        nats_url: "nats://127.0.0.1:4222".into(),
        request_timeout_ms: 2000,
        ..down
    };
    let nats = Nats::connect(&up).await.expect("connect");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(nats.clone()));
    let consumer = NatsConsumer::new(nats.clone(), f.bus.clone(), "metatron-test", &[SERVICE]);
    consumer.start();
    let relay = outbox.spawn_relay(Duration::from_millis(50));
    wait_applied(&f.recorder, 5).await;
    assert_eq!(f.recorder.applied(), ids(&events));
    // The relay removes the rows once the server acknowledged them (which can come after
    // the consumer applied them).
    let mut left = -1;
    for _ in 0..400 {
        left = f.db.count_rows("outbox").await.expect("count");
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    relay.abort();
    assert_eq!(left, 0, "delivered rows leave the outbox");
    consumer.stop();
    nats.delete_stream(SERVICE).await.expect("cleanup");
}

#[tokio::test]
async fn a_restarted_consumer_resumes_from_its_durable_position() {
    let f = fixture().await;
    let settings = settings("nats://127.0.0.1:4222");
    let nats = Nats::connect(&settings).await.expect("connect");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(nats.clone()));
    let first = NatsConsumer::new(nats.clone(), f.bus.clone(), "metatron-test", &[SERVICE]);
    first.start();
    let mut events = record_events(&f.db, 3).await;
    outbox.flush().await.expect("flush");
    assert_eq!(f.recorder.applied(), ids(&events));
    // Let the acks reach the server, then stop the consumer (a process restart).
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.stop();
    // The stopped consumer's last pull request (it waits up to 1 s for a message) may still
    // be registered at the server until its unsubscribe arrives: a message published into
    // that window goes to it and comes back only after the 30 s ack wait. A process that
    // exits closes its connection and leaves no such request; here the connection lives on,
    // so the test lets that request expire first.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Published while no consumer runs.
    events.extend(record_events(&f.db, 3).await);
    outbox.flush().await.expect("flush");
    assert_eq!(f.recorder.applied().len(), 3, "nobody consumed yet");

    // A new process (new connection), same durable name: it resumes after the acked ones.
    let restarted = Nats::connect(&settings).await.expect("connect");
    let second = NatsConsumer::new(restarted, f.bus.clone(), "metatron-test", &[SERVICE]);
    second.start();
    wait_applied(&f.recorder, 6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.recorder.applied(),
        ids(&events),
        "no loss, no double effect"
    );
    assert_eq!(
        f.recorder.deliveries(),
        ids(&events),
        "acked events are not delivered again"
    );
    second.stop();
    nats.delete_stream(SERVICE).await.expect("cleanup");
}

/// A `nats-server -js` of this test's own, on `port`, storing in `dir`.
struct OwnServer(std::process::Child);

impl OwnServer {
    async fn start(port: u16, dir: &std::path::Path) -> OwnServer {
        let server = OwnServer(
            std::process::Command::new("nats-server")
                .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
                .arg(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nats-server is installed (.ci/run installs it)"),
        );
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start on {port}");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn events_flow_when_the_server_comes_back() {
    let f = fixture().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let store = tempfile::tempdir().expect("tempdir");
    let mut settings = settings(&format!("nats://127.0.0.1:{port}"));
    settings.request_timeout_ms = 500;
    // No server yet: the process starts anyway, and events wait in the outbox.
    let nats = Nats::connect(&settings)
        .await
        .expect("connect in the background");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(nats.clone()));
    let consumer = NatsConsumer::new(nats.clone(), f.bus.clone(), "metatron-test", &[SERVICE]);
    consumer.start();
    let relay = outbox.spawn_relay(Duration::from_millis(50));
    let mut events = record_events(&f.db, 5).await;
    outbox.notify();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.db.count_rows("outbox").await.expect("count"), 5);
    assert!(f.recorder.applied().is_empty());

    // The server comes up: the backlog flows, in order.
    let server = OwnServer::start(port, store.path()).await;
    wait_applied(&f.recorder, 5).await;
    assert_eq!(f.recorder.applied(), ids(&events));

    // It goes down again (keeping its storage) and comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(server);
    events.extend(record_events(&f.db, 3).await);
    outbox.notify();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.db.count_rows("outbox").await.expect("count"), 3);
    let _server = OwnServer::start(port, store.path()).await;
    wait_applied(&f.recorder, 8).await;
    assert_eq!(
        f.recorder.applied(),
        ids(&events),
        "no loss, no double effect"
    );
    relay.abort();
    consumer.stop();
}

#[tokio::test]
async fn a_failing_handler_is_retried_without_reordering() {
    let f = fixture().await;
    let settings = settings("nats://127.0.0.1:4222");
    let nats = Nats::connect(&settings).await.expect("connect");
    let outbox = Outbox::with_destination(f.db.clone(), NatsPublisher::new(nats.clone()));
    let consumer = NatsConsumer::new(nats.clone(), f.bus.clone(), "metatron-test", &[SERVICE]);
    consumer.start();
    // The batch fails, then the first event one by one, twice more.
    f.recorder
        .failures
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let events = record_events(&f.db, 10).await;
    outbox.flush().await.expect("applied after the retries");
    assert_eq!(f.recorder.applied(), ids(&events), "in order, once each");
    consumer.stop();
    nats.delete_stream(SERVICE).await.expect("cleanup");
}

#[tokio::test]
async fn streams_carry_the_configured_retention_and_follow_a_change_at_the_next_start() {
    let mut limited = settings("nats://127.0.0.1:4222");
    limited.nats_max_age_secs = 3600;
    limited.nats_max_bytes = 1 << 20;
    let nats = Nats::connect(&limited).await.expect("connect");
    let mut stream = nats.ensure_stream(SERVICE).await.expect("stream");
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(config.max_age, Duration::from_secs(3600));
    assert_eq!(config.max_bytes, 1 << 20);
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );

    // The next process starts with other limits: the existing stream takes them over.
    let changed = EventSettings {
        nats_max_age_secs: 7200,
        nats_max_bytes: 0,
        ..limited
    };
    let restarted = Nats::connect(&changed).await.expect("connect");
    let mut stream = restarted.ensure_stream(SERVICE).await.expect("stream");
    let config = stream.info().await.expect("info").config.clone();
    assert_eq!(config.max_age, Duration::from_secs(7200));
    assert!(config.max_bytes <= 0, "no byte limit: {}", config.max_bytes);

    // By default a stream keeps a week.
    let defaults = settings("nats://127.0.0.1:4222");
    assert_eq!(defaults.nats_max_age_secs, 7 * 24 * 3600);
    restarted.delete_stream(SERVICE).await.expect("cleanup");
}
