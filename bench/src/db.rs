//! The "raw database" references of the CRM benchmarks: the statements the CRM runs for a
//! customer read, a list page and a create, executed straight against the same database
//! (sqlx's `Any` driver, as the server), without HTTP, authentication or JSON. And the
//! CSV files the import benchmarks upload.

use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

/// Columns of a customer with its company's name, as the CRM reads them.
const CUSTOMER_COLUMNS: &str = "c.id, c.first_name, c.last_name, c.email, c.phone, \
    c.company_id, co.name AS company_name, c.status, c.owner_id, c.tags, c.custom, \
    c.created_at, c.updated_at, c.version";
/// The join that adds the company's name.
const COMPANY_JOIN: &str =
    "LEFT JOIN companies co ON co.tenant_id = c.tenant_id AND co.id = c.company_id";

/// `metatron-bench raw-read`.
#[derive(clap::Args, Debug)]
pub struct ReadArgs {
    /// The CRM database: `sqlite://PATH` or `postgres://...`.
    #[arg(long)]
    pub url: String,
    /// The tenant id.
    #[arg(long)]
    pub tenant: String,
    /// The customer read (point read; ignored with `--list`).
    #[arg(long, default_value = "")]
    pub id: String,
    /// Reads the first list page of this many customers (newest first) instead of one
    /// customer: the list query of `GET /api/crm/customers?limit=N` (it fetches N + 1).
    #[arg(long)]
    pub list: Option<i64>,
    /// How long to query, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Queries in flight at once (one connection each).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// `metatron-bench raw-insert`.
#[derive(clap::Args, Debug)]
pub struct InsertArgs {
    /// The CRM database: `sqlite://PATH` or `postgres://...`.
    #[arg(long)]
    pub url: String,
    /// The tenant id.
    #[arg(long)]
    pub tenant: String,
    /// The owner id written into each row (the creating user, as the API does).
    #[arg(long, default_value = "")]
    pub owner: String,
    /// How long to insert, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Transactions in flight at once. On SQLite they share one connection, as the
    /// server's single writer; on PostgreSQL each has its own.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
}

/// `metatron-bench csv`.
#[derive(clap::Args, Debug)]
pub struct CsvArgs {
    /// Data rows to write (after the header).
    #[arg(long)]
    pub rows: usize,
    /// Number of the first row; emails are `bench.<prefix>.<n>@example.com`.
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// Email prefix, so files of different runs never collide.
    #[arg(long, default_value = "r")]
    pub prefix: String,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// A pool on `url` set up as the server sets up its own (WAL, `synchronous = NORMAL` on
/// SQLite), without creating anything.
async fn pool(url: &str, size: u32) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = if is_sqlite(url) && !url.contains('?') {
        format!("{url}?mode=rw")
    } else {
        url.to_string()
    };
    let options = AnyConnectOptions::from_str(&url)
        .with_context(|| format!("invalid database URL {url}"))?
        .disable_statement_logging();
    let sqlite = is_sqlite(&url);
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(size)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {url}"))
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Latencies in microseconds: p50 and p99 in ms.
pub(crate) fn percentiles(latencies: &mut [u32]) -> (f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        f64::from(latencies[i]) / 1000.0
    };
    (at(0.50), at(0.99))
}

/// Decodes every column of a customer row, as the server does before it answers.
fn decode(row: &AnyRow) -> Result<usize, sqlx::Error> {
    let mut bytes = 0;
    for name in ["id", "first_name", "last_name", "status", "tags", "custom"] {
        bytes += row.try_get::<String, _>(name)?.len();
    }
    for name in ["email", "phone", "company_id", "company_name", "owner_id"] {
        bytes += row
            .try_get::<Option<String>, _>(name)?
            .map_or(0, |s| s.len());
    }
    for name in ["created_at", "updated_at", "version"] {
        bytes += usize::from(row.try_get::<i64, _>(name)? != 0);
    }
    Ok(bytes)
}

/// What one worker of a timed loop did.
struct Worker {
    done: u64,
    latencies: Vec<u32>,
    last: Instant,
}

/// Runs `op` on `concurrency` tasks until `seconds` have passed; returns the queries,
/// the elapsed time to the last completion and the latencies (µs).
async fn timed_loop<F, Fut>(
    concurrency: usize,
    seconds: f64,
    op: F,
) -> anyhow::Result<(u64, f64, Vec<u32>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(concurrency > 0, "--concurrency must be at least 1");
    let op = Arc::new(op);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut w = Worker {
                    done: 0,
                    latencies: Vec::with_capacity(1 << 16),
                    last: Instant::now(),
                };
                while w.last < deadline {
                    let t = Instant::now();
                    op().await?;
                    w.last = Instant::now();
                    w.latencies
                        .push(u32::try_from((w.last - t).as_micros()).unwrap_or(u32::MAX));
                    w.done += 1;
                }
                anyhow::Ok(w)
            })
        })
        .collect();
    let (mut done, mut last, mut latencies) = (0, started, Vec::new());
    for task in tasks {
        let w = task.await.context("a worker panicked")??;
        done += w.done;
        last = last.max(w.last);
        latencies.extend(w.latencies);
    }
    Ok((done, (last - started).as_secs_f64(), latencies))
}

