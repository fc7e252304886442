//! Verifying the audit chain in the background for the API: the walk is linear in the log
//! (about 16 s per million entries), so it cannot run inside a request. A run walks the
//! whole chain with [`chain::verify`], the same code as `metatron audit verify`, every time:
//! verifying only the entries added since the last run would miss an old entry changed
//! since.
//!
//! Runs are recorded in CDX's database, so any CDX process answers for a run another one
//! started, at most one runs at a time across processes, and the last verdict survives a
//! restart. A running walk beats (records its progress) every [`HEARTBEAT`]; one that stopped
//! beating for [`STALE_AFTER`] is reported as abandoned and the next start replaces it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use platform::db::Db;
use platform::ids::{new_id, Timestamp};
use platform::ApiError;
use serde::Serialize;
use tokio::sync::Notify;

use crate::chain::{self, ChainReport, PinnedKey, VerifyOptions};
use crate::store::{self, Finish, StartOutcome, VerificationRow};

/// How often a running walk records its progress.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A running walk whose progress is older than this is taken for abandoned.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often a waiting request looks for the end of a run another process walks.
const POLL: Duration = Duration::from_millis(200);

/// Where the background verifications stand (`GET /api/cdx/audit/verify`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VerificationStatus {
    /// The newest verification that walked the chain to a verdict; `null` before the first.
    pub latest: Option<CompletedVerification>,
    /// The verification in progress, if any.
    pub running: Option<RunningVerification>,
    /// The newest verification that stopped without a verdict (a database error, or its
    /// process stopped), when it is newer than `latest`.
    pub failed: Option<FailedVerification>,
}

/// A verification that reached a verdict: when it ran, and the walk's report.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CompletedVerification {
    /// Id of the run.
    pub id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished.
    pub finished_at: Timestamp,
    /// The report of the walk: `valid`, counts, head, keys and the first break.
    #[serde(flatten)]
    pub report: ChainReport,
}

/// A verification in progress.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunningVerification {
    /// Id of the run.
    pub id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Entries verified so far.
    pub entries_checked: i64,
    /// Entries the chain held when it started (entries appended since are walked too).
    pub entries_total: i64,
    /// When it last recorded its progress.
    pub updated_at: Timestamp,
}

/// A verification that stopped without a verdict.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailedVerification {
    /// Id of the run.
    pub id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it stopped (`null` when its process stopped while it ran).
    pub finished_at: Option<Timestamp>,
    /// Why.
    pub error: String,
}

/// What a request to start a verification got.
#[derive(Debug, Clone)]
pub enum Started {
    /// A new run, with this id.
    New(String),
    /// A run was already in progress, with this id.
    AlreadyRunning(String),
}

/// Starts, follows and reports the background verifications of CDX's audit chain.
#[derive(Debug, Clone)]
pub(crate) struct Verifications {
    db: Db,
    pinned_keys: Vec<PinnedKey>,
    /// Woken whenever a run of this process ends.
    finished: Arc<Notify>,
}

impl Verifications {
    /// Verifications of the chain in `db`, requiring checkpoints signed by `pinned_keys`
    /// when there are any.
    pub(crate) fn new(db: Db, pinned_keys: Vec<PinnedKey>) -> Self {
        Verifications {
            db,
            pinned_keys,
            finished: Arc::new(Notify::new()),
        }
    }

    /// Starts a run in the background, unless one is in progress.
    pub(crate) async fn start(&self) -> Result<Started, ApiError> {
        let now = Timestamp::now().millis();
        let stale_before = now - millis(STALE_AFTER);
        let id = new_id();
        match store::start_verification(&self.db, &id, now, stale_before).await? {
            StartOutcome::AlreadyRunning(current) => Ok(Started::AlreadyRunning(current.id)),
            StartOutcome::Started(run) => {
                tokio::spawn(self.clone().walk(run.id.clone()));
                Ok(Started::New(run.id))
            }
        }
    }

