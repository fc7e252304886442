//! What each subcommand does.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use platform::events::Actor;
use secrecy::SecretString;
use serde::Serialize;

use crate::{App, Settings};

/// Opens the platform, seeding the demo data first when asked.
async fn open(settings: Settings, demo: bool) -> anyhow::Result<App> {
    let app = App::open(settings).await?;
    // Events left from the last run go out now; if the transport is down they wait in the
    // outbox, and the relays deliver them once it is back.
    if let Err(e) = app.flush_events().await {
        tracing::warn!(error = %e, "pending events could not be delivered yet; they wait in the outbox");
    }
    if demo {
        seed_demo(&app).await?;
    }
    Ok(app)
}

/// Loads the demo data (idempotent): superadmin `test`, client "Demo Client", tenant `demo`
/// with `john.doe@demo.com` (user) and `jane.smith@demo.com` (admin), and in it two CRM
/// customers of one company with an open deal.
pub async fn seed_demo(app: &App) -> anyhow::Result<()> {
    let tenant = app
        .cdx
        .seed_demo()
        .await
        .map_err(|e| anyhow::anyhow!("seeding cdx: {e}"))?;
    app.flush_events().await?;
    app.auth
        .seed_demo(&tenant.id)
        .await
        .map_err(|e| anyhow::anyhow!("seeding auth: {e}"))?;
    app.flush_events().await?;
    app.crm
        .seed_demo(&tenant.id)
        .await
        .map_err(|e| anyhow::anyhow!("seeding crm: {e}"))?;
    app.flush_events().await
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Resolves when the server has stopped.
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Send `true` to stop it gracefully.
    pub stop: tokio::sync::watch::Sender<bool>,
    /// The platform behind it.
    pub app: App,
}

/// Starts the all-in-one server on `listener` and returns once it accepts requests.
pub async fn start(
    settings: Settings,
    demo: bool,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<Running> {
    let app = open(settings, demo).await?;
    let addr = listener.local_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    app.register_services(&format!("http://{host}:{}", addr.port()))
        .await?;
    let background = app.start_background();
    let served = app.clone();
    let (done, stop) = spawn_server(
        listener,
        app.router(),
        &app.settings.http,
        background,
        async move {
            if let Err(e) = served.flush_events().await {
                tracing::warn!(error = %e, "events left in the outbox at shutdown; they are delivered at the next start");
            }
            // The audit chain's head is signed at every clean stop.
            if let Err(e) = served.cdx.checkpoint_audit().await {
                tracing::warn!(error = %e, "signing the audit chain's head at shutdown failed");
            }
            served.close().await;
        },
    );
    Ok(Running {
        addr,
        done,
        stop,
        app,
    })
}

/// Serves `router` on `listener` (with `http`'s client timeouts) until `true` is sent
/// on the returned sender; then lets in-flight requests finish for up to `http`'s shutdown
/// grace, stops the `background` tasks and runs `finish` (delivering pending events, closing
/// pools). The handle resolves when all is done.
pub(crate) fn spawn_server(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    http: &platform::config::HttpSettings,
    background: Vec<tokio::task::JoinHandle<()>>,
    finish: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    tokio::task::JoinHandle<anyhow::Result<()>>,
    tokio::sync::watch::Sender<bool>,
) {
    let (stop, mut stopping) = tokio::sync::watch::channel(false);
    let mut shutdown = stopping.clone();
    let shutdown = async move {
        let _ = shutdown.changed().await;
    };
    let mut server = tokio::spawn(platform::http::serve_with(
        listener,
        router,
        shutdown,
        http.client_timeouts(),
    ));
    let grace = std::time::Duration::from_millis(http.shutdown_grace_ms);
    let done = tokio::spawn(async move {
        let finished = tokio::select! {
            result = &mut server => Some(result),
            _ = stopping.changed() => tokio::time::timeout(grace, &mut server).await.ok(),
        };
        let result = match finished {
            Some(Ok(served)) => served.map_err(anyhow::Error::from),
            Some(Err(join)) => Err(anyhow::Error::from(join)),
            None => {
                // Requests still running after the grace period are cut off.
                server.abort();
                tracing::warn!("in-flight requests outlived the shutdown grace period");
                Ok(())
            }
        };
        for task in background {
            task.abort();
        }
        finish.await;
        result
    });
    (done, stop)
}

/// `metatron serve`: runs until Ctrl-C or SIGTERM.
pub async fn serve(settings: Settings, demo: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let bind = SocketAddr::new(settings.bind, settings.port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (set --port or METATRON_PORT)"))?;
    let data_dir = settings.data_dir.clone();
    let running = start(settings, demo, listener).await?;
    let port = running.addr.port();
    tracing::info!(
        port,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "metatron is ready"
    );
    println!(
        "Metatron is running on http://localhost:{port}  (data: {})",
        data_dir.display()
    );
    if demo {
        println!("Demo logins: superadmin test / test123; tenant demo: jane.smith@demo.com / demo123 (admin), john.doe@demo.com / demo123 (user)");
    }
    if !running
        .app
        .cdx
        .has_admin()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        println!(
            "No superadmin exists yet. Create one with:\n  metatron admin create --username NAME --data-dir {}\n(or start with --demo for the demo data)",
            data_dir.display()
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = running.stop.send(true);
    running.done.await?
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {}, _ = supervisor_gone() => {} }
}

/// The environment variable through which `metatron up` tells its children its process id.
pub(crate) const SUPERVISOR_PID: &str = "UP_SUPERVISOR_PID";

/// Resolves when the `metatron up` that started this process is gone (even killed with
/// SIGKILL, when it cannot stop its children), so that no child outlives it; never for a
/// process started otherwise.
async fn supervisor_gone() {
    let supervisor = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|pid| pid.parse::<i32>().ok());
    let Some(supervisor) = supervisor else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if nix::unistd::getppid().as_raw() != supervisor {
            tracing::warn!("metatron up is gone; stopping");
            return;
        }
    }
}

