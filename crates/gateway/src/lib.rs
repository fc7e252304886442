//! The gateway of the distributed topology (issue 4): one listener (HTTP/1.1 and h2c) in
//! front of every service process. It routes `/api/<service>/...` to that service's
//! upstreams (the healthy one with the fewest requests in flight, or round-robin; see
//! [`Balance`]), and answers within its limits whatever the
//! upstreams do: a refusing or unreachable upstream answers 503 within the connect timeout,
//! a slow one 504 at the request timeout, and a failing one opens its circuit breaker.
//!
//! At the edge it verifies bearer tokens against the key set published by auth, applies
//! per-IP and per-tenant rate limits ([`platform::limit`], the same as the all-in-one edge's),
//! body limits and CORS, strips hop-by-hop and internal
//! headers, and adds `x-request-id` and `x-forwarded-*`. Bodies stream in both directions.

mod client;
pub mod config;
mod h1;
mod jwks;
mod proxy;
mod reuse;
mod serve;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use platform::ApiError;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::{Balance, Config, RateLimit};

use crate::proxy::ProxyBody;
use crate::upstream::{Budget, Pool};
use platform::http::REQUEST_ID_HEADER;
use platform::limit::Limiter;

/// Header carrying the request id.
pub const REQUEST_ID: &str = platform::http::REQUEST_ID;

/// The upstream that served a request, recorded on the response for the access log.
#[derive(Debug, Clone)]
struct ServedBy(Arc<str>);

struct Inner {
    config: Config,
    pools: BTreeMap<String, Pool>,
    keys: jwks::Keys,
    per_ip: Limiter<IpAddr>,
    per_tenant: Limiter<String>,
    retries: Budget,
}

/// The gateway: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Gateway(Arc<Inner>);

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("services", &self.0.pools.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway for `config`, verifying tokens from `issuer` to `audience` (the auth
    /// service's settings). Fails on an invalid upstream URL.
    pub fn new(config: Config, issuer: &str, audience: &str) -> Result<Gateway, String> {
        let mut pools = BTreeMap::new();
        for (service, urls) in &config.upstreams {
            if service.is_empty() || service.contains('/') {
                return Err(format!(
                    "invalid setting `gateway.upstreams`: bad service name `{service}`"
                ));
            }
            let pool = Pool::new(service, urls, config.balance)
                .map_err(|e| format!("invalid setting `gateway.upstreams.{service}`: {e}"))?;
            pools.insert(service.clone(), pool);
        }
        let keys = jwks::Keys::new(
            issuer,
            audience,
            Duration::from_millis(config.jwks_refresh_min_interval_ms),
        );
        Ok(Gateway(Arc::new(Inner {
            per_ip: Limiter::new(config.rate_limit_per_ip),
            per_tenant: Limiter::new(config.rate_limit_per_tenant),
            retries: Budget::new(config.retry_budget_per_second),
            config,
            pools,
            keys,
        })))
    }

    /// The settings in use.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// The routed services and their upstream pools.
    pub fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.0.pools.values()
    }

    /// The gateway's front door with `pages` (e.g. the web console) served beside its own
    /// `/health`, `/ready` and `/api/openapi.json`; everything under `/api/<service>/` is
    /// proxied. See [`Front`].
    pub fn front(&self, pages: Router) -> Front {
        let own = Router::new()
            .route("/health", get(health))
            .route("/ready", get(health))
            .route("/api/openapi.json", get(openapi))
            .fallback(proxied)
            .with_state(self.clone());
        let mut pages = pages.merge(own);
        let cors = cors(&self.0.config.cors_allowed_origins);
        let direct = cors.is_none();
        if let Some(cors) = cors {
            pages = pages.layer(cors);
        }
        Front {
            gateway: self.clone(),
            pages,
            direct,
        }
    }

    /// Runs the active health checks (`GET /ready` on every upstream) every
    /// `health_check_interval_ms` (0: never) until the task is aborted.
    pub fn spawn_health_checks(&self) -> tokio::task::JoinHandle<()> {
        let gateway = self.clone();
        tokio::spawn(async move {
            if gateway.0.config.health_check_interval_ms == 0 {
                return;
            }
            let period = Duration::from_millis(gateway.0.config.health_check_interval_ms.max(10));
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                gateway.check_all().await;
            }
        })
    }

    /// Checks every upstream's `/ready` once, concurrently, recording the results.
    pub async fn check_all(&self) {
        let checks = self
            .0
            .pools
            .values()
            .flat_map(|p| p.upstreams.iter().cloned())
            .map(|upstream| async move {
                let ready = self.get(&upstream, "/ready").await.is_ok();
                upstream.set_ready(ready);
            });
        futures_util::future::join_all(checks).await;
    }

    /// `GET path` on one upstream, bounded by the health check timeout; the body when the
    /// answer is 2xx.
    async fn get(
        &self,
        upstream: &Arc<upstream::Upstream>,
        path: &str,
    ) -> Result<bytes::Bytes, String> {
        use http_body_util::BodyExt;
        let uri = upstream.target(path).map_err(|e| e.to_string())?;
        let request = http::Request::get(uri)
            .body(ProxyBody::empty())
            .map_err(|e| e.to_string())?;
        let timeout = Duration::from_millis(self.0.config.health_check_timeout_ms);
        let exchange = async {
            let response = client::send(upstream, self.0.config.connect_timeout(), request, &[])
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            // Health and key documents are small; refuse anything absurd.
            http_body_util::Limited::new(response.into_body(), 16 << 20)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    use axum::http::{header, Method};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                HeaderName::from_static("x-tenant"),
                REQUEST_ID_HEADER,
            ])
            .expose_headers([header::ETAG, header::RETRY_AFTER, REQUEST_ID_HEADER])
            .max_age(Duration::from_secs(600)),
    )
}

