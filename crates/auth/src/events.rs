//! Events the auth service emits and consumes.
//!
//! Emitted (all with the acting user, request id and IP in the envelope):
//! `auth.user.created|updated|deleted`, `auth.login.succeeded|failed`,
//! `auth.session.revoked`, `auth.password.changed`, `auth.keys.rotated`.
//! `auth.user.*` carry the user's current `status` (CDX counts active users from it).

use async_trait::async_trait;
use platform::events::{begin_once, Event, EventHandler, HandlerError};
use platform::tenants::{TenantStatus, TENANT_UPDATED};

use crate::login::revoke_in;
use crate::store::Revoke;
use crate::Auth;

pub use platform::events::{USER_CREATED, USER_DELETED};
pub const USER_UPDATED: &str = "auth.user.updated";
pub const LOGIN_SUCCEEDED: &str = "auth.login.succeeded";
pub const LOGIN_FAILED: &str = "auth.login.failed";
pub const SESSION_REVOKED: &str = "auth.session.revoked";
pub const PASSWORD_CHANGED: &str = "auth.password.changed";
pub const KEYS_ROTATED: &str = "auth.keys.rotated";

/// Revokes every session of a tenant when CDX suspends it.
pub struct TenantSuspension {
    pub auth: Auth,
}

#[async_trait]
impl EventHandler for TenantSuspension {
    fn name(&self) -> &'static str {
        "auth.tenant_suspension"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_UPDATED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        if event.data["status"].as_str().and_then(TenantStatus::parse)
            != Some(TenantStatus::Suspended)
        {
            return Ok(());
        }
        let Some(mut tx) = begin_once(&self.auth.0.db, self.name(), event).await? else {
            return Ok(());
        };
        let revoked = revoke_in(
            &mut tx,
            Revoke::Tenant(&event.aggregate_id),
            "tenant_suspended",
            &event.actor,
            Some(&event.aggregate_id),
        )
        .await?;
        tx.commit().await?;
        self.auth.forget_sessions(&revoked);
        Ok(())
    }
}