/// `metatron serve --service NAME`: runs one process of the distributed topology, the
/// gateway or one service (on the port of its `[services]` URL unless `port` is given).
pub async fn serve_service(
    settings: Settings,
    service: &str,
    port: Option<u16>,
    demo: bool,
) -> anyhow::Result<()> {
    match service {
        "gateway" => serve_gateway(settings).await,
        name => crate::node::serve_node(settings, name, port, demo).await,
    }
}

/// `metatron serve --service gateway`: the gateway alone, in front of the upstreams of
/// `[gateway]`, until Ctrl-C or SIGTERM; then drains in-flight requests for up to
/// `[http] shutdown_grace_ms`.
pub async fn serve_gateway(settings: Settings) -> anyhow::Result<()> {
    let gateway = gateway::Gateway::new(
        gateway_config(&settings),
        &settings.auth.issuer,
        &settings.auth.audience,
    )
    .map_err(anyhow::Error::msg)?;
    let bind = SocketAddr::new(settings.bind, settings.port);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (set --port or METATRON_PORT)"))?;
    let port = listener.local_addr()?.port();
    for pool in gateway.pools() {
        let urls: Vec<&str> = pool.upstreams.iter().map(|u| u.url.as_str()).collect();
        tracing::info!(service = %pool.service, upstreams = ?urls, "routing");
    }
    tracing::info!(port, "gateway is ready");
    println!("Metatron gateway is running on http://localhost:{port}");
    let (stop, mut shutdown) = tokio::sync::watch::channel(false);
    // The web console is served at the front door as in all-in-one; its calls go through the
    // gateway's own front door (without the console), in-process.
    let api = gateway.front(axum::Router::new());
    let front = gateway.front(console::router(
        console::ApiClient::in_process(api),
        console::ConsoleSettings::default(),
    ));
    let mut server = tokio::spawn(async move {
        gateway::serve_front(&gateway, front, listener, async move {
            let _ = shutdown.changed().await;
        })
        .await
    });
    tokio::select! {
        result = &mut server => return result?.map_err(anyhow::Error::from),
        _ = shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let grace = std::time::Duration::from_millis(settings.http.shutdown_grace_ms);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => result?.map_err(anyhow::Error::from),
        Err(_) => {
            server.abort();
            tracing::warn!("in-flight requests outlived the shutdown grace period");
            Ok(())
        }
    }
}

