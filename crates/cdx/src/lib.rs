//! CDX, the master registry: clients, tenants, platform admins (superadmins), the service
//! registry and the audit log, in its own database `cdx`.
//!
//! CDX never reads another service's database. It announces its changes as events (written
//! to its outbox in the same transaction as the change), builds the audit log from every
//! service's events, and answers auth's one synchronous question — "are these superadmin
//! credentials valid?" — through [`platform::directory::AdminDirectory`]. Its HTTP API under
//! `/api/cdx` is for the superadmin only.

mod api;
mod audit;
pub mod events;
pub mod model;
mod store;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::FromRef;
use axum::Router;
use platform::caller::AuthContext;
use platform::config::DatabaseSettings;
use platform::db::{Db, MigrationFile};
use platform::directory::{AdminDirectory, AdminIdentity};
use platform::events::{Actor, EventHandler, Outbox};
use platform::ids::Timestamp;
use platform::password::{PasswordHashing, Verified};
use platform::service::ServiceInfo;
use platform::tenants::TenantRef;
use platform::ApiError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::model::{Slug, Username};
use platform::password::{check_policy, MAX_PASSWORD_BYTES};

/// CDX's migrations (versions from 100; the kernel's own come first).
pub const MIGRATIONS: &[MigrationFile] = &[MigrationFile {
    version: 100,
    name: "registry",
    sql: include_str!("../migrations/0100_registry.sql"),
}];

/// The CDX service.
pub const SERVICE: ServiceInfo = ServiceInfo {
    name: "cdx",
    version: env!("CARGO_PKG_VERSION"),
    migrations: MIGRATIONS,
};

/// Settings of CDX (`[cdx]` in `metatron.toml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Database of the service.
    pub database: DatabaseSettings,
}

/// The demo superadmin [`Cdx::seed_demo`] creates.
const DEMO_ADMIN: &str = "test";
/// Its password; shorter than the policy allows, which only the seed may bypass.
const DEMO_PASSWORD: &str = "test123";
/// The demo client's name.
const DEMO_CLIENT: &str = "Demo Client";
/// The demo tenant's slug.
const DEMO_TENANT_SLUG: &str = "demo";
/// The demo tenant's name.
const DEMO_TENANT_NAME: &str = "Demo Tenant";

struct Inner {
    db: Db,
    outbox: Outbox,
    auth: AuthContext,
    hashing: PasswordHashing,
}

/// The CDX service: its database, outbox, token verification and password hashing. Cheap to
/// clone; also the state of its router.
#[derive(Clone)]
pub struct Cdx(Arc<Inner>);

/// The router state of CDX's handlers.
pub(crate) type CdxState = Cdx;

impl std::fmt::Debug for Cdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cdx")
            .field("db", &self.0.db.masked_url())
            .finish_non_exhaustive()
    }
}

impl FromRef<Cdx> for AuthContext {
    fn from_ref(cdx: &Cdx) -> AuthContext {
        cdx.0.auth.clone()
    }
}

impl Cdx {
    /// CDX on its (migrated) database, announcing through `outbox`.
    pub fn new(db: Db, outbox: Outbox, auth: AuthContext, hashing: PasswordHashing) -> Self {
        Cdx(Arc::new(Inner {
            db,
            outbox,
            auth,
            hashing,
        }))
    }

    /// Every route of the API (full `/api/cdx/...` paths), with its state applied.
    pub fn router(&self) -> Router {
        api::router().with_state(self.clone())
    }

