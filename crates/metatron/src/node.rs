//! One service of the distributed topology in its own process (`metatron serve --service
//! NAME`): its own database, events over NATS JetStream, and authenticated HTTP for the few
//! calls that all-in-one makes in-process — auth asks CDX to check superadmin credentials,
//! CDX and the CRM fetch auth's token keys and revoked sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use platform::caller::{
    AuthContext, RevocationFeed, Revocations, RevokedSession, REVOCATIONS_PATH,
};
use platform::directory::RemoteAdmins;
use platform::events::nats::{Nats, NatsConsumer, NatsPublisher};
use platform::events::{Bus, EventHandler, Outbox};
use platform::export::RemoteExport;
use platform::identity::ServiceIdentity;
use platform::password::PasswordHashing;
use platform::remote::{JwksSource, ServiceClient};
use platform::service::ServiceInfo;
use platform::tenants::TenantReplica;
use platform::token::Verifier;

use crate::app::{document_of, open_db, probes, ServiceDb};
use crate::commands::{shutdown_signal, spawn_server};
use crate::settings::Settings;

/// Services that can run alone (the gateway is served by [`crate::commands::serve_gateway`]).
pub const SERVICES: [ServiceInfo; 3] = [cdx::SERVICE, auth::SERVICE, crm::SERVICE];

/// How often a token naming an unknown key may trigger a fetch of auth's key set.
const KEY_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// How often CDX checks the other services' readiness for its service registry.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// How long a service started with `--demo` waits for the demo tenant to reach it.
const DEMO_TENANT_WAIT: Duration = Duration::from_secs(120);

/// The service a process runs.
#[derive(Clone)]
enum Part {
    Cdx(cdx::Cdx),
    Auth(auth::Auth),
    Crm(crm::Crm),
}

/// One running service of the distributed topology (without its listener).
#[derive(Clone)]
pub struct Node {
    settings: Arc<Settings>,
    service: ServiceDb,
    part: Part,
    identity: ServiceIdentity,
    consumer: NatsConsumer,
    tenants: TenantReplica,
    revocations: Revocations,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("service", &self.service.info.name)
            .finish_non_exhaustive()
    }
}

/// Service `service`'s identity from the shared secret of `[services]`, or why there is none.
pub(crate) fn identity(settings: &Settings, service: &str) -> anyhow::Result<ServiceIdentity> {
    let secret = settings.services.secret.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "calls between the services of the distributed topology (acting as {service}) need \
             the secret shared by every service: set \
             [services] secret or METATRON_SERVICES_SECRET (at least {} bytes), the same in \
             every service process (`metatron up` creates one for you)",
            platform::identity::MIN_SECRET_BYTES
        )
    })?;
    ServiceIdentity::new(service, secret).map_err(|e| anyhow::anyhow!("[services] secret: {e}"))
}

