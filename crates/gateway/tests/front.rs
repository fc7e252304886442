//! The gateway's server side, spoken byte by byte as clients may: pipelined requests, a
//! request with a body in the middle of a kept-alive connection (where hyper takes the
//! connection over), HTTP/1.0, `Connection: close`, `HEAD`, an upload refused halfway, and
//! a request that arrives while the gateway stops.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Reads `n` answers (to `head` requests where `heads[i]`) from `stream`; bodies framed by
/// `Content-Length` or chunked.
async fn read_answers(stream: &mut TcpStream, heads: &[bool]) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    for &head_only in heads {
        loop {
            if let Some((answer, used)) = parse_answer(&buf, head_only) {
                buf.drain(..used);
                answers.push(answer);
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(n > 0, "the connection closed early; got {answers:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    assert!(buf.is_empty(), "nothing more than the answers");
    answers
}

/// A complete answer at the start of `buf`, and its length in bytes.
fn parse_answer(buf: &[u8], head_only: bool) -> Option<(Answer, usize)> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let httparse::Status::Complete(head) = response.parse(buf).expect("a valid answer") else {
        return None;
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut answer = Answer {
        status: response.code.expect("status"),
        headers,
        body: Vec::new(),
    };
    if head_only {
        return Some((answer, head));
    }
    if let Some(length) = answer.header("content-length") {
        let length: usize = length.parse().expect("length");
        let body = buf.get(head..head + length)?;
        answer.body = body.to_vec();
        return Some((answer, head + length));
    }
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    let mut at = head;
    loop {
        let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&buf[at..line_end]).ok()?, 16).ok()?;
        let data = line_end + 2;
        buf.get(data..data + size + 2)?;
        answer.body.extend_from_slice(&buf[data..data + size]);
        at = data + size + 2;
        if size == 0 {
            return Some((answer, at));
        }
    }
}

/// A new connection to `gw` on which `requests` were written.
async fn send(gw: &Running, requests: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream.write_all(requests).await.expect("write");
    stream
}

/// Everything `stream` still delivers until the gateway closes it (within 5 s).
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("closed in time")
        .expect("read");
    raw
}

