//! The events the CRM emits, and the consumer keeping its replica of tenant users.
//!
//! Emitted (actor, request id and IP in the envelope; `data` holds ids and the names of the
//! changed fields, never the personal data itself):
//! `crm.customer.created|updated|deleted`, `crm.customers.imported`,
//! `crm.company.created|updated|deleted`, `crm.deal.created|updated|stage_changed|closed|deleted`,
//! `crm.pipeline.created|updated|deleted`, `crm.note.created|updated|deleted`,
//! `crm.field.created|updated|deleted`, `crm.tenant.purged`.
//!
//! The deal events `created|updated|stage_changed|closed` also carry the deal's current
//! `status`, `value` and `currency` (non-personal facts CDX keeps its pipeline aggregates from).

use async_trait::async_trait;
use platform::db::Db;
use platform::events::{begin_once, Actor, Event, EventHandler, HandlerError};
use platform::events::{USER_CREATED, USER_DELETED};
use platform::tenants::{begin_unless_deleted, TENANT_CREATED, TENANT_DELETED};
use serde_json::{json, Value};

/// Every event type the CRM emits. They are assembled from an entity and an action, so no
/// constant names them elsewhere; docs/events.md lists each with its payload (a test checks
/// that), and [`record_event`] refuses in debug builds to emit one missing here.
pub const EVENT_TYPES: &[&str] = &[
    "crm.customer.created",
    "crm.customer.updated",
    "crm.customer.deleted",
    "crm.customers.imported",
    "crm.company.created",
    "crm.company.updated",
    "crm.company.deleted",
    "crm.deal.created",
    "crm.deal.updated",
    "crm.deal.stage_changed",
    "crm.deal.closed",
    "crm.deal.deleted",
    "crm.pipeline.created",
    "crm.pipeline.updated",
    "crm.pipeline.deleted",
    "crm.note.created",
    "crm.note.updated",
    "crm.note.deleted",
    "crm.field.created",
    "crm.field.updated",
    "crm.field.deleted",
    "crm.tenant.purged",
];

/// The emitting service's name.
fn source() -> &'static str {
    crate::SERVICE.name
}

/// An event about one record of a tenant: `crm.<entity>.<action>` with `data`.
pub(crate) fn record_event(
    entity: &str,
    action: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    data: Value,
) -> Event {
    let event_type = format!("crm.{entity}.{action}");
    debug_assert!(
        EVENT_TYPES.contains(&event_type.as_str()),
        "{event_type} is not in EVENT_TYPES (nor, then, in docs/events.md)"
    );
    Event::new(source(), &event_type, Some(tenant_id), id, actor, data)
}

/// `crm.<entity>.created|updated|deleted` naming the changed fields.
pub(crate) fn changed(
    entity: &str,
    action: &str,
    tenant_id: &str,
    id: &str,
    actor: &Actor,
    fields: &[&str],
) -> Event {
    record_event(
        entity,
        action,
        tenant_id,
        id,
        actor,
        json!({ "changed": fields }),
    )
}

/// Keeps the CRM's list of each tenant's users (the possible owners of records) from auth's
/// `auth.user.created` and `auth.user.deleted`, never for a deleted tenant (auth's events
/// travel apart from CDX's, and may come after the tenant's purge).
pub struct TenantUsers {
    db: Db,
}

impl TenantUsers {
    /// The replica in `db`.
    pub fn new(db: Db) -> Self {
        TenantUsers { db }
    }
}

#[async_trait]
impl EventHandler for TenantUsers {
    fn name(&self) -> &'static str {
        "crm_tenant_users"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == USER_CREATED || event_type == USER_DELETED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(tenant_id) = event.tenant_id.as_deref() else {
            return Ok(());
        };
        let Some(mut tx) = begin_unless_deleted(&self.db, self.name(), event, tenant_id).await?
        else {
            return Ok(());
        };
        let sql = if event.event_type == USER_CREATED {
            "INSERT INTO tenant_users (tenant_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM tenant_users WHERE tenant_id = $1 AND user_id = $2"
        };
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(&event.aggregate_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Gives every new tenant its default pipeline ("Sales" with its stages) as soon as CDX
/// announces the tenant, so the CRM is ready before its first user arrives; purges a deleted
/// tenant's data (recording `crm.tenant.purged`).
pub struct TenantProvisioning {
    db: Db,
}

impl TenantProvisioning {
    /// Provisions tenants in `db`.
    pub fn new(db: Db) -> Self {
        TenantProvisioning { db }
    }
}

#[async_trait]
impl EventHandler for TenantProvisioning {
    fn name(&self) -> &'static str {
        "crm_tenant_provisioning"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_CREATED || event_type == TENANT_DELETED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let tenant_id = &event.aggregate_id;
        let tx = if event.event_type == TENANT_DELETED {
            begin_once(&self.db, self.name(), event).await?
        } else {
            begin_unless_deleted(&self.db, self.name(), event, tenant_id).await?
        };
        let Some(mut tx) = tx else {
            return Ok(());
        };
        let scope = platform::caller::TenantScope::for_system_task(tenant_id);
        if event.event_type == TENANT_DELETED {
            platform::tenants::record_deleted(&mut tx, tenant_id).await?;
            crate::store::delete_tenant_data_in(&mut tx, &scope, &event.actor).await?;
        } else {
            crate::store::ensure_default_pipeline(&mut tx, &scope, &Actor::system("provisioning"))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
