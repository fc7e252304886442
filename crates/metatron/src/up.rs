//! `metatron up`: the distributed topology on one machine, as child processes of this one —
//! the gateway and one process per service (`metatron serve --service NAME`), plus a NATS
//! JetStream server when none is reachable and `nats-server` is installed.
//!
//! Each child's log lines are forwarded with the child's name in front; a child that exits
//! on its own is restarted with a growing delay; Ctrl-C or SIGTERM stops the gateway first
//! (no new requests), then the services, then NATS, each given the shutdown grace period.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{watch, Mutex};

use crate::commands::shutdown_signal;
use crate::node::SERVICES;
use crate::settings::Settings;

/// The file in the data directory holding the secret the services share, when
/// `[services] secret` is not set.
pub const SECRET_FILE: &str = "service.secret";
/// First restart delay of a crashed child; doubled per crash up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A child that ran this long before exiting is restarted after [`FIRST_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long `up` waits for the whole stack to answer `/health` before it says so.
const READY_WAIT: Duration = Duration::from_secs(90);

/// What `metatron up` was asked for.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Load the demo data in every service.
    pub demo: bool,
    /// The configuration file given with `--config`, passed on to every child.
    pub config: Option<PathBuf>,
}

/// One supervised child.
struct Supervised {
    name: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    /// The running process's id, `None` between restarts.
    pid: Mutex<Option<u32>>,
}

/// Runs the distributed stack until Ctrl-C or SIGTERM.
pub async fn up(settings: Settings, options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating {}", settings.data_dir.display()))?;
    let secret = match &settings.services.secret {
        Some(secret) => secret.expose_secret().to_string(),
        None => stored_secret(&settings.data_dir)?,
    };
    let exe = std::env::current_exe().context("finding the metatron executable")?;
    let exe = exe.to_string_lossy().to_string();
    let (stopping_tx, stopping) = watch::channel(false);

    let mut children: Vec<Arc<Supervised>> = Vec::new();
    let nats_started = match nats_server_needed(&settings).await? {
        Some(command) => {
            children.push(Arc::new(Supervised {
                name: "nats".into(),
                command,
                env: Vec::new(),
                pid: Mutex::new(None),
            }));
            true
        }
        None => false,
    };
    let mut common = vec![
        "serve".to_string(),
        "--data-dir".into(),
        settings.data_dir.to_string_lossy().to_string(),
    ];
    if let Some(config) = &options.config {
        common.extend(["--config".into(), config.to_string_lossy().to_string()]);
    }
    let env = vec![
        ("METATRON_SERVICES_SECRET".to_string(), secret),
        ("METATRON_EVENTS_TRANSPORT".to_string(), "nats".to_string()),
        (
            crate::commands::SUPERVISOR_PID.to_string(),
            std::process::id().to_string(),
        ),
    ];
    // The services believe the `X-Forwarded-For` of the gateway, which runs on this
    // machine, so the audit trail and the limits see the clients, not the gateway.
    let mut trusted = settings.http.trusted_proxies.clone();
    for loopback in [
        std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        let proxy = loopback.into();
        if !trusted.contains(&proxy) {
            trusted.push(proxy);
        }
    }
    let trusted = serde_json::to_string(&trusted).context("encoding the trusted proxies")?;
    for service in SERVICES.iter().map(|s| s.name).chain(["gateway"]) {
        let mut env = env.clone();
        if service != "gateway" {
            env.push(("METATRON_HTTP_TRUSTED_PROXIES".to_string(), trusted.clone()));
        }
        let mut command = vec![exe.clone()];
        command.extend(common.iter().cloned());
        command.extend(["--service".to_string(), service.to_string()]);
        if service == "gateway" {
            command.extend(["--port".to_string(), settings.port.to_string()]);
        } else if options.demo {
            command.push("--demo".into());
        }
        children.push(Arc::new(Supervised {
            name: service.to_string(),
            command,
            env,
            pid: Mutex::new(None),
        }));
    }

    let width = children.iter().map(|c| c.name.len()).max().unwrap_or(4);
    let mut supervisors = Vec::new();
    for child in &children {
        supervisors.push(tokio::spawn(supervise(
            child.clone(),
            width,
            stopping.clone(),
        )));
        if child.name == "nats" {
            wait_for_nats(&settings).await?;
        }
    }

    let gateway = format!("http://127.0.0.1:{}", settings.port);
    tokio::select! {
        ready = wait_ready(&gateway) => {
            if ready {
                print_summary(&settings, nats_started, options.demo);
            } else {
                eprintln!("up: the stack did not become healthy within {} s; see the logs above ({gateway}/health)", READY_WAIT.as_secs());
            }
        }
        _ = shutdown_signal() => {
            stop_all(&children, &settings, stopping_tx, supervisors).await;
            return Ok(());
        }
    }
    shutdown_signal().await;
    stop_all(&children, &settings, stopping_tx, supervisors).await;
    Ok(())
}

