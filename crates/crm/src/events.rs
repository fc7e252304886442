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
use serde_json::{json, Value};

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
    Event::new(
        source(),
        &format!("crm.{entity}.{action}"),
        Some(tenant_id),
        id,
        actor,
        data,
    )
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
/// `auth.user.created` and `auth.user.deleted`.
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
        let Some(mut tx) = begin_once(&self.db, self.name(), event).await? else {
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
