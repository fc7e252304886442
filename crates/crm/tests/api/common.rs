//! The harness: the CRM served alone over real HTTP on a fresh database (SQLite or
//! PostgreSQL per `TEST_BACKEND`). Tenants and their users reach it the way they do in the
//! platform, as CDX's and auth's events through the CRM's own consumers; tokens are signed
//! by a test key the CRM trusts.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use crm::Crm;
use platform::caller::{AuthContext, Revocations};
use platform::config::{HttpSettings, PoolDefaults};
use platform::db::Db;
use platform::events::{Actor, Bus, Event, Outbox};
use platform::ids::new_id;
use platform::tenants::TenantReplica;
use platform::testing::TestDatabases;
use platform::token::{generate_key, Signer, Verifier};
use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

/// One running CRM: its address, database and wiring, and a signer for tokens.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Db,
    pub crm: Crm,
    pub bus: Arc<Bus>,
    pub signer: Signer,
    /// Every event the CRM emitted, in delivery order.
    pub events: Arc<std::sync::Mutex<Vec<Event>>>,
    relay: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dbs: TestDatabases,
}

impl Drop for App {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// A caller: a bearer token and, for tenant callers, the tenant and user ids.
#[derive(Clone, Debug)]
pub struct Who {
    pub token: String,
    pub tenant_id: Option<String>,
    pub user_id: String,
    /// `X-Tenant` to send (the superadmin's choice of tenant).
    pub x_tenant: Option<String>,
}

/// A response: status, JSON body (or the text as a string) and headers.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub text: String,
    pub headers: header::HeaderMap,
}

impl Reply {
    /// The `ETag` header.
    pub fn etag(&self) -> String {
        self.headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .expect("an ETag")
            .to_string()
    }

    /// The body's `id`.
    pub fn id(&self) -> String {
        self.body["id"].as_str().expect("an id").to_string()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        self
    }
}

/// Records every event of the CRM (a test consumer on the bus).
struct Recorder(Arc<std::sync::Mutex<Vec<Event>>>);

#[async_trait::async_trait]
impl platform::events::EventHandler for Recorder {
    fn name(&self) -> &'static str {
        "test_recorder"
    }
    fn wants(&self, event_type: &str) -> bool {
        event_type.starts_with("crm.")
    }
    async fn handle(&self, event: &Event) -> Result<(), platform::events::HandlerError> {
        if let Ok(mut events) = self.0.lock() {
            events.push(event.clone());
        }
        Ok(())
    }
}

/// Serves a fresh CRM on port 0.
pub async fn spawn_app() -> App {
    spawn_with(crm::Config::default(), HttpSettings::default()).await
}

/// Serves a fresh CRM on port 0 with these settings.
pub async fn spawn_with(config: crm::Config, http: HttpSettings) -> App {
    let dbs = TestDatabases::new();
    let db = Db::connect("crm", &dbs.url("crm"), None, &PoolDefaults::default())
        .await
        .expect("connect");
    db.migrate(crm::SERVICE.migrations).await.expect("migrate");

    let key = generate_key().expect("key");
    let signer = Signer::new(&key.kid, &key.private_pkcs8, "metatron", "metatron").expect("signer");
    let verifier = Verifier::new("metatron", "metatron");
    verifier
        .set_keys([(key.kid.as_str(), key.public_x.as_str())])
        .expect("keys");
    let auth = AuthContext {
        verifier,
        revocations: Revocations::new(),
        tenants: TenantReplica::new(db.clone()),
    };

    let bus = Bus::new();
    let outbox = Outbox::new(db.clone(), bus.clone());
    let crm = Crm::new(db.clone(), outbox.clone(), auth, config);
    for consumer in crm.consumers() {
        bus.subscribe(consumer);
    }
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    bus.subscribe(Arc::new(Recorder(events.clone())));
    let relay = outbox.spawn_relay(Duration::from_millis(50));

    let router = platform::http::edge(crm.router(), &http);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(platform::http::serve(listener, router, async move {
        let _ = stopped.await;
    }));

    App {
        base,
        http: reqwest::Client::new(),
        db,
        crm,
        bus,
        signer,
        events,
        relay,
        _stop: stop,
        _dbs: dbs,
    }
}

impl App {
    /// Announces a new tenant the way CDX does; answers its id.
    pub async fn tenant(&self, slug: &str) -> String {
        let id = new_id();
        let event = Event::new(
            "cdx",
            platform::tenants::TENANT_CREATED,
            Some(&id),
            &id,
            &Actor::system("test"),
            json!({ "slug": slug, "name": slug, "client_id": new_id(), "status": "active", "changed": [] }),
        );
        self.bus.publish(&event).await.expect("tenant event");
        id
    }

