//! The gateway's HTTP/1.1 client: keep-alive connections to the upstreams, each thread
//! keeping the idle ones it opened, and one request's exchange on one of them, driven by
//! the request's own task.
//!
//! The upstreams are the platform's own services, so the client needs what an HTTP/1.1
//! origin server answers (RFC 9112): a response head, then a body framed by
//! `Content-Length`, by chunked coding or by the end of the connection — or a protocol
//! switch (101), after which the connection belongs to the upgraded stream. Doing this here
//! instead of in a general-purpose client saves, per request, the connection's own task
//! and the channels between it and the request (the request, its answer and every body
//! chunk each crossed one), which cost more than parsing the answer. On the per-core event
//! loops the gateway runs on, a request and its upstream connection stay on one thread;
//! taking or returning a connection is a pop or push on a thread-local list.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::proxy::ProxyBody;
use crate::upstream::Upstream;

/// How long an idle connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections one thread keeps to one upstream; more are closed when returned.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Largest head parsed here: an upstream's answer (or a client's request, see
/// [`crate::h1`]) is smaller. Offsets into it fit in 16 bits ([`FieldSpans`]).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header fields in an upstream's response head.
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer line of a chunked body.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Room made in the read buffer before each read from an upstream.
const READ_SIZE: usize = 16 * 1024;
/// A request body's first chunk up to this size goes out in one write with the head.
pub(crate) const INLINE_BODY_BYTES: usize = 16 * 1024;

/// One connection to an upstream.
pub(crate) struct Connection {
    io: TcpStream,
    /// Bytes read from the upstream and not used yet.
    buf: BytesMut,
}

struct Idle {
    conn: Connection,
    since: Instant,
}

thread_local! {
    /// The idle connections of this thread, per upstream. The `Weak` both names the
    /// upstream and keeps its address from being reused by another while listed.
    static IDLE: RefCell<Vec<(Weak<Upstream>, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// A request handed back by a failed exchange, to be tried again.
pub(crate) type Unsent = Box<http::Request<ProxyBody>>;

/// Why an exchange with an upstream failed.
pub(crate) enum Error {
    /// No connection could be opened (refused, unreachable, or not within the connect
    /// timeout): nothing was sent, and the request comes back untouched.
    Connect(std::io::Error, Unsent),
    /// The request was sent (or partly sent) and no usable answer came back. A request
    /// without a body comes back, so it can be sent again.
    Exchange(Failure, Option<Unsent>),
}

/// What went wrong once a request was under way.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Reading or writing the connection failed.
    Io(std::io::Error),
    /// The upstream closed the connection before its answer was complete.
    Closed,
    /// The upstream's answer broke HTTP/1.1.
    Malformed(&'static str),
    /// The request body failed (the client went away, or it outgrew its limit).
    RequestBody(crate::proxy::BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e, _) => write!(f, "connect: {e}"),
            Error::Exchange(e, _) => e.fmt(f),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "connection error: {e}"),
            Failure::Closed => f.write_str("the upstream closed the connection before answering"),
            Failure::Malformed(why) => write!(f, "malformed answer: {why}"),
            Failure::RequestBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// Sends `request` (origin-form URI) to `upstream` on an idle connection of this thread or
/// a new one, and returns the response head; its body streams from the connection, which
/// goes back to the idle list once the body has ended. After a protocol switch (101) the
/// body holds the connection for [`UpstreamBody::into_upgraded`].
///
/// The `added` fields (the proxy's `X-Forwarded-*`) are written after the request's own:
/// inserting them into its map would hash and place each, for nothing but this write.
pub(crate) async fn send(
    upstream: &Arc<Upstream>,
    connect_timeout: Duration,
    request: http::Request<ProxyBody>,
    added: &[Option<(HeaderName, HeaderValue)>],
) -> Result<http::Response<UpstreamBody>, Error> {
    let (mut conn, mut reused) = match open(upstream, connect_timeout).await {
        Ok(opened) => opened,
        Err(e) => return Err(Error::Connect(e, Box::new(request))),
    };
    let (parts, mut body) = request.into_parts();
    let framing = BodyFraming::of(&parts, &body);
    // Gives the request back when it had no body: nothing of it is lost, it may go again.
    let failed = |failure, parts: http::request::Parts, body| {
        let unsent = (framing == BodyFraming::None)
            .then(|| Box::new(http::Request::from_parts(parts, body)));
        Error::Exchange(failure, unsent)
    };
    let mut head = crate::reuse::head_buffer();
    encode_head(&mut head, &parts, added, &upstream.host, framing);
    // A small first chunk that is already there (a JSON document, typically) goes out in
    // the same write as the head.
    let mut pending = None;
    let mut body_done = framing == BodyFraming::None;
    if !body_done {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                match frame.into_data() {
                    Ok(data) if data.len() <= INLINE_BODY_BYTES => {
                        encode_chunk(&mut head, &data, framing);
                    }
                    Ok(data) => pending = Some(data),
                    Err(_trailers) => {}
                }
                // A body whose length was declared is known to have ended with its last
                // byte: most bodies are one chunk, and go out with the head.
                if pending.is_none() && http_body::Body::is_end_stream(&body) {
                    encode_end(&mut head, framing);
                    body_done = true;
                }
            }
            Some(Some(Err(e))) => return Err(failed(Failure::RequestBody(e), parts, body)),
            Some(None) => {
                encode_end(&mut head, framing);
                body_done = true;
            }
            None => {}
        }
    }
    // A kept-alive connection the upstream closed while it was idle fails the write:
    // nothing of the request went out, so it goes on the next one (a new one once none is
    // idle).
    while let Err(e) = conn.io.write_all(&head).await {
        if !reused {
            return Err(failed(e.into(), parts, body));
        }
        (conn, reused) = match open(upstream, connect_timeout).await {
            Ok(opened) => opened,
            Err(e) => return Err(failed(Failure::Io(e), parts, body)),
        };
    }
    // Given back for the next request's head at once: the answer may take a while.
    drop(head);
    let mut answered_early = false;
    if !body_done {
        // Boxed: a body that outlasts its first chunk is the exception, and the streaming
        // state would enlarge every request's future.
        match Box::pin(send_body(&mut conn, &mut body, framing, pending)).await {
            Ok(early) => answered_early = early,
            Err(failure) => return Err(failed(failure, parts, body)),
        }
    }
    let head = match read_head(&mut conn).await {
        Ok(head) => head,
        Err(failure) => return Err(failed(failure, parts, body)),
    };
    match answer(conn, head, &parts.method, upstream, answered_early) {
        Ok(response) => {
            crate::reuse::give_back_header_map(parts.headers);
            Ok(response)
        }
        Err(failure) => Err(failed(failure, parts, body)),
    }
}

