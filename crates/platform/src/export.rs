//! A tenant's data, exported by every service for data portability
//! (`GET /api/cdx/tenants/{id}/export` assembles one document from all of them).
//!
//! Each service answers a JSON object of its tenant-scoped tables, `{"<table>": [rows]}`,
//! leaving out what must never leave it (password hashes, tokens). CDX asks the services in
//! its own process directly ([`TenantExport`] on the service) and those in other processes
//! over HTTP ([`RemoteExport`], `GET /internal/<service>/tenants/{id}/export`).
//!
//! An export is a stream of JSON text, never a document in memory: a tenant may hold
//! millions of rows. Tables are read in keyset pages of [`PAGE_ROWS`] rows, each page
//! serialized as one chunk, so memory stays bounded by a page whatever the tenant's size,
//! and no database connection or read transaction is held while a slow client downloads.
//! The price is that an export is not one snapshot: a row written while it runs may or may
//! not be in it (each row appears at most once, as its primary key orders the pages).

use std::pin::Pin;

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::db::Db;
use crate::error::ApiError;
use crate::sql::Conditions;

/// A service's export of one tenant: chunks of JSON text that together form one object.
/// An `Err` item means the export broke off and what came before is incomplete.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<Bytes, ApiError>> + Send>>;

/// Rows per page (and per chunk) a table export reads: large enough that the queries cost
/// little next to the transfer, small enough that a page of wide rows stays well under a
/// megabyte or two.
pub const PAGE_ROWS: i64 = 500;

/// Path of a service's internal export endpoint, for `service` and tenant `id`.
pub fn internal_path(service: &str, tenant_id: &str) -> String {
    format!("/internal/{service}/tenants/{tenant_id}/export")
}

/// Exports one service's data of a tenant.
#[async_trait]
pub trait TenantExport: Send + Sync {
    /// Starts the export of the tenant's data: `{"<table>": [rows]}` as a stream.
    ///
    /// An error here (the service cannot be reached, refuses the call) comes before any of
    /// the export was produced; an error inside the stream comes midway.
    async fn export_tenant(&self, tenant_id: &str) -> Result<ExportStream, ApiError>;
}

/// One table of a service's export.
#[derive(Debug, Clone, Copy)]
pub struct ExportTable {
    /// The table; it has a `tenant_id` column.
    pub name: &'static str,
    /// The columns that may leave the service, `"col1, col2, …"` or `"*"`; they include
    /// the `key` columns.
    pub columns: &'static str,
    /// The text columns that, after `tenant_id`, make up the primary key: the order of
    /// the rows, and where each page resumes.
    pub key: &'static [&'static str],
}

/// Streams `tables` of `tenant_id` from `db` as one JSON object, each table an array of
/// rows keyed by column, in key order.
pub fn export_tables(db: Db, tenant_id: &str, tables: &'static [ExportTable]) -> ExportStream {
    export_tables_in_pages(db, tenant_id, tables, PAGE_ROWS)
}

/// [`export_tables`] with pages of `page_rows` rows (small pages let tests cross page
/// boundaries with few rows).
pub fn export_tables_in_pages(
    db: Db,
    tenant_id: &str,
    tables: &'static [ExportTable],
    page_rows: i64,
) -> ExportStream {
    let pager = TablePager {
        db,
        tenant_id: tenant_id.to_string(),
        tables,
        page_rows: page_rows.max(1),
        table: 0,
        after: None,
        opened: false,
    };
    stream::try_unfold(pager, |mut pager| async move {
        Ok(pager.next_chunk().await?.map(|chunk| (chunk, pager)))
    })
    .boxed()
}

/// Where a table export stands between two chunks.
struct TablePager {
    db: Db,
    tenant_id: String,
    tables: &'static [ExportTable],
    page_rows: i64,
    /// The table being read (`tables.len()` once all are).
    table: usize,
    /// The key of the last row sent of the current table; `None` before its first page.
    after: Option<Vec<String>>,
    /// Whether the object's `{` has gone out.
    opened: bool,
}

