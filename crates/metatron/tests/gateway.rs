//! `metatron serve --service gateway` as a real process in front of an all-in-one platform.

use std::process::Stdio;
use std::time::Duration;

use metatron::Settings;
use platform::password::HashParams;
use platform::testing::TestDatabases;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

fn settings(dbs: &TestDatabases) -> Settings {
    let mut settings = Settings {
        data_dir: dbs.data_dir(),
        password: HashParams {
            concurrency: 2,
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Settings::default()
    };
    settings.cdx.database.url = Some(dbs.url("cdx"));
    settings.auth.database.url = Some(dbs.url("auth"));
    settings.crm.database.url = Some(dbs.url("crm"));
    settings.database.max_connections = 4;
    settings
}

#[tokio::test]
async fn the_gateway_process_fronts_the_platform() {
    let dbs = TestDatabases::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let platform = metatron::commands::start(settings(&dbs), true, listener)
        .await
        .expect("platform starts");
    let upstream = format!("[\"http://{}\"]", platform.addr);
    let workdir = tempfile::tempdir().expect("tempdir");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
        .args([
            "serve",
            "--service",
            "gateway",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(workdir.path())
        .env("METATRON_GATEWAY_UPSTREAMS_CDX", &upstream)
        .env("METATRON_GATEWAY_UPSTREAMS_AUTH", &upstream)
        .env("METATRON_GATEWAY_UPSTREAMS_CRM", &upstream)
        .env("METATRON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("gateway announces itself")
        .expect("read")
        .expect("a line");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("address")
        .replace("localhost", "127.0.0.1");

    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok", "{health}");

    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "test", "password": "test123"}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.expect("json")["access_token"]
        .as_str()
        .expect("token")
        .to_string();
    let me = http
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(&token)
        .header("x-request-id", "through-the-gateway")
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    assert_eq!(me.headers()["x-request-id"], "through-the-gateway");
    let tenants = http
        .get(format!("{base}/api/cdx/tenants"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("tenants");
    assert_eq!(tenants.status(), 200);
    let forged = http
        .get(format!("{base}/api/auth/me"))
        .bearer_auth(format!("{token}x"))
        .send()
        .await
        .expect("forged");
    assert_eq!(forged.status(), 401);

    // SIGTERM: a clean exit.
    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "{status}");

    let _ = platform.stop.send(true);
    platform.done.await.expect("join").expect("clean shutdown");
}