/// The secret in `<data_dir>/service.secret`, created (readable by this user only) when
/// missing.
fn stored_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(SECRET_FILE);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        let secret = secret.trim().to_string();
        if secret.len() >= platform::identity::MIN_SECRET_BYTES {
            return Ok(secret);
        }
        anyhow::bail!(
            "{} is too short; delete it to get a new one",
            path.display()
        );
    }
    let secret = platform::ids::random_token(48);
    write_private(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// `host:port` of the NATS URL.
fn nats_address(settings: &Settings) -> String {
    let url = settings.events.nats_url.trim();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let rest = rest.split('/').next().unwrap_or(rest);
    if rest.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    }
}

async fn nats_reachable(settings: &Settings) -> bool {
    let address = nats_address(settings);
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&address)
        )
        .await,
        Ok(Ok(_))
    )
}

/// The command starting a NATS server when none answers at the configured URL, or `None`
/// when one does.
async fn nats_server_needed(settings: &Settings) -> anyhow::Result<Option<Vec<String>>> {
    if nats_reachable(settings).await {
        return Ok(None);
    }
    let address = nats_address(settings);
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("[events] nats_url {address} has no port"))?;
    let Some(server) = find_program("nats-server") else {
        anyhow::bail!(
            "no NATS server answers at {address} and `nats-server` is not installed: install it \
             (Debian: apt-get install nats-server) or point [events] nats_url at a running \
             JetStream server"
        );
    };
    let store = settings.data_dir.join("nats");
    Ok(Some(vec![
        server.to_string_lossy().to_string(),
        "-js".into(),
        "-a".into(),
        host.to_string(),
        "-p".into(),
        port.to_string(),
        "-sd".into(),
        store.to_string_lossy().to_string(),
    ]))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

async fn wait_for_nats(settings: &Settings) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if nats_reachable(settings).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the NATS server did not start listening at {}",
        nats_address(settings)
    )
}

/// Runs `child` until `stopping`, restarting it with backoff whenever it exits.
async fn supervise(child: Arc<Supervised>, width: usize, mut stopping: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stopping.borrow() {
            return;
        }
        let started = Instant::now();
        let mut process = match spawn(&child, width) {
            Ok(process) => process,
            Err(e) => {
                eprintln!("{:>width$} | cannot start: {e}", child.name);
                return;
            }
        };
        *child.pid.lock().await = process.id();
        let status = process.wait().await;
        *child.pid.lock().await = None;
        if *stopping.borrow() {
            return;
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        eprintln!(
            "{:>width$} | exited ({status}); restarting in {} ms",
            child.name,
            backoff.as_millis()
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopping.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn spawn(child: &Supervised, width: usize) -> std::io::Result<Child> {
    let (program, args) = child
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut process = Command::new(program)
        .args(args)
        .envs(child.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(out) = process.stdout.take() {
        tokio::spawn(forward(out, child.name.clone(), width, false));
    }
    if let Some(err) = process.stderr.take() {
        tokio::spawn(forward(err, child.name.clone(), width, true));
    }
    Ok(process)
}

/// Copies a child's output line by line, each prefixed with its name.
async fn forward(stream: impl AsyncRead + Unpin, name: String, width: usize, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("{name:>width$} | {line}");
        } else {
            println!("{name:>width$} | {line}");
        }
    }
}

async fn wait_ready(gateway: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    let deadline = Instant::now() + READY_WAIT;
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{gateway}/health")).send().await {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

fn print_summary(settings: &Settings, nats_started: bool, demo: bool) {
    println!();
    println!(
        "Metatron (distributed) is up: http://localhost:{}",
        settings.port
    );
    println!("  {:<8} http://localhost:{}", "gateway", settings.port);
    for service in SERVICES {
        if let Ok(url) = settings.services.url(service.name) {
            println!("  {:<8} {url}", service.name);
        }
    }
    let origin = if nats_started {
        "started by metatron up"
    } else {
        "already running"
    };
    println!("  {:<8} {} ({origin})", "nats", settings.events.nats_url);
    if demo {
        println!("Demo logins: superadmin test / test123; tenant demo: jane.smith@demo.com / demo123 (admin), john.doe@demo.com / demo123 (user)");
    }
    println!("Stop with Ctrl-C.");
}

/// Stops the children in reverse start order (gateway, services, NATS), each with SIGTERM
/// and, after the grace period, SIGKILL.
async fn stop_all(
    children: &[Arc<Supervised>],
    settings: &Settings,
    stopping: watch::Sender<bool>,
    supervisors: Vec<tokio::task::JoinHandle<()>>,
) {
    let _ = stopping.send(true);
    let grace = Duration::from_millis(settings.http.shutdown_grace_ms) + Duration::from_secs(5);
    for child in children.iter().rev() {
        let Some(pid) = *child.pid.lock().await else {
            continue;
        };
        let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while child.pid.lock().await.is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if child.pid.lock().await.is_some() {
            eprintln!("{} did not stop in time; killing it", child.name);
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    for supervisor in supervisors {
        let _ = tokio::time::timeout(Duration::from_secs(2), supervisor).await;
    }
    println!("Metatron stopped.");
}
