//! The database factory: one pool per service from that service's own URL (rule 1).
//!
//! Queries are written once in portable SQL and run through sqlx's `Any` driver on both
//! backends (see docs/decisions/0001-portable-sql.md): integers are `BIGINT`, booleans are
//! `0/1` integers, times are Unix milliseconds, ids and JSON are text.
//!
//! On SQLite every write goes through a single-connection writer pool (SQLite admits one
//! writer at a time; queueing in the pool is cheaper than lock retries) while reads use a
//! pool of readers in WAL mode. On PostgreSQL both handles are the same pool.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, ConnectOptions, Executor, Row, Transaction};

use crate::config::{DatabaseSettings, PoolDefaults};

/// The database engine behind a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A failure to open or migrate a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names an engine we do not support.
    #[error("unsupported database URL for {service} (expected sqlite:// or postgres://): {url}")]
    UnsupportedUrl { service: String, url: String },
    /// Connecting failed.
    #[error("cannot open the {service} database at {url}: {source}")]
    Connect {
        service: String,
        url: String,
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("migrating the {service} database failed: {source}")]
    Migrate {
        service: String,
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// One embedded migration of a service (`include_str!` of a file in its `migrations/`).
#[derive(Debug, Clone, Copy)]
pub struct MigrationFile {
    /// Increasing version number, unique within the database.
    pub version: i64,
    /// Short description, e.g. `users_and_sessions`.
    pub name: &'static str,
    /// Portable SQL (runs unchanged on SQLite and PostgreSQL).
    pub sql: &'static str,
}

/// Migrations the kernel adds to every service database before the service's own:
/// the outbox, the consumer dedup table, the tenant replica and the deleted tenants. Service migrations start at
/// version 100.
pub const KERNEL_MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 1,
        name: "kernel_outbox_inbox_tenants",
        sql: include_str!("../migrations/0001_kernel.sql"),
    },
    MigrationFile {
        version: 2,
        name: "kernel_outbox_retention",
        sql: include_str!("../migrations/0002_outbox_retention.sql"),
    },
    MigrationFile {
        version: 3,
        name: "kernel_deleted_tenants",
        sql: include_str!("../migrations/0003_deleted_tenants.sql"),
    },
];

/// A service's database: a writer handle and a reader handle.
#[derive(Clone, Debug)]
pub struct Db {
    service: &'static str,
    backend: Backend,
    url: String,
    writer: AnyPool,
    reader: AnyPool,
}

/// Registers the SQLite and PostgreSQL drivers with sqlx's `Any` (once per process).
pub fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// The URL of a service's database: its setting, or a SQLite file in the data directory.
pub fn database_url(service: &str, settings: &DatabaseSettings, data_dir: &Path) -> String {
    match &settings.url {
        Some(url) => url.clone(),
        None => format!("sqlite://{}/{service}.db", data_dir.display()),
    }
}

/// Escapes `\\`, `%` and `_` so that text matches itself in `LIKE ... ESCAPE '\\'`.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A case-insensitive "contains" pattern for `LOWER(column) LIKE $n ESCAPE '\\'`.
pub fn contains_pattern(q: &str) -> String {
    format!("%{}%", escape_like(&q.to_lowercase()))
}