impl Node {
    /// Opens service `name`'s database (migrating it), connects to NATS and wires the
    /// service's calls to the others.
    pub async fn open(settings: Settings, name: &str) -> anyhow::Result<Node> {
        let info = service_info(name)?;
        let identity = identity(&settings, name)?;
        let nats = Nats::connect(&settings.events).await.map_err(|e| {
            anyhow::anyhow!(
                "the distributed topology exchanges events over NATS JetStream, and {} cannot \
                 be reached ({e}); start `nats-server -js` or set [events] nats_url",
                settings.events.nats_url
            )
        })?;
        let bus = Bus::new();
        let verifier = Verifier::new(&settings.auth.issuer, &settings.auth.audience);
        let revocations = Revocations::new();
        let db = open_db(&settings, info, database_settings(&settings, name)).await?;
        let outbox = Outbox::with_destination(db.clone(), NatsPublisher::new(nats.clone()))
            .with_retention(settings.events.retention());
        let tenants = TenantReplica::new(db.clone());
        let ctx = AuthContext {
            verifier: verifier.clone(),
            revocations: revocations.clone(),
            tenants: tenants.clone(),
        };
        let timeout = settings.services.call_timeout();
        let auth_url = settings
            .services
            .url(auth::SERVICE.name)
            .map_err(anyhow::Error::msg)?;
        let mut consumers: Vec<Arc<dyn EventHandler>> = Vec::new();
        let (part, streams): (Part, &[&str]) = match name {
            "cdx" => {
                let cdx = cdx::Cdx::new(
                    db.clone(),
                    outbox.clone(),
                    ctx,
                    PasswordHashing::new(settings.password)?,
                )
                .with_audit(settings.cdx.audit.clone())
                // Requests reach CDX through the gateway, which may cut them off sooner.
                .with_request_timeout(
                    settings.http.request_timeout().min(
                        crate::commands::gateway_config(&settings)
                            .request_timeout("/api/cdx/audit/verify"),
                    ),
                );
                cdx.prepare_audit_chain()
                    .await
                    .map_err(|e| anyhow::anyhow!("chaining the audit log: {e}"))?;
                let mut exporters: cdx::Exporters = Vec::new();
                for service in [auth::SERVICE.name, crm::SERVICE.name] {
                    let client = ServiceClient::new(
                        service,
                        settings.services.url(service).map_err(anyhow::Error::msg)?,
                        identity.clone(),
                        timeout,
                    )
                    .map_err(anyhow::Error::msg)?;
                    exporters.push((
                        service.to_string(),
                        Arc::new(RemoteExport::new(service, client)),
                    ));
                }
                cdx.set_exporters(exporters);
                consumers.push(cdx.consumer());
                consumers.push(Arc::new(tenants.clone()));
                (Part::Cdx(cdx), &["cdx", "auth", "crm"])
            }
            "auth" => {
                let cdx_client = ServiceClient::new(
                    cdx::SERVICE.name,
                    settings
                        .services
                        .url(cdx::SERVICE.name)
                        .map_err(anyhow::Error::msg)?,
                    identity.clone(),
                    timeout,
                )
                .map_err(anyhow::Error::msg)?;
                let auth = auth::Auth::new(
                    db.clone(),
                    outbox.clone(),
                    ctx,
                    PasswordHashing::new(settings.password)?,
                    Arc::new(RemoteAdmins::new(cdx_client)),
                    settings.auth.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("starting auth: {e}"))?;
                consumers.extend(auth.consumers());
                (Part::Auth(auth), &["cdx"])
            }
            _ => {
                let crm = crm::Crm::new(db.clone(), outbox.clone(), ctx, settings.crm.clone());
                consumers.extend(crm.consumers());
                (Part::Crm(crm), &["cdx", "auth"])
            }
        };
        if !matches!(part, Part::Auth(_)) {
            // Tokens are signed by auth; this process learns its keys and its logouts.
            verifier.refresh_from(
                Arc::new(JwksSource::new(auth_url, timeout).map_err(anyhow::Error::msg)?),
                KEY_REFRESH_MIN_INTERVAL,
            );
            if let Err(e) = verifier.refresh().await {
                tracing::warn!(error = %e, "auth's token keys are not available yet; fetched on first use");
            }
            consumers.push(Arc::new(RevocationFeed::new(
                revocations.clone(),
                settings.auth.access_token_ttl_secs,
            )));
        }
        for consumer in consumers {
            bus.subscribe(consumer);
        }
        let consumer = NatsConsumer::new(nats, bus, &settings.events.consumer_name(name), streams);
        Ok(Node {
            settings: Arc::new(settings),
            service: ServiceDb { info, db, outbox },
            part,
            identity,
            consumer,
            tenants,
            revocations,
        })
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.service.info.name
    }

    /// The service's routes, its internal endpoints, and its probes, behind the edge.
    pub fn router(&self) -> Router {
        let (api, internal, document) = match &self.part {
            Part::Cdx(cdx) => (
                cdx.router(),
                cdx.internal_router(self.identity.clone()),
                cdx::openapi(),
            ),
            Part::Auth(auth) => (
                auth.router(),
                auth.internal_router(self.identity.clone()),
                auth::openapi(),
            ),
            Part::Crm(crm) => (
                crm.router(),
                crm.internal_router(self.identity.clone()),
                crm::openapi(),
            ),
        };
        let routes = api
            .merge(internal)
            .merge(probes(vec![self.service.clone()], document_of([document])));
        // Clients reach this process through the gateway, which limits their rates; here
        // every request would come from the gateway's one address.
        platform::http::edge(routes, &self.settings.http.behind_gateway())
    }

    /// Starts the event relay, the NATS consumer and the service's own background work.
    pub fn start_background(&self, demo: bool) -> Vec<tokio::task::JoinHandle<()>> {
        self.consumer.start();
        let mut tasks = vec![self.service.outbox.spawn_relay(self.settings.events.poll())];
        match &self.part {
            Part::Cdx(cdx) => {
                tasks.push(cdx.spawn_audit_maintenance());
                tasks.push(cdx.spawn_aggregates_maintenance());
                tasks.push(self.spawn_registry());
            }
            Part::Auth(auth) => tasks.push(auth.spawn_maintenance(Duration::from_secs(3600))),
            Part::Crm(_) => {}
        }
        if !matches!(self.part, Part::Auth(_)) {
            tasks.push(self.spawn_revocation_load());
        }
        if demo {
            tasks.push(self.spawn_demo_seed());
        }
        tasks
    }

    /// CDX's service registry in this topology: every service's URL, version and readiness
    /// (`GET /ready`), checked periodically.
    fn spawn_registry(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let Part::Cdx(cdx) = &node.part else { return };
            let http = reqwest::Client::builder()
                .timeout(node.settings.services.call_timeout())
                .build()
                .unwrap_or_default();
            loop {
                for info in SERVICES {
                    let Ok(url) = node.settings.services.url(info.name) else {
                        continue;
                    };
                    let ready = info.name == node.name()
                        || http
                            .get(format!("{}/ready", url.trim_end_matches('/')))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                    let recorded = match cdx.register_service(info.name, info.version, url).await {
                        Ok(()) => cdx.record_health(info.name, ready).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = recorded {
                        tracing::warn!(error = %e, "recording service health failed");
                    }
                }
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        })
    }

