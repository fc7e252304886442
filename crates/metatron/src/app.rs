//! Composition of the all-in-one topology: every service in one process, each on its own
//! database, joined by the in-process event bus and served behind one listener.

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use platform::caller::{AuthContext, Revocations};
use platform::db::{database_url, Db};
use platform::events::nats::{Nats, NatsConsumer, NatsPublisher, Transport};
use platform::events::{Bus, Destination, Outbox};
use platform::password::PasswordHashing;
use platform::service::ServiceInfo;
use platform::tenants::TenantReplica;
use platform::token::Verifier;
use serde_json::{json, Value};

use crate::settings::Settings;

/// A service's database as the platform holds it.
#[derive(Clone, Debug)]
pub struct ServiceDb {
    /// The service.
    pub info: ServiceInfo,
    /// Its database.
    pub db: Db,
    /// Its outbox.
    pub outbox: Outbox,
}

/// The running platform (without its listener).
#[derive(Clone)]
pub struct App {
    /// The settings it was built from.
    pub settings: Arc<Settings>,
    /// The CDX master registry.
    pub cdx: cdx::Cdx,
    /// The auth service.
    pub auth: auth::Auth,
    /// The CRM.
    pub crm: crm::Crm,
    /// Every service database, in start order.
    pub services: Vec<ServiceDb>,
    /// With the NATS transport: the durable consumer feeding this process's bus.
    pub nats_consumer: Option<NatsConsumer>,
    /// Verifies access tokens; the edge keys per-tenant rate limits by it.
    pub verifier: Verifier,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// Opens a service's database (creating and migrating it).
pub(crate) async fn open_db(
    settings: &Settings,
    info: ServiceInfo,
    db_settings: &platform::config::DatabaseSettings,
) -> anyhow::Result<Db> {
    let url = database_url(info.name, db_settings, &settings.data_dir);
    let db = Db::connect(
        info.name,
        &url,
        db_settings.max_connections,
        &settings.database,
    )
    .await?;
    db.migrate(info.migrations).await?;
    Ok(db)
}

impl App {
    /// Opens every service database, applies migrations, and wires the services together.
    pub async fn open(settings: Settings) -> anyhow::Result<App> {
        let bus = Bus::new();
        // Where the outbox relays hand events: the bus itself, or NATS JetStream (whose
        // consumer then feeds the bus).
        let (destination, nats): (Arc<dyn Destination>, Option<Nats>) =
            match settings.events.transport {
                Transport::Local => (bus.clone(), None),
                Transport::Nats => {
                    let nats = Nats::connect(&settings.events)
                        .await
                        .map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))?;
                    (NatsPublisher::new(nats.clone()), Some(nats))
                }
            };
        let verifier = Verifier::new(&settings.auth.issuer, &settings.auth.audience);
        let revocations = Revocations::new();
        let hashing = PasswordHashing::new(settings.password)?;
        let context = |db: &Db| AuthContext {
            verifier: verifier.clone(),
            revocations: revocations.clone(),
            tenants: TenantReplica::new(db.clone()),
        };

        let cdx_db = open_db(&settings, cdx::SERVICE, &settings.cdx.database).await?;
        let cdx_outbox = Outbox::with_destination(cdx_db.clone(), destination.clone())
            .with_retention(settings.events.retention());
        let cdx = cdx::Cdx::new(
            cdx_db.clone(),
            cdx_outbox.clone(),
            context(&cdx_db),
            hashing.clone(),
        )
        .with_audit(settings.cdx.audit.clone())
        .with_request_timeout(settings.http.request_timeout());
        // Chains audit entries from before the hash chain existed (once, after the upgrade).
        cdx.prepare_audit_chain()
            .await
            .map_err(|e| anyhow::anyhow!("chaining the audit log: {e}"))?;

        let auth_db = open_db(&settings, auth::SERVICE, &settings.auth.database).await?;
        let auth_outbox = Outbox::with_destination(auth_db.clone(), destination.clone())
            .with_retention(settings.events.retention());
        let auth = auth::Auth::new(
            auth_db.clone(),
            auth_outbox.clone(),
            context(&auth_db),
            hashing,
            Arc::new(cdx.clone()),
            settings.auth.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting auth: {e}"))?;

        let crm_db = open_db(&settings, crm::SERVICE, &settings.crm.database).await?;
        let crm_outbox = Outbox::with_destination(crm_db.clone(), destination.clone())
            .with_retention(settings.events.retention());
        let crm = crm::Crm::new(
            crm_db.clone(),
            crm_outbox.clone(),
            context(&crm_db),
            settings.crm.clone(),
        );

        cdx.set_exporters(vec![
            (auth::SERVICE.name.to_string(), Arc::new(auth.clone())),
            (crm::SERVICE.name.to_string(), Arc::new(crm.clone())),
        ]);
        bus.subscribe(cdx.consumer());
        bus.subscribe(Arc::new(TenantReplica::new(cdx_db.clone())));
        for consumer in auth.consumers().into_iter().chain(crm.consumers()) {
            bus.subscribe(consumer);
        }
        let nats_consumer = nats.map(|nats| {
            NatsConsumer::new(
                nats,
                bus.clone(),
                &settings.events.consumer_name("all"),
                &[cdx::SERVICE.name, auth::SERVICE.name, crm::SERVICE.name],
            )
        });
        let services = vec![
            ServiceDb {
                info: cdx::SERVICE,
                db: cdx_db,
                outbox: cdx_outbox,
            },
            ServiceDb {
                info: auth::SERVICE,
                db: auth_db,
                outbox: auth_outbox,
            },
            ServiceDb {
                info: crm::SERVICE,
                db: crm_db,
                outbox: crm_outbox,
            },
        ];
        Ok(App {
            settings: Arc::new(settings),
            cdx,
            auth,
            crm,
            services,
            nats_consumer,
            verifier,
        })
    }

