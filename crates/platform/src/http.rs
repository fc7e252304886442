//! The HTTP edge every service shares: request ids, per-IP and per-tenant rate limits, body
//! limits, JSON-only errors, request timeouts, panic containment, and the extractors that
//! turn bad input into 4xx JSON. [`serve`] speaks HTTP/1.1 and HTTP/2 (h2c) on one port.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::{HttpSettings, TrustedProxy};
use crate::error::ApiError;
use crate::limit::{rate_limited, Limiter, Scope};
use crate::token::Verifier;

/// Header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// The same as a parsed name: a string is parsed (and hashed) again on every lookup.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// A JSON request body: requires `Content-Type: application/json`, answers malformed JSON
/// with 400 and wrong or unknown fields with 422 (write types deny unknown fields), and
/// serializes responses as JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        // serde would fill a struct from an array by position; request bodies are objects.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document, mapping errors the way [`Json`] answers them.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the body does not match the expected shape: {e}"),
            ),
            _ => {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            }
        }
    })
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body exceeds the size limit",
        )
    } else {
        ApiError::bad_request("unreadable_body", "the request body could not be read")
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters, answering bad ones with 400 JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters, answering bad ones with 400 JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Reads the optimistic-concurrency precondition: `If-Match: "<version>"` (or `W/"..."`).
fn if_match_version(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse::<i64>().map(Some).map_err(|_| {
        ApiError::bad_request("invalid_if_match", "If-Match must be an ETag from this API")
    })
}

/// The version a write is based on: `If-Match` or the body's `version`; when both are
/// given they must agree. `None` means an unconditional write.
pub fn expected_version(
    headers: &axum::http::HeaderMap,
    body: Option<i64>,
) -> Result<Option<i64>, ApiError> {
    match (if_match_version(headers)?, body) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(
            "conflicting_versions",
            "If-Match and the body's version disagree",
        )),
        (header, body) => Ok(header.or(body)),
    }
}

/// Declares the `bearer` security scheme (JWT access tokens) in a service's OpenAPI
/// document; use as `#[openapi(modifiers(&BearerAuth))]`.
#[derive(Debug)]
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The `ETag` of a resource version.
pub fn etag(version: i64) -> (header::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or(HeaderValue::from_static("\"0\""));
    (header::ETAG, value)
}

/// Wraps a router with the shared edge: request ids, tracing, the per-IP rate limit, body
/// limit, timeout, panic containment, and JSON answers for unknown routes and methods.
///
/// Without a token verifier the edge cannot know a request's tenant, so the per-tenant
/// limit needs [`edge_with_verifier`]; a single service process behind the gateway has it
/// applied there.
pub fn edge(router: Router, settings: &HttpSettings) -> Router {
    layers(router, settings, None)
}

/// [`edge`] plus the per-tenant rate limit, keyed by the `tid` claim of the bearer token
/// once `verifier` (the one the services use, so the handlers then find the token in its
/// cache) has accepted it. A token that does not verify counts against no tenant: it could
/// name any tenant, and the handler answers it 401 anyway.
pub fn edge_with_verifier(router: Router, settings: &HttpSettings, verifier: &Verifier) -> Router {
    layers(router, settings, Some(verifier.clone()))
}

fn layers(router: Router, settings: &HttpSettings, verifier: Option<Verifier>) -> Router {
    let timeout = settings.request_timeout();
    let mut router = router
        .fallback(|| async { ApiError::not_found("route") })
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(middleware::from_fn(move |req, next| {
            with_timeout(timeout, req, next)
        }))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::internal("handler panicked", "panic").into_response()
        }));
    let limits = Limits {
        per_ip: Limiter::new(settings.rate_limit_per_ip),
        per_tenant: Limiter::new(settings.rate_limit_per_tenant),
        verifier: verifier.filter(|_| settings.rate_limit_per_tenant.enabled()),
    };
    // Inside the request id layer, so a 429 carries its id and is logged like any answer;
    // outside the body limit and the handlers, so a refused request costs next to nothing.
    if limits.per_ip.enabled() || limits.verifier.is_some() {
        router = router.layer(middleware::from_fn_with_state(Arc::new(limits), rate_limit));
    }
    router = router.layer(middleware::from_fn(request_id_and_trace));
    // Outermost, so the log, the limits and the handlers all see the client.
    if !settings.trusted_proxies.is_empty() {
        let trusted: Arc<[TrustedProxy]> = settings.trusted_proxies.clone().into();
        router = router.layer(middleware::from_fn_with_state(trusted, client_behind_proxy));
    }
    router
}