/// `[gateway]` with, for every service it does not list, the service's `[services] urls`
/// entry as its one upstream — so that moving a service is one setting.
pub fn gateway_config(settings: &Settings) -> gateway::Config {
    let mut config = settings.gateway.clone();
    for (service, url) in &settings.services.urls {
        config
            .upstreams
            .entry(service.clone())
            .or_insert_with(|| vec![url.clone()]);
    }
    config
}

/// `metatron migrate`: applies every service's migrations.
pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let app = App::open(settings).await?;
    for s in &app.services {
        println!(
            "{:<5} {}  migration {}",
            s.info.name,
            s.db.masked_url(),
            s.db.migration_version().await?.unwrap_or(0)
        );
    }
    app.close().await;
    Ok(())
}

/// One service database as `inspect` reports it.
#[derive(Debug, Serialize)]
pub struct DatabaseReport {
    /// Service name.
    pub service: String,
    /// URL, password masked.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Highest applied migration, if any.
    pub migration_version: Option<i64>,
    /// Tables and their row counts.
    pub tables: Vec<TableReport>,
}

/// One table as `inspect` reports it.
#[derive(Debug, Serialize)]
pub struct TableReport {
    /// Table name.
    pub name: String,
    /// Number of rows.
    pub rows: i64,
}

/// `metatron inspect`: every service database's URL, tables, row counts and migration
/// version. Opens existing databases only, and never migrates them.
pub async fn inspect(settings: &Settings) -> anyhow::Result<Vec<DatabaseReport>> {
    let mut reports = Vec::new();
    for (name, db_settings) in settings.service_databases() {
        let url = platform::db::database_url(name, db_settings, &settings.data_dir);
        let db =
            platform::db::Db::connect_existing(name, &url, Some(1), &settings.database).await?;
        let mut tables = Vec::new();
        for table in db.tables().await? {
            tables.push(TableReport {
                rows: db.count_rows(&table).await?,
                name: table,
            });
        }
        reports.push(DatabaseReport {
            service: name.to_string(),
            url: db.masked_url(),
            backend: format!("{:?}", db.backend()).to_lowercase(),
            migration_version: db.migration_version().await?,
            tables,
        });
        db.close().await;
    }
    Ok(reports)
}

/// Prints an `inspect` report as text.
pub fn print_inspect(reports: &[DatabaseReport]) {
    for r in reports {
        let version = r
            .migration_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into());
        println!(
            "{} — {} ({}, migration {version})",
            r.service, r.url, r.backend
        );
        for t in &r.tables {
            println!("  {:<24} {:>10}", t.name, t.rows);
        }
    }
}

/// Reads a password from the terminal (twice) or the first line of standard input.
fn read_password() -> anyhow::Result<SecretString> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        Ok(SecretString::from(first))
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(SecretString::from(
            line.trim_end_matches(['\r', '\n']).to_string(),
        ))
    }
}

/// `metatron admin create`: creates a superadmin, the password read from a prompt or stdin.
pub async fn admin_create(settings: Settings, username: &str) -> anyhow::Result<()> {
    let password = read_password()?;
    let app = App::open(settings).await?;
    let admin = app
        .cdx
        .create_admin(username, &password, &Actor::system("metatron admin create"))
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    app.flush_events().await?;
    app.close().await;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "superadmin {} created (id {})",
        admin.username, admin.id
    )?;
    Ok(())
}

/// `metatron seed-demo`.
pub async fn seed(settings: Settings) -> anyhow::Result<()> {
    let app = App::open(settings).await?;
    seed_demo(&app).await?;
    app.close().await;
    println!("demo data loaded: superadmin test / test123; tenant demo with jane.smith@demo.com and john.doe@demo.com / demo123");
    Ok(())
}

