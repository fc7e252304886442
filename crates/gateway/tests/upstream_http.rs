//! The gateway's HTTP/1.1 client against upstreams that answer byte by byte as scripted:
//! the framings and answers an origin server may send, and the broken ones it must not pass
//! on as if they were fine.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use common::*;
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;

/// An upstream that reads each request's head, writes `answer` and closes the connection
/// (after `linger`, without reading anything more).
async fn scripted(answer: &'static [u8], linger: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_request_head(&mut stream).await && stream.write_all(answer).await.is_ok() {
                    tokio::time::sleep(linger).await;
                }
            });
        }
    });
    addr
}

/// A gateway in front of a [`scripted`] upstream.
async fn gateway_to(answer: &'static [u8], linger: Duration) -> Running {
    let addr = scripted(answer, linger).await;
    gateway(config(&[("a", vec![url(addr)])])).await
}

/// What a client gets through a gateway in front of a [`scripted`] upstream for a `GET`, or
/// a small `POST` (which the gateway never sends twice): the status and the whole body, or
/// the error where the transfer broke off (before or after the head).
async fn through(
    answer: &'static [u8],
    linger: Duration,
    post: bool,
) -> Result<(StatusCode, Bytes), reqwest::Error> {
    let gw = gateway_to(answer, linger).await;
    let url = format!("{}/api/a/x", gw.base);
    let request = if post {
        client().post(url).body("{}")
    } else {
        client().get(url)
    };
    let response = request.send().await?;
    let status = response.status();
    Ok((status, response.bytes().await?))
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_is_passed_on_whole() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nthe whole answer";
    let (status, body) = through(answer, Duration::ZERO, false)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "the whole answer");
}

#[tokio::test]
async fn informational_answers_before_the_final_one_are_skipped() {
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok";
    let (status, body) = through(answer, Duration::from_secs(1), true)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn chunked_answers_are_decoded_and_their_trailers_dropped() {
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 1\r\n\r\n";
    let (status, body) = through(answer, Duration::from_secs(1), false)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "hello, world");
}

#[tokio::test]
async fn malformed_answers_are_a_502_never_passed_on() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: twelve\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"SMTP ready\r\n\r\n",
    ] {
        let (status, body) = through(answer, Duration::ZERO, true).await.expect("answer");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
        let case = String::from_utf8_lossy(answer);
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{case}");
        assert_eq!(body["error"]["code"], "bad_gateway", "{case}");
    }
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_is_cut_short_for_the_client() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it";
    assert!(
        through(answer, Duration::ZERO, false).await.is_err(),
        "a body shorter than its length must not look complete"
    );
}

#[tokio::test]
async fn an_early_refusal_reaches_the_client_while_it_is_still_uploading() {
    let answer =
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
    let gw = gateway_to(answer, Duration::from_secs(5)).await;
    // The upload never ends: only an answer given before the body is complete can arrive.
    let (tx, response) = streamed_post(format!("{}/api/a/upload", gw.base));
    tx.send(Ok(Frame::data(Bytes::from(vec![1u8; 64 * 1024]))))
        .await
        .expect("send");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("the refusal arrived during the upload")
        .expect("join")
        .expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(tx);
}