    /// Walks the chain for run `id` and records the outcome.
    async fn walk(self, id: String) {
        let progress = Arc::new(AtomicI64::new(0));
        let options = VerifyOptions {
            pinned_keys: self.pinned_keys.clone(),
            progress: Some(progress.clone()),
        };
        let walk = chain::verify(&self.db, &options);
        tokio::pin!(walk);
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut walk => break outcome,
                _ = beat.tick() => {
                    let checked = progress.load(Ordering::Relaxed);
                    let now = Timestamp::now().millis();
                    if let Err(e) = store::record_progress(&self.db, &id, checked, now).await {
                        tracing::warn!(error = %e, "recording the audit verification's progress failed");
                    }
                }
            }
        };
        let report = outcome
            .map_err(|e| format!("reading the audit log failed: {e}"))
            .and_then(|report| {
                serde_json::to_string(&report)
                    .map(|json| (report, json))
                    .map_err(|e| format!("encoding the report failed: {e}"))
            });
        let now = Timestamp::now().millis();
        let finished = match &report {
            Ok((report, json)) => {
                if !report.valid {
                    tracing::error!(broken = ?report.broken, "the audit chain does not verify");
                }
                store::finish_verification(&self.db, &id, report.entries, now, Finish::Report(json))
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, "an audit verification stopped without a verdict");
                let checked = progress.load(Ordering::Relaxed);
                store::finish_verification(&self.db, &id, checked, now, Finish::Error(error)).await
            }
        };
        if let Err(e) = finished {
            tracing::warn!(error = %e, "recording the end of an audit verification failed");
        }
        self.finished.notify_waiters();
    }

    /// Waits up to `wait` until run `id` (else the one running now, if any) has ended.
    pub(crate) async fn wait(&self, id: Option<&str>, wait: Duration) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let id = match id {
            Some(id) => id.to_string(),
            None => match store::running(self.db.reader()).await? {
                Some(current) => current.id,
                None => return Ok(()),
            },
        };
        loop {
            // Registered before the look, so that an end in between still wakes the wait.
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let run = store::verification(self.db.reader(), &id).await?;
            let stale_before = Timestamp::now().millis() - millis(STALE_AFTER);
            if run.is_none_or(|run| !run.running || run.heartbeat_at < stale_before) {
                return Ok(());
            }
            tokio::select! {
                _ = finished => {}
                // A run of another process wakes nobody here.
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// The newest verdict, the run in progress and the newest failure.
    pub(crate) async fn status(&self) -> Result<VerificationStatus, ApiError> {
        // The run in progress is read first: a run that ends between the two reads is then
        // in both (running, and its verdict), never in neither (as read the other way round:
        // no verdict yet, and no longer running).
        let running = store::running(self.db.reader()).await?;
        let (verdict, failure) = store::latest_verifications(self.db.reader()).await?;
        let stale_before = Timestamp::now().millis() - millis(STALE_AFTER);
        let latest = verdict.map(completed).transpose()?;
        // A run that stopped beating is reported as what it is; the next start closes it.
        let (running, abandoned) = match running {
            Some(run) if run.heartbeat_at < stale_before => (None, Some(run)),
            other => (other, None),
        };
        let failed = abandoned
            .map(|run| FailedVerification {
                id: run.id,
                started_at: Timestamp(run.started_at),
                finished_at: None,
                error: store::ABANDONED.to_string(),
            })
            .or_else(|| failure.map(failed))
            .filter(|f| latest.as_ref().is_none_or(|l| f.id > l.id));
        Ok(VerificationStatus {
            latest,
            running: running.map(|run| RunningVerification {
                id: run.id,
                started_at: Timestamp(run.started_at),
                entries_checked: run.entries_checked,
                entries_total: run.entries_total,
                updated_at: Timestamp(run.heartbeat_at),
            }),
            failed,
        })
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn completed(run: VerificationRow) -> Result<CompletedVerification, ApiError> {
    let report = run.report.as_deref().unwrap_or_default();
    let report: ChainReport = serde_json::from_str(report)
        .map_err(|e| ApiError::internal("reading a stored audit verification", e))?;
    Ok(CompletedVerification {
        id: run.id,
        started_at: Timestamp(run.started_at),
        finished_at: Timestamp(run.finished_at.unwrap_or(run.heartbeat_at)),
        report,
    })
}

fn failed(run: VerificationRow) -> FailedVerification {
    FailedVerification {
        id: run.id,
        started_at: Timestamp(run.started_at),
        finished_at: run.finished_at.map(Timestamp),
        error: run.error.unwrap_or_default(),
    }
}
