//! The distributed topology as real processes: `metatron up` starts the gateway and one
//! process per service on the suite's backend (one database per service; PostgreSQL with
//! `TEST_BACKEND=postgres`), exchanging events over the NATS JetStream server on
//! 127.0.0.1:4222 (`.ci/run` starts one), and everything is driven over HTTP through the
//! gateway as a client would.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

use support::{signal, Up};

async fn start() -> Up {
    let stack = Up::start(&platform::events::nats::EventSettings::default().nats_url);
    // Ready when a tenant user can log in through the gateway: every process is up and the
    // demo data has travelled from cdx to auth over NATS.
    eventually(Duration::from_secs(90), || async {
        stack.login("john.doe@demo.com", "demo123").await.is_some()
    })
    .await;
    // And the CRM process has loaded its part of the demo data (it does once the demo
    // tenant reaches it, independently of auth).
    let john = stack
        .login("john.doe@demo.com", "demo123")
        .await
        .expect("john logs in");
    eventually(Duration::from_secs(60), || async {
        let list: Value = match reqwest::Client::new()
            .get(format!("{}/api/crm/customers", stack.base))
            .bearer_auth(&john)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        list["items"]
            .as_array()
            .is_some_and(|items| items.len() == 2)
    })
    .await;
    stack
}

#[track_caller]
fn eventually<F, Fut>(limit: Duration, check: F) -> impl std::future::Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let caller = std::panic::Location::caller();
    wait_for(limit, check, caller)
}

async fn wait_for<F, Fut>(limit: Duration, mut check: F, caller: &std::panic::Location<'_>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "not within {limit:?} (line {})",
            caller.line()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Up {
    async fn login(&self, username: &str, password: &str) -> Option<String> {
        let (status, body) = self.login_answer(username, password).await?;
        if status != 200 {
            return None;
        }
        body["access_token"].as_str().map(str::to_string)
    }

    /// The status and body of a login through the gateway; `None` when it cannot be sent.
    async fn login_answer(&self, username: &str, password: &str) -> Option<(u16, Value)> {
        let response = reqwest::Client::new()
            .post(format!("{}/api/auth/login", self.base))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or_default()))
    }
}

/// The status and `error.code` of a request, `(0, "")` when it could not be sent.
async fn outcome(response: reqwest::Result<reqwest::Response>) -> (u16, String) {
    let Ok(response) = response else {
        return (0, String::new());
    };
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

/// A tenant created through the gateway with its admin's email is provisioned by the auth
/// process (the admin, activated with the one-time setup token) and the crm process (the
/// default pipeline); suspending it refuses the admin's login and CRM writes in those
/// processes, and resuming restores both.
async fn tenant_lifecycle_across_processes(stack: &Up, superadmin: &str) {
    let http = reqwest::Client::new();
    let base = &stack.base;
    let clients: Value = http
        .get(format!("{base}/api/cdx/clients"))
        .bearer_auth(superadmin)
        .send()
        .await
        .expect("clients")
        .json()
        .await
        .expect("json");
    let created = http
        .post(format!("{base}/api/cdx/tenants"))
        .bearer_auth(superadmin)
        .json(
            &json!({"slug": "across", "name": "Across", "client_id": clients["items"][0]["id"],
                      "admin_email": "chief@across.example"}),
        )
        .send()
        .await
        .expect("tenant");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("json");
    let setup = created["admin_setup"]["token"]
        .as_str()
        .expect("setup token");

    // Auth applies the tenant's creation from NATS; until then the token is unknown there.
    eventually(Duration::from_secs(60), || async {
        let set = http
            .post(format!("{base}/api/auth/setup-password"))
            .json(&json!({"token": setup, "password": "chief-password"}))
            .send()
            .await;
        status_of(set).await == 204
    })
    .await;
    let chief = stack
        .login("chief@across.example", "chief-password")
        .await
        .expect("the provisioned admin logs in");
    eventually(Duration::from_secs(60), || async {
        let pipelines: Value = match http
            .get(format!("{base}/api/crm/pipelines"))
            .bearer_auth(&chief)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        pipelines["items"][0]["name"] == "Sales"
    })
    .await;

    let set_status = |status: &'static str| {
        http.patch(format!("{base}/api/cdx/tenants/across"))
            .bearer_auth(superadmin)
            .json(&json!({ "status": status }))
            .send()
    };
    let crm_write = || {
        http.post(format!("{base}/api/crm/customers"))
            .bearer_auth(superadmin)
            .header("x-tenant", "across")
            .json(&json!({"first_name": "Cross", "last_name": "Process"}))
            .send()
    };
    assert_eq!(status_of(set_status("suspended").await).await, 200);
    eventually(Duration::from_secs(60), || async {
        stack
            .login_answer("chief@across.example", "chief-password")
            .await
            .is_some_and(|(status, body)| {
                status == 403 && body["error"]["code"] == "tenant_suspended"
            })
    })
    .await;
    eventually(Duration::from_secs(60), || async {
        outcome(crm_write().await).await == (409, "tenant_suspended".to_string())
    })
    .await;
    // The admin's session ended in auth, and the crm process refuses its token too.
    eventually(Duration::from_secs(30), || async {
        let listed = http
            .get(format!("{base}/api/crm/customers"))
            .bearer_auth(&chief)
            .send()
            .await;
        status_of(listed).await == 401
    })
    .await;

    assert_eq!(status_of(set_status("active").await).await, 200);
    eventually(Duration::from_secs(60), || async {
        stack
            .login("chief@across.example", "chief-password")
            .await
            .is_some()
    })
    .await;
    eventually(Duration::from_secs(60), || async {
        status_of(crm_write().await).await == 201
    })
    .await;
}

