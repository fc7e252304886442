//! Starting `metatron serve` on a fresh data directory, timing it to `/ready`, and reading
//! its resident memory from `/proc`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

/// `metatron-bench startup`.
#[derive(clap::Args, Debug)]
pub struct StartupArgs {
    /// The `metatron` binary (a release build).
    #[arg(long, default_value = "target/release/metatron")]
    pub bin: PathBuf,
    /// Port for the servers started (on 127.0.0.1); must be free.
    #[arg(long, default_value_t = 38081)]
    pub port: u16,
    /// Starts to time; the median is the figure.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Give up on a start after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// `metatron-bench idle-memory`.
#[derive(clap::Args, Debug)]
pub struct MemoryArgs {
    /// The `metatron` binary (a release build).
    #[arg(long, default_value = "target/release/metatron")]
    pub bin: PathBuf,
    /// Port for the server (on 127.0.0.1); must be free.
    #[arg(long, default_value_t = 38081)]
    pub port: u16,
    /// Start with `--demo` (seeds the demo data before serving).
    #[arg(long)]
    pub demo: bool,
    /// How long the server idles after `/ready` before its memory is read, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
    /// Give up on the start after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

/// A `metatron serve` child on its own temporary data directory; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    // Removed after the child, when the server is dropped.
    _dir: tempfile::TempDir,
}

impl Server {
    /// Spawns `bin serve` on 127.0.0.1:`port` with a new empty data directory. The
    /// working directory is the temporary directory, so no stray `metatron.toml` is read.
    fn spawn(bin: &Path, port: u16, demo: bool) -> anyhow::Result<Server> {
        let bin = std::fs::canonicalize(bin)
            .with_context(|| format!("metatron binary {} not found", bin.display()))?;
        // Something answering there would be timed instead of the new server.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        anyhow::ensure!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "port {port} is taken; pass another with --port"
        );
        let dir = tempfile::Builder::new()
            .prefix("metatron-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let data = dir.path().join("data");
        let mut command = Command::new(&bin);
        command
            .current_dir(dir.path())
            .arg("serve")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if demo {
            command.arg("--demo");
        }
        if std::env::var_os("METATRON_LOG").is_none() {
            command.env("METATRON_LOG", "warn");
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Server {
            child,
            port,
            _dir: dir,
        })
    }

    /// Polls `/ready` until it answers 200 (every millisecond while the port is closed).
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("cannot poll the server")? {
                anyhow::bail!("the server exited before it was ready ({status})");
            }
            if let Ok(200) = http_status(self.port, "/ready") {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "not ready after {timeout:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `VmRSS` and `VmHWM` of the server, in KiB.
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| {
            status_field_kib(&status, name).with_context(|| format!("no {name} in {path}"))
        };
        Ok((field("VmRSS")?, field("VmHWM")?))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The data directory is thrown away, so there is nothing to shut down gracefully.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `Name:   1234 kB` line of `/proc/PID/status`, in KiB.
fn status_field_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// The status code of `GET path` on 127.0.0.1:`port`, over a new connection.
fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

/// The code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts.next()?.parse().ok()
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Milliseconds from spawning `bin args` to its exit: the floor of process start-up.
fn exec_ms(bin: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        status.success(),
        "{} {args:?} failed: {status}",
        bin.display()
    );
    Ok(ms)
}

/// Times `runs` starts to `/ready`, each on a new empty data directory without `--demo`;
/// the reference is `metatron --version` (process creation, loading, exit) timed as often.
pub fn startup(args: &StartupArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let started = Instant::now();
        let mut server = Server::spawn(&args.bin, args.port, false)?;
        server.wait_ready(timeout)?;
        runs.push(started.elapsed().as_secs_f64() * 1000.0);
        drop(server);
    }
    let floor = (0..args.runs)
        .map(|_| exec_ms(&args.bin, &["--version"]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(json!({
        "benchmark": "startup-to-ready",
        "runs_ms": runs,
        "median_ms": median(&runs),
        "min_ms": runs.iter().copied().fold(f64::INFINITY, f64::min),
        "max_ms": runs.iter().copied().fold(0.0, f64::max),
        "version_runs_ms": floor,
        "version_median_ms": median(&floor),
    }))
}

/// Starts the server, waits for `/ready`, lets it idle, and reads its memory.
pub fn idle_memory(args: &MemoryArgs) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut server = Server::spawn(&args.bin, args.port, args.demo)?;
    server.wait_ready(Duration::from_secs(args.timeout_secs))?;
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    std::thread::sleep(Duration::from_millis(args.settle_ms));
    let (rss, hwm) = server.memory_kib()?;
    Ok(json!({
        "benchmark": "idle-memory",
        "demo": args.demo,
        "ready_ms": ready_ms,
        "settle_ms": args.settle_ms,
        "vmrss_kib": rss,
        "vmhwm_kib": hwm,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_status_fields() {
        let status = "Name:\tmetatron\nVmHWM:\t   30120 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_field_kib(status, "VmRSS"), Some(20480));
        assert_eq!(status_field_kib(status, "VmHWM"), Some(30120));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 OK\r\ncontent-type: x\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