#[tokio::test]
async fn pipelined_requests_and_a_body_midway_are_answered_in_order_on_one_connection() {
    let (a, state) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;
    // Two GETs in one write, then a POST with a body (hyper's from here on), then a GET.
    let mut stream = send(
        &gw,
        b"GET /api/a/one HTTP/1.1\r\nhost: t\r\nx-request-id: first-1\r\n\r\n\
          GET /api/a/two?q=2 HTTP/1.1\r\nhost: t\r\n\r\n\
          POST /api/a/count HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello\
          GET /api/a/four HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    let answers = read_answers(&mut stream, &[false; 4]).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(answers[0].json()["uri"], "/api/a/one");
    assert_eq!(answers[0].header("x-request-id"), Some("first-1"));
    assert_eq!(answers[0].json()["headers"]["x-forwarded-host"], "t");
    assert!(answers[0].header("date").is_some());
    // Hop-by-hop fields of the upstream's answer stay behind.
    assert_eq!(answers[0].header("proxy-authenticate"), None);
    assert_eq!(answers[1].json()["uri"], "/api/a/two?q=2");
    assert_eq!(answers[2].json()["bytes"], 5);
    assert_eq!(answers[3].json()["uri"], "/api/a/four");
    let ids: std::collections::HashSet<_> = answers
        .iter()
        .filter_map(|a| a.header("x-request-id"))
        .collect();
    assert_eq!(ids.len(), 4, "every answer has its own request id");
    assert_eq!(state.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test]
async fn head_close_and_http10_requests_are_answered_as_asked() {
    let (a, _) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;

    // HEAD: the head of the GET's answer, no body; the connection stays usable.
    let mut stream = send(
        &gw,
        b"HEAD /api/a/x HTTP/1.1\r\nhost: t\r\n\r\nGET /api/a/y HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await;
    let answers = read_answers(&mut stream, &[true, false]).await;
    assert_eq!(answers[0].status, 200);
    assert!(answers[0].body.is_empty());
    assert_eq!(answers[1].json()["uri"], "/api/a/y");

    // `Connection: close`: answered, then closed.
    let mut stream = send(
        &gw,
        b"GET /api/a/x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await;
    let answers = read_answers(&mut stream, &[false]).await;
    assert_eq!(answers[0].header("connection"), Some("close"));
    assert!(
        read_until_closed(&mut stream).await.is_empty(),
        "closed after the answer"
    );

    // HTTP/1.0 (hyper's): answered and closed.
    let mut stream = send(&gw, b"GET /api/a/old HTTP/1.0\r\nhost: t\r\n\r\n").await;
    let raw = read_until_closed(&mut stream).await;
    let (answer, _) = parse_answer(&raw, false).expect("a whole answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["uri"], "/api/a/old");

    // A head that is not HTTP at all gets hyper's 400, not a hang.
    let raw = read_until_closed(&mut send(&gw, b"NOT HTTP\r\n\r\n").await).await;
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[tokio::test]
async fn a_refused_upload_is_read_off_so_the_client_gets_its_answer() {
    let (a, state) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.max_body_bytes = 1024;
    let gw = gateway(cfg).await;
    // The gateway answers 413 at the head and closes; the client, unaware, sends the whole
    // 4 MiB body first (far more than socket buffers hold). Closed without reading it off,
    // the socket would reset: the write fails and the answer is lost.
    let body = vec![b'x'; 4 * 1024 * 1024];
    let mut stream = send(
        &gw,
        format!(
            "POST /api/a/count HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), stream.write_all(&body))
        .await
        .expect("the body is taken in time")
        .expect("the body is taken, not reset");
    let raw = read_until_closed(&mut stream).await;
    let (answer, _) = parse_answer(&raw, false).expect("a whole answer");
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["code"], "body_too_large");
    assert_eq!(state.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_request_read_while_the_gateway_stops_is_still_answered() {
    let (a, _) = upstream("a").await;
    // The hand-over to hyper used to race the stop signal; a few rounds catch a race.
    for _ in 0..8 {
        let gw = gateway(config(&[("a", vec![url(a)])])).await;
        // Half a head (with a body to come: hyper's request), then the stop, then the rest.
        let mut stream = send(&gw, b"POST /api/a/count HTTP/1.1\r\nhost: t\r\ncontent-le").await;
        // Time for the gateway's new threads to take the connection and read the half head
        // (a connection still waiting to be taken is closed by the stop, rightly).
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = gw.stop.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        stream
            .write_all(b"ngth: 5\r\n\r\nhello")
            .await
            .expect("write");
        let raw = read_until_closed(&mut stream).await;
        let (answer, _) = parse_answer(&raw, false).expect("a whole answer");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["bytes"], 5);
        stopped(gw.done).await;
    }
}

#[tokio::test]
async fn idle_slow_and_stalled_clients_are_timed_out() {
    let (a, state) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.client_idle_timeout_ms = 300;
    cfg.client_header_timeout_ms = 300;
    cfg.client_send_timeout_ms = 300;
    let gw = gateway(cfg).await;

    // Idle after an answer: closed once the idle time is up, not before.
    for first in [
        &b"GET /api/a/x HTTP/1.1\r\nhost: t\r\n\r\n"[..],
        // A request with a body: hyper serves the connection from there on.
        &b"POST /api/a/count HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi"[..],
    ] {
        let mut stream = send(&gw, first).await;
        let answered = std::time::Instant::now();
        assert_eq!(read_answers(&mut stream, &[false]).await[0].status, 200);
        assert!(read_until_closed(&mut stream).await.is_empty());
        let idle = answered.elapsed();
        assert!(
            idle >= Duration::from_millis(250) && idle < Duration::from_secs(3),
            "{idle:?}"
        );
    }

    // The same for HTTP/2, whose client stack answers the gateway's pings by itself: a
    // connection with no request in flight is closed (GOAWAY) once the time is up.
    {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        let tcp = TcpStream::connect(gw.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(tcp))
                .await
                .expect("handshake");
        let connection = tokio::spawn(connection);
        let request = http::Request::get(format!("{}/api/a/x", gw.base))
            .body(http_body_util::Empty::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("answer");
        assert_eq!(response.status(), 200);
        let answered = std::time::Instant::now();
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
        tokio::time::timeout(Duration::from_secs(5), connection)
            .await
            .expect("the gateway closed the idle HTTP/2 connection")
            .expect("join")
            .expect("closed cleanly (GOAWAY)");
        let idle = answered.elapsed();
        assert!(idle >= Duration::from_millis(250), "{idle:?}");
    }

    // A download the client does not read: given up once the socket buffers are full and
    // nothing more went out for the send timeout (the upstream connection goes with it),
    // on the gateway's own loop and on a connection hyper serves.
    for opening in [
        &b""[..],
        &b"POST /api/a/count HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi"[..],
    ] {
        let request = [opening, b"GET /api/a/download HTTP/1.1\r\nhost: t\r\n\r\n"].concat();
        let mut stream = send(&gw, &request).await;
        state.go_on.notify_one();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let got = read_until_closed(&mut stream).await.len();
        assert!(
            got < 64 * 1024 * 1024,
            "the whole download went out: {got} bytes"
        );
    }

    // Half a head, then nothing: 408, then closed.
    let mut stream = send(&gw, b"GET /api/a/x HTTP/1.1\r\nhost:").await;
    let raw = read_until_closed(&mut stream).await;
    let (answer, _) = parse_answer(&raw, false).expect("a whole answer");
    assert_eq!(answer.status, 408);
    assert_eq!(answer.json()["error"]["code"], "request_head_timeout");
}