/// The gateway's HTTP service: what every request goes through, in one place.
///
/// A request to `/api/<service>/...` goes straight to the proxy; the gateway's own routes
/// and the pages served beside them (the console) go through their router, which also
/// proxies when CORS is configured (its layer then wraps everything). Both ways get the
/// same edge: the request id (kept when valid, otherwise new) on the request and the
/// answer, one access log line, a JSON answer for a panic and for a method the router does
/// not allow. Cheap to clone: one per connection.
#[derive(Clone)]
pub struct Front {
    gateway: Gateway,
    pages: Router,
    /// Whether proxied requests skip the router (no CORS layer to pass).
    direct: bool,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("gateway", &self.gateway)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl Front {
    /// Answers `req` from `peer` (absent for in-process callers, which may name their
    /// client as `ConnectInfo` instead); a proxied request's exchange is bounded by `timer`
    /// when its connection has one ([`proxy::Timer`]).
    async fn serve(
        &self,
        mut req: Request,
        peer: Option<SocketAddr>,
        timer: proxy::Timer<'_>,
    ) -> Result<Response, std::convert::Infallible> {
        let id = platform::http::ensure_request_id(req.headers_mut());
        // What the access line needs is copied only when the line is written (benchmarks
        // and busy deployments run at `warn`).
        let logged =
            tracing::enabled!(target: "gateway::access", tracing::Level::INFO).then(|| {
                (
                    Instant::now(),
                    req.method().clone(),
                    route_template(req.uri().path()),
                )
            });
        let (mut response, upstream) = if self.direct && proxy::is_proxied(req.uri().path()) {
            let named = logged.is_some();
            contain_panics(proxy::forward(&self.gateway, req, peer, timer, named)).await
        } else {
            if let Some(peer) = peer {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            // Boxed: the router's future is large, and inline it would enlarge every
            // proxied request's future too.
            let response = contain_panics(Box::pin(async {
                let response = self
                    .pages
                    .clone()
                    .oneshot(req)
                    .await
                    .unwrap_or_else(|e| match e {});
                (response, None)
            }))
            .await
            .0;
            let upstream = response.extensions().get::<ServedBy>().map(|s| s.0.clone());
            (json_method_not_allowed(response), upstream)
        };
        if let Some((started, method, path)) = logged {
            tracing::info!(
                target: "gateway::access",
                request_id = %id.to_str().unwrap_or_default(),
                %method,
                %path,
                status = response.status().as_u16(),
                upstream = %upstream.as_deref().unwrap_or("-"),
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
        Ok(response)
    }
}

/// In-process callers (the console's API client) call the front door as a tower service;
/// their client, if any, comes as `ConnectInfo`.
impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let peer = platform::http::peer_addr(&req);
        let front = self.clone();
        Box::pin(async move { front.serve(req, peer, None).await })
    }
}

/// Runs `answer`, turning a panic in it into a 500 JSON answer instead of a dropped
/// connection. (Not an `async fn`: that would hold `answer` twice in its state, once as
/// the argument and once wrapped.)
fn contain_panics(
    answer: impl std::future::Future<Output = (Response, Option<Arc<str>>)>,
) -> impl std::future::Future<Output = (Response, Option<Arc<str>>)> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(answer)
        .catch_unwind()
        .map(|outcome| {
            outcome.unwrap_or_else(|_| {
                (
                    ApiError::internal("gateway handler panicked", "panic").into_response(),
                    None,
                )
            })
        })
}

/// The router's own 405 (no body) in the JSON error format.
fn json_method_not_allowed(response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && response
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none()
    {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed here",
        )
        .into_response();
    }
    response
}

/// The router's fallback: the proxy, for requests that pass the router (CORS configured,
/// or a path that names no service, which it answers 404).
async fn proxied(State(gw): State<Gateway>, req: Request) -> Response {
    let peer = platform::http::peer_addr(&req);
    let (mut response, upstream) = proxy::forward(&gw, req, peer, None, true).await;
    if let Some(upstream) = upstream {
        response.extensions_mut().insert(ServedBy(upstream));
    }
    response
}

