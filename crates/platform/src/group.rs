//! Group commit: writes that arrive together share one transaction.
//!
//! On SQLite (one writer, WAL) a commit appends every page it touched to the WAL; a customer
//! insert touches the table and each of its indexes, so small one-row transactions spend most
//! of their time writing the same pages again, and every statement is a round trip to the
//! connection's thread. On PostgreSQL each commit waits for the WAL flush. A [`GroupWriter`]
//! runs the write jobs that are waiting when a batch starts inside one transaction and
//! commits them together. If any of them fails, the batch is rolled back and each job runs
//! again in a transaction of its own, so a job's failure never takes another's write with it
//! (jobs are therefore `Fn`: they may run twice, and only their database effects count). A
//! caller hears its job's outcome only after the commit that carries it, so an answered
//! write is a committed write. Under light load a batch holds one job and costs what a plain
//! transaction costs.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// What a job answers, type-erased on its way through the batch.
type Answer = ApiResult<Box<dyn Any + Send>>;

/// A write to run inside a batch's transaction.
type WriteJob = Arc<dyn for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, Answer> + Send + Sync>;

struct Pending {
    job: WriteJob,
    done: oneshot::Sender<Answer>,
}

/// Hands write jobs to the batching task of one database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").finish_non_exhaustive()
    }
}

fn stopped() -> ApiError {
    ApiError::unavailable("the database writer has stopped")
}

impl GroupWriter {
    /// Starts the batching task for `db`; a batch holds at most `max_batch` jobs. The task
    /// ends when the last `GroupWriter` is dropped.
    pub fn spawn(db: Db, max_batch: usize) -> GroupWriter {
        let (jobs, queue) = mpsc::channel(max_batch.max(1) * 4);
        tokio::spawn(run(db, queue, max_batch.max(1)));
        GroupWriter { jobs }
    }

    /// Runs `job` in the next batch and answers its value once that batch committed, or its
    /// error once it failed in a transaction of its own.
    pub async fn write<T, F>(&self, job: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut AnyConnection) -> BoxFuture<'c, ApiResult<T>> + Send + Sync + 'static,
    {
        let job: WriteJob = Arc::new(move |conn| {
            let run = job(conn);
            Box::pin(async move { run.await.map(|v| Box::new(v) as Box<dyn Any + Send>) })
        });
        let (done, outcome) = oneshot::channel();
        self.jobs
            .send(Pending { job, done })
            .await
            .map_err(|_| stopped())?;
        let value = outcome.await.map_err(|_| stopped())??;
        value
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| ApiError::internal("group commit", "a job answered another type"))
    }
}

async fn run(db: Db, mut queue: mpsc::Receiver<Pending>, max_batch: usize) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let outcomes = match together(&db, &batch).await {
            Ok(outcomes) => outcomes,
            // Something failed: each job again, alone.
            Err(()) => {
                let mut outcomes = Vec::with_capacity(batch.len());
                for pending in &batch {
                    outcomes.push(alone(&db, &pending.job).await);
                }
                outcomes
            }
        };
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            // A caller that gave up (its request timed out) no longer listens.
            let _ = pending.done.send(outcome);
        }
    }
}

/// Runs every job of the batch in one transaction and commits; `Err` (with everything
/// rolled back) when any job or the commit failed.
async fn together(db: &Db, batch: &[Pending]) -> Result<Vec<Answer>, ()> {
    if batch.len() == 1 {
        return Ok(vec![alone(db, &batch[0].job).await]);
    }
    let mut tx = db.begin().await.map_err(|_| ())?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for pending in batch {
        match (pending.job)(&mut tx).await {
            Ok(value) => outcomes.push(Ok(value)),
            Err(_) => return Err(()),
        }
    }
    tx.commit().await.map_err(|_| ())?;
    Ok(outcomes)
}

/// Runs one job in a transaction of its own.
async fn alone(db: &Db, job: &WriteJob) -> Answer {
    let mut tx = db.begin().await?;
    let value = job(&mut tx).await?;
    tx.commit().await?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DatabaseSettings, PoolDefaults};

    #[tokio::test]
    async fn jobs_commit_together_and_a_failing_one_alone_rolls_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::db::database_url("g", &DatabaseSettings::default(), dir.path());
        let db = Db::connect("g", &url, None, &PoolDefaults::default())
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, note TEXT)")
            .execute(db.writer())
            .await
            .expect("table");
        let writer = GroupWriter::spawn(db.clone(), 16);
        let insert = |id: String, note: &'static str| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        let id = id.clone();
                        Box::pin(async move {
                            // Two statements: a failure of the second must undo the first.
                            sqlx::query("INSERT INTO t (id, note) VALUES ($1, $2)")
                                .bind(format!("{id}-a"))
                                .bind(note)
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("INSERT INTO t (id, note) VALUES ($1, $2)")
                                .bind(id)
                                .bind(note)
                                .execute(&mut *conn)
                                .await?;
                            Ok(note)
                        })
                    })
                    .await
            }
        };
        assert_eq!(insert("3".into(), "ok").await.expect("first"), "ok");
        let jobs: Vec<_> = (0..20)
            .filter(|i| *i != 3)
            .map(|i| {
                // Job 7 collides with job 3's second row.
                let id = if i == 7 {
                    "3".to_string()
                } else {
                    i.to_string()
                };
                tokio::spawn(insert(id, if i == 7 { "dup" } else { "ok" }))
            })
            .collect();
        let mut failed = 0;
        for job in jobs {
            match job.await.expect("join") {
                Ok(note) => assert_eq!(note, "ok"),
                Err(e) => {
                    assert_eq!(e.status, axum::http::StatusCode::CONFLICT, "{e}");
                    failed += 1;
                }
            }
        }
        assert_eq!(failed, 1);
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.reader())
            .await
            .expect("count");
        assert_eq!(
            rows, 38,
            "19 jobs of two rows each, nothing of the failed one"
        );
        let dup: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE note = 'dup'")
            .fetch_one(db.reader())
            .await
            .expect("count");
        assert_eq!(dup, 0);
    }
}
