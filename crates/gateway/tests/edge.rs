//! Load balancing across real upstreams, and HTTP/2 (h2c) from clients.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use axum::Router;
use common::{config, gateway, url};
use gateway::Balance;
use reqwest::StatusCode;

/// An upstream that counts its requests and, when `held` is given, answers each only once
/// the sender says `true`: a slow upstream whose requests pile up in flight.
async fn counting(
    held: Option<tokio::sync::watch::Receiver<bool>>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = Router::new().route(
        "/api/{*rest}",
        any(move || {
            let hits = counter.clone();
            let held = held.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if let Some(mut held) = held {
                    let _ = held.wait_for(|released| *released).await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, hits)
}

/// Sends `n` requests one after the other, each once the previous one has reached an
/// upstream and, if that was the fast one, been answered (so each pick sees the in-flight
/// counts the earlier ones left: the slow upstream's requests are held until the end).
/// Returns how many reached the slow and the fast upstream.
async fn spread(balance: Balance, n: usize) -> (usize, usize) {
    let (release, held) = tokio::sync::watch::channel(false);
    let (slow, slow_hits) = counting(Some(held)).await;
    let (fast, fast_hits) = counting(None).await;
    let mut cfg = config(&[("svc", vec![url(slow), url(fast)])]);
    cfg.balance = balance;
    let gw = gateway(cfg).await;
    let client = common::client();
    let mut answers = Vec::new();
    for i in 1..=n {
        let fast_before = fast_hits.load(Ordering::SeqCst);
        let request = tokio::spawn(client.get(format!("{}/api/svc/work", gw.base)).send());
        let arrived = async {
            while slow_hits.load(Ordering::SeqCst) + fast_hits.load(Ordering::SeqCst) < i {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .expect("the request reaches an upstream");
        if fast_hits.load(Ordering::SeqCst) > fast_before {
            // A fast answer: once it is back, its upstream counts as idle again (the
            // gateway stops counting a request when the upstream's answer arrives).
            let response = tokio::time::timeout(Duration::from_secs(10), request)
                .await
                .expect("the fast upstream answers")
                .expect("task")
                .expect("answer");
            assert_eq!(response.status(), StatusCode::OK);
        } else {
            answers.push(request);
        }
    }
    let counts = (
        slow_hits.load(Ordering::SeqCst),
        fast_hits.load(Ordering::SeqCst),
    );
    release.send(true).expect("release");
    for answer in answers {
        let response = answer.await.expect("task").expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let _ = gw.stop.send(());
    counts
}

#[tokio::test]
async fn least_outstanding_sends_new_requests_away_from_a_slow_upstream() {
    let (slow, fast) = spread(Balance::LeastOutstanding, 20).await;
    // The first tie may go either way; once the slow upstream holds a request, every new
    // one goes to the idle upstream.
    assert_eq!(slow, 1, "slow {slow}, fast {fast}");
    assert_eq!(fast, 19);

    // Round-robin, the contrast: the slow upstream gets its turn regardless.
    let (slow, fast) = spread(Balance::RoundRobin, 20).await;
    assert_eq!((slow, fast), (10, 10));
}

#[tokio::test]
async fn the_gateway_speaks_http2_with_prior_knowledge() {
    let (addr, _) = common::upstream("a").await;
    let gw = gateway(config(&[("crm", vec![url(addr)])])).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for path in ["/health", "/api/crm/customers?x=1"] {
        let response = h2
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{path}");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        if path.starts_with("/api/") {
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["uri"], "/api/crm/customers?x=1");
            // The upstream still gets HTTP/1.1 with the client's host forwarded.
            assert_eq!(
                body["headers"]["x-forwarded-host"],
                gw.base.trim_start_matches("http://")
            );
        }
    }
    // HTTP/1.1 clients keep working on the same port.
    let response = common::client()
        .get(format!("{}/health", gw.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let _ = gw.stop.send(());
}
