//! CDX, the master registry: clients, tenants, platform admins (superadmins), the service
//! registry and the audit log, in its own database `cdx`.
//!
//! CDX never reads another service's database. It announces its changes as events (written
//! to its outbox in the same transaction as the change), builds the audit log from every
//! service's events, and answers auth's one synchronous question — "are these superadmin
//! credentials valid?" — through [`platform::directory::AdminDirectory`]. Its HTTP API under
//! `/api/cdx` is for the superadmin only, except `/api/cdx/tenant-audit` and
//! `/api/cdx/tenant-stream`, a tenant's own audit trail (stored and live) for its admins.
//! The audit log is a tamper-evident hash chain ([`chain`]), streamed live over SSE as it
//! is committed.

pub mod aggregates;
mod api;
mod audit;
pub mod chain;
pub mod events;
mod live;
pub mod model;
mod store;
pub mod tenant_list;
mod verification;

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
pub const MIGRATIONS: &[MigrationFile] = &[
    MigrationFile {
        version: 100,
        name: "registry",
        sql: include_str!("../migrations/0100_registry.sql"),
    },
    MigrationFile {
        version: 101,
        name: "audit_chain",
        sql: include_str!("../migrations/0101_audit_chain.sql"),
    },
    MigrationFile {
        version: 102,
        name: "aggregates",
        sql: include_str!("../migrations/0102_aggregates.sql"),
    },
    MigrationFile {
        version: 103,
        name: "tenant_purges",
        sql: include_str!("../migrations/0103_tenant_purges.sql"),
    },
    MigrationFile {
        version: 104,
        name: "login_ids",
        sql: include_str!("../migrations/0104_login_ids.sql"),
    },
    MigrationFile {
        version: 105,
        name: "audit_retention",
        sql: include_str!("../migrations/0105_audit_retention.sql"),
    },
    MigrationFile {
        version: 106,
        name: "service_slots",
        sql: include_str!("../migrations/0106_service_slots.sql"),
    },
    MigrationFile {
        version: 107,
        name: "tenant_list_order",
        sql: include_str!("../migrations/0107_tenant_list_order.sql"),
    },
    MigrationFile {
        version: 108,
        name: "audit_verifications",
        sql: include_str!("../migrations/0108_audit_verifications.sql"),
    },
    MigrationFile {
        version: 109,
        name: "tenant_list_sorts",
        sql: include_str!("../migrations/0109_tenant_list_sorts.sql"),
    },
];

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
    /// The audit trail's signed checkpoints.
    pub audit: AuditSettings,
}

/// Settings of the audit trail (`[cdx.audit]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A signed checkpoint at the latest once this many entries were appended since the last.
    pub checkpoint_every: u64,
    /// A signed checkpoint of the head at least this often while entries arrive (seconds).
    pub checkpoint_interval_secs: u64,
    /// Committed batches a live stream (`/api/cdx/stream`) may fall behind before it is
    /// dropped.
    pub stream_buffer: usize,
    /// Live streams open at once; more answer 503.
    pub max_streams: usize,
    /// Entries older than this many days are removed (up to a signed checkpoint, which
    /// stays as the chain's anchor); 0 keeps them forever.
    pub retention_days: u64,
    /// Ed25519 public keys (as `metatron audit key` prints them) one of which must have
    /// signed every checkpoint, for the API's verification; empty: the keys the database
    /// holds are trusted.
    pub pinned_public_keys: Vec<chain::PinnedKey>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            stream_buffer: 1024,
            max_streams: 100,
            retention_days: 0,
            pinned_public_keys: Vec::new(),
        }
    }
}

/// How often the retention prunes the audit log.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// The longest wait that still answers within `request_timeout`: nine tenths of it, so the
/// answer is written before the edge's timeout answers 503 instead.
fn max_wait_within(request_timeout: std::time::Duration) -> std::time::Duration {
    request_timeout.mul_f64(0.9)
}

fn feed_of(audit: &AuditSettings) -> live::Feed {
    live::Feed::new(audit.stream_buffer, audit.max_streams)
}

/// The demo superadmin [`Cdx::seed_demo`] creates.
const DEMO_ADMIN: &str = "test";
/// Its password; shorter than the policy allows, which only the seed may bypass.
const DEMO_PASSWORD: &str = "test123";
/// The demo client's name.
const DEMO_CLIENT: &str = "Demo Client";
/// The demo tenant's slug.
pub const DEMO_TENANT_SLUG: &str = "demo";
/// The demo tenant's name.
const DEMO_TENANT_NAME: &str = "Demo Tenant";

struct Inner {
    db: Db,
    outbox: Outbox,
    auth: AuthContext,
    hashing: PasswordHashing,
    audit: AuditSettings,
    feed: live::Feed,
    verifications: verification::Verifications,
    /// The longest a request may wait for a verification (below the request timeout).
    max_verify_wait: std::time::Duration,
    overview: Arc<aggregates::OverviewCache>,
    /// The other services' tenant exports, by service name (set once the services exist).
    exporters: Arc<std::sync::OnceLock<Exporters>>,
}