/// The URL with any password replaced by `***`, for logs and `inspect`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Splits our own `schema=NAME` parameter off a PostgreSQL URL.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(name) => {
                schema = Some(name.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, schema)
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl Db {
    /// Opens (creating when missing) the database of `service` at `url`.
    pub async fn connect(
        service: &'static str,
        url: &str,
        max_connections: Option<u32>,
        pool: &PoolDefaults,
    ) -> Result<Db, DbError> {
        Self::open(service, url, max_connections, pool, true).await
    }

    /// Opens the database of `service` at `url` only if it exists (for tools that look,
    /// like `inspect`, and must not leave an empty database behind a mistyped URL).
    pub async fn connect_existing(
        service: &'static str,
        url: &str,
        max_connections: Option<u32>,
        pool: &PoolDefaults,
    ) -> Result<Db, DbError> {
        Self::open(service, url, max_connections, pool, false).await
    }

    async fn open(
        service: &'static str,
        url: &str,
        max_connections: Option<u32>,
        pool: &PoolDefaults,
        create: bool,
    ) -> Result<Db, DbError> {
        install_drivers();
        let connect_err = |source| DbError::Connect {
            service: service.to_string(),
            url: mask_url(url),
            source,
        };
        let max = max_connections.unwrap_or(pool.max_connections).max(1);
        let acquire = Duration::from_millis(pool.acquire_timeout_ms);
        if url.starts_with("sqlite:") {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if let Some(parent) = Path::new(path).parent() {
                if create && !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| connect_err(sqlx::Error::Io(e)))?;
                }
            }
            let with_mode = match (url.contains('?'), create) {
                (true, _) => url.to_string(),
                (false, true) => format!("{url}?mode=rwc"),
                (false, false) => format!("{url}?mode=rw"),
            };
            let options = AnyConnectOptions::from_str(&with_mode)
                .map_err(connect_err)?
                .disable_statement_logging();
            let busy = pool.sqlite_busy_timeout_ms;
            let open = |size: u32| {
                AnyPoolOptions::new()
                    .max_connections(size)
                    .min_connections(1)
                    .acquire_timeout(acquire)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            // `temp_store = MEMORY`: a multi-row statement inside a
                            // transaction keeps its statement journal in memory; on a file
                            // it cost several page writes per inserted row.
                            conn.execute(
                                format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy}; \
                                     PRAGMA temp_store = MEMORY;"
                                )
                                .as_str(),
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options.clone())
            };
            let writer = open(1).await.map_err(connect_err)?;
            let reader = open(max).await.map_err(connect_err)?;
            return Ok(Db {
                service,
                backend: Backend::Sqlite,
                url: url.to_string(),
                writer,
                reader,
            });
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (base, schema) = split_schema(url);
            if let Some(schema) = &schema {
                if !valid_identifier(schema) {
                    return Err(connect_err(sqlx::Error::Configuration(
                        format!("schema `{schema}` must be a lowercase identifier").into(),
                    )));
                }
            }
            if create
                && !<Any as sqlx::migrate::MigrateDatabase>::database_exists(&base)
                    .await
                    .unwrap_or(true)
            {
                <Any as sqlx::migrate::MigrateDatabase>::create_database(&base)
                    .await
                    .map_err(connect_err)?;
            }
            let options = AnyConnectOptions::from_str(&base)
                .map_err(connect_err)?
                .disable_statement_logging();
            if let (Some(schema), true) = (&schema, create) {
                let mut conn = options.connect().await.map_err(connect_err)?;
                // Checked first: `CREATE SCHEMA IF NOT EXISTS` logs a notice on every start.
                let exists =
                    sqlx::query("SELECT 1 FROM information_schema.schemata WHERE schema_name = $1")
                        .bind(schema)
                        .fetch_optional(&mut conn)
                        .await
                        .map_err(connect_err)?
                        .is_some();
                if !exists {
                    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
                        .await
                        .map_err(connect_err)?;
                }
            }
            let pool = AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(acquire)
                .after_connect(move |conn, _| {
                    let schema = schema.clone();
                    Box::pin(async move {
                        if let Some(schema) = schema {
                            conn.execute(format!("SET search_path TO {schema}").as_str())
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            return Ok(Db {
                service,
                backend: Backend::Postgres,
                url: url.to_string(),
                writer: pool.clone(),
                reader: pool,
            });
        }
        Err(DbError::UnsupportedUrl {
            service: service.to_string(),
            url: mask_url(url),
        })
    }

    /// The owning service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> String {
        mask_url(&self.url)
    }

    /// The handle for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// The handle for a single-statement write (autocommit; no transaction needed).
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.writer.begin().await
    }

    fn migrator(service: &[MigrationFile]) -> Migrator {
        let migrations: Vec<Migration> = KERNEL_MIGRATIONS
            .iter()
            .chain(service.iter())
            .map(|m| {
                Migration::new(
                    m.version,
                    Cow::Borrowed(m.name),
                    MigrationType::Simple,
                    Cow::Borrowed(m.sql),
                    false,
                )
            })
            .collect();
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    /// Applies the kernel's and the service's migrations not yet applied (idempotent).
    pub async fn migrate(&self, service: &[MigrationFile]) -> Result<(), DbError> {
        Self::migrator(service)
            .run(&self.writer)
            .await
            .map_err(|source| DbError::Migrate {
                service: self.service.to_string(),
                source,
            })
    }

    /// The highest applied migration version, or `None` on an empty database.
    pub async fn migration_version(&self) -> Result<Option<i64>, sqlx::Error> {
        if !self.tables().await?.iter().any(|t| t == "_sqlx_migrations") {
            return Ok(None);
        }
        let row = sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.reader)
            .await?;
        row.try_get::<Option<i64>, _>("v")
    }

    /// Whether every embedded migration is applied.
    pub async fn migrations_current(&self, service: &[MigrationFile]) -> Result<bool, sqlx::Error> {
        let latest = service
            .iter()
            .chain(KERNEL_MIGRATIONS)
            .map(|m| m.version)
            .max();
        Ok(self.migration_version().await? >= latest)
    }

    /// The names of the tables in this service's database (or schema), sorted.
    pub async fn tables(&self) -> Result<Vec<String>, sqlx::Error> {
        let sql = match self.backend {
            Backend::Sqlite => {
                "SELECT name AS t FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) AS t FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
            }
        };
        let rows = sqlx::query(sql).fetch_all(&self.reader).await?;
        rows.iter().map(|r| r.try_get::<String, _>("t")).collect()
    }

    /// Row count of `table` (a name returned by [`Db::tables`]).
    pub async fn count_rows(&self, table: &str) -> Result<i64, sqlx::Error> {
        let quoted = table.replace('"', "\"\"");
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM \"{quoted}\""))
            .fetch_one(&self.reader)
            .await?;
        row.try_get::<i64, _>("n")
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.reader).await.is_ok()
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_only() {
        assert_eq!(
            mask_url("postgres://app:s3cret@db:5432/auth"),
            "postgres://app:***@db:5432/auth"
        );
        assert_eq!(mask_url("postgres://app@db/auth"), "postgres://app@db/auth");
        assert_eq!(mask_url("sqlite://data/auth.db"), "sqlite://data/auth.db");
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("50%_A\\"), "%50\\%\\_a\\\\%");
        assert_eq!(escape_like("auth.login."), "auth.login.");
    }

    #[test]
    fn schema_parameter_is_ours() {
        assert_eq!(
            split_schema("postgres://h/db?schema=auth&sslmode=disable"),
            (
                "postgres://h/db?sslmode=disable".to_string(),
                Some("auth".to_string())
            )
        );
        assert_eq!(
            split_schema("postgres://h/db"),
            ("postgres://h/db".to_string(), None)
        );
        assert!(valid_identifier("auth_2"));
        assert!(!valid_identifier("auth; drop"));
    }

    #[tokio::test]
    async fn sqlite_migrates_once_and_reports_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = database_url("svc", &DatabaseSettings::default(), dir.path());
        let db = Db::connect("svc", &url, None, &PoolDefaults::default())
            .await
            .expect("connect");
        assert_eq!(db.migration_version().await.expect("version"), None);
        db.migrate(&[]).await.expect("migrate");
        db.migrate(&[]).await.expect("migrating twice is a no-op");
        assert_eq!(db.migration_version().await.expect("version"), Some(3));
        assert!(db.migrations_current(&[]).await.expect("current"));
        let tables = db.tables().await.expect("tables");
        assert!(tables.contains(&"outbox".to_string()), "{tables:?}");
        assert!(tables.contains(&"tenant_replica".to_string()), "{tables:?}");
        assert!(
            tables.contains(&"deleted_tenants".to_string()),
            "{tables:?}"
        );
        assert_eq!(db.count_rows("outbox").await.expect("count"), 0);
    }
}
