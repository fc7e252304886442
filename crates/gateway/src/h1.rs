//! The gateway's own HTTP/1.1 server, for the requests that make up nearly all of its
//! traffic: HTTP/1.1 requests without a body and without a protocol upgrade (GET, HEAD,
//! DELETE, OPTIONS, and the like). Everything else goes to hyper.
//!
//! Why: a proxied request crosses two HTTP exchanges, and hyper's server side cost more per
//! request (its dispatcher, its per-connection state machine, its response encoder) than the
//! whole proxy behind it. Here a connection is a loop on one task: read a head, parse it,
//! answer through the same [`Front`] hyper calls, write the answer, repeat.
//!
//! The first request that is not of that kind (a body, an upgrade, `Expect`, HTTP/1.0,
//! HTTP/2's preface, or a head that does not parse or is too large) hands the connection,
//! with every byte read from it so far, to hyper for the rest of its life. Requests on one
//! HTTP/1.1 connection come one after the other, so the hand-over falls between two
//! requests, and hyper answers that one and the rest exactly as it answers any connection.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use http::header;
use http::{Method, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::client::{
    closes_connection, encode_chunk, encode_end, write_data, BodyFraming, FieldSpans,
    INLINE_BODY_BYTES, MAX_HEADERS, MAX_HEAD_BYTES,
};
use crate::{Config, Front};
use platform::http::SendTimeout;

/// Room made in the read buffer before each read from the client: a head and, when a body
/// follows it (hyper's to read), the start of the body, which then reaches the upstream in
/// one piece with the head as it would had hyper read it.
const READ_SIZE: usize = 16 * 1024;

/// hyper, configured as the gateway serves: HTTP/1.1, or HTTP/2 when a connection opens
/// with its preface (h2c with prior knowledge).
pub(crate) type Hyper = Arc<auto::Builder<TokioExecutor>>;

pub(crate) fn hyper(config: &Config) -> Hyper {
    Arc::new(platform::http::hyper_server(config.client_header_timeout()))
}

/// Serves the connection `tcp` from `peer` until the client closes it, stays idle longer
/// than `client_idle_timeout_ms`, takes longer than `client_header_timeout_ms` to send a
/// request's head (answered 408) or longer than `client_send_timeout_ms` to take a piece of
/// an answer, or `stop` turns true (then a connection stops once no request is in flight
/// on it).
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    front: Front,
    hyper: Hyper,
    stop: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    // Armed by each request's exchange in turn (see `proxy::Timer`).
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    // The client's time to start its next request and to send the rest of its head. A
    // timer of its own: re-arming one for a later deadline is cheap, for an earlier one
    // not, and these deadlines lie beyond the exchange's.
    let mut reading = Box::pin(tokio::time::sleep(Duration::ZERO));
    let (idle_timeout, header_timeout, send_timeout) = {
        let config = front.gateway.config();
        (
            config.client_idle_timeout(),
            config.client_header_timeout(),
            config.client_send_timeout(),
        )
    };
    // The client's time to take each piece of an answer.
    let mut tcp = SendTimeout::new(tcp, send_timeout);
    // Waits for the stop signal across the connection's idle reads: waiting anew at each
    // would join and leave the channel's list of waiters once per request.
    let mut signal = stop.clone();
    let stopping = platform::http::stopped(&mut signal);
    tokio::pin!(stopping);
    loop {
        // Which wait `reading` is armed for (idle, or the head), once armed.
        let mut armed = None;
        let (request, close) = loop {
            match parse(&mut buf) {
                Parsed::Ours(request, close) => break (request, close),
                Parsed::Incomplete if buf.len() < MAX_HEAD_BYTES => {}
                Parsed::Incomplete | Parsed::NotOurs => {
                    return hand_over(tcp, buf, peer, front, hyper, stop).await;
                }
            }
            buf.reserve(READ_SIZE);
            let idle = buf.is_empty();
            if armed != Some(idle) {
                let limit = if idle { idle_timeout } else { header_timeout };
                reading.as_mut().reset(tokio::time::Instant::now() + limit);
                armed = Some(idle);
            }
            let read = tokio::select! {
                biased;
                // Between requests: the one moment a stopping server may close the
                // connection without cutting anything off.
                () = &mut stopping, if idle => return,
                () = reading.as_mut() => {
                    if !idle {
                        let answer = head_timed_out();
                        let _ = respond(&mut tcp, &mut out, answer, false, true).await;
                    }
                    return close_lingering(tcp.into_inner());
                }
                read = tcp.read_buf(&mut buf) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head_only = request.method() == Method::HEAD;
        // (Borrowed, not cloned: a clone per request writes to memory both cores share.)
        let Ok(response) = front.serve(request, Some(peer), Some(timer.as_mut())).await;
        let close = close || *stop.borrow();
        match respond(&mut tcp, &mut out, response, head_only, close).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                close_lingering(tcp.into_inner());
                return;
            }
        }
    }
}

