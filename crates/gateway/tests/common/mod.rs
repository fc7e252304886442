//! Fake upstreams (axum on ephemeral ports) and a gateway in front of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What a fake upstream saw and how it behaves.
#[derive(Default)]
pub struct Upstream {
    pub name: String,
    /// Requests that reached an `/api/` route.
    pub hits: AtomicUsize,
    /// POST requests that reached it.
    pub posts: AtomicUsize,
    /// Answer 503 on `/api/*/flaky`.
    pub failing: AtomicBool,
    /// Answer 503 on `/ready`.
    pub unready: AtomicBool,
    /// Bytes received by the last `/count`.
    pub counted: AtomicU64,
    /// Signalled when `/count` received its first chunk.
    pub first_chunk: Notify,
    /// The `/download` stream waits for this after its first chunk.
    pub go_on: Notify,
    /// The published key set (`/api/auth/.well-known/jwks.json`).
    pub jwks: RwLock<Value>,
    /// Connections accepted.
    pub connections: AtomicUsize,
}

pub type Shared = Arc<Upstream>;

async fn echo(State(u): State<Shared>, req: Request) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if req.method() == axum::http::Method::POST {
        u.posts.fetch_add(1, Ordering::SeqCst);
    }
    // A field sent more than once shows all its values, joined as HTTP joins them.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let value = value.to_str().unwrap_or("?");
        headers
            .entry(name.to_string())
            .and_modify(|values| *values = format!("{values}, {value}"))
            .or_insert_with(|| value.to_string());
    }
    let mut response = Json(json!({
        "upstream": u.name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    }))
    .into_response();
    response
        .headers_mut()
        .insert("proxy-authenticate", "Basic".parse().expect("value"));
    response
}

async fn ready(State(u): State<Shared>) -> StatusCode {
    if u.unready.load(Ordering::SeqCst) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn flaky(State(u): State<Shared>) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    if u.failing.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
    } else {
        (StatusCode::OK, "up").into_response()
    }
}

async fn slow(State(u): State<Shared>) -> &'static str {
    u.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    "late"
}

async fn count(State(u): State<Shared>, req: Request) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    let mut stream = req.into_body().into_data_stream();
    let mut total = 0u64;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => total += bytes.len() as u64,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
        if first && total > 0 {
            first = false;
            u.first_chunk.notify_one();
        }
    }
    u.counted.store(total, Ordering::SeqCst);
    Json(json!({ "bytes": total })).into_response()
}

/// 64 MiB in 64 KiB chunks; pauses after the first chunk until `go_on`.
async fn download(State(u): State<Shared>) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let u = u.clone();
        let chunk = chunk.clone();
        async move {
            if i == 1024 {
                return None;
            }
            if i == 1 {
                u.go_on.notified().await;
            }
            Some((Ok::<_, std::io::Error>(chunk), i + 1))
        }
    });
    Body::from_stream(stream).into_response()
}

/// Switches to a byte-echo protocol (`Upgrade: echo`), as a WebSocket server would.
async fn upgrade(mut req: Request) -> Response {
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if req.headers().get("upgrade").is_none_or(|v| v != "echo") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut read, mut write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Body::empty())
        .expect("response")
}

async fn jwks(State(u): State<Shared>) -> Json<Value> {
    Json(u.jwks.read().expect("lock").clone())
}

/// Starts a fake upstream named `name`; answers every `/api/<any>/...` route.
pub async fn upstream(name: &str) -> (SocketAddr, Shared) {
    let state = Arc::new(Upstream {
        name: name.to_string(),
        jwks: RwLock::new(json!({ "keys": [] })),
        ..Upstream::default()
    });
    let router = Router::new()
        .route("/ready", get(ready))
        .route("/api/auth/.well-known/jwks.json", get(jwks))
        .route("/api/{service}/flaky", get(flaky))
        .route("/api/{service}/slow", get(slow))
        .route("/api/{service}/count", post(count))
        .route("/api/{service}/download", get(download))
        .route("/api/{service}/upgrade", get(upgrade))
        .route("/api/{service}/openapi.json", get(|| async { "{}" }))
        .route("/api/openapi.json", get(move || async move {
            Json(json!({"openapi": "3.1.0", "info": {"title": "x", "version": "1"}, "paths": {}}))
        }))
        .fallback(any(echo))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counted = state.clone();
    let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
        counted.connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, state)
}

/// A port on which nothing listens (connection refused).
pub async fn dead_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

/// A listener whose accept queue is full: connecting to it hangs (SYNs are dropped), like
/// an unreachable host. Keep the returned values alive for the test.
pub async fn blackhole() -> (
    SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => held.push(stream),
            _ => return (addr, listener, held),
        }
    }
    panic!("the accept queue never filled up");
}

pub fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Test defaults: no active health checks, no rate limits, short timeouts.
pub fn config(upstreams: &[(&str, Vec<String>)]) -> gateway::Config {
    gateway::Config {
        upstreams: upstreams
            .iter()
            .map(|(s, u)| (s.to_string(), u.clone()))
            .collect(),
        connect_timeout_ms: 500,
        request_timeout_ms: 5_000,
        health_check_interval_ms: 0,
        rate_limit_per_ip: gateway::RateLimit::default(),
        rate_limit_per_tenant: gateway::RateLimit::default(),
        jwks_refresh_min_interval_ms: 0,
        ..gateway::Config::default()
    }
}

/// A running gateway.
pub struct Running {
    pub base: String,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub done: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn gateway(config: gateway::Config) -> Running {
    let gw = gateway::Gateway::new(config, "metatron", "metatron").expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(gateway::serve(gw, listener, async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        stop,
        done,
    }
}

/// Waits (up to 5 s) for a gateway told to stop to have stopped, its serve having succeeded.
pub async fn stopped(done: tokio::task::JoinHandle<std::io::Result<()>>) {
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("stopped")
        .expect("join")
        .expect("served");
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// `GET url` with `http`, answered as [`json`] reads it.
pub async fn get_json(http: &reqwest::Client, url: String) -> (StatusCode, HeaderMap, Value) {
    json(http.get(url).send().await.expect("send")).await
}

pub async fn json(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// Reads from `stream` until a request head has arrived (small requests: a short body comes
/// with it); `false` when the client went away first.
pub async fn read_request_head(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A chunk of a streamed request body, as [`streamed_post`] takes them.
pub type Chunk = Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>;

/// Starts `POST url` with a body streamed from the returned sender (it ends when the sender
/// is dropped); the response arrives through the handle, possibly before the body ends.
pub fn streamed_post(
    url: String,
) -> (
    tokio::sync::mpsc::Sender<Chunk>,
    tokio::task::JoinHandle<
        Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    >,
) {
    use http_body_util::StreamBody;
    use hyper_util::client::legacy::Client;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let client: Client<_, StreamBody<_>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = http::Request::post(url)
        .body(StreamBody::new(stream))
        .expect("request");
    (tx, tokio::spawn(client.request(request)))
}
