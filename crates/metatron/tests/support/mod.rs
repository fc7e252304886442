//! The distributed stack as real processes, shared by the process-level tests: `metatron up`
//! with a generated configuration on free ports, one database per service on the suite's
//! backend (`TEST_BACKEND`), events over NATS JetStream under a stream prefix of its own.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use platform::testing::TestDatabases;

/// The services `metatron up` starts besides the gateway.
pub const SERVICES: [&str; 3] = ["cdx", "auth", "crm"];

/// Ports [`free_port`] hands out: below the range the kernel gives outgoing connections
/// (from 32768 by default). A port of that range, free when checked, can be taken by some
/// process's outgoing connection before the child that should listen on it starts, which
/// the crash tests' many connections made happen.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port nothing listens on right now, outside the ephemeral range when it starts above
/// [`TEST_PORTS`]. Each test process walks the range from its own starting point.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if ephemeral_from >= TEST_PORTS.end {
        let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            let port = TEST_PORTS.start + u16::try_from(offset).expect("within the range");
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Sends `signal` (e.g. `-KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// The part of a configuration every process-level test shares: quiet logs, cheap password
/// hashing, one database per service on the suite's backend.
pub fn base_config(dbs: &TestDatabases, port: u16) -> String {
    let mut config = format!(
        "port = {port}\nbind = \"127.0.0.1\"\nlog = \"warn\"\n\
         [password]\nconcurrency = 2\nmemory_kib = 1024\niterations = 1\nparallelism = 1\n"
    );
    for service in SERVICES {
        config.push_str(&format!(
            "[{service}.database]\nurl = \"{}\"\nmax_connections = 4\n",
            dbs.url(service)
        ));
    }
    config
}

/// `metatron up --demo` on free ports.
pub struct Up {
    pub process: tokio::process::Child,
    /// The gateway's base URL.
    pub base: String,
    /// Each service's own base URL.
    pub urls: Vec<(&'static str, String)>,
    pub config: PathBuf,
    pub prefix: String,
    /// The services' shared secret.
    pub secret: String,
    pub nats_url: String,
    pub dbs: TestDatabases,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts the stack on the NATS server at `nats_url` (not waiting for it to be ready).
    pub fn start(nats_url: &str) -> Up {
        let dbs = TestDatabases::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let gateway_port = free_port();
        let urls: Vec<(&'static str, String)> = SERVICES
            .iter()
            .map(|s| (*s, format!("http://127.0.0.1:{}", free_port())))
            .collect();
        let prefix = format!("mtup{}", &platform::ids::new_id()[24..]);
        let secret = platform::ids::random_token(48);
        let mut config = base_config(&dbs, gateway_port);
        config.push_str(&format!(
            "[events]\ntransport = \"nats\"\nnats_url = \"{nats_url}\"\nprefix = \"{prefix}\"\n\
             poll_ms = 200\n[services]\nsecret = \"{secret}\"\n\
             [gateway]\nconnect_timeout_ms = 500\nhealth_check_interval_ms = 200\n\
             [services.urls]\n"
        ));
        // No [gateway.upstreams]: the gateway routes to the [services] urls.
        for (service, url) in &urls {
            config.push_str(&format!("{service} = \"{url}\"\n"));
        }
        let path = dir.path().join("metatron.toml");
        std::fs::write(&path, config).expect("config");
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
            .arg("up")
            .arg("--demo")
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(dbs.data_dir())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("metatron up starts");
        Up {
            process,
            base: format!("http://127.0.0.1:{gateway_port}"),
            urls,
            config: path,
            prefix,
            secret,
            nats_url: nats_url.to_string(),
            dbs,
            _dir: dir,
        }
    }

    /// The base URL of `service`'s own process.
    pub fn url(&self, service: &str) -> &str {
        &self
            .urls
            .iter()
            .find(|(s, _)| *s == service)
            .expect("service")
            .1
    }

    /// The pid of the process running `service` under this stack's `metatron up`.
    pub fn pid_of(&self, service: &str) -> Option<u32> {
        let config = self.config.to_string_lossy().to_string();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).to_string())
                    .collect();
                let serves = args
                    .windows(2)
                    .any(|w| w[0] == "--service" && w[1] == service);
                (serves && args.contains(&config)).then_some(pid)
            })
    }

    /// Stops `up` with SIGTERM, checks that it and every service exited, and removes this
    /// stack's streams so that runs do not pile up on the server.
    pub async fn stop(mut self) {
        signal(self.process.id().expect("pid"), "-TERM");
        let exit = tokio::time::timeout(Duration::from_secs(60), self.process.wait())
            .await
            .expect("metatron up stops within a minute")
            .expect("status");
        assert!(exit.success(), "{exit}");
        for service in SERVICES {
            assert!(self.pid_of(service).is_none(), "{service} outlived up");
        }
        let settings = platform::events::nats::EventSettings {
            nats_url: self.nats_url.clone(),
            prefix: self.prefix.clone(),
            ..Default::default()
        };
        if let Ok(nats) = platform::events::nats::Nats::connect(&settings).await {
            for service in SERVICES {
                let _ = nats.delete_stream(service).await;
            }
        }
    }
}