// Returned once per request and taken apart at once: boxing the request would cost an
// allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A request this loop answers, and whether the client asked to close afterwards.
    Ours(Request, bool),
    /// The head is not complete yet.
    Incomplete,
    /// A request for hyper (see the module's documentation).
    NotOurs,
}

/// Takes the request head at the start of `buf` out of it when it is one this loop answers.
fn parse(buf: &mut BytesMut) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    // Uninitialised slots: zeroing a hundred of them would cost more than the parse.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len < MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) | Err(_) => return Parsed::NotOurs,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
    };
    if request.version != Some(1) {
        return Parsed::NotOurs;
    }
    let mut close = false;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let named = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        // A body (other than a declared empty one), an upgrade or an expectation: hyper's.
        if named("transfer-encoding")
            || named("upgrade")
            || named("expect")
            || (named("content-length") && field.value != b"0")
        {
            return Parsed::NotOurs;
        }
        if named("connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::NotOurs;
                }
                close |= token.eq_ignore_ascii_case(b"close");
            }
        }
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Parsed::NotOurs;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::NotOurs;
    };
    let path_at = path.as_ptr() as usize - buf.as_ptr() as usize;
    let path_len = path.len();
    let spans = FieldSpans::of(buf, request.headers);
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_at..path_at + path_len)) else {
        return Parsed::NotOurs;
    };
    // Room for what the edge adds: the request id.
    let Ok(headers) = spans.header_map(&head, 1) else {
        return Parsed::NotOurs;
    };
    let mut request = Request::new(Body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Parsed::Ours(request, close)
}

/// Writes `response` (its head only when `head_only`); `Ok(true)` when the connection may
/// carry another request.
async fn respond(
    tcp: &mut SendTimeout<TcpStream>,
    out: &mut Vec<u8>,
    response: Response,
    head_only: bool,
    mut close: bool,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    // 1xx, 204 and 304 answers have no body (RFC 9110 §6.4.1).
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut declared = None;
    let mut dated = false;
    for (name, value) in &parts.headers {
        // The framing and the connection's fate are this writer's to state.
        if name == header::CONNECTION {
            close |= closes_connection(value);
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => declared = Some(n),
                None => continue,
            }
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    crate::reuse::give_back_header_map(parts.headers);
    if !dated {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    let mut framing = match declared {
        _ if bodiless => BodyFraming::None,
        Some(_) => BodyFraming::Length,
        None => match http_body::Body::size_hint(&body).exact() {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa(n, &mut [0; 20]));
                out.extend_from_slice(b"\r\n");
                declared = Some(n);
                BodyFraming::Length
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                BodyFraming::Chunked
            }
        },
    };
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head_only || framing == BodyFraming::None {
        // Nothing of the body is sent; an empty one is still read to its end, which is what
        // gives a proxied exchange's upstream connection back for the next request.
        let _ = body.frame().now_or_never();
        framing = BodyFraming::None;
    }
    // What the body may still send (a declared length is held to).
    let mut remaining = declared.unwrap_or(u64::MAX);
    if framing != BodyFraming::None {
        // A small first chunk that is already there goes out in the same write as the head;
        // most answers are one such chunk.
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if data.len() as u64 > remaining {
                        return Ok(false);
                    }
                    remaining -= data.len() as u64;
                    if data.len() <= INLINE_BODY_BYTES {
                        encode_chunk(out, &data, framing);
                    } else {
                        tcp.write_all(out).await?;
                        out.clear();
                        write_data(tcp, data, framing).await?;
                    }
                }
            }
            Some(Some(Err(_))) => return Ok(false),
            Some(None) => {
                encode_end(out, framing);
                framing = BodyFraming::None;
            }
            None => {}
        }
    }
    if framing != BodyFraming::None && http_body::Body::is_end_stream(&body) {
        encode_end(out, framing);
        framing = BodyFraming::None;
    }
    if !out.is_empty() {
        tcp.write_all(out).await?;
    }
    if framing == BodyFraming::None {
        return Ok(!close && (head_only || bodiless || declared.is_none_or(|_| remaining == 0)));
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The body broke off: the client must not take what it got for all of it.
            return Ok(false);
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.len() as u64 > remaining {
            return Ok(false);
        }
        remaining -= data.len() as u64;
        write_data(tcp, data, framing).await?;
    }
    if framing == BodyFraming::Chunked {
        tcp.write_all(b"0\r\n\r\n").await?;
    }
    Ok(!close && declared.is_none_or(|_| remaining == 0))
}

/// The answer to a client too slow to send its request's head.
fn head_timed_out() -> Response {
    platform::ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_head_timeout",
        "the request's head did not arrive in time",
    )
    .into_response()
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

