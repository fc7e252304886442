//! Sync lag (issue 5): how long an event committed by a service takes to show in CDX's
//! aggregates, with every service in this process (all-in-one wiring of `metatron::App`),
//! events carried by the in-process bus or through NATS JetStream.
//!
//! The emitter commits `crm.customer.created` events into the CRM's outbox at a fixed rate
//! (open loop: the events due by now go out in one transaction, so the rate holds even when
//! a commit is slow), exactly as a CRM write records its event, and wakes the relay. A
//! poller reads the demo tenant's `customers` counter in CDX's `tenant_summary` about every
//! millisecond: event `k` is visible once the counter has grown by `k + 1` (one emitter,
//! events delivered in outbox order), and its lag is the time from its commit to the end of
//! the first read that saw it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use metatron::{App, Settings};
use platform::events::nats::{EventSettings, Nats, Transport};
use platform::events::{record, Actor, Event};
use platform::ids::new_id;
use serde_json::{json, Value};

use crate::db::{percentiles, runtime};

/// `metatron-bench sync-lag`.
#[derive(clap::Args, Debug)]
pub struct LagArgs {
    /// A new, empty directory for the platform's SQLite databases.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// `local` (in-process bus) or `nats` (JetStream at `--nats-url`).
    #[arg(long, value_parser = ["local", "nats"])]
    pub transport: String,
    /// Events per second, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub rates: Vec<u32>,
    /// How long each run emits, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// How long to wait after the last commit for every event to show, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub drain_seconds: f64,
    /// The NATS server (with `--transport nats`). Its streams get a prefix of their own and
    /// are deleted at the end.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Publish→ack round trips timed for the NATS reference.
    #[arg(long, default_value_t = 2000)]
    pub reference_publishes: usize,
}

/// `metatron-bench tenant-events`.
#[derive(clap::Args, Debug)]
pub struct TenantEventsArgs {
    /// The data directory of a stopped `metatron serve` whose CDX holds the tenants.
    #[arg(long)]
    pub data_dir: PathBuf,
}

/// The platform of `data_dir`, opened as `metatron serve` opens it (events of earlier
/// writes delivered), with `events` as its transport.
pub(crate) async fn open_app(data_dir: &Path, events: EventSettings) -> anyhow::Result<App> {
    let settings = Settings {
        data_dir: data_dir.to_path_buf(),
        events,
        ..Settings::default()
    };
    let app = App::open(settings).await?;
    app.flush_events().await?;
    Ok(app)
}

/// The CRM's database and outbox in `app`.
fn crm(app: &App) -> anyhow::Result<&metatron::app::ServiceDb> {
    app.services
        .iter()
        .find(|s| s.info.name == "crm")
        .context("the platform has no CRM")
}

/// The CDX database in `app`.
pub(crate) fn cdx(app: &App) -> anyhow::Result<&metatron::app::ServiceDb> {
    app.services
        .iter()
        .find(|s| s.info.name == "cdx")
        .context("the platform has no CDX")
}

/// Commits `events` in one transaction of the CRM's database, with their outbox rows, as a
/// CRM write does, then wakes the relay.
async fn commit_events(crm: &metatron::app::ServiceDb, events: &[Event]) -> anyhow::Result<()> {
    let mut tx = crm.db.begin().await?;
    for event in events {
        record(&mut tx, event).await?;
    }
    tx.commit().await?;
    crm.outbox.notify();
    Ok(())
}

/// A `crm.customer.created` of `tenant` as the CRM records it.
fn customer_created(tenant: &str, actor: &Actor) -> Event {
    Event::new(
        "crm",
        "crm.customer.created",
        Some(tenant),
        &new_id(),
        actor,
        json!({ "changed": ["first_name", "last_name", "email"] }),
    )
}

/// The actor of the emitted events: a tenant user behind an HTTP request.
fn bench_actor() -> Actor {
    Actor {
        id: Some(new_id()),
        role: "user".into(),
        name: Some("bench@example.com".into()),
        request_id: Some(new_id()),
        ip: Some("127.0.0.1".into()),
    }
}

