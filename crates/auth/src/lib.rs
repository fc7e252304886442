//! The auth service: tenant users, sessions, login, access and refresh tokens, signing keys.
//!
//! Superadmin credentials stay in CDX and are checked through
//! [`platform::directory::AdminDirectory`]; tenants are known from CDX's events through the
//! kernel's tenant replica. Tokens are EdDSA JWTs any service verifies offline.

pub mod api;
mod events;
mod facts;
pub mod keys;
mod login;
pub mod model;
pub mod store;
mod throttle;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use platform::caller::{AuthContext, Revocations, TenantScope};
use platform::config::DatabaseSettings;
use platform::db::{Db, MigrationFile};
use platform::directory::AdminDirectory;
use platform::events::{EventHandler, Outbox};
use platform::ids::Timestamp;
use platform::password::PasswordHashing;
use platform::service::ServiceInfo;
use platform::tenants::TenantReplica;
use platform::ApiError;
use serde::{Deserialize, Serialize};

pub use facts::AuthFacts;
pub use login::{LoginRequest, Principal, TokenResponse};
pub use users::{NewUser, UserView};

/// The auth service's migrations.
pub const MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 100,
        name: "users_sessions_keys",
        sql: include_str!("../migrations/0100_auth.sql"),
    },
    MigrationFile {
        version: 101,
        name: "failure_index",
        sql: include_str!("../migrations/0101_failure_index.sql"),
    },
    MigrationFile {
        version: 102,
        name: "account_failure_index",
        sql: include_str!("../migrations/0102_account_failure_index.sql"),
    },
    MigrationFile {
        version: 103,
        name: "setup_tokens",
        sql: include_str!("../migrations/0103_setup_tokens.sql"),
    },
    MigrationFile {
        version: 104,
        name: "revoked_sessions",
        sql: include_str!("../migrations/0104_revoked_sessions.sql"),
    },
];

/// The auth service.
pub const SERVICE: ServiceInfo = ServiceInfo {
    name: "auth",
    version: env!("CARGO_PKG_VERSION"),
    migrations: MIGRATIONS,
};

/// Brute-force protection (`[auth.throttle]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Consecutive failures of one account before it is locked.
    pub account_failures: i64,
    /// Failures from one IP address within the window before it is locked.
    pub ip_failures: i64,
    /// How far back failures count.
    pub window_secs: i64,
    /// First lockout; each further failure doubles it.
    pub base_lockout_secs: i64,
    /// Longest lockout.
    pub max_lockout_secs: i64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_failures: 5,
            ip_failures: 50,
            window_secs: 3600,
            base_lockout_secs: 30,
            max_lockout_secs: 900,
        }
    }
}

/// Settings of the auth service (`[auth]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Database of the service.
    pub database: DatabaseSettings,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
    /// Lifetime of access tokens.
    pub access_token_ttl_secs: i64,
    /// Lifetime of a session (its refresh tokens).
    pub refresh_token_ttl_secs: i64,
    /// Brute-force protection.
    pub throttle: ThrottleConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseSettings::default(),
            issuer: "metatron".into(),
            audience: "metatron".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            throttle: ThrottleConfig::default(),
        }
    }
}

struct Inner {
    db: Db,
    outbox: Outbox,
    ctx: AuthContext,
    hashing: PasswordHashing,
    admins: Arc<dyn AdminDirectory>,
    keys: keys::KeyRing,
    config: Config,
}

/// The auth service's state; cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl FromRef<Auth> for AuthContext {
    fn from_ref(auth: &Auth) -> AuthContext {
        auth.0.ctx.clone()
    }
}

impl Auth {
    /// Delivers the committed events now, so that the other services know a user that was
    /// just created or deleted (e.g. as a CRM owner) when the request returns. A failed
    /// delivery is retried by the relay; the change itself is committed.
    pub(crate) async fn announce_now(&self) {
        self.0.outbox.notify();
        if let Err(e) = self.0.outbox.flush().await {
            tracing::warn!(error = %e, "delivering user events failed; the relay will retry");
        }
    }

    /// Builds the service on its (migrated) database: loads or creates the signing keys and
    /// restores the revocation list of sessions whose access tokens may still be alive.
    pub async fn new(
        db: Db,
        outbox: Outbox,
        ctx: AuthContext,
        hashing: PasswordHashing,
        admins: Arc<dyn AdminDirectory>,
        config: Config,
    ) -> Result<Auth, ApiError> {
        let keys = keys::KeyRing::load(
            &db,
            &ctx.verifier,
            &config.issuer,
            &config.audience,
            config.access_token_ttl_secs,
        )
        .await?;
        let auth = Auth(Arc::new(Inner {
            db,
            outbox,
            ctx,
            hashing,
            admins,
            keys,
            config,
        }));
        for revoked in auth.recent_revocations().await? {
            auth.revocations().revoke(&revoked.sid, revoked.until);
        }
        Ok(auth)
    }

