//! The CRM: customers (contacts), companies, deals in pipelines of stages, notes and
//! activities, and per-tenant custom fields, in its own database `crm`.
//!
//! Every query runs inside one tenant: store functions take the
//! [`platform::caller::TenantScope`] the request's caller extractor produced, and every table
//! leads its key with `tenant_id`. Changes are announced as `crm.*` events through the
//! outbox (ids and changed field names, no personal data). The CRM learns tenants and their
//! users (possible record owners) from CDX's and auth's events; it reads no other database.

mod api;
pub mod events;
mod facts;
mod import;
pub mod model;
mod store;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::Router;
use platform::caller::{AuthContext, TenantScope};
use platform::config::DatabaseSettings;
use platform::db::{Db, MigrationFile};
use platform::events::{Actor, EventHandler, Outbox};
use platform::group::GroupWriter;
use platform::service::ServiceInfo;
use platform::tenants::TenantReplica;
use platform::ApiError;
use serde::{Deserialize, Serialize};

pub use facts::CrmFacts;

/// The CRM's migrations (versions from 100; the kernel's own come first).
pub const MIGRATIONS: &[MigrationFile] = &[MigrationFile {
    version: 100,
    name: "crm",
    sql: include_str!("../migrations/0100_crm.sql"),
}];

/// The CRM service.
pub const SERVICE: ServiceInfo = ServiceInfo {
    name: "crm",
    version: env!("CARGO_PKG_VERSION"),
    migrations: MIGRATIONS,
};

/// Settings of the CRM (`[crm]` in `metatron.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Database of the service.
    pub database: DatabaseSettings,
    /// Largest CSV import body, in bytes.
    pub import_max_bytes: usize,
    /// Most data rows in one CSV import.
    pub import_max_rows: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: DatabaseSettings::default(),
            import_max_bytes: 256 * 1024 * 1024,
            import_max_rows: 1_000_000,
        }
    }
}

struct Inner {
    db: Db,
    /// Creates arriving together share one transaction (see `platform::group`).
    writes: GroupWriter,
    outbox: Outbox,
    auth: AuthContext,
    config: Config,
}

/// The CRM service: its database, outbox and token verification. Cheap to clone; also the
/// state of its router.
#[derive(Clone)]
pub struct Crm(Arc<Inner>);

impl std::fmt::Debug for Crm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crm")
            .field("db", &self.0.db.masked_url())
            .finish_non_exhaustive()
    }
}

impl FromRef<Crm> for AuthContext {
    fn from_ref(crm: &Crm) -> AuthContext {
        crm.0.auth.clone()
    }
}

/// Most writes one group commit carries.
const GROUP_COMMIT_MAX: usize = 64;

/// The demo customers [`Crm::seed_demo`] creates: first name, last name, email, status.
const DEMO_CUSTOMERS: &[(&str, &str, &str, &str)] = &[
    ("Alice", "Martin", "alice.martin@acme.example", "customer"),
    ("Bob", "Keller", "bob.keller@acme.example", "prospect"),
];

impl Crm {
    /// The CRM on its (migrated) database, announcing through `outbox`.
    pub fn new(db: Db, outbox: Outbox, auth: AuthContext, config: Config) -> Self {
        Crm(Arc::new(Inner {
            writes: GroupWriter::spawn(db.clone(), GROUP_COMMIT_MAX),
            db,
            outbox,
            auth,
            config,
        }))
    }

    /// Every route of the API (full `/api/crm/...` paths), with its state applied.
    pub fn router(&self) -> Router {
        api::router(&self.0.config).with_state(self.clone())
    }

    /// The endpoints other services call in the distributed topology
    /// (`/internal/crm/...`: a tenant's data for CDX's export, and the facts), for callers
    /// holding a service token of `identity`'s secret; the gateway never routes them.
    pub fn internal_router(&self, identity: platform::identity::ServiceIdentity) -> Router {
        platform::identity::data_routes(
            "crm",
            std::sync::Arc::new(self.clone()),
            std::sync::Arc::new(self.facts()),
            identity,
        )
    }

    /// The facts CDX's aggregates are checked against, read from this service's database.
    pub fn facts(&self) -> CrmFacts {
        CrmFacts::new(self.0.db.clone())
    }