    /// Loads the sessions auth revoked recently (their access tokens may still be
    /// presented here), retrying until auth answers; later revocations arrive as events.
    fn spawn_revocation_load(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let client = match node
                .settings
                .services
                .url(auth::SERVICE.name)
                .and_then(|url| {
                    ServiceClient::new(
                        auth::SERVICE.name,
                        url,
                        node.identity.clone(),
                        node.settings.services.call_timeout(),
                    )
                }) {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!(error = %e, "cannot ask auth for revoked sessions");
                    return;
                }
            };
            let mut wait = Duration::from_millis(200);
            loop {
                match client.get::<Vec<RevokedSession>>(REVOCATIONS_PATH).await {
                    Ok(revoked) => {
                        for session in &revoked {
                            node.revocations.revoke(&session.sid, session.until);
                        }
                        tracing::info!(
                            sessions = revoked.len(),
                            "revoked sessions loaded from auth"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e.message, "auth is not answering yet");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                }
            }
        })
    }

    /// Seeds this service's part of the demo data: CDX creates the demo tenant (and the
    /// superadmin), the others wait until the tenant reaches their replica.
    fn spawn_demo_seed(&self) -> tokio::task::JoinHandle<()> {
        let node = self.clone();
        tokio::spawn(async move {
            let seeded = match &node.part {
                Part::Cdx(cdx) => cdx.seed_demo().await.map(|_| ()),
                Part::Auth(auth) => match node.demo_tenant().await {
                    Some(tenant) => auth.seed_demo(&tenant).await,
                    None => return,
                },
                Part::Crm(crm) => match node.demo_tenant().await {
                    Some(tenant) => crm.seed_demo(&tenant).await,
                    None => return,
                },
            };
            match seeded {
                Ok(()) => tracing::info!(service = node.name(), "demo data loaded"),
                Err(e) => tracing::error!(error = %e, "loading the demo data failed"),
            }
        })
    }

    /// The demo tenant's id once CDX's event about it has been applied here.
    async fn demo_tenant(&self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + DEMO_TENANT_WAIT;
        loop {
            match self.tenants.resolve(cdx::DEMO_TENANT_SLUG).await {
                Ok(Some(tenant)) => return Some(tenant.id),
                Ok(None) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => {
                    tracing::error!("the demo tenant did not arrive from cdx; is the cdx service running with --demo?");
                    return None;
                }
            }
        }
    }

    /// Delivers what is left in the outbox and closes the pool.
    pub async fn close(&self) {
        if let Err(e) = self.service.outbox.flush().await {
            tracing::warn!(error = %e, "events left in the outbox at shutdown; they are delivered at the next start");
        }
        if let Part::Cdx(cdx) = &self.part {
            if let Err(e) = cdx.checkpoint_audit().await {
                tracing::warn!(error = %e, "signing the audit chain's head at shutdown failed");
            }
        }
        self.consumer.stop();
        self.service.db.close().await;
    }
}

fn database_settings<'a>(
    settings: &'a Settings,
    name: &str,
) -> &'a platform::config::DatabaseSettings {
    settings
        .service_databases()
        .into_iter()
        .find(|(service, _)| *service == name)
        .map(|(_, db)| db)
        .unwrap_or(&settings.cdx.database)
}

/// The service named `name`.
fn service_info(name: &str) -> anyhow::Result<ServiceInfo> {
    SERVICES
        .iter()
        .copied()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "unknown service `{name}`: choose cdx, auth, crm or gateway (cms, billing and \
                 analytics do not exist yet)"
            )
        })
}

/// The port service `name` listens on: `--port`, else the port of its own URL.
fn port_of(settings: &Settings, name: &str, flag: Option<u16>) -> anyhow::Result<u16> {
    if let Some(port) = flag {
        return Ok(port);
    }
    let url = settings.services.url(name).map_err(anyhow::Error::msg)?;
    url.rsplit_once(':')
        .and_then(|(_, port)| port.trim_end_matches('/').parse().ok())
        .with_context(|| format!("[services] urls.{name} = {url} names no port; give --port"))
}

/// `metatron serve --service NAME` for a service (not the gateway): runs until Ctrl-C or
/// SIGTERM, then drains in-flight requests and delivers pending events.
pub async fn serve_node(
    settings: Settings,
    name: &str,
    port: Option<u16>,
    demo: bool,
) -> anyhow::Result<()> {
    service_info(name)?;
    let bind = SocketAddr::new(settings.bind, port_of(&settings, name, port)?);
    let node = Node::open(settings, name).await?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (set --port)"))?;
    let port = listener.local_addr()?.port();
    let background = node.start_background(demo);
    let closing = node.clone();
    let (done, stop) = spawn_server(
        listener,
        node.router(),
        &node.settings.http,
        background,
        async move { closing.close().await },
    );
    tracing::info!(service = name, port, "service is ready");
    println!("Metatron {name} is running on http://localhost:{port}");
    let mut done = done;
    tokio::select! {
        result = &mut done => return result?,
        _ = shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    done.await?
}
