//! The audit chain figures (issue 5): append throughput through CDX's audit consumer, the
//! path every event takes into the log, next to plain multi-row `INSERT`s of the same rows;
//! and the reference of `metatron audit verify`: one ordered read of the log with one
//! SHA-256 per row.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use platform::events::nats::EventSettings;
use platform::events::{Actor, Event};
use platform::ids::new_id;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::any::AnyPoolOptions;
use sqlx::Row;

use crate::db::runtime;
use crate::sync::{cdx, open_app};

/// `metatron-bench audit-append`.
#[derive(clap::Args, Debug)]
pub struct AppendArgs {
    /// A new, empty data directory: its CDX database receives the chain.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// A second new, empty data directory for the plain `INSERT` reference.
    #[arg(long)]
    pub reference_dir: PathBuf,
    /// Entries to append.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Events per append (the relay and the NATS consumer hand over up to 256 at once).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
}

/// `metatron-bench audit-read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The CDX database file (`cdx.db`).
    #[arg(long)]
    pub db: PathBuf,
}

/// The stored columns of an audit entry, in chain order of reading.
const COLUMNS: &str = "id, occurred_at, actor_id, actor_role, actor_name, tenant_id, action, \
                       target, request_id, ip, detail, changed, seq, prev_hash, hash";
/// The positions of `occurred_at` and `seq` in [`COLUMNS`] (the others are text).
const INTEGER_COLUMNS: [usize; 2] = [1, 12];
/// Rows per `INSERT` statement of the reference (as many as the audit writer puts in one).
const ROWS_PER_INSERT: usize = 40;

/// A batch of events as services emit them: a few tenants, users behind requests, a mix of
/// CRM and auth event types.
fn events(count: usize, tenants: &[String], actors: &[Actor]) -> Vec<Event> {
    const TYPES: &[(&str, &str)] = &[
        ("crm", "crm.customer.created"),
        ("crm", "crm.customer.updated"),
        ("crm", "crm.deal.stage_changed"),
        ("auth", "auth.login.succeeded"),
    ];
    (0..count)
        .map(|i| {
            let (source, kind) = TYPES[i % TYPES.len()];
            let mut actor = actors[i % actors.len()].clone();
            actor.request_id = Some(new_id());
            Event::new(
                source,
                kind,
                Some(&tenants[i % tenants.len()]),
                &new_id(),
                &actor,
                json!({ "changed": ["first_name", "email", "status"] }),
            )
        })
        .collect()
}

/// The plain reference: the same rows (their hash columns filled with a constant) inserted
/// into `audit_log` of a fresh CDX database, `batch` per transaction, without the head lock,
/// the duplicate check, the hashing or the checkpoints.
async fn insert_plain(db: &platform::db::Db, batch: &[Event], seq: &mut i64) -> anyhow::Result<()> {
    let hash = "0".repeat(64);
    let mut tx = db.begin().await?;
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES {}",
            platform::sql::values_list(db.backend(), chunk.len(), 15)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            *seq += 1;
            q = q
                .bind(&e.id)
                .bind(e.occurred_at.millis())
                .bind(e.actor.id.clone())
                .bind(&e.actor.role)
                .bind(e.actor.name.clone())
                .bind(e.tenant_id.clone())
                .bind(&e.event_type)
                .bind(&e.aggregate_id)
                .bind(e.actor.request_id.clone())
                .bind(e.actor.ip.clone())
                .bind(e.data.to_string())
                .bind(e.data.get("changed").map(Value::to_string))
                .bind(*seq)
                .bind(&hash)
                .bind(&hash);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `metatron-bench audit-append`: appends `entries` through CDX's consumer, in batches,
/// after the same number of plain inserts on another database; times only the writes.
pub fn append(args: &AppendArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    runtime()?.block_on(async {
        let tenants: Vec<String> = (0..20).map(|_| new_id()).collect();
        let actors: Vec<Actor> = (0..50)
            .map(|i| Actor {
                id: Some(new_id()),
                role: "user".into(),
                name: Some(format!("user{i}@example.com")),
                request_id: None,
                ip: Some("192.0.2.10".into()),
            })
            .collect();

        let reference = open_app(&args.reference_dir, EventSettings::default()).await?;
        let reference_db = &cdx(&reference)?.db;
        let mut seq = 0;
        let mut plain = Duration::ZERO;
        let mut left = args.entries;
        while left > 0 {
            let batch = events(left.min(args.batch), &tenants, &actors);
            let began = Instant::now();
            insert_plain(reference_db, &batch, &mut seq).await?;
            plain += began.elapsed();
            left -= batch.len();
        }
        reference.close().await;

        let app = open_app(&args.data_dir, EventSettings::default()).await?;
        let consumer = app.cdx.consumer();
        let mut chained = Duration::ZERO;
        let mut left = args.entries;
        while left > 0 {
            let batch = events(left.min(args.batch), &tenants, &actors);
            let refs: Vec<&Event> = batch.iter().collect();
            let began = Instant::now();
            consumer
                .handle_batch(&refs)
                .await
                .map_err(|e| anyhow::anyhow!("appending: {e}"))?;
            chained += began.elapsed();
            left -= batch.len();
        }
        let stored = cdx(&app)?.db.count_rows("audit_log").await?;
        app.close().await;
        let entries = args.entries as f64;
        Ok(json!({
            "benchmark": "audit-append",
            "entries": args.entries,
            "stored": stored,
            "batch": args.batch,
            "seconds": chained.as_secs_f64(),
            "entries_per_sec": entries / chained.as_secs_f64(),
            "reference_seconds": plain.as_secs_f64(),
            "reference_entries_per_sec": entries / plain.as_secs_f64(),
        }))
    })
}

/// `metatron-bench audit-read`: reads every entry in chain order and hashes each row's
/// stored text once (what `audit verify` cannot do with less), timing the whole pass.
pub fn read(args: &ReadArgs) -> anyhow::Result<Value> {
    runtime()?.block_on(async {
        platform::db::install_drivers();
        let began = Instant::now();
        let url = format!("sqlite://{}?mode=ro", args.db.display());
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY seq");
        let mut rows = sqlx::query(&sql).fetch(&pool);
        let mut count: u64 = 0;
        let mut digest = [0u8; 32];
        while let Some(row) = rows.try_next().await? {
            let mut hasher = Sha256::new();
            for i in 0..15 {
                if INTEGER_COLUMNS.contains(&i) {
                    hasher.update(row.try_get::<i64, _>(i)?.to_le_bytes());
                } else {
                    hasher.update(row.try_get::<Option<String>, _>(i)?.unwrap_or_default());
                }
            }
            digest = hasher.finalize().into();
            count += 1;
        }
        drop(rows);
        pool.close().await;
        let seconds = began.elapsed().as_secs_f64();
        Ok(json!({
            "benchmark": "audit-read",
            "entries": count,
            "seconds": seconds,
            "entries_per_sec": count as f64 / seconds,
            // Printed so the hashing cannot be optimised away.
            "last_digest": digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }))
    })
}
