//! The binary's subcommands, health, readiness and the OpenAPI document.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::{Method, StatusCode};

use crate::common::{test_settings, TestApp, SUPERADMIN};

pub(crate) fn metatron(
    settings: &metatron::Settings,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    metatron_with_env(settings, args, stdin, &[])
}

/// [`metatron`] with these environment variables set too.
pub(crate) fn metatron_with_env(
    settings: &metatron::Settings,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metatron"));
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .arg("--data-dir")
        .arg(&settings.data_dir)
        .env(
            "METATRON_CDX_DATABASE_URL",
            settings.cdx.database.url.as_deref().expect("url"),
        )
        .env(
            "METATRON_AUTH_DATABASE_URL",
            settings.auth.database.url.as_deref().expect("url"),
        )
        .env(
            "METATRON_CRM_DATABASE_URL",
            settings.crm.database.url.as_deref().expect("url"),
        )
        .env("METATRON_PASSWORD_MEMORY_KIB", "1024")
        .env("METATRON_PASSWORD_ITERATIONS", "1")
        .env("METATRON_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("metatron runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("exit");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn migrate_inspect_seed_and_admin_create_work_from_the_command_line() {
    let dbs = platform::testing::TestDatabases::new();
    let settings = test_settings(&dbs);
    let (ok, out, err) = metatron(&settings, &["migrate"], None);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = metatron(&settings, &["migrate"], None);
    assert!(
        ok,
        "migrating an up-to-date database is a no-op: {out}{err}"
    );

    let (ok, out, err) = metatron(&settings, &["seed-demo"], None);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = metatron(&settings, &["seed-demo"], None);
    assert!(ok, "seeding twice is fine: {err}");

    let (ok, out, err) = metatron(
        &settings,
        &["admin", "create", "--username", "ops"],
        Some("a-long-password\n"),
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("superadmin ops created"), "{out}");
    let (ok, _, err) = metatron(
        &settings,
        &["admin", "create", "--username", "ops"],
        Some("a-long-password\n"),
    );
    assert!(!ok, "a duplicate fails");
    assert!(err.contains("exists"), "{err}");
    let (ok, _, err) = metatron(
        &settings,
        &["admin", "create", "--username", "weak"],
        Some("short\n"),
    );
    assert!(!ok && err.contains("password"), "{err}");

    let (ok, out, err) = metatron(&settings, &["inspect", "--json"], None);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    let services: Vec<&str> = report
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["service"].as_str().expect("name"))
        .collect();
    assert_eq!(services, ["cdx", "auth", "crm"]);
    let latest =
        |info: platform::service::ServiceInfo| info.migrations.iter().map(|m| m.version).max();
    for (db, info) in report
        .as_array()
        .expect("list")
        .iter()
        .zip([cdx::SERVICE, auth::SERVICE])
    {
        assert_eq!(
            db["migration_version"].as_i64(),
            latest(info),
            "every migration applied"
        );
        assert!(!db["url"].as_str().expect("url").contains("password"));
    }
    let rows = |service: &str, table: &str| -> i64 {
        report
            .as_array()
            .expect("list")
            .iter()
            .find(|r| r["service"] == service)
            .expect("service")["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .find(|t| t["name"] == table)
            .unwrap_or_else(|| panic!("{service}.{table}"))["rows"]
            .as_i64()
            .expect("count")
    };
    assert_eq!(rows("cdx", "admins"), 2, "test and ops");
    assert_eq!(rows("cdx", "tenants"), 1);
    assert_eq!(rows("auth", "users"), 2);
    assert_eq!(
        rows("auth", "tenant_replica"),
        1,
        "auth learned the tenant through events"
    );
    assert_eq!(rows("cdx", "outbox"), 0, "every event was delivered");

    let (ok, out, _) = metatron(&settings, &["inspect"], None);
    assert!(ok && out.contains("auth") && out.contains("users"), "{out}");

    // The server started on those databases lets the new superadmin in.
    let app = TestApp::spawn_on(dbs, settings).await;
    assert_eq!(
        app.login_as(("ops", "a-long-password"), None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_or_invalid_settings_fail_naming_the_setting() {
    let dbs = platform::testing::TestDatabases::new();
    let settings = test_settings(&dbs);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metatron"));
    let out = cmd
        .args(["inspect"])
        .env("METATRON_PROT", "1")
        .env("METATRON_DATA_DIR", &settings.data_dir)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_metatron"))
        .args(["inspect"])
        .env("METATRON_AUTH_ACCESS_TOKEN_TTL_SECS", "soon")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.access_token_ttl_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A timeout of 0 would be a limit of 0 ms, not "off": it is refused.
    for (variable, setting) in [
        (
            "METATRON_HTTP_CLIENT_HEADER_TIMEOUT_MS",
            "http.client_header_timeout_ms",
        ),
        (
            "METATRON_GATEWAY_REQUEST_TIMEOUT_MS",
            "gateway.request_timeout_ms",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_metatron"))
            .args(["inspect"])
            .env(variable, "0")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{variable}=0 was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{setting} must be at least 1")),
            "{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_or_database_is_an_error_not_a_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_metatron"))
        .args(["inspect", "--config", "/nonexistent/metatron.toml"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/metatron.toml"));
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_metatron"))
        .args(["inspect", "--data-dir"])
        .arg(empty.path())
        .output()
        .expect("runs");
    assert!(!out.status.success(), "inspect of nothing fails");
    assert_eq!(
        std::fs::read_dir(empty.path()).expect("dir").count(),
        0,
        "and creates nothing"
    );
}

#[tokio::test]
async fn health_ready_services_and_openapi() {
    let app = TestApp::spawn().await;
    let (status, health) = app.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["services"]["cdx"]["status"], "ok");
    assert_eq!(health["services"]["auth"]["status"], "ok");
    let (status, ready) = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["services"]["auth"]["status"], "ready");

    let root = app.token(SUPERADMIN).await;
    let (status, services) = app
        .call(Method::GET, "/api/cdx/services", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = services["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert!(
        names.contains(&"cdx") && names.contains(&"auth"),
        "{services}"
    );

    let (status, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().expect("version").starts_with('3'));
    for path in [
        "/api/auth/login",
        "/api/auth/users/{id}",
        "/api/cdx/tenants",
        "/api/cdx/audit",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}