    /// The consumer that turns every event of every service into an audit log entry;
    /// subscribe it to the bus.
    pub fn audit_consumer(&self) -> Arc<dyn EventHandler> {
        Arc::new(audit::AuditConsumer::new(self.0.db.clone()))
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    /// Wakes the relay after a commit that recorded events.
    pub(crate) fn announce(&self) {
        self.0.outbox.notify();
    }

    /// Delivers the committed events now, so every service's tenant replica is current
    /// when the request returns. A failed delivery is retried by the relay; the change
    /// itself is committed, so the request still succeeds.
    pub(crate) async fn announce_now(&self) {
        self.announce();
        if let Err(e) = self.0.outbox.flush().await {
            tracing::warn!(error = %e, "delivering tenant events failed; the relay will retry");
        }
    }

    /// Whether at least one active superadmin exists.
    pub async fn has_admin(&self) -> Result<bool, ApiError> {
        store::has_active_admin(self.0.db.reader()).await
    }

    /// Creates a superadmin. The username is validated (3..=64 of `[a-z0-9._-]`, case
    /// folded), the password must be 8 characters to 1024 bytes; a taken username is a 409.
    pub async fn create_admin(
        &self,
        username: &str,
        password: &SecretString,
        actor: &Actor,
    ) -> Result<AdminIdentity, ApiError> {
        let username = Username::parse(username)?;
        check_policy("password", password)?;
        if store::admin_exists(self.0.db.reader(), username.as_str()).await? {
            return Err(ApiError::conflict(
                "username_taken",
                "an admin with this username already exists",
            ));
        }
        let hash = self.hash(password).await?;
        let admin = store::create_admin(&self.0.db, username.as_str(), &hash, actor).await?;
        self.announce();
        Ok(admin)
    }

    /// Makes sure the demo data exists: superadmin `test`/`test123`, client "Demo Client" and
    /// its tenant `demo` ("Demo Tenant"). Idempotent; existing rows are left unchanged.
    /// Returns the demo tenant once its events are delivered.
    pub async fn seed_demo(&self) -> Result<TenantRef, ApiError> {
        let actor = Actor::system("seed");
        let hash = if store::admin_exists(self.0.db.reader(), DEMO_ADMIN).await? {
            None
        } else {
            Some(self.hash(&SecretString::from(DEMO_PASSWORD)).await?)
        };
        let slug = Slug::parse(DEMO_TENANT_SLUG)?;
        let seed = store::Seed {
            admin: hash.as_deref().map(|h| (DEMO_ADMIN, h)),
            client_name: DEMO_CLIENT,
            tenant: (&slug, DEMO_TENANT_NAME),
        };
        let tenant = store::seed(&self.0.db, &seed, &actor).await?;
        self.announce();
        self.0
            .outbox
            .flush()
            .await
            .map_err(|e| ApiError::internal("delivering the demo seed's events", e))?;
        Ok(TenantRef {
            id: tenant.id,
            slug: tenant.slug,
            status: tenant.status,
        })
    }

    /// Registers a service in the registry, or updates its version and URL.
    pub async fn register_service(
        &self,
        name: &str,
        version: &str,
        url: &str,
    ) -> Result<(), ApiError> {
        store::upsert_service(&self.0.db, name, version, url).await
    }

    /// Records the outcome of a health check of a registered service (`up` or `down`).
    pub async fn record_health(&self, name: &str, healthy: bool) -> Result<(), ApiError> {
        let status = if healthy { "up" } else { "down" };
        if store::record_health(&self.0.db, name, status, Timestamp::now()).await? {
            Ok(())
        } else {
            Err(ApiError::not_found("service"))
        }
    }

    async fn hash(&self, password: &SecretString) -> Result<String, ApiError> {
        self.0
            .hashing
            .hash(password)
            .await
            .map_err(|e| ApiError::internal("hashing a password", e))
    }
}

#[async_trait]
impl AdminDirectory for Cdx {
    async fn verify_admin(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Option<AdminIdentity>, ApiError> {
        // Anything that cannot name an admin still pays for one verification (against the
        // decoy), so the answer time does not tell which usernames exist.
        let admin = match Username::parse(username) {
            Ok(name) if password.expose_secret().len() <= MAX_PASSWORD_BYTES => {
                store::active_admin(self.0.db.reader(), store::AdminKey::Username(name.as_str()))
                    .await?
            }
            _ => None,
        };
        let verified = self
            .0
            .hashing
            .verify(password, admin.as_ref().map(|a| a.password_hash.as_str()))
            .await
            .map_err(|e| ApiError::internal("verifying a password", e))?;
        let Some(admin) = admin else {
            return Ok(None);
        };
        match verified {
            Verified::No => return Ok(None),
            Verified::Yes => {}
            Verified::YesRehashed(hash) => {
                // The login is valid either way; a failed upgrade is retried next login.
                if let Err(e) =
                    store::set_admin_password_hash(&self.0.db, &admin.id, &hash, None).await
                {
                    tracing::warn!(error = %e, "storing a rehashed admin password failed");
                }
            }
        }
        Ok(Some(AdminIdentity {
            id: admin.id,
            username: admin.username,
        }))
    }

    async fn admin_by_id(&self, id: &str) -> Result<Option<AdminIdentity>, ApiError> {
        store::active_admin_by_id(self.0.db.reader(), id).await
    }

    async fn change_admin_password(
        &self,
        id: &str,
        current: &SecretString,
        new: &SecretString,
        actor: &Actor,
    ) -> Result<bool, ApiError> {
        let Some(admin) = store::active_admin(self.0.db.reader(), store::AdminKey::Id(id)).await?
        else {
            return Ok(false);
        };
        let verified = self
            .0
            .hashing
            .verify(current, Some(&admin.password_hash))
            .await
            .map_err(|e| ApiError::internal("verifying a password", e))?;
        if !verified.ok() {
            return Ok(false);
        }
        check_policy("new_password", new)?;
        let hash = self.hash(new).await?;
        store::set_admin_password_hash(&self.0.db, &admin.id, &hash, Some(actor)).await?;
        self.announce();
        Ok(true)
    }
}

/// The OpenAPI description of the CDX API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <api::ApiDoc as utoipa::OpenApi>::openapi()
}