impl TablePager {
    /// The next chunk of the object: the next page of the current table with whatever
    /// punctuation surrounds it; `None` once the object is closed.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let mut out = Vec::new();
        if !self.opened {
            self.opened = true;
            out.push(b'{');
        } else if self.table >= self.tables.len() {
            return Ok(None);
        }
        let Some(table) = self.tables.get(self.table) else {
            out.push(b'}');
            return Ok(Some(out.into()));
        };
        let continues_table = self.after.is_some();
        if !continues_table {
            if self.table > 0 {
                out.push(b',');
            }
            write_json(&mut out, &table.name)?;
            out.extend_from_slice(b":[");
        }
        let rows = self.page(table).await?;
        for (i, row) in rows.iter().enumerate() {
            if i > 0 || continues_table {
                out.push(b',');
            }
            write_json(&mut out, &row_json(row))?;
        }
        if (rows.len() as i64) < self.page_rows {
            out.push(b']');
            self.after = None;
            self.table += 1;
            if self.table == self.tables.len() {
                out.push(b'}');
            }
        } else if let Some(last) = rows.last() {
            self.after = Some(key_of(last, table)?);
        }
        Ok(Some(out.into()))
    }

    /// The page of `table` after the last row sent.
    async fn page(&self, table: &ExportTable) -> Result<Vec<sqlx::any::AnyRow>, ApiError> {
        let key = table.key.join(", ");
        let mut conditions = Conditions::default();
        let tenant = conditions.bind(self.tenant_id.as_str());
        conditions.and(format!("tenant_id = {tenant}"));
        if let Some(after) = &self.after {
            let values: Vec<String> = after.iter().map(|v| conditions.bind(v.as_str())).collect();
            conditions.and(format!("({key}) > ({})", values.join(", ")));
        }
        let sql = format!(
            "SELECT {} FROM {}{} ORDER BY {key} LIMIT {}",
            table.columns,
            table.name,
            conditions.where_sql(),
            self.page_rows
        );
        Ok(conditions.query(&sql).fetch_all(self.db.reader()).await?)
    }
}

/// The key of `row`, where the next page of `table` resumes.
fn key_of(row: &sqlx::any::AnyRow, table: &ExportTable) -> Result<Vec<String>, ApiError> {
    table
        .key
        .iter()
        .map(|column| {
            row.try_get::<String, _>(*column).map_err(|e| {
                ApiError::internal(
                    &format!("reading the key column {column} of {}", table.name),
                    e,
                )
            })
        })
        .collect()
}

fn write_json(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), ApiError> {
    serde_json::to_writer(out, value).map_err(|e| ApiError::internal("serializing an export", e))
}

/// One row as a JSON object; integers, reals and texts as themselves, NULL as `null`.
fn row_json(row: &sqlx::any::AnyRow) -> Value {
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let is_null = row.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true);
        let value = if is_null {
            Value::Null
        } else {
            let kind = column.type_info().name().to_ascii_uppercase();
            if kind.contains("BOOL") {
                row.try_get::<bool, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else if kind.contains("INT") {
                row.try_get::<i64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else if kind.contains("REAL") || kind.contains("FLOAT") || kind.contains("DOUBLE") {
                row.try_get::<f64, _>(i)
                    .map(Value::from)
                    .unwrap_or(Value::Null)
            } else {
                row.try_get::<String, _>(i)
                    .map(Value::from)
                    .or_else(|_| row.try_get::<i64, _>(i).map(Value::from))
                    .unwrap_or(Value::Null)
            }
        };
        object.insert(column.name().to_string(), value);
    }
    Value::Object(object)
}

/// `export` with an error midway logged (naming `service` and `tenant_id`) before it
/// goes on: by then the answer's status has gone out, so the log is where the cause stays.
pub fn logging_failures(export: ExportStream, service: &str, tenant_id: &str) -> ExportStream {
    let service = service.to_string();
    let tenant_id = tenant_id.to_string();
    export
        .inspect_err(move |e| {
            tracing::error!(
                service = %service,
                tenant_id = %tenant_id,
                code = e.code,
                error = %e,
                "the tenant export broke off midway; the transfer is aborted"
            );
        })
        .boxed()
}

/// An HTTP answer (200, `application/json`) whose body is `export`, sent as it is
/// produced. An error midway aborts the transfer, so the client sees a truncated body,
/// never a shorter document that parses.
pub fn json_response(export: ExportStream) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Personal data: no cache on the way may keep a copy.
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(export),
    )
        .into_response()
}

/// A service in another process, asked over HTTP with this process's service token.
#[derive(Debug, Clone)]
pub struct RemoteExport {
    service: String,
    client: crate::remote::ServiceClient,
}

impl RemoteExport {
    /// The export of `service`, reached with `client`.
    pub fn new(service: &str, client: crate::remote::ServiceClient) -> Self {
        RemoteExport {
            service: service.to_string(),
            client,
        }
    }
}

