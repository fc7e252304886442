//! Live streams of audit entries over Server-Sent Events, read over real HTTP.

use std::time::Duration;

use cdx::AuditSettings;
use platform::config::HttpSettings;
use platform::events::{Actor, Event};
use platform::ids::new_id;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{spawn_app, spawn_app_with, App};

/// How long a test waits for one event before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// One received event.
#[derive(Debug, Clone)]
struct Received {
    id: Option<i64>,
    event: String,
    data: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("data is JSON")
    }

    fn seq(&self) -> i64 {
        self.id.expect("an id")
    }
}

/// An open SSE response, parsed event by event.
struct Stream {
    response: reqwest::Response,
    buffer: String,
    ended: bool,
}

impl Stream {
    /// The next event (comments skipped); `None` once the stream ended.
    async fn next(&mut self) -> Option<Received> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut event = String::from("message");
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse().expect("numeric id"));
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && id.is_none() {
                    continue; // a comment (keep-alive)
                }
                return Some(Received {
                    id,
                    event,
                    data: data.join("\n"),
                });
            }
            if self.ended {
                return None;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("an event within the wait")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self
                    .buffer
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => self.ended = true,
            }
        }
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await.expect("another event"));
        }
        out
    }
}

async fn connect(
    app: &App,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}{path}", app.base))
        .bearer_auth(token);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    tokio::time::timeout(WAIT, req.send())
        .await
        .expect("the head within the wait")
        .expect("request")
}

async fn open(app: &App, path: &str, token: &str, headers: &[(&str, &str)]) -> Stream {
    let response = connect(app, path, token, headers).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    Stream {
        response,
        buffer: String::new(),
        ended: false,
    }
}

fn event(tenant_id: Option<&str>, action: &str, data: Value) -> Event {
    Event::new(
        action.split('.').next().unwrap_or("crm"),
        action,
        tenant_id,
        &new_id(),
        &Actor::system("test"),
        data,
    )
}

/// Publishes one event through the bus (CDX's consumer commits it, then streams it).
async fn publish(app: &App, tenant_id: Option<&str>, action: &str) -> Event {
    let e = event(tenant_id, action, json!({ "name": "x" }));
    app.bus.publish(&e).await.expect("deliver");
    e
}

fn admin_token(app: &App, tenant_id: &str, role: &str) -> String {
    app.signer
        .issue(&new_id(), Some(tenant_id), role, &new_id(), 600)
        .expect("token")
        .0
}

/// The app once the events of its setup (the first admin) are in the audit log.
async fn quiet(app: App) -> App {
    app.delivered().await;
    app
}

/// The last committed seq.
async fn head(app: &App) -> i64 {
    let list = app.get("/api/cdx/audit?limit=500").await;
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["seq"].as_i64())
        .max()
        .unwrap_or(0)
}

fn assert_consecutive(events: &[Received], first: i64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq(), first + i as i64, "gap-free, in order: {events:?}");
    }
}

#[tokio::test]
async fn committed_entries_arrive_in_order_with_their_seq() {
    let app = quiet(spawn_app().await).await;
    let start = head(&app).await;
    let mut stream = open(&app, "/api/cdx/stream", &app.token, &[]).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let action = if i % 2 == 0 {
            "crm.customer.created"
        } else {
            "crm.deal.updated"
        };
        sent.push(publish(&app, Some("t1"), action).await);
    }
    let got = stream.take(5).await;
    assert_consecutive(&got, start + 1);
    let listed = app.get("/api/cdx/audit?limit=500").await.body["items"]
        .as_array()
        .expect("items")
        .clone();
    for (e, s) in got.iter().zip(&sent) {
        assert_eq!(e.event, s.event_type);
        let data = e.json();
        assert_eq!(data["id"], s.id.as_str());
        assert_eq!(data["seq"].as_i64(), Some(e.seq()));
        let stored = listed
            .iter()
            .find(|i| i["id"] == s.id.as_str())
            .expect("listed");
        assert_eq!(&data, stored, "the same JSON as the audit list");
    }
}

