//! Bodies stream through the gateway in both directions, and shutdown drains requests.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper::body::Frame;

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_64_mib_upload_streams_to_the_upstream() {
    let (a, state) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.route_max_body_bytes
        .insert("/api/a/count".into(), 128 * MIB as u64);
    let gw = gateway(cfg).await;

    // The client sends the first chunk, then waits until the upstream has received it
    // before sending the rest: a gateway that buffered the body would deadlock here.
    let (tx, response) = streamed_post(format!("{}/api/a/count", gw.base));
    let chunk = Bytes::from(vec![1u8; MIB]);
    tx.send(Ok(Frame::data(chunk.clone()))).await.expect("send");
    tokio::time::timeout(Duration::from_secs(10), state.first_chunk.notified())
        .await
        .expect("the upstream received the first chunk before the body was complete");
    for _ in 1..64 {
        tx.send(Ok(Frame::data(chunk.clone()))).await.expect("send");
    }
    drop(tx);
    let response = response.await.expect("join").expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["bytes"], 64 * MIB as u64);
    assert_eq!(state.counted.load(Ordering::SeqCst), 64 * MIB as u64);
}

#[tokio::test]
async fn an_over_limit_chunked_upload_answers_413() {
    let (a, _) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.max_body_bytes = MIB as u64;
    let gw = gateway(cfg).await;
    let (tx, response) = streamed_post(format!("{}/api/a/count", gw.base));
    for _ in 0..4 {
        let chunk = Frame::data(Bytes::from(vec![1u8; MIB / 2]));
        if tx.send(Ok(chunk)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let response = response.await.expect("join").expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_64_mib_download_streams_to_the_client() {
    let (a, state) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;
    let mut response = client()
        .get(format!("{}/api/a/download", gw.base))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    // The upstream holds the rest back until the first chunk has reached the client.
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("first chunk arrives before the upstream finished")
        .expect("chunk")
        .expect("data");
    let mut total = first.len();
    state.go_on.notify_one();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        total += chunk.len();
    }
    assert_eq!(total, 64 * MIB);
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (a, state) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;
    let slow = tokio::spawn(client().get(format!("{}/api/a/slow", gw.base)).send());
    // In flight: the upstream has it (and takes 3 s to answer).
    let arrived = async {
        while state.hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), arrived)
        .await
        .expect("the request reaches the upstream");
    let _ = gw.stop.send(());
    let response = slow.await.expect("join").expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("text"), "late");
    stopped(gw.done).await;
    // Every event loop closed its side of the listener: nothing accepts any more.
    let addr = gw.base.trim_start_matches("http://").to_string();
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
}

#[tokio::test]
async fn protocol_upgrades_pass_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, _) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /api/a/upgrade HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "connection closed: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in [&b"hello"[..], b"through the gateway"] {
        stream.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(echoed, message);
    }
}
