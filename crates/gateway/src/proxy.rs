//! Forwarding one request: edge checks, header rewriting, the choice of upstream, timeouts,
//! retries on connect failure, and the streamed response.

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use platform::ApiError;

use crate::upstream::{Unavailable, Upstream};
use platform::http::bearer_token_of;
use platform::limit::{rate_limited, Scope};

use crate::client::{self, UpstreamBody};
use crate::Gateway;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way upstream: streamed as it arrives, cut off (and flagged) when
/// it grows past the route's limit.
pub(crate) struct ProxyBody {
    inner: Body,
    remaining: u64,
    /// Raised when the limit cut the body off; absent for bodies known to be empty.
    exceeded: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body exceeds the size limit")
    }
}

impl std::error::Error for TooLarge {}

impl ProxyBody {
    pub(crate) fn empty() -> ProxyBody {
        ProxyBody {
            inner: Body::empty(),
            remaining: 0,
            exceeded: None,
        }
    }
}

impl http_body::Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        if let Some(exceeded) = &this.exceeded {
                            exceeded.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(Box::new(TooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1). Names, not
/// strings: a string is parsed into a name on every use.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Internal headers no outside client may set: service identities and anything
/// `x-metatron-*`.
fn is_internal(name: &HeaderName) -> bool {
    let name = name.as_str();
    name == "x-service-token" || name.starts_with("x-metatron-")
}

/// The `X-Forwarded-*` fields, which the proxy writes itself: a client's own go.
fn is_forwarding(name: &HeaderName) -> bool {
    *name == X_FORWARDED_FOR || *name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST
}

/// Whether `name` is one of [`HOP_BY_HOP`]. A name's length rules out nearly every other
/// field before the comparisons.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) && HOP_BY_HOP.contains(name)
}

/// The fields of a request's headers the proxy reads, found in one pass over them: looking
/// a name up hashes it, and a request has only a handful of fields to compare.
#[derive(Default)]
struct RequestFields<'a> {
    authorization: Option<&'a HeaderValue>,
    content_length: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
    /// The protocol asked for, when `Connection` names `upgrade` too.
    upgrade: Option<&'a HeaderValue>,
    forwarded_for: Option<&'a HeaderValue>,
    /// A `Transfer-Encoding` is there.
    chunked: bool,
    /// Hop-by-hop, internal or `X-Forwarded-*` fields are there, to be removed.
    to_strip: bool,
}