/// The `customers` counter of `tenant` in CDX's aggregates.
async fn customers(app: &App, tenant: &str) -> anyhow::Result<i64> {
    let count: Option<i64> =
        sqlx::query_scalar("SELECT customers FROM tenant_summary WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(cdx(app)?.db.reader())
            .await?;
    Ok(count.unwrap_or(0))
}

/// What one run at one rate came to.
struct Run {
    rate: u32,
    /// The commit instant of every event, in emission order.
    committed: Vec<Instant>,
    /// Begin-to-commit time of every transaction, in µs.
    commit_us: Vec<u32>,
    /// How late each transaction started after its first event was due, in µs.
    behind_us: Vec<u32>,
    emit_seconds: f64,
    /// Reads of the counter: when each ended and what it saw (above the baseline).
    polls: Vec<(Instant, i64)>,
}

impl Run {
    fn summary(&self) -> Value {
        let mut lags: Vec<u32> = Vec::with_capacity(self.committed.len());
        let mut polls = self.polls.iter().peekable();
        let mut last_seen = None;
        for (k, committed) in self.committed.iter().enumerate() {
            // The polls are in time order and their counts never fall, so one pass suffices.
            while polls.peek().is_some_and(|(_, seen)| *seen <= k as i64) {
                polls.next();
            }
            let Some((at, _)) = polls.peek() else { break };
            let lag = at.saturating_duration_since(*committed);
            lags.push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
            last_seen = Some(*at);
        }
        // Where in the run the lag grew: the worst lag of the events committed in each second.
        let mut max_ms_by_second: Vec<f64> = Vec::new();
        if let Some(first) = self.committed.first() {
            for (committed, lag) in self.committed.iter().zip(&lags) {
                let second = committed.duration_since(*first).as_secs() as usize;
                if max_ms_by_second.len() <= second {
                    max_ms_by_second.resize(second + 1, 0.0);
                }
                let lag_ms = f64::from(*lag) / 1000.0;
                max_ms_by_second[second] = max_ms_by_second[second].max(lag_ms);
            }
        }
        let events = self.committed.len();
        let unseen = events - lags.len();
        let max_ms = lags
            .iter()
            .max()
            .map_or(f64::NAN, |us| f64::from(*us) / 1000.0);
        let (p50, p99) = percentiles(&mut lags);
        let (commit_p50, commit_p99) = percentiles(&mut self.commit_us.clone());
        let (_, behind_p99) = percentiles(&mut self.behind_us.clone());
        let drain_ms = match (last_seen, self.committed.last()) {
            (Some(seen), Some(last)) if unseen == 0 => {
                seen.saturating_duration_since(*last).as_secs_f64() * 1000.0
            }
            _ => f64::NAN,
        };
        let poll_interval_ms = match (self.polls.first(), self.polls.last()) {
            (Some(first), Some(last)) if self.polls.len() > 1 => {
                last.0.duration_since(first.0).as_secs_f64() * 1000.0
                    / (self.polls.len() - 1) as f64
            }
            _ => f64::NAN,
        };
        json!({
            "rate": self.rate,
            "events": events,
            "transactions": self.commit_us.len(),
            "emit_seconds": self.emit_seconds,
            "achieved_rate": events as f64 / self.emit_seconds,
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max_ms,
            "max_ms_by_second": max_ms_by_second,
            "unseen": unseen,
            // The consumer kept up when the last event showed within a second of its commit
            // (no backlog left when the emitter stopped).
            "drain_ms": drain_ms,
            "kept_up": unseen == 0 && drain_ms < 1000.0,
            "commit_p50_ms": commit_p50,
            "commit_p99_ms": commit_p99,
            "emitter_behind_p99_ms": behind_p99,
            "poll_interval_ms": poll_interval_ms,
        })
    }
}

/// Emits `rate` events per second for `seconds` while polling the counter, then polls until
/// every event showed or `drain` passed.
async fn run_at(
    app: &App,
    tenant: &str,
    rate: u32,
    seconds: f64,
    drain: Duration,
) -> anyhow::Result<Run> {
    let crm = crm(app)?;
    let actor = bench_actor();
    let total = (f64::from(rate) * seconds).round() as usize;
    let baseline = customers(app, tenant).await?;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);

    let poller = {
        let app = app.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            let mut polls = Vec::new();
            let mut last_change = Instant::now();
            loop {
                let seen = customers(&app, &tenant).await? - baseline;
                let now = Instant::now();
                if polls.last().is_none_or(|(_, before)| *before != seen) {
                    last_change = now;
                }
                polls.push((now, seen));
                if seen >= total as i64 {
                    return anyhow::Ok(polls);
                }
                // After the emitter stopped, give up once nothing moved for `drain`.
                if *done_rx.borrow_and_update() && now.duration_since(last_change) > drain {
                    return Ok(polls);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let mut committed = Vec::with_capacity(total);
    let mut commit_us = Vec::new();
    let mut behind_us = Vec::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    while committed.len() < total {
        let sent = committed.len();
        let due_at = start + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if now < due_at {
            tokio::time::sleep_until(due_at.into()).await;
            continue;
        }
        // Every event due by now, in one transaction (at most one relay batch).
        let due = ((now.duration_since(start).as_secs_f64() * f64::from(rate)) as usize + 1)
            .clamp(sent + 1, total)
            .min(sent + 256);
        let events: Vec<Event> = (sent..due)
            .map(|_| customer_created(tenant, &actor))
            .collect();
        let began = Instant::now();
        commit_events(crm, &events).await?;
        let at = Instant::now();
        committed.extend(std::iter::repeat_n(at, events.len()));
        commit_us.push(micros(at - began));
        behind_us.push(micros(began.saturating_duration_since(due_at)));
    }
    let emit_seconds = start.elapsed().as_secs_f64();
    let _ = done_tx.send(true);
    let polls = poller.await.context("the poller stopped")??;
    Ok(Run {
        rate,
        committed,
        commit_us,
        behind_us,
        emit_seconds,
        polls,
    })
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The NATS reference: publish→ack round trips of one event at a time into a stream of its
/// own (the relay publishes exactly so, awaiting each ack).
async fn publish_round_trips(nats: &Nats, count: usize) -> anyhow::Result<Value> {
    const SERVICE: &str = "reference";
    nats.ensure_stream(SERVICE)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let actor = bench_actor();
    let mut round_trips = Vec::with_capacity(count);
    for _ in 0..count {
        let event = customer_created("reference", &actor);
        let began = Instant::now();
        nats.publish(SERVICE, &event)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        round_trips.push(micros(began.elapsed()));
    }
    let (p50, p99) = percentiles(&mut round_trips);
    Ok(json!({
        "what": "JetStream publish→ack round trip",
        "samples": count,
        "p50_ms": p50,
        "p99_ms": p99,
    }))
}

/// Streams of the bench's own prefix, deleted at the end whatever happened.
const NATS_SERVICES: &[&str] = &["cdx", "auth", "crm", "reference"];

/// `metatron-bench sync-lag`: one run per rate on a platform in this process.
pub fn lag(args: &LagArgs) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        let nats = args.transport == "nats";
        let events = EventSettings {
            transport: if nats {
                Transport::Nats
            } else {
                Transport::Local
            },
            nats_url: args.nats_url.clone(),
            // Streams and the durable consumer of this run only.
            prefix: format!("bench{}", std::process::id()),
            ..EventSettings::default()
        };
        let cleanup = if nats {
            let client = Nats::connect(&events)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // Fails at once (not connected) when no server answers at the URL.
            client
                .ensure_stream("reference")
                .await
                .map_err(|e| anyhow::anyhow!("NATS at {}: {e}", args.nats_url))?;
            Some(client)
        } else {
            None
        };
        let measured = tokio::select! {
            result = measure(args, events, cleanup.as_ref()) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if let Some(client) = &cleanup {
            for service in NATS_SERVICES {
                if let Err(e) = client.delete_stream(service).await {
                    eprintln!("deleting the stream of {service}: {e}");
                }
            }
        }
        measured
    })
}

async fn measure(
    args: &LagArgs,
    events: EventSettings,
    nats: Option<&Nats>,
) -> anyhow::Result<Value> {
    let app = open_app(&args.data_dir, events).await?;
    metatron::commands::seed_demo(&app).await?;
    let tasks = app.start_background();
    let tenant: String = sqlx::query_scalar("SELECT id FROM tenants WHERE slug = 'demo'")
        .fetch_one(cdx(&app)?.db.reader())
        .await?;
    let mut runs = Vec::new();
    let mut outcome = Ok(());
    for rate in &args.rates {
        match run_at(
            &app,
            &tenant,
            *rate,
            args.seconds,
            Duration::from_secs_f64(args.drain_seconds),
        )
        .await
        {
            Ok(run) => runs.push(run.summary()),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        // Settle before the next rate.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for task in tasks {
        task.abort();
    }
    app.close().await;
    outcome?;
    let reference = match nats {
        Some(nats) => publish_round_trips(nats, args.reference_publishes).await?,
        None => json!({ "what": "the emitter's own outbox commit (begin to commit)" }),
    };
    Ok(json!({
        "benchmark": "sync-lag",
        "transport": args.transport,
        "seconds": args.seconds,
        "runs": runs,
        "reference": reference,
    }))
}

/// `metatron-bench tenant-events`: gives every tenant of a stopped server's CDX some
/// customers and companies (one `crm.customers.imported` each, as a CSV import records it,
/// committed into the CRM's outbox and delivered), so the tenant list has aggregates to
/// show and to sort by.
pub fn tenant_events(args: &TenantEventsArgs) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        let app = open_app(&args.data_dir, EventSettings::default()).await?;
        let tenants: Vec<String> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id")
            .fetch_all(cdx(&app)?.db.reader())
            .await?;
        let actor = Actor::system("metatron-bench tenant-events");
        let mut customers_total = 0;
        for (chunk_no, chunk) in tenants.chunks(256).enumerate() {
            let events: Vec<Event> = chunk
                .iter()
                .enumerate()
                .map(|(i, tenant)| {
                    // Spread, so that sorting by customers means something.
                    let n = ((chunk_no * 256 + i) * 7919 % 5000) as i64;
                    customers_total += n;
                    Event::new(
                        "crm",
                        "crm.customers.imported",
                        Some(tenant),
                        &new_id(),
                        &actor,
                        json!({ "created": n, "updated": 0, "skipped": 0,
                                "companies_created": n / 10 }),
                    )
                })
                .collect();
            commit_events(crm(&app)?, &events).await?;
            app.flush_events().await?;
        }
        app.close().await;
        Ok(json!({ "tenants": tenants.len(), "customers": customers_total }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_timed_to_the_first_read_that_includes_it() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let run = Run {
            rate: 1000,
            // Three events committed at 0 ms, one at 10 ms.
            committed: vec![ms(0), ms(0), ms(0), ms(10)],
            commit_us: vec![100, 300],
            behind_us: vec![0, 0],
            emit_seconds: 0.01,
            polls: vec![(ms(1), 0), (ms(2), 2), (ms(3), 3), (ms(14), 3), (ms(15), 4)],
        };
        let s = run.summary();
        assert_eq!(s["events"], 4);
        assert_eq!(s["unseen"], 0);
        // Lags: 2, 2, 3 and 5 ms.
        assert_eq!(s["max_ms"], 5.0);
        assert_eq!(s["p50_ms"], 3.0);
        assert_eq!(s["drain_ms"], 5.0);
        assert_eq!(s["kept_up"], true);
    }

    #[test]
    fn events_never_seen_are_counted_and_fail_the_run() {
        let t0 = Instant::now();
        let run = Run {
            rate: 1000,
            committed: vec![t0, t0],
            commit_us: vec![100],
            behind_us: vec![0],
            emit_seconds: 0.001,
            polls: vec![(t0 + Duration::from_millis(1), 1)],
        };
        let s = run.summary();
        assert_eq!(s["unseen"], 1);
        assert_eq!(s["kept_up"], false);
    }
}