    /// The consumers to subscribe to the bus: the tenant replica (for `X-Tenant`), the
    /// replica of tenant users (possible owners of records) and the tenant provisioning.
    /// Each wakes this service's relay after it ran (provisioning records events: the
    /// default pipeline, the purge report).
    pub fn consumers(&self) -> Vec<Arc<dyn EventHandler>> {
        let consumers: [Arc<dyn EventHandler>; 3] = [
            Arc::new(TenantReplica::new(self.0.db.clone())),
            Arc::new(events::TenantUsers::new(self.0.db.clone())),
            Arc::new(events::TenantProvisioning::new(self.0.db.clone())),
        ];
        consumers
            .into_iter()
            .map(|consumer| self.0.outbox.waking_after(consumer))
            .collect()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    pub(crate) fn writes(&self) -> &GroupWriter {
        &self.0.writes
    }

    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    /// Wakes the relay after a commit that recorded events.
    pub(crate) fn announce(&self) {
        self.0.outbox.notify();
    }

    /// Makes sure the demo tenant has its sample data: a company ("Acme Corporation"), two
    /// customers working there and one open deal. Idempotent: a tenant that already has
    /// customers is left unchanged.
    pub async fn seed_demo(&self, tenant_id: &str) -> Result<(), ApiError> {
        let scope = TenantScope::for_system_task(tenant_id);
        let actor = Actor::system("seed");
        if store::count_customers(self.0.db.reader(), &scope).await? > 0 {
            return Ok(());
        }
        let company = store::create_company(
            &self.0.db,
            &scope,
            store::NewCompany {
                name: "Acme Corporation".into(),
                domain: Some("acme.example".into()),
                industry: Some("Manufacturing".into()),
                size: Some("51-200".into()),
                address: Some("1 Main Street, Springfield".into()),
                custom: Default::default(),
            },
            &actor,
        )
        .await?;
        let mut first = None;
        for (first_name, last_name, email, status) in DEMO_CUSTOMERS {
            let customer = store::create_customer(
                &self.0.db,
                &self.0.writes,
                &scope,
                store::NewCustomer {
                    first_name: first_name.to_string(),
                    last_name: last_name.to_string(),
                    email: Some(platform::validate::Email::parse(email)?),
                    phone: None,
                    company_id: Some(company.id.clone()),
                    status: model::CustomerStatus::parse(status)
                        .unwrap_or(model::CustomerStatus::Lead),
                    owner_id: None,
                    tags: vec!["demo".into()],
                    custom: Default::default(),
                },
                &actor,
            )
            .await?;
            first.get_or_insert(customer);
        }
        store::create_deal(
            &self.0.db,
            &scope,
            store::NewDeal {
                title: "Acme annual licence".into(),
                value: 1_200_000,
                currency: "EUR".into(),
                pipeline_id: None,
                stage_id: None,
                customer_id: first.map(|c| c.id),
                company_id: Some(company.id),
                owner_id: None,
                expected_close: None,
                custom: Default::default(),
            },
            &actor,
        )
        .await?;
        self.announce();
        Ok(())
    }

    /// Removes every CRM record of a tenant (customers, companies, deals, pipelines, notes,
    /// custom fields, the user replica) in one transaction, and records
    /// `crm.tenant.purged`. Returns the number of rows removed.
    pub async fn delete_tenant_data(
        &self,
        tenant_id: &str,
        actor: &Actor,
    ) -> Result<u64, ApiError> {
        let scope = TenantScope::for_system_task(tenant_id);
        let removed = store::delete_tenant_data(&self.0.db, &scope, actor).await?;
        self.announce();
        Ok(removed)
    }
}

/// The OpenAPI description of the CRM API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::ApiDoc::document()
}

#[async_trait::async_trait]
impl platform::export::TenantExport for Crm {
    async fn export_tenant(
        &self,
        tenant_id: &str,
    ) -> Result<platform::export::ExportStream, ApiError> {
        Ok(platform::export::export_tables(
            self.0.db.clone(),
            tenant_id,
            store::TENANT_TABLES,
        ))
    }
}