impl<'a> RequestFields<'a> {
    fn of(headers: &'a HeaderMap) -> RequestFields<'a> {
        let mut fields = RequestFields::default();
        let mut upgrade = None;
        let mut connection_upgrade = false;
        for (name, value) in headers {
            if *name == header::AUTHORIZATION {
                fields.authorization = Some(value);
            } else if *name == header::CONTENT_LENGTH {
                fields.content_length = Some(value);
            } else if *name == header::HOST {
                fields.host = Some(value);
            } else if *name == X_FORWARDED_FOR {
                fields.forwarded_for = Some(value);
                fields.to_strip = true;
            } else if is_forwarding(name) {
                fields.to_strip = true;
            } else if is_hop_by_hop(name) {
                fields.to_strip = true;
                if *name == header::UPGRADE {
                    upgrade = Some(value);
                } else if *name == header::TRANSFER_ENCODING {
                    fields.chunked = true;
                } else if *name == header::CONNECTION {
                    connection_upgrade |= value.to_str().is_ok_and(|v| {
                        v.split(',')
                            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                    });
                }
            } else if is_internal(name) {
                fields.to_strip = true;
            }
        }
        fields.upgrade = upgrade.filter(|_| connection_upgrade);
        fields
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none (and `Connection` is one of them): one pass over the few
    // headers there are is cheaper than looking each name up.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

thread_local! {
    /// The client address this thread last named in `X-Forwarded-For`, and the value: in a
    /// row of requests from one address (a load balancer in front, a busy client) the value
    /// is shared instead of formatted and allocated anew.
    static LAST_CLIENT: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
}

/// `X-Forwarded-For` with `ip` appended to the `previous` list, formatted on the stack (the
/// header value is the one allocation, and none when `ip` alone is the value and was the
/// thread's last).
fn forwarded_for(previous: Option<&HeaderValue>, ip: &IpAddr) -> Option<HeaderValue> {
    if previous.is_none() {
        let last = LAST_CLIENT.with_borrow(|last| {
            last.as_ref()
                .filter(|(last, _)| last == ip)
                .map(|(_, value)| value.clone())
        });
        if last.is_some() {
            return last;
        }
    }
    // The longest IPv6 text is 45 bytes.
    let mut buf = [0u8; 64];
    let len = ip_text(ip, &mut buf)?;
    let text = &buf[..len];
    match previous {
        None => {
            let value = HeaderValue::from_bytes(text).ok()?;
            LAST_CLIENT.set(Some((*ip, value.clone())));
            Some(value)
        }
        Some(previous) => {
            let mut value = Vec::with_capacity(previous.len() + 2 + text.len());
            value.extend_from_slice(previous.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(text);
            HeaderValue::from_maybe_shared(Bytes::from(value)).ok()
        }
    }
}

/// Writes `ip` as text into `buf`, returning its length. IPv4 addresses, the usual case, are
/// written digit by digit: the formatting machinery costs as much as the rest of the
/// request's header rewriting.
fn ip_text(ip: &IpAddr, buf: &mut [u8; 64]) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            Some(len)
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = &mut buf[..];
            write!(cursor, "{ip}").ok()?;
            Some(64 - cursor.len())
        }
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The service named by `/api/<service>/...`.
fn service_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/")?;
    // A byte search: `str::find` with a char pattern costs a hundred instructions here.
    let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
    let service = &rest[..end];
    (!service.is_empty()).then_some(service)
}

/// Marks an upstream busy for one attempt; a half-open probe abandoned midway (the client
/// went away) gives its slot back.
struct Attempt<'a> {
    upstream: &'a Upstream,
    settled: bool,
}

impl Attempt<'_> {
    fn new(upstream: &Upstream) -> Attempt<'_> {
        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        Attempt {
            upstream,
            settled: false,
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.settled {
            self.upstream.release_probe();
        }
    }
}

/// Most resends of one idempotent request whose kept-alive connection broke.
const MAX_RESENDS: u32 = 3;

/// Whether `path` is one the gateway proxies (`/api/<service>/...`), not one of its own.
pub(crate) fn is_proxied(path: &str) -> bool {
    path != "/api/openapi.json" && service_of(path).is_some()
}

/// The timer that bounds a request's exchange with its upstreams: the client connection's
/// own, re-armed for each of its requests, or (when absent) one made for the request.
///
/// Why: moving an armed timer's deadline later is one atomic store, while arming a new
/// timer and dropping it again each lock the event loop's timer wheel.
pub(crate) type Timer<'t> = Option<Pin<&'t mut Sleep>>;

/// Forwards `req` from `peer` (absent for an in-process caller: no client to limit or
/// name) to an upstream of its service; the answer, and when `named` the upstream that gave
/// it (or failed to) for the access log. (Not an `async fn`, which would add a state of its
/// own around the exchange's: every byte of a request's future is moved several times.)
///
/// (Naming the upstream shares its label: a write to memory both cores then pass back and
/// forth, for nothing when no access log is written.)
pub(crate) fn forward<'a>(
    gw: &'a Gateway,
    req: Request,
    peer: Option<SocketAddr>,
    timer: Timer<'a>,
    named: bool,
) -> impl Future<Output = (Response, Option<Arc<str>>)> + Send + 'a {
    use futures_util::FutureExt;
    exchange(gw, req, peer.map(|a| a.ip()), timer).map(move |outcome| match outcome {
        Ok((response, upstream)) => (response, named.then(|| upstream.label.clone())),
        Err(refused) => (refused, None),
    })
}

