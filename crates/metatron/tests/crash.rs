//! Crash safety as real processes: a write storm runs against the platform while a process is
//! killed with SIGKILL at random moments and comes back on the same data. Afterwards every
//! write the API acknowledged is in the CRM, every CRM record has exactly one audit entry
//! (and no audit entry names a record that does not exist), CDX's aggregates equal the CRM's
//! own counts, `metatron cdx rebuild --check` finds no drift and `metatron audit verify`
//! passes.
//!
//! Scenarios: all-in-one (`serve` killed), distributed (`up`; the crm process killed, and
//! separately the NATS server). The kill moments come from a seeded generator; the seed is
//! printed, and `CRASH_SEED=<seed>` replays it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use platform::testing::TestDatabases;
use serde_json::{json, Value};

mod support;

use support::{base_config, free_port, signal, Up};

/// How many times each scenario kills its process; the all-in-one server restarts in about
/// a second, so it is killed more often. (`up` restarts a crashed service after a delay that
/// doubles per crash.)
const CRASHES: usize = 3;
const ALL_IN_ONE_CRASHES: usize = 5;
/// Concurrent writers of the storm, spread over the two tenants.
const WRITERS: usize = 6;
/// The tenants written to: the demo one and one the test creates.
const TENANTS: [&str; 2] = ["demo", "crash-b"];
const SUPERADMIN: (&str, &str) = ("test", "test123");
/// What the CRM's demo seed creates in the demo tenant.
const DEMO_CUSTOMERS: usize = 2;
const DEMO_COMPANIES: usize = 1;

/// SplitMix64: a few lines of seeded randomness for the kill moments.
struct Rng(u64);

impl Rng {
    /// Seeded from `CRASH_SEED`, or from the clock; prints the seed either way.
    fn from_env(scenario: &str) -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{scenario}: CRASH_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in `[low_ms, high_ms)`.
    fn millis(&mut self, low_ms: u64, high_ms: u64) -> Duration {
        Duration::from_millis(low_ms + self.next() % (high_ms - low_ms))
    }
}

/// Polls `check` every 200 ms until it answers `Ok`, and answers its value; panics after
/// `limit` with `what` and the last state `check` described.
async fn settle<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Runs the CLI against the scenario's configuration and data directory.
fn cli(config: &Path, data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("metatron runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A client of the platform's HTTP API, acting as the superadmin.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// Logs the superadmin in (retrying while the platform starts).
    async fn login(base: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let token = settle("superadmin login", Duration::from_secs(90), || async {
            let response = http
                .post(format!("{base}/api/auth/login"))
                .json(&json!({"username": SUPERADMIN.0, "password": SUPERADMIN.1}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body: Value = response.json().await.unwrap_or_default();
            body["access_token"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{status} {body}"))
        })
        .await;
        Api {
            http,
            base: base.to_string(),
            token,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or_default()))
    }

    /// A GET that must answer 200.
    async fn get(&self, path: &str, tenant: Option<&str>) -> Result<Value, String> {
        match self.send(reqwest::Method::GET, path, tenant, None).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("GET {path}: {status} {body}")),
        }
    }

    /// Every item of a paged list (`path` carries its query, `limit` is added).
    async fn all(&self, path: &str, tenant: Option<&str>) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let separator = if path.contains('?') { '&' } else { '?' };
            let mut page_path = format!("{path}{separator}limit=500");
            if let Some(cursor) = &cursor {
                page_path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&page_path, tenant).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(items),
            }
        }
    }

    /// Creates the second tenant (under the demo client) and waits until the CRM knows it.
    async fn create_second_tenant(&self) {
        let client = settle("the demo client", Duration::from_secs(60), || async {
            let clients = self.get("/api/cdx/clients", None).await?;
            clients["items"][0]["id"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("no client yet: {clients}"))
        })
        .await;
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/api/cdx/tenants",
                None,
                Some(json!({"slug": TENANTS[1], "name": "Crash B", "client_id": &client})),
            )
            .await
            .expect("create tenant");
        assert_eq!(status, 201, "{body}");
        settle(
            "the CRM knows both tenants",
            Duration::from_secs(60),
            || async {
                for tenant in TENANTS {
                    self.get("/api/crm/customers?limit=1", Some(tenant)).await?;
                }
                Ok(())
            },
        )
        .await;
    }
}