/// The path as logged: ids (UUIDs and numbers) replaced by `:id`, so log lines group by
/// route.
fn route_template(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if platform::ids::is_uuid(seg)
                || (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
            {
                ":id"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `GET /health`: checks every upstream's `/ready` now; 200 only when every routed
/// service has a ready upstream whose circuit is not open.
async fn health(State(gw): State<Gateway>) -> Response {
    gw.check_all().await;
    let mut all = true;
    let mut services = serde_json::Map::new();
    for pool in gw.0.pools.values().filter(|p| !p.upstreams.is_empty()) {
        let ready = pool.ready();
        all &= ready;
        services.insert(
            pool.service.clone(),
            json!({
                "ready": ready,
                "upstreams": pool.upstreams.iter().map(|u| u.status()).collect::<Vec<_>>(),
            }),
        );
    }
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "status": if all { "ok" } else { "unavailable" },
            "services": services,
        })),
    )
        .into_response()
}

/// `GET /api/openapi.json`: the services' documents merged (paths, components, tags);
/// services that do not answer are listed under `x-unavailable-services`.
async fn openapi(State(gw): State<Gateway>) -> Response {
    let fetches =
        gw.0.pools
            .values()
            .filter(|p| !p.upstreams.is_empty())
            .map(|pool| {
                let gw = gw.clone();
                async move {
                    for upstream in pool.upstreams.iter().filter(|u| u.available()) {
                        if let Ok(body) = gw.get(upstream, "/api/openapi.json").await {
                            if let Ok(doc) = serde_json::from_slice::<Value>(&body) {
                                return (pool.service.clone(), Some(doc));
                            }
                        }
                    }
                    (pool.service.clone(), None)
                }
            });
    let results = futures_util::future::join_all(fetches).await;
    let mut merged: Option<Value> = None;
    let mut missing = Vec::new();
    for (service, doc) in results {
        match (doc, merged.as_mut()) {
            (None, _) => missing.push(service),
            (Some(doc), None) => merged = Some(doc),
            (Some(doc), Some(into)) => merge_openapi(into, doc),
        }
    }
    match merged {
        Some(mut doc) => {
            if !missing.is_empty() {
                doc["x-unavailable-services"] = json!(missing);
            }
            axum::Json(doc).into_response()
        }
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            "no service answered with its OpenAPI document",
        )
        .into_response(),
    }
}

fn merge_openapi(into: &mut Value, from: Value) {
    fn merge_object(into: &mut Value, from: &Value) {
        if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
            for (k, v) in from {
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    if into.get("paths").is_none() {
        into["paths"] = json!({});
    }
    merge_object(&mut into["paths"], &from["paths"]);
    if let Some(components) = from.get("components").and_then(Value::as_object) {
        if into.get("components").is_none() {
            into["components"] = json!({});
        }
        for (kind, entries) in components {
            if into["components"].get(kind).is_none() {
                into["components"][kind] = json!({});
            }
            merge_object(&mut into["components"][kind], entries);
        }
    }
    if let Some(tags) = from.get("tags").and_then(Value::as_array) {
        if !into["tags"].is_array() {
            into["tags"] = json!([]);
        }
        if let Some(list) = into["tags"].as_array_mut() {
            for tag in tags {
                if !list.iter().any(|t| t.get("name") == tag.get("name")) {
                    list.push(tag.clone());
                }
            }
        }
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (the caller bounds that wait). Runs the active health
/// checks meanwhile.
pub async fn serve(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let front = gateway.front(Router::new());
    serve_front(&gateway, front, listener, shutdown).await
}

/// Like [`serve`], for a [`Front`] of `gateway` with pages of its own (the console):
/// serves it on one event loop per core (`[gateway] workers`) and runs the gateway's
/// health checks meanwhile.
pub async fn serve_front(
    gateway: &Gateway,
    front: Front,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let checks = gateway.spawn_health_checks();
    let result = serve::serve_per_core(listener, front, shutdown, gateway.0.config.workers()).await;
    checks.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_openapi_merge() {
        assert_eq!(
            route_template("/api/crm/customers/0190a0b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b/notes/12"),
            "/api/crm/customers/:id/notes/:id"
        );
        let mut a = json!({"openapi":"3.1.0","paths":{"/a":{}},"tags":[{"name":"a"}]});
        merge_openapi(
            &mut a,
            json!({"paths":{"/b":{}},"components":{"schemas":{"B":{}}},"tags":[{"name":"b"},{"name":"a"}]}),
        );
        assert!(a["paths"]["/a"].is_object() && a["paths"]["/b"].is_object());
        assert!(a["components"]["schemas"]["B"].is_object());
        assert_eq!(a["tags"].as_array().map(Vec::len), Some(2));
    }
}