/// Records the client a trusted proxy names as the request's peer.
async fn client_behind_proxy(
    State(trusted): State<Arc<[TrustedProxy]>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(peer) = peer_addr(&req) {
        if let Some(client) = forwarded_client(peer.ip(), req.headers(), &trusted) {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, peer.port())));
        }
    }
    next.run(req).await
}

/// The client of a request from `peer` as `X-Forwarded-For` names it, when `peer` is one of
/// the `trusted` proxies: the right-most address no trusted proxy added (each proxy appends
/// the address it got the request from, so addresses left of that one are the client's
/// word, which anyone can forge), or the left-most when every one is trusted. `None` keeps
/// the peer: an untrusted peer, no header, or an entry that is not an address.
pub fn forwarded_client(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|proxy| proxy.contains(ip));
    if !is_trusted(&peer) {
        return None;
    }
    let mut client = None;
    let values: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    for entry in values.iter().rev().flat_map(|v| v.rsplit(',')) {
        let ip = entry.trim().parse::<IpAddr>().ok()?;
        client = Some(ip);
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// The edge's rate limits (see [`crate::limit`]).
struct Limits {
    per_ip: Limiter<IpAddr>,
    per_tenant: Limiter<String>,
    /// Present when the per-tenant limit applies.
    verifier: Option<Verifier>,
}

async fn rate_limit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    // Requests without a peer address come from in-process callers (router tests), not
    // from the network: there is no client to limit.
    if let Some(addr) = peer_addr(&req) {
        if let Err(secs) = limits.per_ip.check(&addr.ip()) {
            return rate_limited(Scope::Ip, secs);
        }
    }
    if let Some(verifier) = &limits.verifier {
        let claims = bearer_token(req.headers()).and_then(|t| verifier.verify(t).ok());
        if let Some(tenant) = claims.as_ref().and_then(|c| c.tid.as_deref()) {
            if let Err(secs) = limits.per_tenant.check(tenant) {
                return rate_limited(Scope::Tenant, secs);
            }
        }
    }
    next.run(req).await
}

/// The TCP peer of the request, as [`serve`] records it.
pub fn peer_addr<B>(req: &axum::http::Request<B>) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// The token of an `Authorization: Bearer <token>` header (scheme case as clients send
/// it), trimmed; not verified.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    bearer_token_of(headers.get(header::AUTHORIZATION)?)
}

/// [`bearer_token`], from the `Authorization` header's value.
pub fn bearer_token_of(authorization: &HeaderValue) -> Option<&str> {
    let value = authorization.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long and was abandoned",
        )
        .into_response(),
    }
}

/// Turns axum's plain-text rejections (405 and similar) into the JSON error format.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this method is not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("body_too_large", "the request body exceeds the size limit")
        }
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        s if s.is_server_error() => ("internal_error", "an internal error occurred"),
        _ => ("bad_request", "the request could not be processed"),
    };
    let mut error = ApiError::new(status, code, message).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        error.headers_mut().insert(header::ALLOW, allow.clone());
    }
    error
}

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// The request's id, which `headers` then carry: the incoming `x-request-id` when it is a
/// sensible token (up to 128 of `[A-Za-z0-9-_.:]`), otherwise a new one in its place.
pub fn ensure_request_id(headers: &mut axum::http::HeaderMap) -> HeaderValue {
    // One lookup for both the check and the insertion.
    match headers.entry(REQUEST_ID_HEADER) {
        axum::http::header::Entry::Occupied(given) if valid_request_id(given.get()) => {
            given.get().clone()
        }
        axum::http::header::Entry::Occupied(mut given) => {
            let id = new_request_id();
            given.insert(id.clone());
            id
        }
        axum::http::header::Entry::Vacant(none) => none.insert(new_request_id()).clone(),
    }
}