/// The kinds of record the storm writes, with their list path and creation event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Customer,
    Company,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Customer => "/api/crm/customers",
            Kind::Company => "/api/crm/companies",
        }
    }

    fn created_event(self) -> &'static str {
        match self {
            Kind::Customer => "crm.customer.created",
            Kind::Company => "crm.company.created",
        }
    }

    /// The tenant summary's counter of this kind.
    fn counter(self) -> &'static str {
        match self {
            Kind::Customer => "customers",
            Kind::Company => "companies",
        }
    }

    fn body(self, name: &str) -> Value {
        match self {
            Kind::Customer => json!({"first_name": name, "last_name": "Storm"}),
            Kind::Company => json!({"name": name}),
        }
    }
}

/// What each writer writes, in turn.
const MIX: [Kind; 4] = [
    Kind::Customer,
    Kind::Customer,
    Kind::Customer,
    Kind::Company,
];

/// (tenant slug, kind) → ids.
type Records = BTreeMap<(&'static str, Kind), BTreeSet<String>>;

/// Concurrent writers creating customers and companies ([`MIX`]) as fast as the
/// platform answers, recording every write acknowledged with 201.
struct Storm {
    acknowledged: Arc<Mutex<Records>>,
    attempts: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Storm {
    fn start(api: &Api) -> Storm {
        let acknowledged = Arc::new(Mutex::new(Records::new()));
        let attempts = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..WRITERS)
            .map(|writer| {
                let (api, acknowledged, attempts, stop) = (
                    api.clone(),
                    acknowledged.clone(),
                    attempts.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let tenant = TENANTS[writer % TENANTS.len()];
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let kind = MIX[n % MIX.len()];
                        n += 1;
                        *attempts.lock().expect("attempts") += 1;
                        let name = format!("storm-{writer}-{n}");
                        let outcome = api
                            .send(
                                reqwest::Method::POST,
                                kind.path(),
                                Some(tenant),
                                Some(kind.body(&name)),
                            )
                            .await;
                        match outcome {
                            Ok((201, body)) => {
                                let id = body["id"].as_str().expect("id").to_string();
                                acknowledged
                                    .lock()
                                    .expect("acknowledged")
                                    .entry((tenant, kind))
                                    .or_default()
                                    .insert(id);
                            }
                            // The process is down or restarting: the write may or may not
                            // have committed. Try again shortly with the next record.
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                })
            })
            .collect();
        Storm {
            acknowledged,
            attempts,
            stop,
            writers,
        }
    }

    fn acknowledged_count(&self) -> usize {
        self.acknowledged
            .lock()
            .expect("acknowledged")
            .values()
            .map(BTreeSet::len)
            .sum()
    }

    /// Waits until more writes are acknowledged than now: the platform is back.
    async fn wait_for_progress(&self, what: &str) {
        let before = self.acknowledged_count();
        settle(what, Duration::from_secs(60), || async {
            let now = self.acknowledged_count();
            if now > before + WRITERS {
                Ok(())
            } else {
                Err(format!("{now} writes acknowledged, {before} before"))
            }
        })
        .await;
    }

    /// Stops the writers; answers what they got acknowledged and how many writes they tried.
    async fn stop(self) -> (Records, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for writer in self.writers {
            writer.await.expect("writer");
        }
        let acknowledged = self.acknowledged.lock().expect("acknowledged").clone();
        let attempts = *self.attempts.lock().expect("attempts");
        (acknowledged, attempts)
    }
}

/// What the platform holds after the storm, read through its API.
#[derive(Debug)]
struct Observed {
    /// Records in the CRM.
    records: Records,
    /// `target`s of the creation audit entries, duplicates kept.
    audited: BTreeMap<(&'static str, Kind), Vec<String>>,
    /// The tenant summaries' counters.
    counted: BTreeMap<(&'static str, Kind), u64>,
}

impl Observed {
    async fn read(api: &Api) -> Result<Observed, String> {
        let mut observed = Observed {
            records: Records::new(),
            audited: BTreeMap::new(),
            counted: BTreeMap::new(),
        };
        for tenant in TENANTS {
            let summary = api
                .get(&format!("/api/cdx/tenants/{tenant}/summary"), None)
                .await?;
            let tenant_id = summary["tenant_id"].as_str().ok_or("no tenant_id")?;
            for kind in [Kind::Customer, Kind::Company] {
                let ids = api
                    .all(kind.path(), Some(tenant))
                    .await?
                    .iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_string))
                    .collect();
                observed.records.insert((tenant, kind), ids);
                let audited = api
                    .all(
                        &format!(
                            "/api/cdx/audit?tenant={tenant_id}&action={}",
                            kind.created_event()
                        ),
                        None,
                    )
                    .await?
                    .iter()
                    .filter_map(|e| e["target"].as_str().map(str::to_string))
                    .collect();
                observed.audited.insert((tenant, kind), audited);
                let counted = summary[kind.counter()].as_u64().ok_or("no counter")?;
                observed.counted.insert((tenant, kind), counted);
            }
        }
        Ok(observed)
    }

    /// Whether the events caught up: at least as many distinct audit targets and counted
    /// records as records. (Only the wait's condition: more would never come back down, so
    /// the exact checks that follow report it at once.)
    fn caught_up(&self) -> Result<Records, String> {
        for (key, ids) in &self.records {
            let audited: BTreeSet<&String> = self.audited[key].iter().collect();
            let counted = self.counted[key];
            if audited.len() < ids.len() || counted < ids.len() as u64 {
                return Err(format!(
                    "{key:?}: {} records, {} audited, {counted} counted",
                    ids.len(),
                    audited.len()
                ));
            }
        }
        Ok(self.records.clone())
    }
}

/// A write storm against a running platform, from the superadmin's login to the checks.
struct Scenario {
    api: Api,
    /// What existed before the storm (the demo data).
    before: Records,
    storm: Storm,
}

impl Scenario {
    /// Logs in at `base`, creates the second tenant, notes what exists, starts the storm.
    async fn begin(base: &str) -> Scenario {
        let api = Api::login(base).await;
        api.create_second_tenant().await;
        // In the distributed topology the CRM loads its demo records once the demo tenant
        // reached it over NATS: the storm starts after them.
        let before = settle("the demo data", Duration::from_secs(60), || async {
            let records = Observed::read(&api).await?.caught_up()?;
            let demo = |kind| records.get(&("demo", kind)).map_or(0, BTreeSet::len);
            if demo(Kind::Customer) < DEMO_CUSTOMERS || demo(Kind::Company) < DEMO_COMPANIES {
                return Err(format!("demo records so far: {records:?}"));
            }
            Ok(records)
        })
        .await;
        let storm = Storm::start(&api);
        Scenario { api, before, storm }
    }

    /// Stops the storm, waits until the events caught up (and, given the NATS server, until
    /// its consumers owe nothing, so that no redelivery can come later), then checks the
    /// invariants through the API.
    async fn finish(self, nats: Option<&NatsServer>) {
        let Scenario { api, before, storm } = self;
        let (acknowledged, attempts) = storm.stop().await;
        let stopped = Instant::now();
        let observed = settle("the events catch up", Duration::from_secs(120), || async {
            if let Some(nats) = nats {
                nats.drained().await?;
            }
            let observed = Observed::read(&api).await?;
            observed.caught_up()?;
            Ok(observed)
        })
        .await;
        eprintln!("settled {:?} after the storm", stopped.elapsed());
        let mut unacknowledged: u64 = 0;
        for (key, ids) in &observed.records {
            let acked = acknowledged.get(key).cloned().unwrap_or_default();
            let earlier = before.get(key).cloned().unwrap_or_default();
            let missing: Vec<&String> = acked
                .union(&earlier)
                .filter(|id| !ids.contains(*id))
                .collect();
            assert!(
                missing.is_empty(),
                "{key:?}: acknowledged but lost: {missing:?}"
            );
            // Writes in flight when a process died either committed (and are here) or not.
            unacknowledged += ids
                .difference(&acked)
                .filter(|id| !earlier.contains(*id))
                .count() as u64;

            let audited = &observed.audited[key];
            let mut once = BTreeSet::new();
            let twice: Vec<&String> = audited.iter().filter(|t| !once.insert(*t)).collect();
            assert!(
                twice.is_empty(),
                "{key:?}: audited more than once: {twice:?}"
            );
            let audited: BTreeSet<String> = audited.iter().cloned().collect();
            let unaudited: Vec<&String> = ids.difference(&audited).collect();
            assert!(
                unaudited.is_empty(),
                "{key:?}: no audit entry: {unaudited:?}"
            );
            let phantom: Vec<&String> = audited.difference(ids).collect();
            assert!(
                phantom.is_empty(),
                "{key:?}: audited but not in the CRM: {phantom:?}"
            );
            assert_eq!(
                observed.counted[key],
                ids.len() as u64,
                "{key:?}: CDX's counter (left) against the CRM's records (right)"
            );
        }
        let acked: u64 = acknowledged.values().map(|ids| ids.len() as u64).sum();
        eprintln!(
            "{attempts} writes tried, {acked} acknowledged, {unacknowledged} committed without \
             an acknowledgement"
        );
        assert!(
            acked + unacknowledged <= attempts,
            "records appeared that nobody wrote"
        );
    }
}

/// The CLI's own checks on the data the scenario left: the chain verifies and a rebuild from
/// the audit log finds the aggregates exact.
fn check_offline(config: &Path, data_dir: &Path) {
    let (ok, out) = cli(config, data_dir, &["audit", "verify"]);
    assert!(ok, "audit verify: {out}");
    assert!(out.contains("OK: the audit trail is intact"), "{out}");
    let (ok, out) = cli(config, data_dir, &["cdx", "rebuild", "--check"]);
    assert!(ok, "cdx rebuild --check: {out}");
    assert!(out.contains("0 counter(s) drifted"), "{out}");
}

/// `metatron serve --demo` (all-in-one) as a child process, killed and restarted at will.
struct Server {
    process: tokio::process::Child,
    config: PathBuf,
    data_dir: PathBuf,
}

impl Server {
    fn spawn(config: &Path, data_dir: &Path) -> Server {
        let process = tokio::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
            .arg("serve")
            .arg("--demo")
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("metatron serve starts");
        Server {
            process,
            config: config.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// SIGKILL, then a new process on the same data.
    async fn crash_and_restart(&mut self) {
        self.process.start_kill().expect("SIGKILL");
        self.process.wait().await.expect("killed");
        *self = Server::spawn(&self.config, &self.data_dir);
    }

    async fn stop(mut self) {
        let pid = self.process.id().expect("pid");
        signal(pid, "-TERM");
        let exit = tokio::time::timeout(Duration::from_secs(30), self.process.wait())
            .await
            .expect("serve stops within 30 s")
            .expect("status");
        assert!(exit.success(), "{exit}");
    }
}

#[tokio::test]
async fn all_in_one_survives_sigkill_during_a_write_storm() {
    let mut rng = Rng::from_env("all-in-one");
    let dbs = TestDatabases::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("metatron.toml");
    std::fs::write(&config, base_config(&dbs, port)).expect("config");
    let base = format!("http://127.0.0.1:{port}");

    let mut server = Server::spawn(&config, &dbs.data_dir());
    let scenario = Scenario::begin(&base).await;
    for round in 1..=ALL_IN_ONE_CRASHES {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        server.crash_and_restart().await;
        scenario
            .storm
            .wait_for_progress(&format!("writes after restart {round}"))
            .await;
    }
    scenario.finish(None).await;
    server.stop().await;
    check_offline(&config, &dbs.data_dir());
}

#[tokio::test]
async fn distributed_survives_sigkill_of_the_crm_process_during_a_write_storm() {
    let mut rng = Rng::from_env("distributed, crm killed");
    let stack = Up::start("nats://127.0.0.1:4222");
    let scenario = Scenario::begin(&stack.base).await;
    for round in 1..=CRASHES {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        let crm = stack.pid_of("crm").expect("crm runs");
        signal(crm, "-KILL");
        // `up` restarts it after a back-off that doubles per crash.
        scenario
            .storm
            .wait_for_progress(&format!("writes after crm restart {round}"))
            .await;
        assert_ne!(stack.pid_of("crm"), Some(crm));
    }
    scenario.finish(None).await;
    check_offline(&stack.config, &stack.dbs.data_dir());
    stack.stop().await;
}

/// A JetStream server of the test's own, on a free port with its own store, so it can be
/// killed; its monitoring endpoint shows what its consumers still owe.
struct NatsServer {
    process: std::process::Child,
    port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("tempdir");
        let (port, monitor_port) = (free_port(), free_port());
        let process = Self::spawn(port, monitor_port, store.path());
        NatsServer {
            process,
            port,
            monitor_port,
            store,
        }
    }

    fn spawn(port: u16, monitor_port: u16, store: &Path) -> std::process::Child {
        let process = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor_port.to_string(), "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then, after `down`, a new server on the same port and store.
    async fn crash_and_restart(&mut self, down: Duration) {
        self.process.kill().expect("SIGKILL");
        self.process.wait().expect("killed");
        tokio::time::sleep(down).await;
        self.process = Self::spawn(self.port, self.monitor_port, self.store.path());
    }

    /// Whether every durable consumer has been handed every message and acknowledged it:
    /// nothing is left to be (re)delivered, so the state checked now is final. (An ack lost
    /// while the server was down leaves its message to be redelivered after the ack wait.)
    async fn drained(&self) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/jsz?consumers=true", self.monitor_port);
        let report: Value = reqwest::get(&url)
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let consumers: Vec<&Value> = report["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .flat_map(|stream| stream["consumer_detail"].as_array().into_iter().flatten())
            .collect();
        let owing: Vec<String> = consumers
            .iter()
            .filter(|c| c["num_pending"] != 0 || c["num_ack_pending"] != 0)
            .map(|c| {
                format!(
                    "{} on {}: {} pending, {} unacknowledged",
                    c["name"], c["stream_name"], c["num_pending"], c["num_ack_pending"]
                )
            })
            .collect();
        if consumers.is_empty() || !owing.is_empty() {
            return Err(format!("consumers: {owing:?} of {}", consumers.len()));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[tokio::test]
async fn distributed_survives_sigkill_of_the_nats_server_during_a_write_storm() {
    let mut rng = Rng::from_env("distributed, NATS killed");
    let mut nats = NatsServer::start();
    let stack = Up::start(&nats.url());
    let scenario = Scenario::begin(&stack.base).await;
    for round in 1..=CRASHES {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        let down = rng.millis(100, 1000);
        nats.crash_and_restart(down).await;
        // Writes do not wait for NATS (they wait in the outboxes); the storm goes on.
        scenario
            .storm
            .wait_for_progress(&format!("writes after NATS restart {round}"))
            .await;
    }
    scenario.finish(Some(&nats)).await;
    check_offline(&stack.config, &stack.dbs.data_dir());
    stack.stop().await;
}