/// `raw-read`: the CRM's point read (or first list page) in a loop on one connection per
/// task.
pub fn read(args: &ReadArgs) -> anyhow::Result<serde_json::Value> {
    let size = u32::try_from(args.concurrency).context("--concurrency is too large")?;
    let (sql, what) = match args.list {
        Some(n) => {
            anyhow::ensure!(n > 0, "--list must be positive");
            (
                format!(
                    "SELECT {CUSTOMER_COLUMNS} FROM (SELECT * FROM customers WHERE tenant_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2) c {COMPANY_JOIN} \
                     ORDER BY c.created_at DESC, c.id DESC"
                ),
                "list-page",
            )
        }
        None => {
            anyhow::ensure!(!args.id.is_empty(), "--id is required without --list");
            (
                format!(
                    "SELECT {CUSTOMER_COLUMNS} FROM customers c {COMPANY_JOIN} \
                     WHERE c.tenant_id = $1 AND c.id = $2"
                ),
                "point-read",
            )
        }
    };
    let rt = runtime()?;
    rt.block_on(async {
        let pool = pool(&args.url, size).await?;
        // One query first: a wrong id or tenant fails here, not as a silent empty loop.
        let check = run_read(&pool, &sql, args).await?;
        match args.list {
            Some(_) => anyhow::ensure!(check > 0, "the list of tenant {} is empty", args.tenant),
            None => anyhow::ensure!(check == 1, "customer {} not found", args.id),
        }
        let rows_per_query = check;
        let (sql, pool_, tenant, id, list) = (
            Arc::new(sql),
            pool.clone(),
            Arc::new(args.tenant.clone()),
            Arc::new(args.id.clone()),
            args.list,
        );
        let (queries, seconds, mut latencies) =
            timed_loop(args.concurrency, args.seconds, move || {
                let (sql, pool, tenant, id) =
                    (sql.clone(), pool_.clone(), tenant.clone(), id.clone());
                async move {
                    let q = sqlx::query(&sql).bind(tenant.as_str());
                    let q = match list {
                        Some(n) => q.bind(n + 1),
                        None => q.bind(id.as_str()),
                    };
                    for row in q.fetch_all(&pool).await? {
                        decode(&row)?;
                    }
                    Ok(())
                }
            })
            .await?;
        pool.close().await;
        let (p50, p99) = percentiles(&mut latencies);
        Ok(json!({
            "benchmark": format!("raw-{what}"),
            "backend": if is_sqlite(&args.url) { "sqlite" } else { "postgres" },
            "concurrency": args.concurrency,
            "rows_per_query": rows_per_query,
            "queries": queries,
            "seconds": seconds,
            "queries_per_sec": queries as f64 / seconds,
            "p50_ms": p50,
            "p99_ms": p99,
        }))
    })
}

async fn run_read(pool: &AnyPool, sql: &str, args: &ReadArgs) -> anyhow::Result<usize> {
    let q = sqlx::query(sql).bind(args.tenant.as_str());
    let q = match args.list {
        Some(n) => q.bind(n + 1),
        None => q.bind(args.id.as_str()),
    };
    let rows = q.fetch_all(pool).await?;
    for row in &rows {
        decode(row)?;
    }
    Ok(rows.len())
}

