//! Test support: a fresh database per test on the backend the suite runs against.
//!
//! `TEST_BACKEND=sqlite` (default) gives a file in a temporary directory;
//! `TEST_BACKEND=postgres` creates a new database on `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) and drops it when the test ends. A PostgreSQL that
//! cannot be reached fails the test loudly; it is never skipped.

use std::path::PathBuf;

use futures_util::StreamExt;

use crate::db::Backend;
use crate::error::ApiError;
use crate::export::{ExportStream, TenantExport};

/// The backend this test run targets.
pub fn backend() -> Backend {
    match std::env::var("TEST_BACKEND").as_deref() {
        Ok("postgres") | Ok("postgresql") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TEST_BACKEND must be sqlite or postgres, not {other}"),
    }
}

fn postgres_server() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A throwaway set of databases for one test; dropped with it.
#[derive(Debug)]
pub struct TestDatabases {
    dir: tempfile::TempDir,
    created: std::sync::Mutex<Vec<String>>,
    prefix: String,
}

impl TestDatabases {
    /// A new, empty set.
    pub fn new() -> Self {
        TestDatabases {
            dir: tempfile::tempdir().expect("temporary directory"),
            created: std::sync::Mutex::new(Vec::new()),
            prefix: format!("mt_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]),
        }
    }

    /// The data directory (SQLite files live here).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// The URL for `service`'s database on the selected backend (created on first connect).
    pub fn url(&self, service: &str) -> String {
        match backend() {
            Backend::Sqlite => format!("sqlite://{}/{service}.db", self.dir.path().display()),
            Backend::Postgres => {
                let name = format!("{}_{service}", self.prefix);
                if let Ok(mut created) = self.created.lock() {
                    created.push(name.clone());
                }
                format!("{}/{name}", postgres_server())
            }
        }
    }
}

impl Default for TestDatabases {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        let names = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let server = postgres_server();
        // Drop runs inside the test's runtime; a separate thread gets a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::{ConnectOptions, Executor};
                crate::db::install_drivers();
                let Ok(options) = server.parse::<sqlx::any::AnyConnectOptions>() else {
                    return;
                };
                let Ok(mut conn) = options.connect().await else {
                    return;
                };
                for name in names {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// A service's tenant export that the test feeds chunk by chunk: each chunk (or error)
/// sent on the sender arrives in the export when it is sent, and dropping the sender ends
/// the export. With it a test decides exactly when the export moves on, so it can check
/// what a reader receives before the export is complete, without timing.
#[derive(Debug)]
pub struct ChannelExport {
    chunks: std::sync::Mutex<Option<ExportChunks>>,
}

type ExportChunks = tokio::sync::mpsc::UnboundedReceiver<Result<axum::body::Bytes, ApiError>>;

/// Feeds a [`ChannelExport`].
pub type ExportFeed = tokio::sync::mpsc::UnboundedSender<Result<axum::body::Bytes, ApiError>>;

impl ChannelExport {
    /// An export and the sender that feeds it. It can be exported once.
    pub fn new() -> (ExportFeed, ChannelExport) {
        let (feed, chunks) = tokio::sync::mpsc::unbounded_channel();
        let export = ChannelExport {
            chunks: std::sync::Mutex::new(Some(chunks)),
        };
        (feed, export)
    }
}

#[async_trait::async_trait]
impl TenantExport for ChannelExport {
    async fn export_tenant(&self, _tenant_id: &str) -> Result<ExportStream, ApiError> {
        let chunks = self
            .chunks
            .lock()
            .ok()
            .and_then(|mut chunks| chunks.take())
            .ok_or_else(|| ApiError::unavailable("this test export was taken already"))?;
        Ok(
            futures_util::stream::unfold(chunks, |mut chunks| async move {
                chunks.recv().await.map(|chunk| (chunk, chunks))
            })
            .boxed(),
        )
    }
}