    /// The HTTP routes (`/api/auth/...`).
    pub fn router(&self) -> axum::Router {
        api::router().with_state(self.clone())
    }

    /// The endpoints other services call in the distributed topology
    /// (`/internal/auth/...`), for callers holding a service token of `identity`'s secret.
    pub fn internal_router(&self, identity: platform::identity::ServiceIdentity) -> axum::Router {
        api::internal::router(self.clone(), identity)
    }

    /// The facts CDX's aggregates are checked against, read from this service's database.
    pub fn facts(&self) -> AuthFacts {
        AuthFacts::new(self.0.db.clone())
    }

    /// Sessions revoked recently enough for their access tokens to be alive, with the time
    /// until which they must stay refused.
    pub async fn recent_revocations(
        &self,
    ) -> Result<Vec<platform::caller::RevokedSession>, ApiError> {
        let ttl = self.0.config.access_token_ttl_secs;
        let since = Timestamp::now().plus_secs(-ttl);
        Ok(store::revoked_since(self.0.db.reader(), since)
            .await?
            .into_iter()
            .map(|(sid, at)| platform::caller::RevokedSession {
                sid,
                until: at.plus_secs(ttl).seconds(),
            })
            .collect())
    }

    /// Consumers this service adds to the event bus, each waking this service's relay after
    /// it ran (they record events: revoked sessions, created admins, purges).
    pub fn consumers(&self) -> Vec<Arc<dyn EventHandler>> {
        let consumers: [Arc<dyn EventHandler>; 4] = [
            Arc::new(TenantReplica::new(self.0.db.clone())),
            Arc::new(events::TenantSuspension { auth: self.clone() }),
            Arc::new(events::TenantAdminProvisioning { auth: self.clone() }),
            Arc::new(events::TenantPurge { auth: self.clone() }),
        ];
        consumers
            .into_iter()
            .map(|consumer| self.0.outbox.waking_after(consumer))
            .collect()
    }

    /// The tenant replica of the auth database.
    pub fn tenants(&self) -> &TenantReplica {
        &self.0.ctx.tenants
    }

    fn revocations(&self) -> &Revocations {
        &self.0.ctx.revocations
    }

    /// Marks sessions revoked in memory until their last access token expires.
    fn forget_sessions(&self, sids: &[String]) {
        let until = Timestamp::now()
            .plus_secs(self.0.config.access_token_ttl_secs + 60)
            .seconds();
        for sid in sids {
            self.revocations().revoke(sid, until);
        }
    }

    /// Loads the demo users into tenant `demo_tenant` (idempotent): `john.doe@demo.com`
    /// (user) and `jane.smith@demo.com` (admin), password `demo123`.
    pub async fn seed_demo(&self, demo_tenant: &str) -> Result<(), ApiError> {
        let scope = TenantScope::for_system_task(demo_tenant);
        let actor = platform::events::Actor::system("seed-demo");
        for (email, name, role) in [
            ("john.doe@demo.com", "John Doe", model::UserRole::User),
            ("jane.smith@demo.com", "Jane Smith", model::UserRole::Admin),
        ] {
            if store::user_by_email(self.0.db.reader(), &scope, email)
                .await?
                .is_some()
            {
                continue;
            }
            let user = NewUser {
                email: model::Email::parse(email)?,
                password: model::NewPassword::demo("demo123"),
                role,
                name: Some(name.to_string()),
            };
            users::create(self, &scope, user, &actor).await?;
        }
        Ok(())
    }

    /// Runs housekeeping (old login attempts, expired sessions) every `every`.
    pub fn spawn_maintenance(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let horizon =
                    Timestamp::now().plus_secs(-auth.0.config.throttle.window_secs.max(86_400));
                let result = async {
                    let mut tx = auth.0.db.begin().await?;
                    store::prune(&mut tx, horizon).await?;
                    tx.commit().await
                }
                .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "auth housekeeping failed");
                }
            }
        })
    }
}

/// The OpenAPI document of the auth service.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <api::ApiDoc as utoipa::OpenApi>::openapi()
}

/// What auth exports of a tenant: its users, without their password hashes.
const EXPORT_TABLES: &[platform::export::ExportTable] = &[platform::export::ExportTable {
    name: "users",
    columns: "id, email, name, role, status, created_at, updated_at, version",
    key: &["id"],
}];

#[async_trait::async_trait]
impl platform::export::TenantExport for Auth {
    async fn export_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<platform::export::ExportStream, ApiError> {
        Ok(platform::export::export_tables(
            self.0.db.clone(),
            tenant_id,
            EXPORT_TABLES,
        ))
    }
}
