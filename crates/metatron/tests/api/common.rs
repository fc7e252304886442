use metatron::commands::{start, Running};
use metatron::Settings;
use platform::password::HashParams;
use platform::testing::TestDatabases;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const SUPERADMIN: (&str, &str) = ("test", "test123");
pub const ADMIN: (&str, &str) = ("jane.smith@demo.com", "demo123");
pub const USER: (&str, &str) = ("john.doe@demo.com", "demo123");

/// Polls `check` every 20 ms until it answers `Some`, for at most `limit`; `None` if it
/// never did.
pub async fn within<T, F, Fut>(limit: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A running platform with the demo data, and a client for it.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    running: Option<Running>,
    // Dropped last: removes the databases.
    pub dbs: TestDatabases,
}

/// Settings for a test: fresh databases, cheap password hashing (the cost parameters are
/// exercised by their own test).
pub fn test_settings(dbs: &TestDatabases) -> Settings {
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
    // `TEST_EVENTS=nats` runs the suite over NATS JetStream (own streams per test).
    if std::env::var("TEST_EVENTS").as_deref() == Ok("nats") {
        settings.events.transport = platform::events::nats::Transport::Nats;
        settings.events.prefix = format!("mtest{}", platform::ids::new_id().replace('-', ""));
    }
    settings
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dbs = TestDatabases::new();
        let mut settings = test_settings(&dbs);
        configure(&mut settings);
        Self::spawn_on(dbs, settings).await
    }

    pub async fn spawn_on(dbs: TestDatabases, settings: Settings) -> TestApp {
        Self::start_on(dbs, settings, true).await
    }

    /// Like [`TestApp::spawn_on`], without seeding the demo data (which needs events to flow).
    pub async fn spawn_on_without_demo(dbs: TestDatabases, settings: Settings) -> TestApp {
        Self::start_on(dbs, settings, false).await
    }

    async fn start_on(dbs: TestDatabases, settings: Settings, demo: bool) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = start(settings.clone(), demo, listener)
            .await
            .expect("platform starts");
        TestApp {
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            settings,
            running: Some(running),
            dbs,
        }
    }

    /// Stops the server gracefully and gives back its databases (to restart on them).
    pub async fn stop(mut self) -> (TestDatabases, Settings) {
        if let Some(running) = self.running.take() {
            let _ = running.stop.send(true);
            running.done.await.expect("join").expect("clean shutdown");
        }
        let dbs = std::mem::take(&mut self.dbs);
        (dbs, self.settings.clone())
    }

    pub fn app(&self) -> &metatron::App {
        &self.running.as_ref().expect("running").app
    }

    /// Sends a request; `body` is sent as JSON when given.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, token, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"))
        };
        if status.is_client_error() || status.is_server_error() {
            assert!(
                value["error"]["code"].is_string(),
                "error without the JSON shape: {value}"
            );
        }
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 on {path}: {value}"
        );
        (status, value)
    }

    pub async fn login_as(
        &self,
        (username, password): (&str, &str),
        tenant: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut body = json!({ "username": username, "password": password });
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.call(Method::POST, "/api/auth/login", None, Some(body))
            .await
    }

    /// Logs in and answers the access token, failing the test otherwise.
    pub async fn token(&self, who: (&str, &str)) -> String {
        let (status, body) = self.login_as(who, None).await;
        assert_eq!(status, StatusCode::OK, "login of {} failed: {body}", who.0);
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_string()
    }

    /// Creates a tenant (as the superadmin) and answers its id.
    pub async fn create_tenant(&self, superadmin: &str, slug: &str) -> String {
        let (status, clients) = self
            .call(Method::GET, "/api/cdx/clients", Some(superadmin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{clients}");
        let client_id = clients["items"][0]["id"]
            .as_str()
            .expect("a client")
            .to_string();
        let (status, tenant) = self
            .call(
                Method::POST,
                "/api/cdx/tenants",
                Some(superadmin),
                Some(json!({ "slug": slug, "name": slug, "client_id": client_id })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
        tenant["id"].as_str().expect("tenant id").to_string()
    }

    /// Deletes the tenant with slug `slug` (as the superadmin `root`) and answers its purge
    /// report once every service has purged it, failing the test if that takes longer than
    /// `limit`.
    pub async fn delete_tenant(&self, root: &str, slug: &str, limit: std::time::Duration) -> Value {
        let (status, report) = self
            .call(
                Method::DELETE,
                &format!("/api/cdx/tenants/{slug}?confirm={slug}"),
                Some(root),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{report}");
        let path = format!("/api/cdx/tenants/{slug}/purge");
        let complete = within(limit, || async {
            let (_, report) = self.call(Method::GET, &path, Some(root), None).await;
            (report["complete"] == true).then_some(report)
        })
        .await;
        match complete {
            Some(report) => report,
            None => {
                let (_, report) = self.call(Method::GET, &path, Some(root), None).await;
                panic!("the purge of {slug} is not complete within {limit:?}: {report}")
            }
        }
    }

    /// Creates a user through the API (as `token`, in `tenant` when given) and answers it.
    pub async fn create_user(
        &self,
        token: &str,
        tenant: Option<&str>,
        email: &str,
        role: &str,
    ) -> Value {
        let headers: Vec<(&str, &str)> = tenant.map(|t| vec![("x-tenant", t)]).unwrap_or_default();
        let (status, user) = self
            .call_with(
                Method::POST,
                "/api/auth/users",
                Some(token),
                Some(json!({ "email": email, "password": "password123", "role": role })),
                &headers,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{user}");
        user
    }
}
