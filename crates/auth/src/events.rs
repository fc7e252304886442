//! Events the auth service emits and consumes.
//!
//! Emitted (all with the acting user, request id and IP in the envelope):
//! `auth.user.created|updated|deleted`, `auth.login.succeeded|failed`,
//! `auth.session.revoked`, `auth.password.changed`, `auth.keys.rotated`.
//! `auth.user.*` carry the user's current `status` (CDX counts active users from it).

use async_trait::async_trait;
use platform::caller::TenantScope;
use platform::events::record;
use platform::events::{begin_once, Event, EventHandler, HandlerError};
use platform::tenants::{
    begin_unless_deleted, InitialAdmin, TenantStatus, TENANT_CREATED, TENANT_DELETED,
    TENANT_UPDATED,
};
use secrecy::SecretString;
use serde_json::json;

use crate::login::revoke_in;
use crate::store::Revoke;
use crate::Auth;

pub use platform::events::{USER_CREATED, USER_DELETED};
pub const USER_UPDATED: &str = "auth.user.updated";
pub const LOGIN_SUCCEEDED: &str = "auth.login.succeeded";
pub const LOGIN_FAILED: &str = "auth.login.failed";
pub const SESSION_REVOKED: &str = platform::caller::SESSION_REVOKED;
pub const PASSWORD_CHANGED: &str = "auth.password.changed";
pub const KEYS_ROTATED: &str = "auth.keys.rotated";
/// Auth removed a deleted tenant's data.
pub const PURGED: &str = "auth.tenant.purged";

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

/// Creates the first admin of a tenant that CDX created with an admin email, together with
/// the one-time setup token (its hash travels in the event) that lets the admin choose a
/// password (`POST /api/auth/setup-password`).
pub struct TenantAdminProvisioning {
    pub auth: Auth,
}

#[async_trait]
impl EventHandler for TenantAdminProvisioning {
    fn name(&self) -> &'static str {
        "auth.tenant_admin_provisioning"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_CREATED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(admin) = event.data.get("admin") else {
            return Ok(());
        };
        // CDX validated both; an event that still fails cannot succeed on a retry, and
        // must not block the events behind it.
        let parsed = serde_json::from_value::<InitialAdmin>(admin.clone())
            .ok()
            .and_then(|admin| Some((crate::model::Email::parse(&admin.email).ok()?, admin)));
        let Some((email, admin)) = parsed else {
            tracing::error!(event_id = %event.id, "skipping a tenant's malformed first admin");
            return Ok(());
        };
        // Until its owner sets one, the account's password is one nobody knows.
        let unknowable = SecretString::from(platform::ids::random_token(32));
        let hash = self
            .auth
            .0
            .hashing
            .hash(&unknowable)
            .await
            .map_err(|e| HandlerError(e.to_string()))?;
        let Some(mut tx) =
            begin_unless_deleted(&self.auth.0.db, self.name(), event, &event.aggregate_id).await?
        else {
            return Ok(());
        };
        let scope = TenantScope::for_system_task(&event.aggregate_id);
        let user =
            crate::users::user_row(&scope, &email, None, crate::model::UserRole::Admin, hash);
        crate::users::insert_created(&mut tx, &scope, &user, &event.actor).await?;
        crate::store::insert_setup_token(
            &mut tx,
            &admin.setup_token_hash,
            &event.aggregate_id,
            &user.id,
            admin.expires_at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Purges a deleted tenant from auth: ends its sessions (recording `auth.session.revoked`
/// for each, so every service refuses their tokens at once), removes its users, sessions,
/// login attempts and setup tokens, and records `auth.tenant.purged`.
pub struct TenantPurge {
    pub auth: Auth,
}

#[async_trait]
impl EventHandler for TenantPurge {
    fn name(&self) -> &'static str {
        "auth.tenant_purge"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == TENANT_DELETED
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let Some(mut tx) = begin_once(&self.auth.0.db, self.name(), event).await? else {
            return Ok(());
        };
        let tenant = &event.aggregate_id;
        platform::tenants::record_deleted(&mut tx, tenant).await?;
        let revoked = revoke_in(
            &mut tx,
            Revoke::Tenant(tenant),
            "tenant_deleted",
            &event.actor,
            Some(tenant),
        )
        .await?;
        let rows = crate::store::delete_tenant(&mut tx, tenant).await?;
        record(
            &mut tx,
            &Event::new(
                "auth",
                PURGED,
                Some(tenant),
                tenant,
                &event.actor,
                json!({ "rows": rows }),
            ),
        )
        .await?;
        tx.commit().await?;
        self.auth.forget_sessions(&revoked);
        Ok(())
    }
}
