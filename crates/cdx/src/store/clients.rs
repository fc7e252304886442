//! Clients.

use platform::db::contains_pattern;
use platform::db::Db;
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::ids::{is_uuid, new_id, Timestamp};
use platform::{ApiError, ApiResult};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{check_version, Arg, Conditions, CLIENT_COLUMNS};
use crate::events::{self, CLIENT_FIELDS};
use crate::model::Client;
use platform::sql::lost_race;

fn client_from_row(row: &AnyRow) -> Result<Client, sqlx::Error> {
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

// Clients

/// Filters of the client list.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    /// Case-insensitive substring of the name.
    pub q: Option<String>,
}

/// Clients in id order after `after`, at most `limit`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_clients(
    pool: &AnyPool,
    filter: &ClientFilter,
    after: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Client>> {
    let mut c = Conditions::default();
    if let Some(q) = &filter.q {
        let p = c.bind(Arg::Text(contains_pattern(q)));
        c.and(format!("LOWER(name) LIKE {p} ESCAPE '\\'"));
    }
    if let Some(after) = after {
        let p = c.bind(Arg::Text(after.to_string()));
        c.and(format!("id > {p}"));
    }
    let where_sql = c.where_sql();
    let p = c.bind(Arg::Int(limit));
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients{where_sql} ORDER BY id LIMIT {p}");
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(client_from_row).collect::<Result<_, _>>()?)
}

/// The client with this id.
pub async fn client_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    id: &str,
) -> ApiResult<Option<Client>> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(client_from_row).transpose()?)
}

async fn insert_client(conn: &mut AnyConnection, client: &Client) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO clients (id, name, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&client.id)
    .bind(&client.name)
    .bind(client.created_at.millis())
    .bind(client.updated_at.millis())
    .bind(client.version)
    .execute(conn)
    .await
    .map_err(on_unique(
        "name_taken",
        "a client with this name already exists",
    ))?;
    Ok(())
}

pub(super) fn new_client(name: &str) -> Client {
    let now = Timestamp::now();
    Client {
        id: new_id(),
        name: name.to_string(),
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

/// Creates a client (name already validated) and records `cdx.client.created`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_client(db: &Db, name: &str, actor: &Actor) -> ApiResult<Client> {
    let client = new_client(name);
    let mut tx = db.begin().await?;
    insert_client(&mut tx, &client).await?;
    record(
        &mut tx,
        &events::client(events::CLIENT_CREATED, &client, CLIENT_FIELDS, actor),
    )
    .await?;
    tx.commit().await?;
    Ok(client)
}

/// Changes to a client (validated).
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    /// New name.
    pub name: Option<String>,
}

/// Applies `changes` when the client is still at `expected` (if given) and records
/// `cdx.client.updated` naming the fields that really changed. No change, no event.
#[tracing::instrument(skip_all, fields(client = id), err(level = "debug"))]
pub async fn update_client(
    db: &Db,
    id: &str,
    changes: &ClientChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Client> {
    let mut tx = db.begin().await?;
    let current = client_by_id(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("client"))?;
    check_version(expected, current.version)?;
    let mut next = current.clone();
    let mut changed = Vec::new();
    if let Some(name) = changes.name.as_ref().filter(|n| **n != current.name) {
        next.name = name.clone();
        changed.push("name");
    }
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE clients SET name = $1, updated_at = $2, version = $3 WHERE id = $4 AND version = $5",
    )
    .bind(&next.name)
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await
    .map_err(on_unique("name_taken", "a client with this name already exists"))?
    .rows_affected();
    if updated == 0 {
        return Err(lost_race(
            client_by_id(&mut *tx, id).await?.map(|c| c.version),
            "client",
        ));
    }
    record(
        &mut tx,
        &events::client(events::CLIENT_UPDATED, &next, &changed, actor),
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}
