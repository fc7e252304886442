//! The background verifications of the audit chain (`audit_verifications`): at most one
//! running across every CDX process, the newest verdict and the newest failure kept.

use platform::db::Db;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

/// One verification as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationRow {
    /// UUIDv7: verifications sort by start.
    pub id: String,
    /// Unix ms.
    pub started_at: i64,
    /// Whether it was still walking when read.
    pub running: bool,
    /// When its process last reported progress (Unix ms).
    pub heartbeat_at: i64,
    /// Entries verified so far.
    pub entries_checked: i64,
    /// Entries the chain held (after the retention's anchor) when it started.
    pub entries_total: i64,
    /// Unix ms, once finished.
    pub finished_at: Option<i64>,
    /// The walk's report (JSON), once it reached a verdict.
    pub report: Option<String>,
    /// Why it stopped without a verdict.
    pub error: Option<String>,
}

const COLUMNS: &str = "id, started_at, running, heartbeat_at, entries_checked, entries_total, \
                       finished_at, report, error";

fn row_to_verification(row: &AnyRow) -> Result<VerificationRow, sqlx::Error> {
    Ok(VerificationRow {
        id: row.try_get("id")?,
        started_at: row.try_get("started_at")?,
        running: row.try_get::<Option<i64>, _>("running")?.is_some(),
        heartbeat_at: row.try_get("heartbeat_at")?,
        entries_checked: row.try_get("entries_checked")?,
        entries_total: row.try_get("entries_total")?,
        finished_at: row.try_get("finished_at")?,
        report: row.try_get("report")?,
        error: row.try_get("error")?,
    })
}

/// What asking for a new verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// A new run was recorded; the caller walks the chain for it.
    Started(VerificationRow),
    /// Another run is in progress (in this process or another).
    AlreadyRunning(VerificationRow),
}

/// Records a new running verification `id` at `now`, unless one runs whose heartbeat is not
/// older than `stale_before`. A running one that stopped beating (its process is gone) is
/// closed as abandoned first.
pub async fn start_verification(
    db: &Db,
    id: &str,
    now: i64,
    stale_before: i64,
) -> Result<StartOutcome, sqlx::Error> {
    let mut tx = db.begin().await?;
    if let Some(current) = running_in(&mut tx).await? {
        if current.heartbeat_at >= stale_before {
            tx.rollback().await?;
            return Ok(StartOutcome::AlreadyRunning(current));
        }
        sqlx::query(
            "UPDATE audit_verifications SET running = NULL, finished_at = $2, error = $3 \
             WHERE id = $1",
        )
        .bind(&current.id)
        .bind(now)
        .bind(ABANDONED)
        .execute(&mut *tx)
        .await?;
    }
    let entries_total: i64 =
        sqlx::query_scalar("SELECT seq - pruned_seq FROM audit_chain_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
    let inserted = sqlx::query(
        "INSERT INTO audit_verifications (id, started_at, running, heartbeat_at, \
         entries_total) VALUES ($1, $2, 1, $2, $3)",
    )
    .bind(id)
    .bind(now)
    .bind(entries_total)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        // Another process started one between the read and the insert.
        Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            tx.rollback().await?;
            return match running(db.reader()).await? {
                Some(current) => Ok(StartOutcome::AlreadyRunning(current)),
                // It finished meanwhile: a plain conflict is the honest answer.
                None => Err(sqlx::Error::Database(e)),
            };
        }
        Err(e) => return Err(e),
    }
    tx.commit().await?;
    Ok(StartOutcome::Started(VerificationRow {
        id: id.to_string(),
        started_at: now,
        running: true,
        heartbeat_at: now,
        entries_checked: 0,
        entries_total,
        finished_at: None,
        report: None,
        error: None,
    }))
}

/// The error recorded for a run whose process stopped beating.
pub const ABANDONED: &str = "abandoned: the process running it stopped before it finished";

async fn running_in(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<VerificationRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_verifications WHERE running = 1"
    ))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(row_to_verification).transpose()
}

/// The running verification, if any.
pub async fn running(pool: &AnyPool) -> Result<Option<VerificationRow>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    running_in(&mut conn).await
}

/// Records how far run `id` got, and that its process is alive.
pub async fn record_progress(
    db: &Db,
    id: &str,
    entries_checked: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_verifications SET entries_checked = $2, heartbeat_at = $3 \
         WHERE id = $1 AND running = 1",
    )
    .bind(id)
    .bind(entries_checked)
    .bind(now)
    .execute(db.writer())
    .await?;
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub enum Finish<'a> {
    /// With a verdict: the report as JSON.
    Report(&'a str),
    /// Without one.
    Error(&'a str),
}

/// Records the end of run `id` (also of one already closed as abandoned: a late verdict is
/// still a verdict), then forgets every finished run but the newest verdict and the newest
/// failure.
pub async fn finish_verification(
    db: &Db,
    id: &str,
    entries_checked: i64,
    now: i64,
    outcome: Finish<'_>,
) -> Result<(), sqlx::Error> {
    let (report, error) = match outcome {
        Finish::Report(report) => (Some(report), None),
        Finish::Error(error) => (None, Some(error)),
    };
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE audit_verifications SET running = NULL, finished_at = $2, \
         entries_checked = $3, report = $4, error = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(entries_checked)
    .bind(report)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM audit_verifications WHERE running IS NULL \
         AND id <> COALESCE((SELECT MAX(id) FROM audit_verifications \
                             WHERE report IS NOT NULL), '') \
         AND id <> COALESCE((SELECT MAX(id) FROM audit_verifications \
                             WHERE error IS NOT NULL), '')",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// One verification by id.
pub async fn verification(
    pool: &AnyPool,
    id: &str,
) -> Result<Option<VerificationRow>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_verifications WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(row_to_verification).transpose()
}

/// The newest run that reached a verdict, and the newest that stopped without one.
pub async fn latest_verifications(
    pool: &AnyPool,
) -> Result<(Option<VerificationRow>, Option<VerificationRow>), sqlx::Error> {
    let newest = |column: &str| {
        format!(
            "SELECT {COLUMNS} FROM audit_verifications WHERE {column} IS NOT NULL \
             ORDER BY id DESC LIMIT 1"
        )
    };
    let verdict = sqlx::query(&newest("report")).fetch_optional(pool).await?;
    let failure = sqlx::query(&newest("error")).fetch_optional(pool).await?;
    Ok((
        verdict.as_ref().map(row_to_verification).transpose()?,
        failure.as_ref().map(row_to_verification).transpose()?,
    ))
}