/// Opens the existing cdx database (never creates or migrates it).
async fn open_cdx(settings: &Settings) -> anyhow::Result<platform::db::Db> {
    let url = platform::db::database_url("cdx", &settings.cdx.database, &settings.data_dir);
    Ok(platform::db::Db::connect_existing("cdx", &url, Some(2), &settings.database).await?)
}

/// `metatron audit verify`: walks CDX's whole audit hash chain, requiring every checkpoint
/// to be signed by one of `pinned_keys` (else by `[cdx.audit] pinned_public_keys`; when both
/// are empty, by a key the database holds).
pub async fn audit_verify(
    settings: &Settings,
    pinned_keys: Vec<cdx::chain::PinnedKey>,
) -> anyhow::Result<cdx::chain::ChainReport> {
    let pinned_keys = if pinned_keys.is_empty() {
        settings.cdx.audit.pinned_public_keys.clone()
    } else {
        pinned_keys
    };
    let options = cdx::chain::VerifyOptions {
        pinned_keys,
        progress: None,
    };
    let db = open_cdx(settings).await?;
    let report = cdx::chain::verify(&db, &options).await;
    db.close().await;
    Ok(report?)
}

/// The keys `audit verify --public-key KEY --public-key-file FILE` pins: every `KEY`, then
/// every key of every `FILE` (one per line, as `audit key` prints them).
pub fn pinned_keys(
    keys: &[String],
    files: &[std::path::PathBuf],
) -> anyhow::Result<Vec<cdx::chain::PinnedKey>> {
    let mut pinned = keys
        .iter()
        .map(|key| {
            cdx::chain::PinnedKey::parse(key).map_err(|e| anyhow::anyhow!("--public-key: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the key file {}", file.display()))?;
        let keys = cdx::chain::parse_key_list(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        anyhow::ensure!(!keys.is_empty(), "{} holds no key", file.display());
        pinned.extend(keys);
    }
    Ok(pinned)
}

/// `metatron audit key`: the public keys that sign the audit checkpoints (id and key), as
/// the database holds them. Opens the database without writing.
pub async fn audit_keys(settings: &Settings) -> anyhow::Result<Vec<cdx::chain::CheckpointKey>> {
    let db = open_cdx(settings).await?;
    let keys = cdx::chain::checkpoint_keys(&db, &settings.cdx.audit.pinned_public_keys).await;
    db.close().await;
    Ok(keys?)
}

/// `metatron audit prune`: removes the audit entries older than `days` (else
/// `[cdx.audit] retention_days`) up to a signed checkpoint. Migrates the cdx database first.
pub async fn audit_prune(
    settings: &Settings,
    days: Option<u64>,
) -> anyhow::Result<Option<cdx::chain::Pruned>> {
    let days = days.unwrap_or(settings.cdx.audit.retention_days);
    anyhow::ensure!(
        days > 0,
        "no retention: pass --days N or set [cdx.audit] retention_days"
    );
    let db = open_cdx(settings).await?;
    let pruned = async {
        db.migrate(cdx::SERVICE.migrations).await?;
        Ok(cdx::chain::prune(&db, days).await?)
    }
    .await;
    db.close().await;
    pruned
}

/// Prints an `audit verify` report as text.
pub fn print_audit_report(report: &cdx::chain::ChainReport) {
    println!(
        "audit chain: {} entries, {} signed checkpoints verified",
        report.entries, report.checkpoints
    );
    println!("head: entry {} hash {}", report.head_seq, report.head_hash);
    if report.pruned_through > 0 {
        println!(
            "entries up to {} were pruned by the retention; the walk starts from the signed \
             checkpoint there",
            report.pruned_through
        );
    }
    if report.signed_through < report.head_seq {
        println!(
            "entries after {} are chained but not yet covered by a signed checkpoint",
            report.signed_through
        );
    }
    for key in &report.keys {
        let pinned = if key.pinned { ", pinned" } else { "" };
        println!(
            "checkpoint key {} (Ed25519 {}{pinned})",
            key.id, key.public_key
        );
    }
    if report.pinned {
        println!("every checkpoint had to be signed by a pinned key");
    }
    match &report.broken {
        None => println!("OK: the audit trail is intact"),
        Some(b) => println!(
            "BROKEN at entry {} (id {}): {}",
            b.seq.map_or_else(|| "-".into(), |s| s.to_string()),
            b.id.as_deref().unwrap_or("-"),
            b.reason
        ),
    }
}

/// The exit status of `audit verify`: an error naming the first broken entry.
pub fn audit_outcome(report: &cdx::chain::ChainReport) -> anyhow::Result<()> {
    match &report.broken {
        None => Ok(()),
        Some(b) => Err(anyhow::anyhow!(
            "the audit chain is broken at entry {} (id {}): {}",
            b.seq.map_or_else(|| "-".into(), |s| s.to_string()),
            b.id.as_deref().unwrap_or("-"),
            b.reason
        )),
    }
}

/// `metatron audit export`: audit entries as JSON lines on standard output, in chain order.
pub async fn audit_export(
    settings: &Settings,
    tenant: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let time = |name: &str, value: Option<&str>| -> anyhow::Result<_> {
        value
            .map(|v| {
                platform::ids::Timestamp::parse_rfc3339(v).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--{name} must be an RFC 3339 date-time, e.g. 2025-01-31T12:00:00Z"
                    )
                })
            })
            .transpose()
    };
    let (from, to) = (time("from", from)?, time("to", to)?);
    let db = open_cdx(settings).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = cdx::chain::export(&db, tenant, from, to, |entry| {
        serde_json::to_writer(&mut out, entry)?;
        out.write_all(b"\n")
    })
    .await;
    db.close().await;
    written?;
    out.flush()?;
    Ok(())
}

