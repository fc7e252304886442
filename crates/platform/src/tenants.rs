//! Each service's replica of the tenant registry (rule 1: no service reads CDX's database).
//!
//! CDX owns tenants and announces every change as a `cdx.tenant.*` event carrying the
//! tenant's current slug and status; this consumer keeps the `tenant_replica` table of the
//! service's own database in step, so tenant lookups (the `X-Tenant` header, login by slug)
//! stay local.

use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

use crate::db::Db;
use crate::events::{begin_once, Event, EventHandler, HandlerError};
use crate::ids::{is_uuid, Timestamp};

/// Event types CDX emits for tenants; `data` carries at least `slug` and `status`.
pub const TENANT_CREATED: &str = "cdx.tenant.created";
/// See [`TENANT_CREATED`].
pub const TENANT_UPDATED: &str = "cdx.tenant.updated";

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

#[async_trait]
impl EventHandler for TenantReplica {
    fn name(&self) -> &'static str {
        "tenant_replica"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_CREATED || event_type == TENANT_UPDATED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let slug = event.data["slug"].as_str();
        let status = event.data["status"].as_str().and_then(TenantStatus::parse);
        let (Some(slug), Some(status)) = (slug, status) else {
            return Err(HandlerError(format!(
                "{} without slug/status",
                event.event_type
            )));
        };
        let Some(mut tx) = begin_once(&self.db, self.name(), event).await? else {
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