#[async_trait]
impl TenantExport for RemoteExport {
    /// The other service's answer, passed on chunk by chunk as it arrives.
    async fn export_tenant(&self, tenant_id: &str) -> Result<ExportStream, ApiError> {
        if !crate::ids::is_uuid(tenant_id) {
            return Err(ApiError::not_found("tenant"));
        }
        self.client
            .get_streamed(&internal_path(&self.service, tenant_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::facts::{FactsPage, ServiceFacts};
    use crate::identity::ServiceIdentity;
    use crate::remote::ServiceClient;
    use crate::testing::{ChannelExport, ExportFeed};

    struct NoFacts;

    #[async_trait]
    impl ServiceFacts for NoFacts {
        async fn facts(&self, _: Option<&str>, _: i64) -> Result<FactsPage, ApiError> {
            Ok(FactsPage::default())
        }
    }

    fn identity(name: &str) -> ServiceIdentity {
        ServiceIdentity::new(name, &SecretString::from("s".repeat(32))).expect("identity")
    }

    /// Serves a "svc" service's internal routes over HTTP with an export the test feeds,
    /// and answers CDX's remote export of it (with `timeout` as the call timeout).
    async fn serve_remote(timeout: Duration) -> (ExportFeed, RemoteExport) {
        let (feed, export) = ChannelExport::new();
        let routes = crate::http::edge(
            crate::identity::data_routes(
                "svc",
                Arc::new(export),
                Arc::new(NoFacts),
                identity("svc"),
            ),
            &crate::config::HttpSettings::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, routes).await });
        let client = ServiceClient::new("svc", &base, identity("cdx"), timeout).expect("client");
        (feed, RemoteExport::new("svc", client))
    }

    fn chunk(text: &'static str) -> Result<Bytes, ApiError> {
        Ok(Bytes::from_static(text.as_bytes()))
    }

    /// Reads `export` until it has received `expected` in all.
    async fn read_until(export: &mut ExportStream, expected: &str) {
        let mut received = Vec::new();
        while received.len() < expected.len() {
            match export.next().await {
                Some(Ok(chunk)) => received.extend_from_slice(&chunk),
                other => panic!("expected more of {expected}, got {other:?}"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&received), expected);
    }

    const TENANT: &str = "0190f3c4-6f5e-7a00-8000-000000000001";

    #[tokio::test]
    async fn a_remote_export_passes_each_chunk_on_as_it_arrives() {
        let (feed, remote) = serve_remote(Duration::from_secs(10)).await;
        feed.send(chunk("{\"rows\":[1")).expect("feed");
        let mut export = remote.export_tenant(TENANT).await.expect("export starts");
        // The rest does not exist yet: this part can only have come through unbuffered.
        read_until(&mut export, "{\"rows\":[1").await;
        feed.send(chunk(",2]}")).expect("feed");
        read_until(&mut export, ",2]}").await;
        drop(feed);
        assert!(
            export.next().await.is_none(),
            "the export ends with the service's"
        );
    }

    #[tokio::test]
    async fn the_call_timeout_bounds_each_gap_not_the_whole_transfer() {
        let timeout = Duration::from_millis(1000);
        let (feed, remote) = serve_remote(timeout).await;
        let mut export = remote.export_tenant(TENANT).await.expect("export starts");
        let started = tokio::time::Instant::now();
        // Twice the timeout in all, in gaps far shorter than it.
        while started.elapsed() < 2 * timeout {
            feed.send(chunk("x")).expect("feed");
            read_until(&mut export, "x").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(feed);
        assert!(export.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stalled_or_broken_remote_export_ends_in_an_error() {
        // The service sends part of the export, then nothing for longer than the timeout.
        let (feed, remote) = serve_remote(Duration::from_millis(1_000)).await;
        feed.send(chunk("{\"rows\":[")).expect("feed");
        let mut export = remote.export_tenant(TENANT).await.expect("export starts");
        read_until(&mut export, "{\"rows\":[").await;
        let stalled = export.next().await.expect("an item");
        assert_eq!(stalled.expect_err("stalled").code, "unavailable");
        drop(feed);

        // The service's export fails midway: its transfer is aborted, and that is an
        // error here, never a clean end.
        let (feed, remote) = serve_remote(Duration::from_secs(10)).await;
        feed.send(chunk("{\"rows\":[")).expect("feed");
        let mut export = remote.export_tenant(TENANT).await.expect("export starts");
        read_until(&mut export, "{\"rows\":[").await;
        feed.send(Err(ApiError::unavailable("database gone")))
            .expect("feed");
        let broken = export.next().await.expect("an item");
        assert_eq!(broken.expect_err("broken off").code, "unavailable");
    }

    #[tokio::test]
    async fn a_remote_export_refused_before_it_starts_answers_that_error() {
        let (_feed, remote) = serve_remote(Duration::from_secs(10)).await;
        let error = remote
            .export_tenant("not-a-uuid")
            .await
            .err()
            .expect("refused");
        assert_eq!(error.status, axum::http::StatusCode::NOT_FOUND);
        // The other process answers an error instead of an export: it comes back as is.
        let unknown = RemoteExport::new("nope", remote.client.clone());
        let error = unknown.export_tenant(TENANT).await.err().expect("refused");
        assert_eq!(error.status, axum::http::StatusCode::NOT_FOUND);
    }
}