    /// Delivers every pending event of every service (used by the CLI before it exits, and
    /// at start for events written while the server was down).
    /// With NATS, each flush publishes and then waits until this process's consumer applied
    /// what it published, so the consumer is started first.
    pub async fn flush_events(&self) -> anyhow::Result<()> {
        if let Some(consumer) = &self.nats_consumer {
            consumer.start();
        }
        // A consumer may emit events of its own, so repeat until a round delivers nothing.
        for _ in 0..5 {
            let mut delivered = 0;
            for service in &self.services {
                delivered += service
                    .outbox
                    .flush()
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.0))?;
            }
            if delivered == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Starts the event relays and housekeeping; the handles stop them when aborted.
    pub fn start_background(&self) -> Vec<tokio::task::JoinHandle<()>> {
        if let Some(consumer) = &self.nats_consumer {
            consumer.start();
        }
        let poll = self.settings.events.poll();
        let mut tasks: Vec<_> = self
            .services
            .iter()
            .map(|s| s.outbox.spawn_relay(poll))
            .collect();
        tasks.push(self.auth.spawn_maintenance(Duration::from_secs(3600)));
        tasks.push(self.spawn_health_recorder(Duration::from_secs(30)));
        tasks.push(self.cdx.spawn_audit_maintenance());
        tasks.push(self.cdx.spawn_aggregates_maintenance());
        tasks
    }

    /// Records each service's readiness in the CDX service registry periodically.
    fn spawn_health_recorder(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            loop {
                for service in &app.services {
                    let ready = service_ready(service).await.is_ok();
                    if let Err(e) = app.cdx.record_health(service.info.name, ready).await {
                        tracing::warn!(error = %e, "recording service health failed");
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// Records every service in the CDX service registry with the URL it is served at.
    pub async fn register_services(&self, base_url: &str) -> anyhow::Result<()> {
        for service in &self.services {
            let url = format!("{base_url}/api/{}", service.info.name);
            self.cdx
                .register_service(service.info.name, service.info.version, &url)
                .await
                .map_err(|e| anyhow::anyhow!("registering {}: {e}", service.info.name))?;
        }
        Ok(())
    }

    /// The whole HTTP surface behind the shared edge middleware.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .merge(self.cdx.router())
            .merge(self.auth.router())
            .merge(self.crm.router())
            .merge(probes(self.services.clone(), openapi_document()));
        let api = platform::http::edge_with_verifier(api, &self.settings.http, &self.verifier);
        // The web console (`/`, `/console/...`): pages over this same API, called
        // in-process through the same edge.
        console::router(
            console::ApiClient::in_process(api.clone()),
            console::ConsoleSettings::default(),
        )
        .merge(api)
    }

    /// Closes every pool.
    pub async fn close(&self) {
        if let Some(consumer) = &self.nats_consumer {
            consumer.stop();
        }
        for service in &self.services {
            service.db.close().await;
        }
    }
}

/// `/health`, `/ready` and `/api/openapi.json` of a process serving `services`.
pub(crate) fn probes(services: Vec<ServiceDb>, document: utoipa::openapi::OpenApi) -> Router {
    let document = Arc::new(document);
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(Arc::new(services))
        .route(
            "/api/openapi.json",
            get(move || {
                let document = document.clone();
                async move { Json(document.as_ref().clone()) }
            }),
        )
}

async fn service_ready(service: &ServiceDb) -> Result<(), &'static str> {
    if !service.db.ping().await {
        return Err("database unreachable");
    }
    match service.db.migrations_current(service.info.migrations).await {
        Ok(true) => Ok(()),
        Ok(false) => Err("migrations pending"),
        Err(_) => Err("database unreachable"),
    }
}

type Services = axum::extract::State<Arc<Vec<ServiceDb>>>;

async fn health(axum::extract::State(services): Services) -> Json<Value> {
    let services: serde_json::Map<String, Value> = services
        .iter()
        .map(|s| {
            (
                s.info.name.to_string(),
                json!({ "status": "ok", "version": s.info.version }),
            )
        })
        .collect();
    Json(json!({ "status": "ok", "services": services }))
}

async fn ready(axum::extract::State(all): Services) -> impl IntoResponse {
    let mut all_ready = true;
    let mut services = serde_json::Map::new();
    for service in all.iter() {
        let status = match service_ready(service).await {
            Ok(()) => {
                json!({ "status": "ready", "backend": format!("{:?}", service.db.backend()).to_lowercase() })
            }
            Err(reason) => {
                all_ready = false;
                json!({ "status": "unavailable", "reason": reason })
            }
        };
        services.insert(service.info.name.to_string(), status);
    }
    let status = if all_ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({ "status": if all_ready { "ready" } else { "unavailable" }, "services": services }),
        ),
    )
}

/// The OpenAPI document of every service, merged.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    document_of([cdx::openapi(), auth::openapi(), crm::openapi()])
}

/// One OpenAPI document of the services' `parts`.
pub(crate) fn document_of(
    parts: impl IntoIterator<Item = utoipa::openapi::OpenApi>,
) -> utoipa::openapi::OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Metatron API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Multi-tenant platform: CDX master registry, auth and CRM. Errors are \
                     {\"error\": {\"code\", \"message\", \"details\"}}.",
                ))
                .build(),
        )
        .build();
    for part in parts {
        doc.merge(part);
    }
    doc
}