/// An idle connection of this thread to `upstream` (`true`: kept alive from an earlier
/// exchange), or a new one.
async fn open(upstream: &Arc<Upstream>, timeout: Duration) -> std::io::Result<(Connection, bool)> {
    match checkout(upstream) {
        Some(conn) => Ok((conn, true)),
        // Boxed, as a new connection is the exception: inline, the connect's state would
        // enlarge every request's future, which is moved several times a request.
        None => Box::pin(connect(upstream, timeout))
            .await
            .map(|conn| (conn, false)),
    }
}

/// How a message body is framed on the wire: a request's on the way upstream, an answer's
/// on the way to the client ([`crate::h1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length` as declared (a client's request body is held to it by hyper).
    Length,
    /// Chunked: a body of unknown length.
    Chunked,
}

impl BodyFraming {
    fn of(parts: &http::request::Parts, body: &ProxyBody) -> BodyFraming {
        let empty = http_body::Body::is_end_stream(body);
        if parts.headers.contains_key(header::CONTENT_LENGTH) {
            if empty {
                BodyFraming::None
            } else {
                BodyFraming::Length
            }
        } else if empty {
            BodyFraming::None
        } else {
            BodyFraming::Chunked
        }
    }
}

/// The request line and header fields, the `added` ones after the request's own. Names and
/// values are valid by construction (the `http` types refuse CR, LF and the like), so
/// nothing can smuggle a field in.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    added: &[Option<(HeaderName, HeaderValue)>],
    host: &HeaderValue,
    framing: BodyFraming,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .as_bytes();
    out.extend_from_slice(if target.is_empty() { b"/" } else { target });
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    let own = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::HOST);
    for (name, value) in own.chain(added.iter().flatten().map(|(name, value)| (name, value))) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // An empty body that declared a length keeps it (0); a method that carries a body
        // says so even when it is empty, as clients do.
        BodyFraming::None
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
                && !parts.headers.contains_key(header::CONTENT_LENGTH) =>
        {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `data` as the body framing needs it.
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8], framing: BodyFraming) {
    if data.is_empty() {
        return;
    }
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

/// Appends the end of the body (the last chunk, when chunked).
pub(crate) fn encode_end(out: &mut Vec<u8>, framing: BodyFraming) {
    if framing == BodyFraming::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// Streams the rest of the request body to the upstream, chunk by chunk as it arrives.
/// Meanwhile the upstream may answer (a refusal, typically) without reading the rest:
/// sending then stops, and `true` says the connection cannot be used again.
async fn send_body(
    conn: &mut Connection,
    body: &mut ProxyBody,
    framing: BodyFraming,
    mut pending: Option<Bytes>,
) -> Result<bool, Failure> {
    let (reader, mut writer) = conn.io.split();
    let buf = &mut conn.buf;
    loop {
        let data = match pending.take() {
            Some(data) => Some(data),
            None => {
                let next = tokio::select! {
                    biased;
                    answered = answered(&reader, buf) => {
                        answered?;
                        return Ok(true);
                    }
                    frame = body.frame() => frame,
                };
                match next {
                    Some(Ok(frame)) => frame.into_data().ok(),
                    Some(Err(e)) => return Err(Failure::RequestBody(e)),
                    None => None,
                }
            }
        };
        let done = data.is_none();
        let write = async {
            match data {
                Some(data) => write_data(&mut writer, data, framing).await,
                None if framing == BodyFraming::Chunked => writer.write_all(b"0\r\n\r\n").await,
                None => Ok(()),
            }
        };
        tokio::select! {
            biased;
            answered = answered(&reader, buf) => {
                answered?;
                return Ok(true);
            }
            written = write => written?,
        }
        if done {
            return Ok(false);
        }
    }
}

/// Writes `data` as `framing` needs it: as it is, or as one chunk (size line, data, CRLF)
/// in one vectored write, without copying the data.
pub(crate) async fn write_data(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    mut data: Bytes,
    framing: BodyFraming,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if framing == BodyFraming::Chunked {
        let size = Bytes::from(format!("{:x}\r\n", data.len()));
        writer
            .write_all_buf(&mut size.chain(data).chain(&b"\r\n"[..]))
            .await
    } else {
        writer.write_all_buf(&mut data).await
    }
}

/// Resolves once the upstream has sent something (or closed the connection) while the
/// request body is still going out: the beginning of an early answer. What was read stays
/// in `buf` for [`read_head`].
async fn answered(
    reader: &tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
) -> Result<(), Failure> {
    loop {
        reader.readable().await?;
        buf.reserve(READ_SIZE);
        match reader.try_read_buf(buf) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A parsed response head and the bytes it was parsed from.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// Reads the final response head (informational 1xx answers other than 101 are skipped).
async fn read_head(conn: &mut Connection) -> Result<Head, Failure> {
    loop {
        if let Some(head) = parse_head(&mut conn.buf)? {
            if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
                continue;
            }
            return Ok(head);
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(Failure::Malformed("response head too large"));
        }
        conn.buf.reserve(READ_SIZE);
        if tokio::io::AsyncReadExt::read_buf(&mut conn.io, &mut conn.buf).await? == 0 {
            return Err(Failure::Closed);
        }
    }
}

/// Parses a complete response head at the start of `buf`, taking it out of `buf`; `None`
/// while it is incomplete. Header values share the buffer's memory (no copy).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Failure> {
    // Uninitialised slots: zeroing a hundred of them would cost more than the parse.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len >= MAX_HEAD_BYTES => {
            return Err(Failure::Malformed("response head too large"))
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Failure::Malformed("too many header fields"))
        }
        Err(_) => return Err(Failure::Malformed("invalid response head")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Failure::Malformed("invalid status code"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let spans = FieldSpans::of(buf, response.headers);
    let head = buf.split_to(len).freeze();
    // Room for the request id the gateway adds, so adding it does not grow the map.
    let headers = spans.header_map(&head, 1).map_err(Failure::Malformed)?;
    Ok(Some(Head {
        status,
        version,
        headers,
    }))
}

/// Where each field of a head parsed from a buffer sits in it, so that once the head is
/// taken out of the buffer the names and values can be cut from it (values share its
/// memory: no copy).
pub(crate) struct FieldSpans {
    /// Name offset and length, value offset and length (a head is at most
    /// [`MAX_HEAD_BYTES`], so 16 bits hold them: half the bytes to clear and to move).
    spans: [(u16, u16, u16, u16); MAX_HEADERS],
    count: usize,
}

impl FieldSpans {
    /// The spans of `fields`, parsed from `buf` (whose first [`MAX_HEAD_BYTES`] hold them).
    #[inline(always)]
    pub(crate) fn of(buf: &[u8], fields: &[httparse::Header<'_>]) -> FieldSpans {
        let start = buf.as_ptr() as usize;
        let offset = |bytes: &[u8]| (bytes.as_ptr() as usize - start) as u16;
        let mut spans = [(0u16, 0u16, 0u16, 0u16); MAX_HEADERS];
        for (span, field) in spans.iter_mut().zip(fields) {
            let name = field.name.as_bytes();
            *span = (
                offset(name),
                name.len() as u16,
                offset(field.value),
                field.value.len() as u16,
            );
        }
        FieldSpans {
            spans,
            count: fields.len().min(MAX_HEADERS),
        }
    }

    /// The fields as a map, cut from `head` (the bytes they were parsed from, starting
    /// where the parsed buffer started), with room for `spare` more.
    pub(crate) fn header_map(&self, head: &Bytes, spare: usize) -> Result<HeaderMap, &'static str> {
        let mut headers = crate::reuse::header_map(self.count + spare);
        for &(name, name_len, value, value_len) in &self.spans[..self.count] {
            let (name, name_len) = (name as usize, name_len as usize);
            let (value, value_len) = (value as usize, value_len as usize);
            let name = HeaderName::from_bytes(&head[name..name + name_len])
                .map_err(|_| "invalid header name")?;
            let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_len))
                .map_err(|_| "invalid header value")?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Whether a `Connection` value says `close` (an upstream's answer, or an answer the
/// gateway writes to its client, [`crate::h1`]).
pub(crate) fn closes_connection(connection: &HeaderValue) -> bool {
    connection
        .as_bytes()
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// How an upstream's response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseFraming {
    /// After this many more bytes.
    Length(u64),
    /// With the last chunk.
    Chunked,
    /// When the upstream closes the connection.
    Close,
}

/// The framing of a response to `method` with `status` and `headers`, and whether the
/// upstream closes the connection after it: one pass over the fields.
fn response_framing(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(ResponseFraming, bool), Failure> {
    let mut closes = false;
    let mut last_codings = None;
    let mut length = Ok(None);
    for (name, value) in headers {
        if name == header::CONNECTION {
            closes |= closes_connection(value);
        } else if name == header::TRANSFER_ENCODING {
            last_codings = Some(value);
        } else if name == header::CONTENT_LENGTH {
            length = length.and_then(|previous| content_length(value, previous));
        }
    }
    let framing = if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        ResponseFraming::Length(0)
    } else if let Some(codings) = last_codings {
        let last = codings
            .to_str()
            .ok()
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim);
        match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => ResponseFraming::Chunked,
            _ => ResponseFraming::Close,
        }
    } else {
        length?.map_or(ResponseFraming::Close, ResponseFraming::Length)
    };
    Ok((framing, closes))
}

/// The length a `Content-Length` value states, which must agree with the `previous` one.
fn content_length(value: &HeaderValue, previous: Option<u64>) -> Result<Option<u64>, Failure> {
    let mut length = previous;
    for part in value
        .to_str()
        .map_err(|_| Failure::Malformed("invalid content-length"))?
        .split(',')
    {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Failure::Malformed("invalid content-length"));
        }
        let n: u64 = part
            .parse()
            .map_err(|_| Failure::Malformed("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(Failure::Malformed("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// The response to hand on: its head, and a body reading the rest from `conn`.
fn answer(
    conn: Connection,
    head: Head,
    method: &Method,
    upstream: &Arc<Upstream>,
    answered_early: bool,
) -> Result<http::Response<UpstreamBody>, Failure> {
    let switched = head.status == StatusCode::SWITCHING_PROTOCOLS;
    // (A 101 is informational: no body.)
    let (framing, closes) = response_framing(method, head.status, &head.headers)?;
    let closes = closes || head.version != Version::HTTP_11;
    let reusable = !closes && !answered_early && !switched && framing != ResponseFraming::Close;
    let state = match framing {
        ResponseFraming::Length(n) => State::Length(n),
        ResponseFraming::Chunked => State::Chunked(Chunked::default()),
        ResponseFraming::Close => State::UntilClose,
    };
    let mut body = UpstreamBody {
        state,
        io: Some(conn.io),
        buf: conn.buf,
        upstream: upstream.clone(),
        reusable,
        switched,
    };
    if body.state == State::Length(0) && !switched {
        body.finish();
    }
    let mut response = http::Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// Opens a connection to `upstream` within `timeout`.
async fn connect(upstream: &Upstream, timeout: Duration) -> std::io::Result<Connection> {
    let authority = upstream.authority();
    // An IPv6 literal comes bracketed in the authority.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let io = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    // Requests and answers are written in several segments (head, then the streamed body):
    // without TCP_NODELAY each waits for the peer's delayed ACK.
    io.set_nodelay(true)?;
    Ok(Connection {
        io,
        buf: BytesMut::new(),
    })
}

impl Connection {
    /// Whether the connection, idle since its last answer, can carry another request: the
    /// upstream has neither closed it nor sent anything unasked. Costs a system call only
    /// when the socket is marked readable (the last read happened to fill its buffer, or
    /// the upstream did close it).
    fn still_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// An idle connection of this thread to `upstream` that can take a request now, if any;
/// closed or expired ones met on the way are dropped (which closes them).
fn checkout(upstream: &Arc<Upstream>) -> Option<Connection> {
    IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let me = Arc::as_ptr(upstream);
        let (_, list) = idle.iter_mut().find(|(u, _)| u.as_ptr() == me)?;
        let now = Instant::now();
        while let Some(idle) = list.pop() {
            if now.duration_since(idle.since) < IDLE_TIMEOUT && idle.conn.still_usable() {
                return Some(idle.conn);
            }
        }
        None
    })
    .ok()
    .flatten()
}

/// Puts a connection whose last exchange has ended back on this thread's idle list.
fn checkin(upstream: &Arc<Upstream>, conn: Connection) {
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
            list.push(Idle { conn, since: now });
        }
    });
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked, at this point of the coding.
    Chunked(Chunked),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// Ended.
    Done,
}

/// An upstream's response body, read from its connection as the client takes it; when it
/// has ended, a reusable connection is returned for the next request.
pub(crate) struct UpstreamBody {
    state: State,
    /// The connection's socket; absent once returned (or given to an upgrade).
    io: Option<TcpStream>,
    /// Bytes read from the upstream and not handed on yet.
    buf: BytesMut,
    upstream: Arc<Upstream>,
    /// Whether the connection may carry another request once the body has ended.
    reusable: bool,
    /// Whether the answer was 101: the connection then belongs to the upgraded stream.
    switched: bool,
}

impl UpstreamBody {
    /// After a 101 answer, the connection and the bytes the upstream already sent on the
    /// new protocol.
    pub(crate) fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        if !self.switched {
            return None;
        }
        let buf = std::mem::take(&mut self.buf);
        self.io.take().map(|io| (io, buf.freeze()))
    }

    /// Ends the body and returns the connection for the next request, when it can take one
    /// (nothing unread is left on it).
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(io) = self.io.take() {
            if self.reusable && self.buf.is_empty() {
                let buf = std::mem::take(&mut self.buf);
                checkin(&self.upstream, Connection { io, buf });
            }
        }
    }

    /// Ends the body on `failure`, closing the connection.
    fn fail(&mut self, failure: Failure) -> Failure {
        self.state = State::Done;
        self.io = None;
        failure
    }

    /// Reads more from the upstream into the buffer; `Ok(0)` at the end of the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Failure>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        self.buf.reserve(READ_SIZE);
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(io),
            cx,
            &mut self.buf
        ));
        Poll::Ready(read.map_err(Failure::Io))
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = Failure;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Failure>>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(remaining) => {
                    let buf = &mut this.buf;
                    if !buf.is_empty() {
                        let n = buf
                            .len()
                            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                        let data = buf.split_to(n).freeze();
                        this.state = State::Length(remaining - n as u64);
                        if this.state == State::Length(0) {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_fill(cx)) {
                        Ok(0) => return Poll::Ready(Some(Err(this.fail(Failure::Closed)))),
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                    }
                }
                State::Chunked(mut chunked) => {
                    let step = chunked.decode(&mut this.buf);
                    this.state = State::Chunked(chunked);
                    match step {
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Decoded::End) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::NeedMore) => match ready!(this.poll_fill(cx)) {
                            Ok(0) => return Poll::Ready(Some(Err(this.fail(Failure::Closed)))),
                            Ok(_) => {}
                            Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                        },
                        Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                    }
                }
                State::UntilClose => {
                    let buf = &mut this.buf;
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(this.poll_fill(cx)) {
                        Ok(0) => {
                            this.reusable = false;
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(this.fail(e)))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Where a chunked body (RFC 9112 §7.1) stands between two reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Chunked {
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk, this many data bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields (dropped) up to the empty line.
    Trailers,
    /// The body has ended.
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// Data of the body.
    Data(Bytes),
    /// The body has ended.
    End,
    /// The buffer holds no complete next step.
    NeedMore,
}

impl Chunked {
    /// Decodes the next step from the start of `buf`, taking what it used out of it.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Failure> {
        loop {
            match self.phase {
                Phase::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = line[..]
                        .split(|&b| b == b';')
                        .next()
                        .map(<[u8]>::trim_ascii)
                        .and_then(parse_hex)
                        .ok_or(Failure::Malformed("invalid chunk size"))?;
                    self.phase = if size == 0 {
                        Phase::Trailers
                    } else {
                        Phase::Data(size)
                    };
                }
                Phase::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = buf
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let left = remaining - n as u64;
                    self.phase = if left == 0 {
                        Phase::DataEnd
                    } else {
                        Phase::Data(left)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Phase::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Failure::Malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    self.phase = Phase::Size;
                }
                Phase::Trailers => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// A chunk size: 1 to 16 hexadecimal digits.
fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = (d as char).to_digit(16)?;
        Some((n << 4) | u64::from(digit))
    })
}

/// Takes one CRLF-terminated line off the start of `buf`, without its CRLF; `None` while it
/// is incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Failure> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(0) => Err(Failure::Malformed("bare LF in chunked coding")),
        Some(end) if buf[end - 1] != b'\r' => Err(Failure::Malformed("bare LF in chunked coding")),
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(Failure::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// A header map of `fields`, in order (repeated names kept), for tests.
#[cfg(test)]
pub(crate) fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `body` in chunked coding, cut into chunks at `cuts`, with chunk extensions and a
    /// trailer field as a sender may add them.
    fn chunked(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        ends.push(body.len());
        ends.sort_unstable();
        for end in ends {
            if end > start {
                out.extend_from_slice(format!("{:X};ext=1\r\n", end - start).as_bytes());
                out.extend_from_slice(&body[start..end]);
                out.extend_from_slice(b"\r\n");
                start = end;
            }
        }
        out.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
        out
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_to_the_body_whatever_the_reads(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            reads in proptest::collection::vec(1usize..700, 1..40),
        ) {
            let wire = chunked(&body, &cuts);
            let mut decoder = Chunked::default();
            let mut buf = BytesMut::new();
            let mut fed = 0;
            let mut reads = reads.into_iter().cycle();
            let mut decoded = Vec::new();
            loop {
                match decoder.decode(&mut buf).expect("valid coding") {
                    Decoded::Data(data) => decoded.extend_from_slice(&data),
                    Decoded::End => break,
                    Decoded::NeedMore => {
                        prop_assert!(fed < wire.len(), "asked for more after the end");
                        let n = reads.next().unwrap_or(1).min(wire.len() - fed);
                        buf.extend_from_slice(&wire[fed..fed + n]);
                        fed += n;
                    }
                }
            }
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(fed + buf.len(), wire.len());
            prop_assert!(buf.is_empty(), "nothing after the body is taken");
        }
    }

    fn decode_all(wire: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut decoder = Chunked::default();
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => out.extend_from_slice(&data),
                Decoded::End => return Ok(out),
                Decoded::NeedMore => return Err(Failure::Closed),
            }
        }
    }

    #[test]
    fn broken_chunked_coding_is_refused() {
        assert_eq!(decode_all(b"3\r\nabc\r\n0\r\n\r\n").expect("valid"), b"abc");
        for wire in [
            &b"g\r\nabc\r\n0\r\n\r\n"[..],
            b"\r\nabc\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
        ] {
            assert!(
                matches!(decode_all(wire), Err(Failure::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = vec![b'1'; MAX_LINE_BYTES + 1];
        assert!(matches!(decode_all(&long), Err(Failure::Malformed(_))));
    }

    #[test]
    fn a_head_is_parsed_once_complete_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\nx-a: 2"[..]);
        assert!(parse_head(&mut buf).expect("partial").is_none());
        buf.extend_from_slice(b"\r\n\r\nhello");
        let head = parse_head(&mut buf).expect("valid").expect("complete");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&buf[..], b"hello");
        let mut bad = BytesMut::from(&b"HTTP/1.1 999999 Nope\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
        let mut bad = BytesMut::from(&b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"[..]);
        assert!(parse_head(&mut bad).is_err());
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(parse_head(&mut BytesMut::from(&many[..])).is_err());
    }

    #[test]
    fn response_bodies_are_framed_as_rfc_9112_says() {
        let ok = StatusCode::OK;
        let framing = |method: Method, status, fields| {
            response_framing(&method, status, &headers(fields)).map(|(framing, _)| framing)
        };
        assert_eq!(
            framing(Method::HEAD, ok, &[("content-length", "9")]).expect("ok"),
            ResponseFraming::Length(0)
        );
        assert_eq!(
            framing(Method::GET, StatusCode::NO_CONTENT, &[]).expect("ok"),
            ResponseFraming::Length(0)
        );
        assert_eq!(
            framing(Method::GET, StatusCode::NOT_MODIFIED, &[]).expect("ok"),
            ResponseFraming::Length(0)
        );
        assert_eq!(
            framing(Method::GET, ok, &[("content-length", "9")]).expect("ok"),
            ResponseFraming::Length(9)
        );
        assert_eq!(
            framing(Method::GET, ok, &[("content-length", "9, 9")]).expect("ok"),
            ResponseFraming::Length(9)
        );
        assert_eq!(
            framing(
                Method::GET,
                ok,
                &[
                    ("transfer-encoding", "gzip, chunked"),
                    ("content-length", "9")
                ]
            )
            .expect("ok"),
            ResponseFraming::Chunked
        );
        assert_eq!(
            framing(Method::GET, ok, &[("transfer-encoding", "gzip")]).expect("ok"),
            ResponseFraming::Close
        );
        assert_eq!(
            framing(Method::GET, ok, &[]).expect("ok"),
            ResponseFraming::Close
        );
        let closes = |fields| {
            response_framing(&Method::GET, ok, &headers(fields))
                .expect("ok")
                .1
        };
        assert!(closes(&[("connection", "keep-alive, Close")]));
        assert!(!closes(&[
            ("connection", "keep-alive"),
            ("content-length", "1")
        ]));
        for bad in ["9, 8", "-1", "", "1e3", "0x10"] {
            let mut map = HeaderMap::new();
            map.append("content-length", HeaderValue::from_static(bad));
            assert!(response_framing(&Method::GET, ok, &map).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_heads_name_the_host_and_frame_the_body() {
        let head = |method: Method, fields: &[(&'static str, &'static str)], framing| {
            let mut request = http::Request::builder().method(method).uri("/api/x?y=1");
            for (name, value) in fields {
                request = request.header(*name, *value);
            }
            let (parts, ()) = request.body(()).expect("request").into_parts();
            let mut out = Vec::new();
            encode_head(
                &mut out,
                &parts,
                &[],
                &HeaderValue::from_static("10.0.0.1:80"),
                framing,
            );
            String::from_utf8(out).expect("text")
        };
        assert_eq!(
            head(
                Method::GET,
                &[("host", "outside"), ("accept", "*/*")],
                BodyFraming::None
            ),
            "GET /api/x?y=1 HTTP/1.1\r\nhost: 10.0.0.1:80\r\naccept: */*\r\n\r\n"
        );
        assert!(head(Method::POST, &[], BodyFraming::None).ends_with("content-length: 0\r\n\r\n"));
        assert!(head(Method::POST, &[], BodyFraming::Chunked)
            .ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert!(
            head(Method::PUT, &[("content-length", "3")], BodyFraming::Length)
                .ends_with("content-length: 3\r\n\r\n")
        );
        let mut chunk = Vec::new();
        encode_chunk(&mut chunk, b"hello", BodyFraming::Chunked);
        encode_end(&mut chunk, BodyFraming::Chunked);
        assert_eq!(chunk, b"5\r\nhello\r\n0\r\n\r\n");
    }
}