/// `raw-insert`: one customer row per transaction (`BEGIN; INSERT; COMMIT`), the columns
/// the CRM writes for `POST /api/crm/customers {"first_name": …}`.
pub fn insert(args: &InsertArgs) -> anyhow::Result<serde_json::Value> {
    let size = if is_sqlite(&args.url) {
        1
    } else {
        u32::try_from(args.concurrency).context("--concurrency is too large")?
    };
    let rt = runtime()?;
    rt.block_on(async {
        let pool = pool(&args.url, size).await?;
        let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE tenant_id = $1")
            .bind(args.tenant.as_str())
            .fetch_one(&pool)
            .await?;
        let (pool_, tenant, owner) = (
            pool.clone(),
            Arc::new(args.tenant.clone()),
            Arc::new(args.owner.clone()),
        );
        let (inserts, seconds, mut latencies) =
            timed_loop(args.concurrency, args.seconds, move || {
                let (pool, tenant, owner) = (pool_.clone(), tenant.clone(), owner.clone());
                async move {
                    let now = chrono::Utc::now().timestamp_millis();
                    let id = uuid::Uuid::now_v7().to_string();
                    let mut tx = pool.begin().await?;
                    sqlx::query(
                        "INSERT INTO customers (tenant_id, id, first_name, last_name, name_key, \
                         email, email_key, phone, company_id, status, owner_id, tags, custom, \
                         created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                         $8, $9, $10, $11, $12, $13, $14, $15, $16)",
                    )
                    .bind(tenant.as_str())
                    .bind(id)
                    .bind("Raw")
                    .bind("")
                    .bind("raw")
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind("lead")
                    .bind((!owner.is_empty()).then(|| owner.to_string()))
                    .bind("[]")
                    .bind("{}")
                    .bind(now)
                    .bind(now)
                    .bind(1_i64)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }
            })
            .await?;
        let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE tenant_id = $1")
            .bind(args.tenant.as_str())
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        anyhow::ensure!(
            after - before == i64::try_from(inserts)?,
            "{inserts} inserts but {} new rows",
            after - before
        );
        let (p50, p99) = percentiles(&mut latencies);
        Ok(json!({
            "benchmark": "raw-insert",
            "backend": if is_sqlite(&args.url) { "sqlite" } else { "postgres" },
            "concurrency": args.concurrency,
            "connections": size,
            "rows_before": before,
            "transactions": inserts,
            "seconds": seconds,
            "transactions_per_sec": inserts as f64 / seconds,
            "p50_ms": p50,
            "p99_ms": p99,
        }))
    })
}

const FIRST: &[&str] = &[
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger",
];
const LAST: &[&str] = &[
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
    "Allen", "Dijkstra",
];
const STATUS: &[&str] = &["lead", "prospect", "customer", "churned"];
const TAGS: &[&str] = &["", "vip", "newsletter;vip", "partner", "newsletter"];

/// `csv`: `rows` customers with unique emails, in the columns of the import.
pub fn csv(args: &CsvArgs) -> anyhow::Result<serde_json::Value> {
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    writeln!(out, "first_name,last_name,email,phone,status,tags")?;
    for n in args.start..args.start + args.rows {
        writeln!(
            out,
            "{},{},bench.{}.{n}@example.com,+41 44 {:03} {:02} {:02},{},{}",
            FIRST[n % FIRST.len()],
            LAST[(n / FIRST.len()) % LAST.len()],
            args.prefix,
            n % 1000,
            (n / 1000) % 100,
            (n / 100_000) % 100,
            STATUS[n % STATUS.len()],
            TAGS[n % TAGS.len()],
        )?;
    }
    out.flush()?;
    let bytes = std::fs::metadata(&args.out)?.len();
    Ok(json!({
        "file": args.out.display().to_string(),
        "rows": args.rows,
        "bytes": bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_microseconds() {
        let mut l: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let (p50, p99) = percentiles(&mut l);
        assert!((p50 - 51.0).abs() < 1e-9, "{p50}");
        assert!((p99 - 99.0).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn writes_unique_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("c.csv");
        csv(&CsvArgs {
            rows: 3,
            start: 10,
            prefix: "t".into(),
            out: out.clone(),
        })
        .expect("written");
        let text = std::fs::read_to_string(out).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "first_name,last_name,email,phone,status,tags");
        assert!(lines[1].contains("bench.t.10@example.com"));
        assert!(lines[3].contains("bench.t.12@example.com"));
    }
}