/// A new request id: a UUIDv7 like every other id, but with its random bits from the
/// thread's generator instead of the operating system's (`ids::new_id` makes a system call
/// per id, which shows at tens of thousands of requests a second). Request ids are
/// correlation handles, not secrets.
///
/// The value owns its text in one allocation, shared by its clones (the request's and the
/// answer's): text copied into a value is a second allocation at its first clone.
fn new_request_id() -> HeaderValue {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_maybe_shared(axum::body::Bytes::from_owner(text))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

async fn request_id_and_trace(mut req: Request<Body>, next: Next) -> Response {
    let id = ensure_request_id(req.headers_mut());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!(
        "request",
        request_id = %id.to_str().unwrap_or_default(),
        %method,
        %path
    );
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            duration_us = started.elapsed().as_micros() as u64,
            "request finished"
        )
    });
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish; the caller bounds that wait. Each connection speaks HTTP/1.1
/// or, when it opens with the HTTP/2 preface, HTTP/2 without TLS (h2c with prior knowledge:
/// what a TLS-terminating proxy or an HTTP/2 client library sends); handlers see the peer
/// address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        shutdown,
        HttpSettings::default().client_timeouts(),
    )
    .await
}

/// [`serve`], closing a connection whose client takes longer than `timeouts` allow to send
/// a request's head, to start its next request, or to accept a piece of an answer.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeouts: ClientTimeouts,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;

    let builder = Arc::new(hyper_server(timeouts.header));
    accept_until(listener, shutdown, |tcp, peer, stop| {
        let router = router.clone();
        let in_flight = InFlight::new();
        let counted = in_flight.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let busy = counted.begin();
            let answer = router.clone().oneshot(req);
            async move { answer.await.map(|response| busy.answer(response)) }
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(SendTimeout::new(tcp, timeouts.send));
            let connection = builder.serve_connection_with_upgrades(io, service);
            serve_until_stopped(connection, stop, in_flight, timeouts.header).await;
        });
        None
    })
    .await
}

/// How long a client may take over its part of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// To send a request's head, and on a kept-alive connection to start the next one.
    pub header: Duration,
    /// To accept the next piece of an answer ([`SendTimeout`]).
    pub send: Duration,
}