/// [`forward`]: `Err` for an answer given before any upstream was tried.
async fn exchange<'a>(
    gw: &'a Gateway,
    req: Request,
    client: Option<IpAddr>,
    timer: Timer<'_>,
) -> Result<(Response, &'a Arc<Upstream>), Response> {
    let config = gw.config();
    let (mut parts, body) = req.into_parts();
    // Taken out of `parts` so the path can be borrowed while the rest of `parts` changes.
    let uri = std::mem::take(&mut parts.uri);
    let path = uri.path();
    let Some(service) = service_of(path) else {
        return Err(ApiError::not_found("route").into_response());
    };
    // Without a peer address (an in-process caller) there is no client to limit.
    if let Some(ip) = &client {
        if let Err(secs) = gw.0.per_ip.check(ip) {
            return Err(rate_limited(Scope::Ip, secs));
        }
    }
    let Some(pool) = gw.0.pools.get(service).filter(|p| !p.upstreams.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("no service `{service}` is routed by this gateway"),
        )
        .into_response());
    };

    let mut headers = std::mem::take(&mut parts.headers);
    let fields = RequestFields::of(&headers);

    if let Some(token) = fields.authorization.and_then(bearer_token_of) {
        let claims = match gw.0.keys.verify(gw, token).await {
            Ok(claims) => claims,
            Err(e) => return Err(e.into_response()),
        };
        if let Some(tenant) = claims.tid.as_deref() {
            if let Err(secs) = gw.0.per_tenant.check(tenant) {
                return Err(rate_limited(Scope::Tenant, secs));
            }
        }
    }

    let limit = config.max_body(path);
    let declared = fields
        .content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }

    // HTTP/2 clients name the host in the `:authority` pseudo-header (the URI), not `Host`.
    // (The client writes the upstream's own `Host`, whatever the headers hold.)
    let host = fields.host.cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // A protocol upgrade (WebSocket) keeps its `Connection: upgrade` and `Upgrade` headers,
    // and the two connections are joined once the upstream answers 101.
    let upgrade = fields.upgrade.cloned();
    // Without a client address (an in-process caller) the list goes on as it came.
    let forwarded = match &client {
        Some(ip) => forwarded_for(fields.forwarded_for, ip),
        None => fields.forwarded_for.cloned(),
    };
    let chunked = fields.chunked;
    if fields.to_strip {
        let internal: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_internal(n) || is_forwarding(n))
            .cloned()
            .collect();
        for name in internal {
            headers.remove(&name);
        }
        strip_hop_by_hop(&mut headers);
    }
    let mut on_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
    if let (Some(protocol), Some(_)) = (&upgrade, &on_upgrade) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    // Written after the request's fields (see `client::send`).
    let added = [
        forwarded.map(|value| (X_FORWARDED_FOR, value)),
        Some((X_FORWARDED_PROTO, HeaderValue::from_static("http"))),
        host.map(|value| (X_FORWARDED_HOST, value)),
    ];

    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let empty_body = http_body::Body::is_end_stream(&body) || (declared == Some(0) && !chunked);
    let retryable = empty_body
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        );
    // An empty body cannot grow past the limit: no flag to share for it.
    let exceeded = (!empty_body).then(|| Arc::new(AtomicBool::new(false)));
    let body = ProxyBody {
        inner: body,
        remaining: limit,
        exceeded: exceeded.clone(),
    };
    // The request as it goes upstream (its target is set per upstream). An attempt that
    // fails before anything reached the upstream hands it back, so a retry needs no copy.
    let mut request = Some(http::Request::new(body));
    if let Some(request) = request.as_mut() {
        *request.method_mut() = parts.method;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
    }
    let timeout = config.request_timeout(path);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut made = None;
    let mut timer = match timer {
        Some(timer) => timer,
        None => made
            .insert(Box::pin(tokio::time::sleep_until(deadline)))
            .as_mut(),
    };
    let open_for = Duration::from_millis(config.circuit_open_ms);
    let threshold = config.circuit_failure_threshold;
    // The upstreams that refused the connection, not to be picked again. (Only filled
    // when one does: an empty `Vec` costs no allocation.)
    let mut refused = Vec::new();
    // How often an idempotent request was sent again after its pooled connection broke
    // under it (several idle connections to a dead upstream may each fail once).
    let mut resent = 0;

    loop {
        let (index, upstream) = match pool.pick(&refused) {
            Ok(picked) => picked,
            Err(why) => {
                let message = match (why, refused.is_empty()) {
                    (Unavailable::NoneConfigured, _) => "the service has no upstream",
                    (_, true) => "no upstream of this service is available right now",
                    (_, false) => "the service's upstreams refused the connection",
                };
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream_unavailable",
                    message,
                ));
            }
        };
        let mut attempt = Attempt::new(upstream);
        let Ok(target) = upstream.target_for(&path_and_query) else {
            return Err(
                ApiError::bad_request("invalid_path", "the path is not valid").into_response(),
            );
        };
        let Some(mut outgoing) = request.take() else {
            // Only a request handed back is tried again.
            return Err(error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the service did not give a valid answer",
            ));
        };
        *outgoing.uri_mut() = target;

        let outcome = before(
            timer.as_mut(),
            deadline,
            client::send(upstream, config.connect_timeout(), outgoing, &added),
        )
        .await;
        attempt.settled = true;
        match outcome {
            Ok(Ok(response))
                if response.status() == StatusCode::SWITCHING_PROTOCOLS && on_upgrade.is_some() =>
            {
                upstream.success();
                return Ok((switch_protocols(response, on_upgrade.take()), upstream));
            }
            Ok(Ok(response)) => {
                let status = response.status();
                if matches!(
                    status,
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) {
                    upstream.failure(threshold, open_for);
                } else {
                    upstream.success();
                }
                // The upstream's own request id, if any, gives way to the gateway's (the
                // front door sets it on every answer).
                let (mut parts, incoming) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = Version::HTTP_11;
                parts.extensions = http::Extensions::new();
                return Ok((Response::from_parts(parts, Body::new(incoming)), upstream));
            }
            Ok(Err(client::Error::Connect(e, unsent))) => {
                upstream.failure(threshold, open_for);
                tracing::warn!(upstream = %upstream.url, error = %e, "cannot connect to upstream");
                request = Some(*unsent);
                refused.push(index);
                let may_retry = retryable
                    && refused.len() <= config.max_retries as usize
                    && refused.len() < pool.upstreams.len()
                    && gw.0.retries.take();
                if may_retry {
                    continue;
                }
                return Ok((
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream_unavailable",
                        "the service cannot be reached right now",
                    ),
                    upstream,
                ));
            }
            Ok(Err(client::Error::Exchange(e, unanswered))) => {
                if exceeded.as_ref().is_some_and(|e| e.load(Ordering::Relaxed)) {
                    return Err(too_large());
                }
                upstream.failure(threshold, open_for);
                tracing::warn!(upstream = %upstream.url, error = %e, "upstream exchange failed");
                // A kept-alive connection whose upstream died (or closed it) fails the next
                // request sent on it. An idempotent request without a body is sent once more,
                // on a new connection: to a dead upstream that connect fails fast and answers
                // 503, like every request after it; a live one answers normally.
                request = unanswered.map(|unanswered| *unanswered);
                if retryable
                    && config.max_retries > 0
                    && request.is_some()
                    && resent < MAX_RESENDS
                    && gw.0.retries.take()
                {
                    resent += 1;
                    continue;
                }
                return Ok((
                    error(
                        StatusCode::BAD_GATEWAY,
                        "bad_gateway",
                        "the service did not give a valid answer",
                    ),
                    upstream,
                ));
            }
            Err(_) => {
                upstream.failure(threshold, open_for);
                tracing::warn!(upstream = %upstream.url, timeout_ms = timeout.as_millis() as u64, "upstream timed out");
                return Ok((
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        "the service did not answer in time",
                    ),
                    upstream,
                ));
            }
        }
    }
}