    /// A user of `tenant_id` with `role` (`admin` or `user`), announced the way auth does.
    pub async fn user(&self, tenant_id: &str, role: &str) -> Who {
        let user_id = new_id();
        let event = Event::new(
            "auth",
            platform::events::USER_CREATED,
            Some(tenant_id),
            &user_id,
            &Actor::system("test"),
            json!({ "email": format!("{user_id}@example.com"), "role": role }),
        );
        self.bus.publish(&event).await.expect("user event");
        let token = self
            .signer
            .issue(&user_id, Some(tenant_id), role, &new_id(), 600)
            .expect("token")
            .0;
        Who {
            token,
            tenant_id: Some(tenant_id.to_string()),
            user_id,
            x_tenant: None,
        }
    }

    /// The superadmin acting in `tenant` (slug or id) through `X-Tenant`.
    pub fn superadmin(&self, tenant: Option<&str>) -> Who {
        let user_id = new_id();
        let token = self
            .signer
            .issue(&user_id, None, "superadmin", &new_id(), 600)
            .expect("token")
            .0;
        Who {
            token,
            tenant_id: None,
            user_id,
            x_tenant: tenant.map(str::to_string),
        }
    }

    /// A new tenant with an admin and a user.
    pub async fn tenant_with_people(&self, slug: &str) -> (String, Who, Who) {
        let tenant = self.tenant(slug).await;
        let admin = self.user(&tenant, "admin").await;
        let user = self.user(&tenant, "user").await;
        (tenant, admin, user)
    }

    /// Sends a request as `who`; `body` is sent as JSON when given.
    pub async fn send(
        &self,
        who: Option<&Who>,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            req = req.bearer_auth(&who.token);
            if let Some(t) = &who.x_tenant {
                req = req.header("x-tenant", t);
            }
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        reply(req.send().await.expect("request")).await
    }

    /// Sends a raw body with a content type.
    pub async fn send_raw(
        &self,
        who: &Who,
        method: Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&who.token)
            .header(header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(t) = &who.x_tenant {
            req = req.header("x-tenant", t);
        }
        reply(req.send().await.expect("request")).await
    }

    pub async fn get(&self, who: &Who, path: &str) -> Reply {
        self.send(Some(who), Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, who: &Who, path: &str, body: Value) -> Reply {
        self.send(Some(who), Method::POST, path, Some(body), &[])
            .await
    }

    /// PATCH with `If-Match` when given.
    pub async fn patch(&self, who: &Who, path: &str, body: Value, if_match: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = if_match.map(|v| ("if-match", v)).into_iter().collect();
        self.send(Some(who), Method::PATCH, path, Some(body), &headers)
            .await
    }

    pub async fn delete(&self, who: &Who, path: &str) -> Reply {
        self.send(Some(who), Method::DELETE, path, None, &[]).await
    }

    /// Creates a customer and answers it (fails the test otherwise).
    pub async fn customer(&self, who: &Who, body: Value) -> Value {
        self.post(who, "/api/crm/customers", body)
            .await
            .expect(201)
            .body
    }

    /// Row counts of every CRM table, to prove that refused input wrote nothing.
    pub async fn row_counts(&self) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for table in self.db.tables().await.expect("tables") {
            if table == "processed_events" || table == "outbox" || table.starts_with("_") {
                continue;
            }
            out.push((
                table.clone(),
                self.db.count_rows(&table).await.expect("count"),
            ));
        }
        out
    }

    /// Events the CRM emitted so far of `event_type`, after delivery.
    pub async fn events_of(&self, event_type: &str) -> Vec<Event> {
        let mut pending = 0;
        for _ in 0..500 {
            pending = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL")
                .fetch_one(self.db.reader())
                .await
                .expect("outbox");
            if pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pending, 0i64, "events still undelivered after 10 s");
        self.events
            .lock()
            .expect("events")
            .iter()
            .filter(|e| e.event_type == event_type)
            .cloned()
            .collect()
    }
}

async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if status.is_client_error() || status.is_server_error() {
        assert!(
            body["error"]["code"].is_string(),
            "error without the JSON shape ({status}): {text}"
        );
    }
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "500: {text}");
    Reply {
        status,
        body,
        text,
        headers,
    }
}