thread_local! {
    /// The current second and its `Date` text: formatted once a second, not per answer.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current time as an HTTP date (RFC 9110 §5.6.7).
fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *cached = second;
            }
        }
        out.extend_from_slice(text);
    });
}

/// Serves the rest of the connection with hyper, starting with the bytes already read.
async fn hand_over(
    tcp: SendTimeout<TcpStream>,
    read: BytesMut,
    peer: SocketAddr,
    front: Front,
    hyper: Hyper,
    stop: watch::Receiver<bool>,
) {
    let idle_limit = front.gateway.config().client_header_timeout();
    let in_flight = platform::http::InFlight::new();
    let counted = in_flight.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let front = front.clone();
        let busy = counted.begin();
        async move {
            let Ok(response) = front.serve(req.map(Body::new), Some(peer), None).await;
            Ok::<_, std::convert::Infallible>(busy.answer(response))
        }
    });
    let replayed = Replayed {
        read,
        io: Some(tcp),
    };
    let connection = hyper
        .serve_connection_with_upgrades(TokioIo::new(replayed), service)
        .into_owned();
    // (Polled before the stop signal: a request read while the gateway was stopping is
    // still answered.) Boxed as a `Send` future: without the type spelled out here the
    // compiler cannot prove the generic future `Send` for the connection's task.
    let serving: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(
        platform::http::serve_until_stopped(connection, stop, in_flight, idle_limit),
    );
    serving.await;
}

/// How long a closed connection goes on reading (and discarding) what the client still
/// sends after the last answer.
const LINGER: Duration = Duration::from_secs(2);

/// Closes `tcp` the way nginx's lingering close does, in a task of its own: sends FIN, then
/// reads and discards until the client closes too or [`LINGER`] has passed.
///
/// Why: a socket closed with unread bytes in its receive buffer answers them with a reset,
/// and a client still sending (an upload refused with 413 halfway, a pipelined request) then
/// fails its write and never reads the answer that was already on its way.
fn close_lingering(mut tcp: TcpStream) {
    // Outside a runtime (a thread's teardown) the socket simply closes.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = tcp.shutdown().await;
        let mut discard = vec![0u8; 8 * 1024];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(1..) = tcp.read(&mut discard).await {}
        })
        .await;
    });
}

/// A connection whose first bytes were already read: they are read again first. Closes
/// lingering ([`close_lingering`]) when dropped.
struct Replayed {
    read: BytesMut,
    /// Always there until dropped.
    io: Option<SendTimeout<TcpStream>>,
}

impl Replayed {
    fn io(&mut self) -> io::Result<Pin<&mut SendTimeout<TcpStream>>> {
        self.io
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }
}

impl Drop for Replayed {
    fn drop(&mut self) {
        if let Some(tcp) = self.io.take() {
            close_lingering(tcp.into_inner());
        }
    }
}

impl AsyncRead for Replayed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return self.io()?.poll_read(cx, out);
        }
        let n = self.read.len().min(out.remaining());
        out.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replayed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io()?.poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(SendTimeout::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version;

    fn parsed(head: &str) -> Parsed {
        parse(&mut BytesMut::from(head.as_bytes()))
    }

    #[test]
    fn only_bodiless_http11_requests_without_upgrade_are_ours() {
        let Parsed::Ours(request, close) =
            parsed("GET /api/crm/x?q=1 HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\n\r\n")
        else {
            panic!("a plain GET is ours");
        };
        assert!(!close);
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/api/crm/x");
        assert_eq!(request.uri().query(), Some("q=1"));
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(request.version(), Version::HTTP_11);
        assert!(matches!(
            parsed(
                "DELETE /a HTTP/1.1\r\ncontent-length: 0\r\nConnection: keep-alive, Close\r\n\r\n"
            ),
            Parsed::Ours(_, true)
        ));
        assert!(matches!(
            parsed("GET /a HTTP/1.1\r\nHost:"),
            Parsed::Incomplete
        ));
        for not_ours in [
            "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /a HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "PUT /a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parsed(not_ours), Parsed::NotOurs), "{not_ours}");
        }
    }

    #[test]
    fn pipelined_requests_are_taken_one_at_a_time() {
        let mut buf = BytesMut::from(&b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3"[..]);
        for path in ["/1", "/2"] {
            let Parsed::Ours(request, _) = parse(&mut buf) else {
                panic!("complete");
            };
            assert_eq!(request.uri().path(), path);
        }
        assert!(matches!(parse(&mut buf), Parsed::Incomplete));
        assert_eq!(&buf[..], b"GET /3");
    }

    #[test]
    fn numbers_and_dates_are_written_plainly() {
        for n in [0, 7, 10, 1024, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        http_date(&mut out);
        let text = String::from_utf8(out).expect("ascii");
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