/// The outcome of `work`, or `Err` when `timer`, set for `deadline`, goes off first. The
/// timer is set only once `work` has to wait: much work never does.
async fn before<F: Future>(
    mut timer: Pin<&mut Sleep>,
    deadline: tokio::time::Instant,
    work: F,
) -> Result<F::Output, TimedOut> {
    let mut work = std::pin::pin!(work);
    let mut unset = true;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if std::mem::take(&mut unset) {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx).map(|()| Err(TimedOut))
    })
    .await
}

/// [`before`]'s timer went off.
struct TimedOut;

/// Answers 101 to the client and, once both sides have switched, copies bytes between the
/// client's and the upstream's connections until either closes.
fn switch_protocols(
    response: http::Response<UpstreamBody>,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Response {
    let (parts, body) = response.into_parts();
    let mut answer = Response::new(Body::empty());
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *answer.headers_mut() = parts.headers;
    if let (Some(client), Some((mut upstream, early))) = (client, body.into_upgraded()) {
        tokio::spawn(async move {
            let client = match client.await {
                Ok(client) => client,
                Err(e) => {
                    tracing::warn!(error = %e, "protocol upgrade failed");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            // What the upstream sent right after its 101 came with the answer's head.
            if !early.is_empty() {
                if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut client, &early).await {
                    tracing::debug!(error = %e, "upgraded connection ended");
                    return;
                }
            }
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended");
            }
        });
    }
    answer
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the request body exceeds the size limit",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_finds_the_fields_the_proxy_reads() {
        use crate::client::headers;
        let plain = headers(&[
            ("host", "h"),
            ("authorization", "Bearer t"),
            ("content-length", "0"),
            ("x-forwarded-for", "10.0.0.1"),
            ("user-agent", "u"),
            ("upgrade", "websocket"),
        ]);
        let fields = RequestFields::of(&plain);
        assert_eq!(fields.host, Some(&HeaderValue::from_static("h")));
        assert_eq!(
            fields.authorization,
            Some(&HeaderValue::from_static("Bearer t"))
        );
        assert_eq!(fields.content_length, Some(&HeaderValue::from_static("0")));
        assert_eq!(
            fields.forwarded_for,
            Some(&HeaderValue::from_static("10.0.0.1"))
        );
        // `Upgrade` counts only when `Connection` names it; it is hop-by-hop either way.
        assert_eq!(fields.upgrade, None);
        assert!(fields.to_strip && !fields.chunked);

        let upgrade = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        let fields = RequestFields::of(&upgrade);
        assert_eq!(fields.upgrade, Some(&HeaderValue::from_static("websocket")));

        assert!(!RequestFields::of(&headers(&[("accept", "*/*")])).to_strip);
        assert!(RequestFields::of(&headers(&[("x-metatron-tenant", "t")])).to_strip);
        assert!(RequestFields::of(&headers(&[("x-service-token", "t")])).to_strip);
        let chunked = headers(&[("transfer-encoding", "chunked")]);
        let fields = RequestFields::of(&chunked);
        assert!(fields.chunked && fields.to_strip);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-foo"),
        );
        headers.insert("x-foo", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-bar", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-bar"));
        assert!(is_internal(&HeaderName::from_static("x-metatron-caller")));
        assert!(is_internal(&HeaderName::from_static("x-service-token")));
        assert_eq!(service_of("/api/crm/customers"), Some("crm"));
        assert_eq!(service_of("/api/crm"), Some("crm"));
        assert_eq!(service_of("/api/"), None);
        assert_eq!(service_of("/other"), None);
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(
            forwarded_for(None, &ip).expect("value"),
            HeaderValue::from_static("2001:db8::1")
        );
        assert_eq!(
            forwarded_for(Some(&HeaderValue::from_static("10.0.0.9")), &ip).expect("value"),
            HeaderValue::from_static("10.0.0.9, 2001:db8::1")
        );
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
        ] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(forwarded_for(None, &ip).expect("value"), text);
        }
    }
}