/// `metatron cdx rebuild`: recomputes CDX's aggregates from the facts the services compute
/// from their own data and reports the counters that drifted; with `apply` the recomputed
/// aggregates replace the kept ones. The services are asked over HTTP at their `[services]
/// urls` (`remote`, the distributed topology) or read in this process from their databases
/// (all-in-one). Migrates the cdx database first.
pub async fn cdx_rebuild(
    settings: &Settings,
    apply: bool,
    remote: bool,
) -> anyhow::Result<Vec<cdx::aggregates::Drift>> {
    let mut opened = Vec::new();
    let mut sources: cdx::aggregates::FactSources = Vec::new();
    let drift = async {
        if remote {
            let identity = crate::node::identity(settings, cdx::SERVICE.name)?;
            for service in [auth::SERVICE.name, crm::SERVICE.name] {
                let client = platform::remote::ServiceClient::new(
                    service,
                    settings.services.url(service).map_err(anyhow::Error::msg)?,
                    identity.clone(),
                    settings.services.call_timeout(),
                )
                .map_err(anyhow::Error::msg)?;
                sources.push((
                    service.to_string(),
                    Arc::new(platform::facts::RemoteFacts::new(service, client)),
                ));
            }
        } else {
            for (name, db_settings) in settings.service_databases() {
                if name == cdx::SERVICE.name {
                    continue;
                }
                let url = platform::db::database_url(name, db_settings, &settings.data_dir);
                let db =
                    platform::db::Db::connect_existing(name, &url, Some(2), &settings.database)
                        .await?;
                opened.push(db.clone());
                let source: Arc<dyn platform::facts::ServiceFacts> = if name == auth::SERVICE.name {
                    Arc::new(auth::AuthFacts::new(db))
                } else {
                    Arc::new(crm::CrmFacts::new(db))
                };
                sources.push((name.to_string(), source));
            }
        }
        let db = open_cdx(settings).await?;
        opened.push(db.clone());
        db.migrate(cdx::SERVICE.migrations).await?;
        cdx::aggregates::rebuild(&db, &sources, apply)
            .await
            .map_err(|e| anyhow::anyhow!("rebuilding the aggregates: {e}"))
    }
    .await;
    for db in opened {
        db.close().await;
    }
    drift
}