/// Each service's export of a tenant's data, by service name.
pub type Exporters = Vec<(String, Arc<dyn platform::export::TenantExport>)>;

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
        let audit = AuditSettings::default();
        Cdx(Arc::new(Inner {
            verifications: verification::Verifications::new(
                db.clone(),
                audit.pinned_public_keys.clone(),
            ),
            db,
            outbox,
            auth,
            hashing,
            feed: feed_of(&audit),
            audit,
            max_verify_wait: max_wait_within(
                platform::config::HttpSettings::default().request_timeout(),
            ),
            overview: Arc::default(),
            exporters: Arc::new(std::sync::OnceLock::new()),
        }))
    }

    /// The same CDX with these audit trail settings (call while wiring, before
    /// [`Cdx::consumer`]).
    pub fn with_audit(self, audit: AuditSettings) -> Self {
        self.rebuilt(audit, self.0.max_verify_wait)
    }

    /// The same CDX for requests cut off after `timeout` (`[http] request_timeout_ms`, and
    /// the gateway's in front): a request waiting for an audit verification answers before.
    pub fn with_request_timeout(self, timeout: std::time::Duration) -> Self {
        self.rebuilt(self.0.audit.clone(), max_wait_within(timeout))
    }

    fn rebuilt(&self, audit: AuditSettings, max_verify_wait: std::time::Duration) -> Self {
        Cdx(Arc::new(Inner {
            db: self.0.db.clone(),
            outbox: self.0.outbox.clone(),
            auth: self.0.auth.clone(),
            hashing: self.0.hashing.clone(),
            feed: feed_of(&audit),
            verifications: verification::Verifications::new(
                self.0.db.clone(),
                audit.pinned_public_keys.clone(),
            ),
            max_verify_wait,
            overview: Arc::default(),
            audit,
            exporters: self.0.exporters.clone(),
        }))
    }

    /// Where the export of a tenant gets each other service's data (set once, after the
    /// services are built).
    pub fn set_exporters(&self, exporters: Exporters) {
        let _ = self.0.exporters.set(exporters);
    }

    /// The services' exporters (none before [`Cdx::set_exporters`]).
    pub(crate) fn exporters(&self) -> &[(String, Arc<dyn platform::export::TenantExport>)] {
        self.0.exporters.get().map_or(&[], Vec::as_slice)
    }

    /// Every route of the API (full `/api/cdx/...` paths), with its state applied.
    pub fn router(&self) -> Router {
        api::router().with_state(self.clone())
    }

    /// The endpoints other services call in the distributed topology
    /// (`/internal/cdx/...`), for callers holding a service token of `identity`'s secret.
    pub fn internal_router(&self, identity: platform::identity::ServiceIdentity) -> Router {
        api::internal::router(self.clone(), identity)
    }

    /// CDX's consumer: turns every event of every service into an audit log entry and
    /// keeps the aggregates (tenant summaries, platform overview) from them; subscribe it
    /// to the bus. It records no events, so it needs no [`Outbox::waking_after`] (and stays
    /// off the relay on every event's path).
    pub fn consumer(&self) -> Arc<dyn EventHandler> {
        let every = i64::try_from(self.0.audit.checkpoint_every).unwrap_or(i64::MAX);
        Arc::new(audit::CdxConsumer::new(
            self.0.db.clone(),
            every,
            self.0.feed.clone(),
        ))
    }

    /// Chains the audit entries written before the hash chain existed (a one-time backfill
    /// after the upgrade; a no-op afterwards). Returns how many were chained.
    pub async fn prepare_audit_chain(&self) -> Result<i64, ApiError> {
        Ok(store::prepare_chain(&self.0.db).await?)
    }

    /// Signs a checkpoint of the audit chain's head when entries arrived since the last one;
    /// returns its position.
    pub async fn checkpoint_audit(&self) -> Result<Option<i64>, ApiError> {
        Ok(store::checkpoint_now(&self.0.db).await?)
    }

    /// Signs a checkpoint of the audit chain every `checkpoint_interval_secs` while entries
    /// arrive and, with a `retention_days`, prunes the entries past it every hour; abort the
    /// handle to stop.
    pub fn spawn_audit_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let cdx = self.clone();
        let every = std::time::Duration::from_secs(self.0.audit.checkpoint_interval_secs.max(1));
        let retention = self.0.audit.retention_days;
        tokio::spawn(async move {
            let mut pruned_at: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = cdx.checkpoint_audit().await {
                    tracing::warn!(error = %e, "signing an audit checkpoint failed");
                }
                let due = pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
                if retention == 0 || !due {
                    continue;
                }
                pruned_at = Some(tokio::time::Instant::now());
                match chain::prune(&cdx.0.db, retention).await {
                    Ok(Some(pruned)) => tracing::info!(
                        entries = pruned.entries,
                        through_seq = pruned.through_seq,
                        "pruned audit entries past the retention"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
                }
            }
        })
    }

    /// Takes logins that turned 24 hours old off the tenants' `logins_24h` every
    /// [`aggregates::LOGIN_EXPIRY_EVERY`]; abort the handle to stop.
    pub fn spawn_aggregates_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let cdx = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(aggregates::LOGIN_EXPIRY_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = cdx.expire_logins().await {
                    tracing::warn!(error = %e, "expiring the tenants' logins of the last 24 h failed");
                }
            }
        })
    }

    /// Takes the logins that turned 24 hours old off the tenants' `logins_24h` now.
    pub async fn expire_logins(&self) -> Result<(), ApiError> {
        store::expire_logins(&self.0.db, Timestamp::now()).await?;
        self.0.feed.aggregates_changed();
        Ok(())
    }

    /// The background verifications of the audit chain.
    pub(crate) fn verifications(&self) -> &verification::Verifications {
        &self.0.verifications
    }

    /// The longest a request may wait for an audit verification to finish.
    pub(crate) fn max_verify_wait(&self) -> std::time::Duration {
        self.0.max_verify_wait
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    /// The platform overview as last computed.
    pub(crate) fn overview_cache(&self) -> &aggregates::OverviewCache {
        &self.0.overview
    }

    /// The live feed of committed audit entries and changed tenant summaries.
    pub(crate) fn feed(&self) -> &live::Feed {
        &self.0.feed
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
        // The overview counts the registry's tenants by status: a kept one is out of date.
        self.0.feed.aggregates_changed();
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
