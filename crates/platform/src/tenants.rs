//! Each service's replica of the tenant registry (rule 1: no service reads CDX's database).
//!
//! CDX owns tenants and announces every change as a `cdx.tenant.*` event carrying the
//! tenant's current slug and status; this consumer keeps the `tenant_replica` table of the
//! service's own database in step, so tenant lookups (the `X-Tenant` header, login by slug)
//! stay local.
//!
//! A deleted tenant leaves the replica but stays known as deleted (`deleted_tenants`, its id
//! alone): events of other services may still arrive for it, and consumers that write the
//! tenant's rows skip them ([`begin_unless_deleted`]).

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use sqlx::{Any, AnyConnection, Transaction};

use crate::db::Db;
use crate::events::{begin_once, Event, EventHandler, HandlerError};
use crate::ids::{is_uuid, Timestamp};

/// Event types CDX emits for tenants; `data` carries at least `slug` and `status`.
pub const TENANT_CREATED: &str = "cdx.tenant.created";
/// See [`TENANT_CREATED`].
pub const TENANT_UPDATED: &str = "cdx.tenant.updated";
/// CDX deleted the tenant: every service purges its data and answers with
/// `<service>.tenant.purged` ([`TENANT_PURGED`]).
pub const TENANT_DELETED: &str = "cdx.tenant.deleted";
/// The suffix of the event each service records once it purged a deleted tenant's data
/// (`auth.tenant.purged`, `crm.tenant.purged`); `data.rows` counts what went.
pub const TENANT_PURGED: &str = "tenant.purged";

/// Lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Usable.
    Active,
    /// Nobody may log in; existing sessions are revoked.
    Suspended,
}

impl TenantStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TenantStatus::Active),
            "suspended" => Some(TenantStatus::Suspended),
            _ => None,
        }
    }
}

/// A tenant as a service knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantRef {
    /// Tenant id.
    pub id: String,
    /// URL-safe short name.
    pub slug: String,
    /// Lifecycle state.
    pub status: TenantStatus,
}

/// The replica in one service's database, and the consumer that fills it.
#[derive(Clone, Debug)]
pub struct TenantReplica {
    db: Db,
}

impl TenantReplica {
    /// The replica stored in `db`.
    pub fn new(db: Db) -> Self {
        TenantReplica { db }
    }

    /// Finds a tenant by id or slug.
    pub async fn resolve(&self, key: &str) -> Result<Option<TenantRef>, sqlx::Error> {
        let column = if is_uuid(key) { "id" } else { "slug" };
        let row = sqlx::query(&format!(
            "SELECT id, slug, status FROM tenant_replica WHERE {column} = $1"
        ))
        .bind(key)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|r| {
            Ok(TenantRef {
                id: r.try_get("id")?,
                slug: r.try_get("slug")?,
                status: TenantStatus::parse(&r.try_get::<String, _>("status")?)
                    .unwrap_or(TenantStatus::Suspended),
            })
        })
        .transpose()
    }
}

/// Records, inside the caller's transaction, that CDX deleted `tenant_id` (again is fine).
/// Every purge calls it in its own transaction, so whichever consumer of the deletion runs
/// first makes the tenant known as deleted.
pub async fn record_deleted(conn: &mut AnyConnection, tenant_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deleted_tenants (id, deleted_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(Timestamp::now().millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether CDX deleted `tenant_id`, as the caller's transaction sees it.
pub async fn is_deleted(conn: &mut AnyConnection, tenant_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM deleted_tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

/// [`begin_once`] for a consumer that writes rows of `tenant_id` from `event`: `None` also
/// when CDX deleted that tenant, with the event marked as handled. Events of different
/// services travel on different streams (auth's `auth.user.created` may reach the CRM after
/// `cdx.tenant.deleted`), and applying one after the purge would bring a row of the tenant
/// back.
pub async fn begin_unless_deleted(
    db: &Db,
    consumer: &str,
    event: &Event,
    tenant_id: &str,
) -> Result<Option<Transaction<'static, Any>>, sqlx::Error> {
    let Some(mut tx) = begin_once(db, consumer, event).await? else {
        return Ok(None);
    };
    if is_deleted(&mut tx, tenant_id).await? {
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, "skipping an event of a deleted tenant");
        tx.commit().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}

#[async_trait]
impl EventHandler for TenantReplica {
    fn name(&self) -> &'static str {
        "tenant_replica"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_CREATED || event_type == TENANT_UPDATED || event_type == TENANT_DELETED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if event.event_type == TENANT_DELETED {
            let Some(mut tx) = begin_once(&self.db, self.name(), event).await? else {
                return Ok(());
            };
            sqlx::query("DELETE FROM tenant_replica WHERE id = $1")
                .bind(&event.aggregate_id)
                .execute(&mut *tx)
                .await?;
            record_deleted(&mut tx, &event.aggregate_id).await?;
            tx.commit().await?;
            return Ok(());
        }
        let slug = event.data["slug"].as_str();
        let status = event.data["status"].as_str().and_then(TenantStatus::parse);
        let (Some(slug), Some(status)) = (slug, status) else {
            return Err(HandlerError(format!(
                "{} without slug/status",
                event.event_type
            )));
        };
        // A late redelivery of a deleted tenant's creation must not bring it back.
        let Some(mut tx) =
            begin_unless_deleted(&self.db, self.name(), event, &event.aggregate_id).await?
        else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO tenant_replica (id, slug, status, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET slug = excluded.slug, status = excluded.status, \
             updated_at = excluded.updated_at",
        )
        .bind(&event.aggregate_id)
        .bind(slug)
        .bind(status.as_str())
        .bind(Timestamp::now().millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The first admin of a new tenant, carried by `cdx.tenant.created` under `data.admin` when
/// the superadmin names one: auth creates the account, which the holder of the one-time
/// setup token activates by choosing a password. The token itself never travels; only its
/// hash ([`setup_token_hash`]) does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct InitialAdmin {
    /// The admin's email.
    pub email: String,
    /// [`setup_token_hash`] of the one-time setup token.
    pub setup_token_hash: String,
    /// Until when the token may be used.
    pub expires_at: Timestamp,
}

/// The stored form of a one-time setup token (SHA-256, base64url).
pub fn setup_token_hash(token: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}