#[tokio::test]
async fn resume_replays_exactly_the_missed_entries_then_continues_live() {
    let app = quiet(spawn_app().await).await;
    let mut stream = open(&app, "/api/cdx/stream", &app.token, &[]).await;
    for _ in 0..3 {
        publish(&app, None, "crm.customer.created").await;
    }
    let seen = stream.take(3).await;
    let last = seen[2].seq();
    drop(stream);

    // Missed while disconnected.
    let mut missed = Vec::new();
    for _ in 0..4 {
        missed.push(publish(&app, None, "crm.customer.updated").await.id);
    }
    let mut stream = open(
        &app,
        "/api/cdx/stream",
        &app.token,
        &[("last-event-id", &last.to_string())],
    )
    .await;
    let mut live = Vec::new();
    for _ in 0..2 {
        live.push(publish(&app, None, "crm.customer.deleted").await.id);
    }
    let got = stream.take(6).await;
    assert_consecutive(&got, last + 1);
    let ids: Vec<String> = got
        .iter()
        .map(|e| e.json()["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids[..4], missed[..]);
    assert_eq!(ids[4..], live[..]);

    // `?after=` does the same, and Last-Event-ID wins over it.
    let mut from_start = open(&app, "/api/cdx/stream?after=0", &app.token, &[]).await;
    let all = from_start
        .take(usize::try_from(last + 6).expect("small"))
        .await;
    assert_consecutive(&all, 1);
    let mut both = open(
        &app,
        "/api/cdx/stream?after=0",
        &app.token,
        &[("last-event-id", &(last + 5).to_string())],
    )
    .await;
    let rest = both.take(1).await;
    assert_eq!(rest[0].seq(), last + 6);
}

#[tokio::test]
async fn resuming_during_a_write_storm_loses_and_repeats_nothing() {
    let app = quiet(spawn_app().await).await;
    let writer = {
        let bus = app.bus.clone();
        tokio::spawn(async move {
            for i in 0..150 {
                let e = event(None, "auth.login.succeeded", json!({ "n": i }));
                bus.publish(&e).await.expect("deliver");
                if i % 10 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    // Connect (resuming from the start) while entries are being committed.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut stream = open(
        &app,
        "/api/cdx/stream",
        &app.token,
        &[("last-event-id", "0")],
    )
    .await;
    writer.await.expect("writer");
    let total = head(&app).await;
    let got = stream.take(usize::try_from(total).expect("small")).await;
    assert_consecutive(&got, 1);
}

#[tokio::test]
async fn tenant_and_type_filters_apply_live_and_on_replay() {
    let app = quiet(spawn_app().await).await;
    let mut stream = open(
        &app,
        "/api/cdx/stream?tenant=ta&type=crm.customer.*",
        &app.token,
        &[],
    )
    .await;
    let mut exact = open(
        &app,
        "/api/cdx/stream?type=crm.deal.created",
        &app.token,
        &[],
    )
    .await;
    let mut wanted = Vec::new();
    for (tenant, action) in [
        ("ta", "crm.customer.created"),
        ("tb", "crm.customer.created"),
        ("ta", "crm.deal.created"),
        ("ta", "crm.customer.updated"),
        ("tb", "crm.deal.created"),
        ("ta", "crm.customerx.created"),
    ] {
        let e = publish(&app, Some(tenant), action).await;
        if tenant == "ta" && action.starts_with("crm.customer.") {
            wanted.push(e.id);
        }
    }
    let marker = publish(&app, Some("ta"), "crm.customer.deleted").await;
    wanted.push(marker.id);
    let got = stream.take(wanted.len()).await;
    let ids: Vec<String> = got
        .iter()
        .map(|e| e.json()["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, wanted);
    for e in &got {
        assert_eq!(e.json()["tenant_id"], "ta");
    }
    let deals = exact.take(2).await;
    assert!(deals.iter().all(|e| e.event == "crm.deal.created"));
    assert!(deals[0].seq() < deals[1].seq());

    // The same filter over the stored entries.
    let mut replay = open(
        &app,
        "/api/cdx/stream?tenant=ta&type=crm.customer.*&after=0",
        &app.token,
        &[],
    )
    .await;
    let again = replay.take(wanted.len()).await;
    let again: Vec<String> = again
        .iter()
        .map(|e| e.json()["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(again, wanted);

    let bad = app.get("/api/cdx/stream?type=Not+A+Type").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = app.get("/api/cdx/stream?after=-1").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = app
        .send(
            reqwest::Method::GET,
            "/api/cdx/stream",
            Some(&app.token),
            None,
            &[("last-event-id", "abc")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = app.get("/api/cdx/stream?colour=red").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
}

#[tokio::test]
async fn a_tenant_admin_streams_only_their_own_tenant() {
    let app = quiet(spawn_app().await).await;
    let client = app.client("Acme").await;
    let tenant = app.tenant("acme", client["id"].as_str().expect("id")).await;
    let own = tenant["id"].as_str().expect("id").to_string();
    app.delivered().await;
    let other = new_id();
    let token = admin_token(&app, &own, "admin");

    let mut stream = open(&app, "/api/cdx/tenant-stream", &token, &[]).await;
    let mut as_superadmin = open(
        &app,
        "/api/cdx/tenant-stream?type=crm.*",
        &app.token,
        &[("x-tenant", "acme")],
    )
    .await;
    let mut wanted = Vec::new();
    for i in 0..6 {
        let tenant = if i % 2 == 0 { own.as_str() } else { &other };
        let e = publish(&app, Some(tenant), "crm.customer.created").await;
        publish(&app, None, "cdx.client.updated").await;
        if tenant == own {
            wanted.push(e.id);
        }
    }
    let got = stream.take(wanted.len()).await;
    for (e, id) in got.iter().zip(&wanted) {
        assert_eq!(e.json()["id"], id.as_str());
        assert_eq!(e.json()["tenant_id"], own.as_str());
    }
    let got = as_superadmin.take(wanted.len()).await;
    for (e, id) in got.iter().zip(&wanted) {
        assert_eq!(e.json()["id"], id.as_str());
    }
    // Nothing of another tenant, on replay either.
    let mut replay = open(&app, "/api/cdx/tenant-stream?after=0", &token, &[]).await;
    let marker = publish(&app, Some(&own), "crm.deal.created").await;
    loop {
        let e = replay.next().await.expect("event");
        assert_eq!(e.json()["tenant_id"], own.as_str(), "{e:?}");
        if e.json()["id"] == marker.id.as_str() {
            break;
        }
    }
    // The tenant filter cannot be widened.
    let widened = connect(&app, "/api/cdx/tenant-stream?tenant=x", &token, &[]).await;
    assert_eq!(widened.status(), StatusCode::BAD_REQUEST);
    let elsewhere = connect(
        &app,
        "/api/cdx/tenant-stream",
        &token,
        &[("x-tenant", &other)],
    )
    .await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_and_tenant_admins_are_refused_where_they_do_not_belong() {
    let app = quiet(spawn_app().await).await;
    let user = app.tenant_token("user");
    let admin = app.tenant_token("admin");
    for (path, token, status) in [
        ("/api/cdx/stream", user.as_str(), StatusCode::FORBIDDEN),
        ("/api/cdx/stream", admin.as_str(), StatusCode::FORBIDDEN),
        (
            "/api/cdx/tenant-stream",
            user.as_str(),
            StatusCode::FORBIDDEN,
        ),
        ("/api/cdx/stream", "nonsense", StatusCode::UNAUTHORIZED),
        ("/api/cdx/stream/ws", admin.as_str(), StatusCode::FORBIDDEN),
        ("/api/cdx/stream/ws", "nonsense", StatusCode::UNAUTHORIZED),
        (
            "/api/cdx/tenant-stream/ws",
            user.as_str(),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let response = connect(&app, path, token, &[]).await;
        assert_eq!(response.status(), status, "{path}");
        let body: Value = response.json().await.expect("JSON error");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // The superadmin must name the tenant.
    let response = connect(&app, "/api/cdx/tenant-stream", &app.token, &[]).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_slow_client_is_dropped_without_blocking_the_writer() {
    let audit = AuditSettings {
        stream_buffer: 2,
        ..Default::default()
    };
    let app = quiet(spawn_app_with(HttpSettings::default(), audit).await).await;
    let start = head(&app).await;
    let mut slow = open(&app, "/api/cdx/stream", &app.token, &[]).await;

    // Far more than the socket buffers hold, while the client reads nothing.
    let big = "x".repeat(128 * 1024);
    let n = 200;
    let writing = async {
        for i in 0..n {
            let e = event(None, "crm.note.created", json!({ "n": i, "text": big }));
            app.bus.publish(&e).await.expect("deliver");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), writing)
        .await
        .expect("the writer never waits for a stream");
    assert_eq!(head(&app).await, start + n);

    let mut received = Vec::new();
    let last = loop {
        let e = slow.next().await.expect("the stream ends with dropped");
        if e.event == "dropped" {
            break e;
        }
        received.push(e);
    };
    assert!(
        (received.len() as i64) < n,
        "some entries were skipped by the lag"
    );
    assert_consecutive(&received, start + 1);
    let info = last.json();
    assert_eq!(info["reason"], "slow_consumer");
    let resume = info["last_event_id"].as_i64().expect("last_event_id");
    assert_eq!(resume, received.last().map_or(start, Received::seq));
    assert!(slow.next().await.is_none(), "the stream ends after dropped");

    // Resuming from there delivers the rest.
    let mut again = open(
        &app,
        "/api/cdx/stream",
        &app.token,
        &[("last-event-id", &resume.to_string())],
    )
    .await;
    let rest = again
        .take(usize::try_from(start + n - resume).expect("small"))
        .await;
    assert_consecutive(&rest, resume + 1);
}

#[tokio::test]
async fn a_stream_outlives_the_request_timeout() {
    let http = HttpSettings {
        request_timeout_ms: 1_000,
        ..Default::default()
    };
    let app = quiet(spawn_app_with(http, AuditSettings::default()).await).await;
    let mut stream = open(&app, "/api/cdx/stream", &app.token, &[]).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let e = publish(&app, None, "crm.customer.created").await;
        let got = stream.next().await.expect("still streaming");
        assert_eq!(got.json()["id"], e.id.as_str());
    }
}

#[tokio::test]
async fn concurrent_streams_are_limited() {
    let audit = AuditSettings {
        max_streams: 2,
        ..Default::default()
    };
    let app = quiet(spawn_app_with(HttpSettings::default(), audit).await).await;
    let first = open(&app, "/api/cdx/stream", &app.token, &[]).await;
    let _second = open(&app, "/api/cdx/stream", &app.token, &[]).await;
    let third = connect(&app, "/api/cdx/stream", &app.token, &[]).await;
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = third.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "too_many_streams");

    // A closed stream frees its slot once the server notices (on its next write).
    drop(first);
    let freed = async {
        loop {
            publish(&app, None, "crm.customer.created").await;
            let r = connect(&app, "/api/cdx/stream", &app.token, &[]).await;
            if r.status() == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, freed)
        .await
        .expect("the slot is freed");
}

#[tokio::test]
async fn a_stream_ends_when_the_access_token_expires() {
    let app = quiet(spawn_app().await).await;
    let (token, _) = app
        .signer
        .issue(&app.admin_id, None, "superadmin", &new_id(), 2)
        .expect("token");
    let mut stream = open(&app, "/api/cdx/stream", &token, &[]).await;
    let e = publish(&app, None, "crm.customer.created").await;
    let got = stream.next().await.expect("an entry");
    assert_eq!(got.json()["id"], e.id.as_str());
    let end = stream.next().await.expect("a final event");
    assert_eq!(end.event, "expired");
    assert_eq!(end.json()["last_event_id"].as_i64(), Some(got.seq()));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn a_long_backlog_is_replayed_in_bounded_parts() {
    let app = quiet(spawn_app().await).await;
    let extra = 120;
    let total = 10_000 + extra;
    let start = head(&app).await;
    let batch: Vec<Event> = (0..total - start)
        .map(|i| event(None, "crm.note.created", json!({ "n": i })))
        .collect();
    for chunk in batch.chunks(1000) {
        app.bus.publish_batch(chunk).await.expect("deliver");
    }
    let mut stream = open(&app, "/api/cdx/stream?after=0", &app.token, &[]).await;
    let first = stream.take(10_000).await;
    assert_consecutive(&first, 1);
    let end = stream.next().await.expect("a final event");
    assert_eq!(end.event, "dropped");
    assert_eq!(end.json()["reason"], "backlog");
    assert_eq!(end.json()["last_event_id"].as_i64(), Some(10_000));
    assert!(stream.next().await.is_none());

    let mut rest = open(
        &app,
        "/api/cdx/stream",
        &app.token,
        &[("last-event-id", "10000")],
    )
    .await;
    let got = rest.take(usize::try_from(extra).expect("small")).await;
    assert_consecutive(&got, 10_001);
    let live = publish(&app, None, "crm.customer.created").await;
    let next = rest.next().await.expect("live after the replay");
    assert_eq!(next.json()["id"], live.id.as_str());
    assert_eq!(next.seq(), total + 1);
}

#[tokio::test]
async fn a_stream_ends_when_its_session_is_revoked() {
    use axum::extract::FromRef;
    let app = quiet(spawn_app().await).await;
    let own = new_id();
    let session = new_id();
    let (token, _) = app
        .signer
        .issue(&new_id(), Some(&own), "admin", &session, 600)
        .expect("token");
    let mut stream = open(&app, "/api/cdx/tenant-stream", &token, &[]).await;
    let e = publish(&app, Some(&own), "crm.customer.created").await;
    let got = stream.next().await.expect("an entry");
    assert_eq!(got.json()["id"], e.id.as_str());
    platform::caller::AuthContext::from_ref(&app.cdx)
        .revocations
        .revoke(&session, i64::MAX);
    publish(&app, Some(&own), "auth.session.revoked").await;
    let end = stream.next().await.expect("a final event");
    assert_eq!(end.event, "revoked");
    assert!(stream.next().await.is_none());
}

/// Events of the stream until one named `name` arrives (that one last).
async fn until(stream: &mut Stream, name: &str) -> Vec<Received> {
    let mut got = Vec::new();
    while let Some(e) = stream.next().await {
        let done = e.event == name;
        got.push(e);
        if done {
            return got;
        }
    }
    panic!("the stream ended before a {name} event: {got:?}");
}

#[tokio::test]
async fn changed_tenant_summaries_are_streamed_without_an_id() {
    let app = quiet(spawn_app().await).await;
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id");
    let acme = app.tenant("acme", client_id).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let other = app.tenant("other", client_id).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.delivered().await;
    let mut stream = open(
        &app,
        &format!("/api/cdx/stream?tenant={acme}"),
        &app.token,
        &[],
    )
    .await;
    let mut only_summaries =
        open(&app, "/api/cdx/stream?type=tenant.summary", &app.token, &[]).await;

    publish(&app, Some(&other), "crm.customer.created").await;
    publish(&app, Some(&acme), "crm.customer.created").await;
    // Either consumer may commit first; the tenant filter keeps the other tenant out.
    let mut got = until(&mut stream, "tenant.summary").await;
    if !got.iter().any(|e| e.event == "crm.customer.created") {
        got.extend(until(&mut stream, "crm.customer.created").await);
    }
    assert_eq!(got.len(), 2, "{got:?}");
    let summary = got
        .iter()
        .find(|e| e.event == "tenant.summary")
        .expect("summary");
    assert_eq!(summary.id, None, "summaries carry no id");
    let data = summary.json();
    assert_eq!(data["tenant_id"], acme.as_str());
    assert_eq!(data["slug"], "acme");
    assert_eq!(data["customers"], 1);
    assert_eq!(
        data,
        app.get(&format!("/api/cdx/tenants/{acme}/summary"))
            .await
            .body,
        "the summary as the API reads it"
    );
    let entry = got
        .iter()
        .find(|e| e.event == "crm.customer.created")
        .expect("entry");

    // The type filter selects summaries alone, of every tenant.
    let first = only_summaries.take(2).await;
    let tenants: Vec<Value> = first
        .iter()
        .map(|e| e.json()["tenant_id"].clone())
        .collect();
    assert!(first.iter().all(|e| e.event == "tenant.summary"));
    assert!(tenants.contains(&json!(acme)) && tenants.contains(&json!(other)));

    // An event that moves no counter sends no summary; the next change does.
    publish(&app, Some(&acme), "crm.note.created").await;
    publish(&app, Some(&acme), "crm.company.created").await;
    let got = until(&mut stream, "tenant.summary").await;
    assert_eq!(
        got.iter().filter(|e| e.event == "tenant.summary").count(),
        1,
        "{got:?}"
    );
    assert_eq!(got.last().expect("summary").json()["companies"], 1);

    // Resuming replays the trail after Last-Event-ID, never summaries.
    drop(stream);
    let after = entry.seq().to_string();
    let mut resumed = open(
        &app,
        &format!("/api/cdx/stream?tenant={acme}"),
        &app.token,
        &[("last-event-id", after.as_str())],
    )
    .await;
    let replayed = resumed.take(2).await;
    assert_eq!(
        replayed
            .iter()
            .map(|e| e.event.as_str())
            .collect::<Vec<_>>(),
        ["crm.note.created", "crm.company.created"]
    );
    assert!(replayed.iter().all(|e| e.id.is_some()));
}

/// A WebSocket stream at `path`, opened with `token` in the `Authorization` header.
async fn open_ws(
    app: &App,
    path: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}{path}", app.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (socket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake within the wait")
        .expect("the stream opens");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket
}

/// The next event message of a WebSocket stream (pings skipped): `{id, event, data}`.
async fn next_ws(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message within the wait")
            .expect("the stream is open")
            .expect("the message reads");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_websocket_stream_carries_the_same_events_and_resumes() {
    let app = quiet(spawn_app().await).await;
    let start = head(&app).await;
    let mut socket = open_ws(&app, "/api/cdx/stream/ws", &app.token).await;
    let mut sent = Vec::new();
    for action in [
        "crm.customer.created",
        "crm.deal.updated",
        "auth.user.created",
    ] {
        sent.push(publish(&app, Some("t1"), action).await);
    }
    let listed = app.get("/api/cdx/audit?limit=500").await.body["items"]
        .as_array()
        .expect("items")
        .clone();
    for (i, e) in sent.iter().enumerate() {
        let message = next_ws(&mut socket).await;
        assert_eq!(
            message["id"].as_i64(),
            Some(start + 1 + i as i64),
            "{message}"
        );
        assert_eq!(message["event"], e.event_type.as_str());
        let stored = listed
            .iter()
            .find(|item| item["id"] == e.id.as_str())
            .expect("listed");
        assert_eq!(&message["data"], stored, "the same JSON as the audit list");
    }
    drop(socket);

    // Missed while disconnected, then resumed with `?after=`; filters apply as on SSE.
    let missed = publish(&app, Some("t2"), "crm.customer.deleted").await;
    publish(&app, Some("t1"), "crm.customer.deleted").await;
    let mut socket = open_ws(
        &app,
        &format!("/api/cdx/stream/ws?after={}&tenant=t2", start + 3),
        &app.token,
    )
    .await;
    let message = next_ws(&mut socket).await;
    assert_eq!(message["id"].as_i64(), Some(start + 4));
    assert_eq!(message["data"]["id"], missed.id.as_str());
    let live = publish(&app, Some("t2"), "crm.company.created").await;
    let message = next_ws(&mut socket).await;
    assert_eq!(message["data"]["id"], live.id.as_str(), "{message}");

    // A tenant admin's socket carries only their tenant's entries.
    let token = admin_token(&app, "t1", "admin");
    let mut own = open_ws(&app, "/api/cdx/tenant-stream/ws", &token).await;
    publish(&app, Some("t2"), "crm.customer.created").await;
    let mine = publish(&app, Some("t1"), "crm.customer.created").await;
    let message = next_ws(&mut own).await;
    assert_eq!(message["data"]["id"], mine.id.as_str(), "{message}");

    // A plain request to the socket's path is answered with a JSON error.
    let plain = connect(&app, "/api/cdx/stream/ws", &app.token, &[]).await;
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let body: Value = plain.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "websocket_required", "{body}");
}