/// A connection whose writes fail (`TimedOut`) once one has waited `limit` for the peer to
/// take anything: a client that stops reading a long answer, or whose machine vanished,
/// fills its receive window, and without a limit the connection — and whatever streams the
/// answer — would wait for it for ever. hyper has no such limit of its own. Reads pass
/// through untouched (the header timeout bounds those).
pub struct SendTimeout<T> {
    io: T,
    limit: Duration,
    /// Armed when a write first has to wait; disarmed by the next write that goes through.
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<T> SendTimeout<T> {
    /// `io`, each of whose writes may wait up to `limit` for the peer.
    pub fn new(io: T, limit: Duration) -> SendTimeout<T> {
        SendTimeout {
            io,
            limit,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: false,
        }
    }

    /// The connection, without the limit.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Runs one write operation: through when it is ready, else waiting for the peer
    /// within the limit.
    fn limited<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>>
    where
        T: Unpin,
    {
        if let Poll::Ready(done) = write(Pin::new(&mut self.io), cx) {
            self.armed = false;
            return Poll::Ready(done);
        }
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.limited(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.limited(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.limited(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.limited(cx, |io, cx| io.poll_shutdown(cx))
    }
}

/// hyper as the platform serves: HTTP/1.1, or HTTP/2 when a connection opens with its
/// preface (h2c with prior knowledge). A client that takes longer than `header_timeout` to
/// send a request's head, or on a kept-alive connection to start its next request, is
/// disconnected (hyper's header read timeout runs from the moment it waits for a request).
/// An HTTP/2 connection silent for `header_timeout` is pinged, and closed when the ping is
/// not answered within `header_timeout` again: a peer that vanished does not hold it for
/// ever, not even in the middle of a long answer. (A live client's HTTP/2 stack answers
/// pings by itself: [`serve_until_stopped`] closes a live connection that stays idle.)
pub fn hyper_server(
    header_timeout: Duration,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use hyper_util::rt::{TokioExecutor, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // WebSockets over HTTP/2 (RFC 8441) need the extended CONNECT method.
    builder
        .http2()
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    builder
}

/// Resolves once `stop` turns true (or its sender is gone: the server is).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs `connection` until it ends; once `stop` turns true, or once none of its requests
/// (counted by `in_flight`) has been in flight for `idle_limit`, lets its in-flight
/// requests finish and closes it. The idle limit is what ends an HTTP/2 connection whose
/// client keeps it open without using it (HTTP/1.1 has hyper's header read timeout for
/// that). The connection is polled first: its first poll starts a request whose bytes are
/// already there, so a stop that came meanwhile cannot close the connection under that
/// request.
pub async fn serve_until_stopped<C>(
    connection: C,
    mut stop: tokio::sync::watch::Receiver<bool>,
    in_flight: InFlight,
    idle_limit: Duration,
) where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let result = loop {
        // While requests are in flight, looked at again one limit later.
        let check = in_flight
            .idle_until(idle_limit)
            .unwrap_or_else(|| tokio::time::Instant::now() + idle_limit);
        tokio::select! {
            biased;
            result = connection.as_mut() => break result,
            () = stopped(&mut stop) => {}
            () = tokio::time::sleep_until(check) => {
                // A request came and went meanwhile, or one is in flight now.
                let idle = in_flight.idle_until(idle_limit);
                if idle.is_none_or(|until| until > tokio::time::Instant::now()) {
                    continue;
                }
            }
        }
        connection.as_mut().graceful_shutdown();
        break connection.await;
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The requests in flight on one connection, and since when it has had none (see
/// [`serve_until_stopped`]). Clones count together.
#[derive(Clone)]
pub struct InFlight(Arc<std::sync::Mutex<Requests>>);

struct Requests {
    in_flight: usize,
    /// When `in_flight` last fell to zero, or the connection opened.
    idle_since: tokio::time::Instant,
}

impl InFlight {
    /// A new connection's count: nothing in flight, idle from now.
    pub fn new() -> InFlight {
        InFlight(Arc::new(std::sync::Mutex::new(Requests {
            in_flight: 0,
            idle_since: tokio::time::Instant::now(),
        })))
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Requests> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a request as in flight until the returned guard is dropped: with the
    /// request's future, or with its answer's body once [`Busy::answer`] has moved it there.
    pub fn begin(&self) -> Busy {
        self.requests().in_flight += 1;
        Busy(self.clone())
    }

    /// When the connection will have been idle for `limit`; `None` while a request is in
    /// flight.
    fn idle_until(&self, limit: Duration) -> Option<tokio::time::Instant> {
        let requests = self.requests();
        (requests.in_flight == 0).then(|| requests.idle_since + limit)
    }
}

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight::new()
    }
}

/// One request in flight on a connection ([`InFlight::begin`]).
pub struct Busy(InFlight);

impl Busy {
    /// `response`, whose body now holds this request in flight until it has been sent (or
    /// dropped): a long answer, an event stream say, is a request in flight.
    pub fn answer(self, response: Response) -> Response {
        response.map(|body| Body::new(Answering { body, _busy: self }))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut requests = self.0.requests();
        requests.in_flight -= 1;
        if requests.in_flight == 0 {
            requests.idle_since = tokio::time::Instant::now();
        }
    }
}

/// An answer's body that keeps its request counted in flight ([`Busy::answer`]).
struct Answering {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Accepts connections on `listener` until `stop`, handing each (TCP_NODELAY set) to
/// `serve` with its peer and a receiver that turns `true` once the server stops; then closes
/// the listener and waits until every connection has dropped its receiver (`serve` moves it
/// into the connection's task, which lets it go when the connection ends). When `serve`
/// returns a pause, the next connection is accepted only after it (meanwhile another
/// acceptor on the same listener takes it).
pub async fn accept_until(
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(
        tokio::net::TcpStream,
        SocketAddr,
        tokio::sync::watch::Receiver<bool>,
    ) -> Option<Duration>,
) -> std::io::Result<()> {
    let (stopping, connections) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY a response written in two segments (headers, then a streamed
        // body, as the gateway relays them) waits for the client's delayed ACK: tens of ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if let Some(pause) = serve(tcp, peer, connections.clone()) {
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
    drop(listener);
    drop(connections);
    let _ = stopping.send(true);
    stopping.closed().await;
    Ok(())
}

/// Waits out a failed `accept`: a connection that went away before it was accepted is
/// nobody's problem; anything else (out of file descriptors, say) would fail again at once,
/// so the loop pauses instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tower::ServiceExt;

    #[derive(serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Input {
        name: String,
    }

    fn app() -> Router {
        let settings = HttpSettings {
            body_limit_bytes: 64,
            ..HttpSettings::default()
        };
        edge(
            Router::new().route("/echo", post(|Json(i): Json<Input>| async move { Json(i) })),
            &settings,
        )
    }

    /// Everything `stream` delivers until the server closes it (within 5 s), and how long
    /// that took.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (Vec<u8>, Duration) {
        use tokio::io::AsyncReadExt;
        let started = std::time::Instant::now();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("closed in time")
            .expect("read");
        (raw, started.elapsed())
    }

    /// [`app`] served on a loopback port with `timeouts`, until the sender is used.
    async fn served(
        timeouts: ClientTimeouts,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = app()
            .route(
                "/sleep/{ms}",
                // Answers at once with a body that takes `ms` to come.
                axum::routing::get(
                    |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                        Body::from_stream(futures_util::stream::once(async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok::<_, std::io::Error>(Bytes::from_static(b"slept"))
                        }))
                    },
                ),
            )
            .route(
                "/download",
                axum::routing::get(|| async {
                    let mib = Bytes::from(vec![b'x'; 1 << 20]);
                    let chunks =
                        (0..DOWNLOAD_MIB).map(move |_| Ok::<_, std::io::Error>(mib.clone()));
                    Body::from_stream(futures_util::stream::iter(chunks))
                }),
            );
        let served = tokio::spawn(serve_with(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            timeouts,
        ));
        (addr, stop, served)
    }

    const DOWNLOAD_MIB: usize = 64;

    async fn stop_serving(
        stop: tokio::sync::oneshot::Sender<()>,
        served: tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("stopped")
            .expect("join")
            .expect("served");
    }

    /// A connection to `addr` on which `bytes` were sent.
    async fn sent(addr: SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        stream
    }

    #[tokio::test]
    async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
        let (addr, stop, served) = served(ClientTimeouts {
            header: Duration::from_millis(300),
            send: Duration::from_secs(60),
        })
        .await;
        // Half a head, then nothing; and a request answered, then nothing.
        for request in [
            &b"POST /echo HTTP/1.1\r\nhost:"[..],
            &b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n\
               content-length: 12\r\n\r\n{\"name\":\"a\"}"[..],
        ] {
            let mut stream = sent(addr, request).await;
            let (raw, waited) = until_closed(&mut stream).await;
            assert!(waited >= Duration::from_millis(250), "{waited:?}");
            if request.ends_with(b"}") {
                assert!(
                    raw.starts_with(b"HTTP/1.1 200"),
                    "{}",
                    String::from_utf8_lossy(&raw)
                );
            }
        }
        stop_serving(stop, served).await;
    }

    #[tokio::test]
    async fn a_silent_http2_peer_is_pinged_then_dropped() {
        let (addr, stop, served) = served(ClientTimeouts {
            header: Duration::from_millis(300),
            send: Duration::from_secs(60),
        })
        .await;
        // The HTTP/2 preface, an empty SETTINGS frame and a request whose answer takes a
        // minute (HEADERS on stream 1, END_STREAM | END_HEADERS: `:method GET`,
        // `:scheme http` from the static table, `:path /sleep/60000` as a literal), then
        // silence: no answer to the server's ping. The request in flight keeps the
        // connection from being closed as idle; the unanswered ping closes it.
        let path = b"/sleep/60000";
        let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0".to_vec();
        let block_len = 2 + 2 + path.len();
        opening.extend_from_slice(&[0, 0, block_len as u8, 1, 0x05, 0, 0, 0, 1, 0x82, 0x86]);
        opening.extend_from_slice(&[0x44, path.len() as u8]);
        opening.extend_from_slice(path);
        let mut stream = sent(addr, &opening).await;
        let (raw, waited) = until_closed(&mut stream).await;
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        // The server's frames: SETTINGS first, and a PING (type 6) before it gave up.
        assert_eq!(raw.get(3), Some(&4), "{raw:?}");
        let mut frames = Vec::new();
        let mut at = 0;
        while at + 9 <= raw.len() {
            let len = usize::from(raw[at]) << 16
                | usize::from(raw[at + 1]) << 8
                | usize::from(raw[at + 2]);
            frames.push(raw[at + 3]);
            at += 9 + len;
        }
        assert!(frames.contains(&6), "no PING among the frames {frames:?}");
        stop_serving(stop, served).await;
    }

    #[tokio::test]
    async fn an_idle_http2_connection_is_closed_once_its_last_answer_is_older_than_the_limit() {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let (addr, stop, served) = served(ClientTimeouts {
            header: Duration::from_secs(1),
            send: Duration::from_secs(60),
        })
        .await;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake::<_, Body>(TokioIo::new(tcp))
                .await
                .expect("handshake");
        let mut connection = tokio::spawn(connection);
        // An answer whose body takes longer than the limit is a request in flight: it comes
        // in full, and the connection stays open for the next request.
        for ms in [1500, 0] {
            let request = axum::http::Request::get(format!("http://{addr}/sleep/{ms}"))
                .body(Body::empty())
                .expect("request");
            let response = sender.send_request(request).await.expect("answer");
            let body = axum::body::to_bytes(Body::new(response.into_body()), 1024)
                .await
                .expect("body");
            assert_eq!(&body[..], b"slept");
        }
        let answered = std::time::Instant::now();
        // Then the connection, idle but live (hyper's client answers pings), is still open
        // just before the limit and closed by the server soon after it.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut connection)
                .await
                .is_err(),
            "closed before the idle limit"
        );
        tokio::time::timeout(Duration::from_secs(5), connection)
            .await
            .expect("the server closed the idle connection")
            .expect("join")
            .expect("closed cleanly (GOAWAY)");
        assert!(
            answered.elapsed() >= Duration::from_millis(800),
            "{:?}",
            answered.elapsed()
        );
        stop_serving(stop, served).await;
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_an_answer_is_cut_off_after_the_send_timeout() {
        let (addr, stop, served) = served(ClientTimeouts {
            header: Duration::from_secs(30),
            send: Duration::from_millis(300),
        })
        .await;
        let mut stream = sent(addr, b"GET /download HTTP/1.1\r\nhost: t\r\n\r\n").await;
        // Reads nothing while the socket buffers fill up and the server's write waits.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (raw, _) = until_closed(&mut stream).await;
        assert!(
            raw.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &raw[..raw.len().min(64)]
        );
        assert!(
            raw.len() < DOWNLOAD_MIB << 20,
            "the whole answer came ({} bytes): the stalled write was never given up",
            raw.len()
        );
        // A client that keeps reading gets it all.
        let request = b"GET /download HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n";
        let mut stream = sent(addr, request).await;
        let (raw, _) = until_closed(&mut stream).await;
        assert!(raw.len() > DOWNLOAD_MIB << 20, "{} bytes", raw.len());
        stop_serving(stop, served).await;
    }

    async fn call(
        req: axum::http::Request<Body>,
    ) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
        let response = app().oneshot(req).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            headers,
        )
    }

    fn post_json(body: &str, content_type: &str) -> axum::http::Request<Body> {
        axum::http::Request::post("/echo")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .expect("request")
    }

    #[tokio::test]
    async fn bad_input_answers_json_errors() {
        let cases = [
            (
                post_json("{", "application/json"),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            ),
            (
                post_json(r#"{"name":1}"#, "application/json"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                post_json(r#" ["a"]"#, "application/json"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                post_json(r#"{"name":"a","x":1}"#, "application/json"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                post_json(r#"{"name":"a"}"#, "text/plain"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                post_json(
                    &format!(r#"{{"name":"{}"}}"#, "a".repeat(100)),
                    "application/json",
                ),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
            (
                axum::http::Request::get("/echo")
                    .body(Body::empty())
                    .expect("req"),
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            ),
            (
                axum::http::Request::get("/nope")
                    .body(Body::empty())
                    .expect("req"),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
        ];
        for (req, status, code) in cases {
            let (got, body, headers) = call(req).await;
            assert_eq!(got, status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(headers.contains_key(REQUEST_ID));
        }
    }

    #[test]
    fn if_match_and_body_version_must_agree() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(expected_version(&headers, Some(3)).ok(), Some(Some(3)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"4\""));
        assert_eq!(expected_version(&headers, None).ok(), Some(Some(4)));
        assert_eq!(expected_version(&headers, Some(4)).ok(), Some(Some(4)));
        assert!(expected_version(&headers, Some(3)).is_err());
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"5\""));
        assert_eq!(expected_version(&headers, None).ok(), Some(Some(5)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert!(expected_version(&headers, None).is_err());
    }

    fn limited(per_second: f64, burst: u32) -> crate::limit::RateLimit {
        crate::limit::RateLimit { per_second, burst }
    }

    fn get(path: &str, token: Option<&str>, peer: Option<[u8; 4]>) -> axum::http::Request<Body> {
        let mut req = axum::http::Request::get(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut req = req.body(Body::empty()).expect("request");
        if let Some(ip) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
        }
        req
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_nobody_else_does() {
        let trusted: Vec<TrustedProxy> = ["10.0.0.0/8", "::1"]
            .iter()
            .map(|s| s.parse().expect("proxy"))
            .collect();
        let client = |peer: &str, forwarded: &[&str]| {
            let mut headers = axum::http::HeaderMap::new();
            for value in forwarded {
                headers.append(
                    "x-forwarded-for",
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            forwarded_client(peer.parse().expect("peer"), &headers, &trusted)
                .map(|ip| ip.to_string())
        };
        let some = |ip: &str| Some(ip.to_string());
        // The right-most address a trusted proxy did not add; what the client wrote to the
        // left of it is not believed.
        assert_eq!(client("10.0.0.7", &["203.0.113.9"]), some("203.0.113.9"));
        assert_eq!(
            client("10.0.0.7", &["6.6.6.6, 203.0.113.9, 10.1.2.3"]),
            some("203.0.113.9")
        );
        assert_eq!(
            client("::1", &["6.6.6.6", "203.0.113.9, 10.1.2.3"]),
            some("203.0.113.9")
        );
        assert_eq!(client("::1", &["2001:db8::1"]), some("2001:db8::1"));
        // Every hop trusted: the first one is the client.
        assert_eq!(
            client("10.0.0.7", &["10.9.9.9, 10.1.1.1"]),
            some("10.9.9.9")
        );
        // An untrusted peer, no header, or garbage: the peer stays the client.
        assert_eq!(client("192.0.2.1", &["203.0.113.9"]), None);
        assert_eq!(client("10.0.0.7", &[]), None);
        assert_eq!(client("10.0.0.7", &["203.0.113.9, nonsense"]), None);
        assert_eq!(client("10.0.0.7", &["203.0.113.9,"]), None);
        assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
        assert!("proxy.example".parse::<TrustedProxy>().is_err());
    }

    #[tokio::test]
    async fn the_client_behind_a_trusted_proxy_is_the_one_rate_limited() {
        let settings = HttpSettings {
            rate_limit_per_ip: limited(1.0, 1),
            trusted_proxies: vec!["10.0.0.1".parse().expect("proxy")],
            ..HttpSettings::default()
        };
        let app = edge(
            Router::new().route(
                "/x",
                axum::routing::get(|meta: crate::caller::RequestMeta| async move {
                    meta.ip.unwrap_or_default()
                }),
            ),
            &settings,
        );
        let call = |forwarded: &'static str| {
            let app = app.clone();
            async move {
                let mut req = get("/x", None, Some([10, 0, 0, 1]));
                req.headers_mut()
                    .insert("x-forwarded-for", HeaderValue::from_static(forwarded));
                let response = app.oneshot(req).await.expect("response");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1024)
                    .await
                    .expect("body");
                (status, String::from_utf8_lossy(&body).to_string())
            }
        };
        assert_eq!(
            call("198.51.100.1").await,
            (StatusCode::OK, "198.51.100.1".to_string())
        );
        assert_eq!(call("198.51.100.1").await.0, StatusCode::TOO_MANY_REQUESTS);
        // Another client behind the same proxy has a bucket of its own.
        assert_eq!(
            call("198.51.100.2").await,
            (StatusCode::OK, "198.51.100.2".to_string())
        );
    }

    #[tokio::test]
    async fn per_ip_limit_counts_each_peer_address() {
        let settings = HttpSettings {
            rate_limit_per_ip: limited(1.0, 2),
            ..HttpSettings::default()
        };
        let app = edge(
            Router::new().route("/x", axum::routing::get(|| async { "ok" })),
            &settings,
        );
        let status = |peer| {
            let app = app.clone();
            async move { app.oneshot(get("/x", None, peer)).await.expect("response") }
        };
        assert_eq!(status(Some([10, 0, 0, 1])).await.status(), StatusCode::OK);
        assert_eq!(status(Some([10, 0, 0, 1])).await.status(), StatusCode::OK);
        let refused = status(Some([10, 0, 0, 1])).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        assert!(refused.headers().contains_key(REQUEST_ID));
        assert_eq!(status(Some([10, 0, 0, 2])).await.status(), StatusCode::OK);
        // In-process callers have no address and no bucket.
        assert_eq!(status(None).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn per_tenant_limit_counts_only_verified_tokens() {
        use crate::token::{generate_key, Signer};
        let key = generate_key().expect("key");
        let signer = Signer::new(&key.kid, &key.private_pkcs8, "iss", "aud").expect("signer");
        let verifier = Verifier::new("iss", "aud");
        verifier
            .set_keys([(key.kid.as_str(), key.public_x.as_str())])
            .expect("keys");
        // The same claims signed with a key nobody published.
        let other = generate_key().expect("key");
        let forger = Signer::new(&key.kid, &other.private_pkcs8, "iss", "aud").expect("signer");
        let token = |signer: &Signer, tenant: &str| {
            signer
                .issue("u1", Some(tenant), "user", "s1", 600)
                .expect("token")
                .0
        };
        let settings = HttpSettings {
            rate_limit_per_ip: crate::limit::RateLimit::OFF,
            rate_limit_per_tenant: limited(0.5, 1),
            ..HttpSettings::default()
        };
        let app = edge_with_verifier(
            Router::new().route("/x", axum::routing::get(|| async { "ok" })),
            &settings,
            &verifier,
        );
        let call = |token: String| {
            let app = app.clone();
            async move {
                app.oneshot(get("/x", Some(&token), Some([10, 0, 0, 1])))
                    .await
                    .expect("response")
            }
        };
        assert_eq!(call(token(&signer, "t1")).await.status(), StatusCode::OK);
        let refused = call(token(&signer, "t1")).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["code"], "rate_limited");
        assert_eq!(call(token(&signer, "t2")).await.status(), StatusCode::OK);
        // A token that does not verify neither meets nor spends the bucket of the tenant it
        // names (the handler answers it 401; this route takes no caller).
        assert_eq!(call(token(&forger, "t1")).await.status(), StatusCode::OK);
        assert_eq!(call(token(&forger, "t3")).await.status(), StatusCode::OK);
        assert_eq!(call(token(&forger, "t3")).await.status(), StatusCode::OK);
        assert_eq!(call(token(&signer, "t3")).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn keeps_a_valid_request_id_and_replaces_a_bad_one() {
        let mut req = post_json(r#"{"name":"a"}"#, "application/json");
        req.headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        let (status, _, headers) = call(req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[REQUEST_ID], "abc-123");
        let mut req = post_json(r#"{"name":"a"}"#, "application/json");
        req.headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("bad id <script>"));
        let (_, _, headers) = call(req).await;
        assert_ne!(headers[REQUEST_ID], "bad id <script>");
        let made = headers[REQUEST_ID].to_str().expect("text");
        let uuid = uuid::Uuid::parse_str(made).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7, "{made}");
    }
}
