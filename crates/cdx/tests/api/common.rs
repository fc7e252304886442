//! The harness: a CDX served over real HTTP on a fresh database.

use std::sync::Arc;
use std::time::Duration;

use cdx::Cdx;
use platform::caller::{AuthContext, Revocations};
use platform::config::{HttpSettings, PoolDefaults};
use platform::db::Db;
use platform::events::{Actor, Bus, Outbox};
use platform::ids::new_id;
use platform::password::{HashParams, PasswordHashing};
use platform::tenants::TenantReplica;
use platform::testing::TestDatabases;
use platform::token::{generate_key, Signer, Verifier};
use reqwest::{header, Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};

/// One running CDX: its HTTP address, its database, its wiring and a superadmin token.
pub struct App {
    pub base: String,
    pub http: reqwest::Client,
    pub db: Db,
    pub cdx: Cdx,
    pub outbox: Outbox,
    pub bus: Arc<Bus>,
    pub replica: TenantReplica,
    pub signer: Signer,
    pub admin_id: String,
    pub token: String,
    relay: tokio::task::JoinHandle<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dbs: TestDatabases,
}

impl Drop for App {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Argon2id cheap enough for tests, with `memory_kib` telling parameter sets apart.
pub fn cheap_hashing(memory_kib: u32) -> PasswordHashing {
    let params = HashParams {
        concurrency: 2,
        memory_kib,
        iterations: 1,
        parallelism: 1,
    };
    PasswordHashing::new(params).expect("hasher")
}

/// Serves a fresh CDX on port 0 with one superadmin (`root`) and its token.
pub async fn spawn_app() -> App {
    spawn_app_with(HttpSettings::default(), cdx::AuditSettings::default()).await
}

/// [`spawn_app`] with these HTTP edge and audit settings.
pub async fn spawn_app_with(http: HttpSettings, audit: cdx::AuditSettings) -> App {
    let dbs = TestDatabases::new();
    let db = Db::connect("cdx", &dbs.url("cdx"), None, &PoolDefaults::default())
        .await
        .expect("connect");
    db.migrate(cdx::SERVICE.migrations).await.expect("migrate");

    let key = generate_key().expect("key");
    let signer = Signer::new(&key.kid, &key.private_pkcs8, "metatron", "metatron").expect("signer");
    let verifier = Verifier::new("metatron", "metatron");
    verifier
        .set_keys([(key.kid.as_str(), key.public_x.as_str())])
        .expect("keys");
    let replica = TenantReplica::new(db.clone());
    let auth = AuthContext {
        verifier,
        revocations: Revocations::new(),
        tenants: replica.clone(),
    };

    let bus = Bus::new();
    let outbox = Outbox::new(db.clone(), bus.clone());
    let cdx = Cdx::new(db.clone(), outbox.clone(), auth, cheap_hashing(1024))
        .with_audit(audit)
        .with_request_timeout(http.request_timeout());
    bus.subscribe(cdx.consumer());
    bus.subscribe(Arc::new(replica.clone()));
    let relay = outbox.spawn_relay(Duration::from_millis(100));

    let admin = cdx
        .create_admin(
            "root",
            &SecretString::from("correct horse"),
            &Actor::system("test"),
        )
        .await
        .expect("first admin");
    let (token, _) = signer
        .issue(&admin.id, None, "superadmin", &new_id(), 600)
        .expect("token");

    let router = platform::http::edge(cdx.router(), &http);
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
        cdx,
        outbox,
        bus,
        replica,
        signer,
        admin_id: admin.id,
        token,
        relay,
        _stop: stop,
        _dbs: dbs,
    }
}

/// A response: status, JSON body (or the text as a string) and headers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: header::HeaderMap,
}

impl App {
    pub fn tenant_token(&self, role: &str) -> String {
        self.signer
            .issue(&new_id(), Some(&new_id()), role, &new_id(), 600)
            .expect("token")
            .0
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            if !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            req = req.body(body.to_string());
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let response = req.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(&self.token), None, &[])
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(&self.token),
            Some(&body.to_string()),
            &[],
        )
        .await
    }

    pub async fn patch(&self, path: &str, body: Value, if_match: Option<&str>) -> Reply {
        let headers: Vec<(&str, &str)> = if_match.map(|v| ("if-match", v)).into_iter().collect();
        self.send(
            Method::PATCH,
            path,
            Some(&self.token),
            Some(&body.to_string()),
            &headers,
        )
        .await
    }

    pub async fn client(&self, name: &str) -> Value {
        let reply = self.post("/api/cdx/clients", json!({ "name": name })).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    pub async fn tenant(&self, slug: &str, client_id: &str) -> Value {
        let body =
            json!({ "slug": slug, "name": format!("Tenant {slug}"), "client_id": client_id });
        let reply = self.post("/api/cdx/tenants", body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.body
    }

    /// Every item of a paged list, following cursors with `limit`.
    pub async fn collect(&self, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        let sep = if path.contains('?') { '&' } else { '?' };
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
                None => format!("{path}{sep}limit={limit}"),
            };
            let reply = self.get(&url).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let page = reply.body["items"].as_array().expect("items").clone();
            assert!(page.len() <= limit);
            items.extend(page);
            pages += 1;
            match reply.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return (items, pages),
            }
        }
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.db.count_rows(table).await.expect("count")
    }

    pub async fn delivered(&self) {
        self.outbox.flush().await.expect("events delivered");
    }
}

/// The `id`s of a list of items.
pub fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().expect("id").to_string())
        .collect()
}