async fn status_of(response: reqwest::Result<reqwest::Response>) -> u16 {
    response.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn the_distributed_stack_serves_like_all_in_one() {
    let stack = start().await;
    let http = reqwest::Client::new();
    let base = stack.base.clone();

    // CRUD through the gateway, in the crm process.
    let john = stack
        .login("john.doe@demo.com", "demo123")
        .await
        .expect("john logs in");
    // The crm believes the gateway's X-Forwarded-For (`metatron up` makes it a trusted
    // proxy), so the audit trail records the client's address, not the gateway's.
    let created = http
        .post(format!("{base}/api/crm/customers"))
        .bearer_auth(&john)
        .header("x-forwarded-for", "203.0.113.7")
        .json(
            &json!({"first_name": "Dora", "last_name": "Distributed", "email": "dora@example.com"}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let dora: Value = created.json().await.expect("json");
    let list: Value = http
        .get(format!("{base}/api/crm/customers?q=dora"))
        .bearer_auth(&john)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The superadmin's credentials live in cdx: auth checks them over HTTP with its
    // service token.
    let admin = stack
        .login("test", "test123")
        .await
        .expect("superadmin logs in");
    assert!(stack.login("test", "wrong-password").await.is_none());

    // A tenant created in cdx reaches auth over NATS and is usable there.
    let clients: Value = http
        .get(format!("{base}/api/cdx/clients"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("clients")
        .json()
        .await
        .expect("json");
    let client = clients["items"][0]["id"].as_str().expect("the demo client");
    let tenant = http
        .post(format!("{base}/api/cdx/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"slug": "far-away", "name": "Far Away", "client_id": client}))
        .send()
        .await
        .expect("tenant");
    assert_eq!(tenant.status(), 201, "{:?}", tenant.text().await);
    eventually(Duration::from_secs(60), || async {
        let user = http
            .post(format!("{base}/api/auth/users"))
            .bearer_auth(&admin)
            .header("x-tenant", "far-away")
            .json(&json!({"email": "first@far-away.example", "password": "long-enough-1", "role": "admin"}))
            .send()
            .await;
        status_of(user).await == 201
    })
    .await;
    assert!(stack
        .login("first@far-away.example", "long-enough-1")
        .await
        .is_some());

    // The aggregates in cdx follow the crm's events.
    eventually(Duration::from_secs(60), || async {
        let overview: Value = match http
            .get(format!("{base}/api/cdx/overview"))
            .bearer_auth(&admin)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        overview["totals"]["customers"] == 3 && overview["tenants"]["total"] == 2
    })
    .await;
    let dora_audit = format!(
        "{base}/api/cdx/audit?action=crm.customer.created&target={}",
        dora["id"].as_str().expect("id")
    );
    eventually(Duration::from_secs(30), || async {
        let audit: Value = match http.get(&dora_audit).bearer_auth(&admin).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        audit["items"][0]["ip"] == "203.0.113.7"
    })
    .await;

    // The web console is at the front door too, its pages built through the gateway.
    let page = http.get(format!("{base}/")).send().await.expect("console");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("type=\"password\""), "{html}");

    // Server-sent events pass through the gateway as they happen.
    let mut stream = http
        .get(format!("{base}/api/cdx/stream?type=cdx.client.created"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    let client = http
        .post(format!("{base}/api/cdx/clients"))
        .bearer_auth(&admin)
        .json(&json!({"name": "Streamed Ltd"}))
        .send()
        .await
        .expect("client");
    assert_eq!(client.status(), 201);
    let mut seen = String::new();
    while !seen.contains("Streamed Ltd") && !seen.contains("cdx.client.created") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("an event within 10 s")
            .expect("the stream reads")
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);

    // The export gathers the tenant's data from the other processes over HTTP, streamed
    // through CDX and the gateway (its length unknown when the answer starts).
    let response = http
        .get(format!("{base}/api/cdx/tenants/demo/export"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("export");
    assert!(
        response.headers().get("content-length").is_none(),
        "{:?}",
        response.headers()
    );
    let export: Value = response.json().await.expect("json");
    assert_eq!(
        export["services"]["crm"]["customers"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{export}"
    );
    assert!(export["services"]["auth"]["users"]
        .as_array()
        .is_some_and(|users| users.len() == 2));

    // `cdx rebuild --remote` reads the facts of auth and the CRM over HTTP with the service
    // credential: CDX's aggregates equal them (once the events in flight have arrived).
    let facts = format!("{}/internal/crm/facts", stack.url("crm"));
    assert_eq!(status_of(http.get(&facts).send().await).await, 401);
    eventually(Duration::from_secs(30), || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
            .args(["cdx", "rebuild", "--check", "--remote", "--config"])
            .arg(&stack.config)
            .arg("--data-dir")
            .arg(stack.dbs.data_dir())
            .output()
            .await
            .expect("metatron runs");
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success() && text.contains("0 counter(s) drifted")
    })
    .await;

    // Deleting a tenant purges it in every process.
    let deleted = http
        .delete(format!("{base}/api/cdx/tenants/far-away?confirm=far-away"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 202);
    eventually(Duration::from_secs(60), || async {
        let report: Value = match http
            .get(format!("{base}/api/cdx/tenants/far-away/purge"))
            .bearer_auth(&admin)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        report["complete"] == true
    })
    .await;
    assert!(stack
        .login("first@far-away.example", "long-enough-1")
        .await
        .is_none());

    tenant_lifecycle_across_processes(&stack, &admin).await;

    // Logging out in auth ends the token in the crm process too.
    let logout = http
        .post(format!("{base}/api/auth/logout"))
        .bearer_auth(&john)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 204);
    eventually(Duration::from_secs(30), || async {
        let r = http
            .get(format!("{base}/api/crm/customers"))
            .bearer_auth(&john)
            .send()
            .await;
        status_of(r).await == 401
    })
    .await;

    // Internal endpoints: not routed by the gateway, and a forged or foreign service
    // credential is refused by the service itself.
    let through_gateway = http
        .post(format!("{base}/internal/cdx/admins/verify"))
        .json(&json!({"username": "test", "password": "test123"}))
        .send()
        .await
        .expect("gateway");
    assert_eq!(through_gateway.status(), 404);
    let foreign = platform::identity::ServiceIdentity::new(
        "auth",
        &secrecy::SecretString::from(platform::ids::random_token(48)),
    )
    .expect("identity");
    let ours = platform::identity::ServiceIdentity::new(
        "auth",
        &secrecy::SecretString::from(stack.secret.clone()),
    )
    .expect("identity");
    let verify = format!("{}/internal/cdx/admins/verify", stack.url("cdx"));
    let body = json!({"username": "test", "password": "test123"});
    for forged in [
        None,
        Some("auth.9999999999.AAAA".to_string()),
        Some(foreign.token()),
    ] {
        let mut request = http.post(&verify).json(&body);
        if let Some(token) = forged {
            request = request.header("x-metatron-service", token);
        }
        let response = request.send().await.expect("internal");
        assert_eq!(response.status(), 401);
    }
    let genuine: Value = http
        .post(&verify)
        .header("x-metatron-service", ours.token())
        .json(&body)
        .send()
        .await
        .expect("internal")
        .json()
        .await
        .expect("json");
    assert_eq!(genuine["admin"]["username"], "test", "{genuine}");

    // A killed service answers 503 fast through the gateway, and `up` restarts it.
    let jane = stack
        .login("jane.smith@demo.com", "demo123")
        .await
        .expect("jane logs in");
    let crm = stack.pid_of("crm").expect("crm runs");
    signal(crm, "-KILL");
    let started = Instant::now();
    let down = http
        .get(format!("{base}/api/crm/customers"))
        .bearer_auth(&jane)
        .send()
        .await
        .expect("answer");
    assert_eq!(down.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    eventually(Duration::from_secs(60), || async {
        let r = http
            .get(format!("{base}/api/crm/customers"))
            .bearer_auth(&jane)
            .send()
            .await;
        status_of(r).await == 200
    })
    .await;
    assert_ne!(stack.pid_of("crm"), Some(crm));

    stack.stop().await;
}

#[test]
fn services_refuse_to_start_without_the_shared_secret_or_with_an_unknown_name() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_metatron"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .env_remove("METATRON_SERVICES_SECRET")
            .current_dir(Path::new(env!("CARGO_TARGET_TMPDIR")))
            .output()
            .expect("run");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["serve", "--service", "crm"]);
    assert!(err.contains("METATRON_SERVICES_SECRET"), "{err}");
    let err = run(&["serve", "--service", "billing"]);
    assert!(err.contains("unknown service `billing`"), "{err}");
}
