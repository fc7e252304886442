//! The connections to the upstreams: HTTP/1.1 keep-alive connections, each thread keeping
//! the idle ones it opened. On the per-core event loops the gateway runs on, a request, the
//! connection it is sent on and the task driving that connection then stay on one thread,
//! and taking or returning a connection is a push or pop on a thread-local list: no lock,
//! no channel, no task spawned per request (a pooled general-purpose client costs all
//! three, which showed next to the proxying itself).

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::proxy::ProxyBody;
use crate::upstream::Upstream;

/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections one thread keeps to one upstream; more are closed when returned.
const MAX_IDLE_PER_UPSTREAM: usize = 256;

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

thread_local! {
    /// The idle connections of this thread, per upstream. The `Weak` both names the
    /// upstream and keeps its address from being reused by another while listed.
    static IDLE: RefCell<Vec<(Weak<Upstream>, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// Why an exchange with an upstream failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// No connection could be opened (refused, unreachable, or not within the connect
    /// timeout): nothing was sent.
    Connect(std::io::Error),
    /// The request was sent (or partly sent) and no answer came back.
    Exchange(hyper::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Exchange(e) => e.fmt(f),
        }
    }
}

/// Sends `request` (origin-form URI) to `upstream` on an idle connection of this thread or
/// a new one, and returns the response head; its body streams from the connection, which
/// goes back to the idle list once the body has ended.
pub(crate) async fn send(
    upstream: &Arc<Upstream>,
    connect_timeout: Duration,
    mut request: http::Request<ProxyBody>,
) -> Result<http::Response<UpstreamBody>, Error> {
    request
        .headers_mut()
        .insert(header::HOST, upstream.host.clone());
    loop {
        let (mut sender, reused) = match checkout(upstream) {
            Some(sender) => (sender, true),
            None => (connect(upstream, connect_timeout).await?, false),
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                // After a protocol switch the connection belongs to the upgraded stream.
                let keep = response.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                let conn = keep.then(|| (sender, upstream.clone()));
                return Ok(response.map(|inner| UpstreamBody { inner, conn }));
            }
            Err(mut e) => match e.take_message() {
                // A kept-alive connection the upstream closed before the request went out
                // (its idle timeout raced ours): nothing was sent, so it goes on a new one.
                Some(unsent) if reused => request = unsent,
                _ => return Err(Error::Exchange(e.into_error())),
            },
        }
    }
}

/// Opens a connection to `upstream` within `timeout` and starts the task that drives it.
async fn connect(upstream: &Upstream, timeout: Duration) -> Result<SendRequest<ProxyBody>, Error> {
    let authority = upstream.authority();
    // An IPv6 literal comes bracketed in the authority.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            Error::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
        .map_err(Error::Connect)?;
    // Requests and answers are written in several segments (head, then the streamed body):
    // without TCP_NODELAY each waits for the peer's delayed ACK.
    stream.set_nodelay(true).map_err(Error::Connect)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::Exchange)?;
    // Spawned on the calling thread's runtime (the per-core loops are single-threaded), so
    // the connection's wake-ups stay on this thread.
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// An idle connection of this thread to `upstream` that can take a request now, if any;
/// closed, busy or expired ones met on the way are dropped (which closes them).
fn checkout(upstream: &Arc<Upstream>) -> Option<SendRequest<ProxyBody>> {
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let me = Arc::as_ptr(upstream);
        let (_, list) = idle.iter_mut().find(|(u, _)| u.as_ptr() == me)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if conn.sender.is_ready() && now.duration_since(conn.since) < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    })
    .ok()
    .flatten()
}

/// Puts a connection whose last exchange has ended back on this thread's idle list.
fn checkin(upstream: &Arc<Upstream>, sender: SendRequest<ProxyBody>) {
    if sender.is_closed() {
        return;
    }
    // During the thread's teardown the list is gone and the connection simply closes.
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let me = Arc::as_ptr(upstream);
        let index = match idle.iter().position(|(u, _)| u.as_ptr() == me) {
            Some(index) => index,
            None => {
                // Upstreams of gateways dropped since (tests start many) give theirs up.
                idle.retain(|(u, _)| u.strong_count() > 0);
                idle.push((Arc::downgrade(upstream), Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[index].1;
        let now = Instant::now();
        // The oldest are at the front; expired ones are closed here too, not only when a
        // busier moment reaches down to them.
        if list
            .first()
            .is_some_and(|c| now.duration_since(c.since) >= IDLE_TIMEOUT)
        {
            list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT);
        }
        if list.len() < MAX_IDLE_PER_UPSTREAM {
            list.push(Idle { sender, since: now });
        }
    });
}

/// An upstream's response body, streamed from its connection; when it has ended the
/// connection is returned for the next request.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    /// Absent after a protocol switch, and once returned.
    conn: Option<(SendRequest<ProxyBody>, Arc<Upstream>)>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some((sender, upstream)) = self.conn.take() {
            checkin(&upstream, sender);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() {
            this.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body read to its end (or empty: HEAD, 204, 304, which nobody polls) leaves the
        // connection ready for another request; one abandoned midway leaves it mid-message,
        // and dropping it closes it.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}
