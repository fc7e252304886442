//! The gateway over real sockets, in front of fake upstreams.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use platform::token::{generate_key, Signer};
use serde_json::json;

#[tokio::test]
async fn routes_by_service_and_rewrites_headers() {
    let (a, _) = upstream("a").await;
    let (b, _) = upstream("b").await;
    let gw = gateway(config(&[("a", vec![url(a)]), ("b", vec![url(b)])])).await;
    let http = client();

    let (status, headers, body) = json(
        http.get(format!("{}/api/a/things?x=1", gw.base))
            .header("x-service-token", "forged")
            .header("x-metatron-caller", "superadmin")
            .header("connection", "x-custom")
            .header("x-custom", "secret")
            .header("x-request-id", "abc-123")
            .header("x-forwarded-for", "10.0.0.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "spoofed.example")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["upstream"], "a");
    assert_eq!(body["uri"], "/api/a/things?x=1");
    let seen = &body["headers"];
    assert!(seen.get("x-service-token").is_none(), "{seen}");
    assert!(seen.get("x-metatron-caller").is_none(), "{seen}");
    assert!(
        seen.get("x-custom").is_none(),
        "connection-named header: {seen}"
    );
    assert_eq!(seen["x-request-id"], "abc-123");
    assert_eq!(seen["x-forwarded-for"], "10.0.0.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(seen["x-forwarded-host"]
        .as_str()
        .is_some_and(|h| h.starts_with("127.0.0.1:")));
    assert_eq!(headers["x-request-id"], "abc-123");
    assert!(!headers.contains_key("proxy-authenticate"), "{headers:?}");

    // No (or an invalid) request id: the gateway makes one and passes it on.
    let (_, headers, body) = json(
        http.post(format!("{}/api/b/x", gw.base))
            .header("x-request-id", "bad id <>")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(body["upstream"], "b");
    let id = headers["x-request-id"].to_str().expect("id");
    assert_ne!(id, "bad id <>");
    assert_eq!(body["headers"]["x-request-id"], id);

    let (status, _, body) = get_json(&http, format!("{}/api/nope/x", gw.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_service");
    let (status, _, body) = get_json(&http, format!("{}/elsewhere", gw.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn one_client_connection_keeps_one_upstream_connection() {
    let (a, state) = upstream("a").await;
    let gw = gateway(config(&[("a", vec![url(a)])])).await;
    let http = client();
    // Bodies of every kind end their exchange: JSON with a length, none (HEAD), uploads,
    // and a 404 from the upstream.
    for i in 0..30 {
        let url = format!("{}/api/a/x{i}", gw.base);
        let response = match i % 3 {
            0 => http.get(&url).send().await,
            1 => http.head(&url).send().await,
            _ => http.post(&url).body(vec![b'y'; 10_000]).send().await,
        }
        .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        response.bytes().await.expect("body");
    }
    let (status, _, _) = get_json(&http, format!("{}/api/a/count", gw.base)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, body) = get_json(&http, format!("{}/api/a/x", gw.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(state.hits.load(Ordering::SeqCst), 31);
    assert_eq!(
        state.connections.load(Ordering::SeqCst),
        1,
        "every exchange reused the kept-alive upstream connection"
    );
}

/// An upstream that answers one request per connection, keeping it alive, and closes it
/// `linger` later (an upstream's own idle timeout); counts its connections.
async fn closes_idle_connections(linger: Duration) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_request_head(&mut stream).await {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                tokio::time::sleep(linger).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    let (addr, connections) = closes_idle_connections(Duration::from_millis(50)).await;
    let gw = gateway(config(&[("a", vec![url(addr)])])).await;
    let http = client();
    for _ in 0..3 {
        // POST is not retried by the gateway: it must go out on a live connection.
        let response = http
            .post(format!("{}/api/a/x", gw.base))
            .body("hi")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.expect("body"), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn dead_or_unreachable_upstream_answers_503_within_the_connect_timeout() {
    let dead = dead_port().await;
    let (hole, _listener, _held) = blackhole().await;
    let mut cfg = config(&[
        ("refusing", vec![format!("http://127.0.0.1:{dead}")]),
        ("blackhole", vec![url(hole)]),
    ]);
    cfg.connect_timeout_ms = 400;
    let gw = gateway(cfg).await;
    let http = client();
    for service in ["refusing", "blackhole"] {
        let started = Instant::now();
        let (status, _, body) = get_json(&http, format!("{}/api/{service}/x", gw.base)).await;
        let elapsed = started.elapsed();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{service}: {body}");
        assert_eq!(body["error"]["code"], "upstream_unavailable");
        // Far below the 5 s request timeout, with room for a loaded machine.
        assert!(
            elapsed < Duration::from_millis(2_000),
            "{service} took {elapsed:?}"
        );
        if service == "blackhole" {
            assert!(
                elapsed >= Duration::from_millis(350),
                "the connect hung until the timeout: {elapsed:?}"
            );
        }
    }
}

#[tokio::test]
async fn slow_upstream_answers_504_at_the_request_timeout() {
    let (a, _) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.request_timeout_ms = 2_000;
    cfg.route_timeouts_ms.insert("/api/a/slow".into(), 300);
    let gw = gateway(cfg).await;
    // One kept-alive connection, whose timer each request re-arms: a timeout, a quick
    // answer after it, and a timeout again, each in its own time.
    let http = client();
    for (path, expected) in [
        ("slow", StatusCode::GATEWAY_TIMEOUT),
        ("x", StatusCode::OK),
        ("slow", StatusCode::GATEWAY_TIMEOUT),
    ] {
        let started = Instant::now();
        let (status, _, body) = get_json(&http, format!("{}/api/a/{path}", gw.base)).await;
        let elapsed = started.elapsed();
        assert_eq!(status, expected, "{body}");
        if expected == StatusCode::OK {
            // (A timer left over from the slow request would have cut it off: a 504.)
            assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
            continue;
        }
        assert_eq!(body["error"]["code"], "upstream_timeout");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(1_500),
            "{elapsed:?}"
        );
    }
}

#[tokio::test]
async fn get_is_retried_on_another_replica_after_connection_refused_but_post_is_not() {
    let dead = dead_port().await;
    let (live, state) = upstream("live").await;
    let mut cfg = config(&[("a", vec![format!("http://127.0.0.1:{dead}"), url(live)])]);
    cfg.circuit_failure_threshold = 1_000;
    let gw = gateway(cfg).await;
    let http = client();
    for _ in 0..6 {
        let (status, _, body) = get_json(&http, format!("{}/api/a/x", gw.base)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["upstream"], "live");
    }
    let mut refused = 0;
    for _ in 0..6 {
        let (status, _, body) = json(
            http.post(format!("{}/api/a/x", gw.base))
                .send()
                .await
                .expect("send"),
        )
        .await;
        match status {
            StatusCode::OK => assert_eq!(body["upstream"], "live"),
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        refused, 3,
        "round-robin sends every other POST to the dead replica"
    );
    assert_eq!(state.posts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn circuit_opens_after_failures_and_closes_when_the_upstream_recovers() {
    let (a, state) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.circuit_failure_threshold = 3;
    // Long enough that the checks made while it is open finish within it on a loaded machine.
    cfg.circuit_open_ms = 1500;
    let gw = gateway(cfg).await;
    let http = client();
    let get = || async {
        let response = http
            .get(format!("{}/api/a/flaky", gw.base))
            .send()
            .await
            .expect("send");
        json(response).await
    };
    state.failing.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get().await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(state.hits.load(Ordering::SeqCst), 3);
    let (status, _, body) = get().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "upstream_unavailable", "{body}");
    assert_eq!(
        state.hits.load(Ordering::SeqCst),
        3,
        "the open circuit spares the upstream"
    );
    let (status, _, body) = get_json(&http, format!("{}/health", gw.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["services"]["a"]["upstreams"][0]["circuit"], "open");

    // Still failing after the cool-down: the probe re-opens the circuit.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get().await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(state.hits.load(Ordering::SeqCst), 4);
    assert_eq!(get().await.2["error"]["code"], "upstream_unavailable");
    assert_eq!(state.hits.load(Ordering::SeqCst), 4);

    // Recovered: the next probe closes it.
    state.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    for _ in 0..3 {
        assert_eq!(get().await.0, StatusCode::OK);
    }
    assert_eq!(state.hits.load(Ordering::SeqCst), 7);
    let (status, _, body) = get_json(&http, format!("{}/health", gw.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["services"]["a"]["upstreams"][0]["circuit"], "closed");
}

#[tokio::test]
async fn health_lists_every_service_and_fails_when_one_is_down() {
    let (a, _) = upstream("a").await;
    let (b, b_state) = upstream("b").await;
    let gw = gateway(config(&[("a", vec![url(a)]), ("b", vec![url(b)])])).await;
    let http = client();
    let (status, _, body) = get_json(&http, format!("{}/health", gw.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["services"]["a"]["ready"], true);
    assert_eq!(body["services"]["b"]["ready"], true);
    b_state.unready.store(true, Ordering::SeqCst);
    let (status, _, body) = get_json(&http, format!("{}/health", gw.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["services"]["b"]["ready"], false);
    assert_eq!(body["services"]["a"]["ready"], true);
    // An upstream that failed its health check gets no traffic.
    let (status, _, body) = get_json(&http, format!("{}/api/b/x", gw.base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    b_state.unready.store(false, Ordering::SeqCst);
    let (status, _, _) = get_json(&http, format!("{}/health", gw.base)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get_json(&http, format!("{}/api/openapi.json", gw.base)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["openapi"], "3.1.0");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let (a, _) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)]), ("auth", vec![url(a)])]);
    cfg.rate_limit_per_ip = gateway::RateLimit {
        per_second: 0.5,
        burst: 2,
    };
    let gw = gateway(cfg).await;
    let http = client();
    for _ in 0..2 {
        let (status, _, _) = get_json(&http, format!("{}/api/a/x", gw.base)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, body) = get_json(&http, format!("{}/api/a/x", gw.base)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("secs");
    assert!((1..=2).contains(&retry), "{retry}");
}

#[tokio::test]
async fn per_tenant_rate_limit_counts_verified_tokens() {
    let (a, state) = upstream("a").await;
    let key = generate_key().expect("key");
    *state.jwks.write().expect("lock") = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": key.kid, "x": key.public_x}]});
    let signer = Signer::new(&key.kid, &key.private_pkcs8, "metatron", "metatron").expect("signer");
    let mut cfg = config(&[("a", vec![url(a)]), ("auth", vec![url(a)])]);
    cfg.rate_limit_per_tenant = gateway::RateLimit {
        per_second: 0.5,
        burst: 1,
    };
    let gw = gateway(cfg).await;
    let http = client();
    let (t1, _) = signer
        .issue("u1", Some("t1"), "user", "s1", 60)
        .expect("token");
    let (t2, _) = signer
        .issue("u2", Some("t2"), "user", "s2", 60)
        .expect("token");
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/a/x", gw.base);
        async move { json(http.get(url).bearer_auth(token).send().await.expect("send")).await }
    };
    assert_eq!(call(t1.clone()).await.0, StatusCode::OK);
    let (status, headers, _) = call(t1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        call(t2).await.0,
        StatusCode::OK,
        "another tenant is not limited"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upstream_and_new_keys_are_fetched() {
    let (auth, auth_state) = upstream("auth").await;
    let (a, state) = upstream("a").await;
    let key = generate_key().expect("key");
    let jwk = |k: &platform::token::GeneratedKey| json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": k.kid, "x": k.public_x});
    *auth_state.jwks.write().expect("lock") = json!({ "keys": [jwk(&key)] });
    let signer = Signer::new(&key.kid, &key.private_pkcs8, "metatron", "metatron").expect("signer");
    let gw = gateway(config(&[("a", vec![url(a)]), ("auth", vec![url(auth)])])).await;
    let http = client();
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/a/x", gw.base);
        async move { json(http.get(url).bearer_auth(token).send().await.expect("send")).await }
    };

    let (good, _) = signer
        .issue("u1", Some("t1"), "user", "s1", 60)
        .expect("token");
    let (status, _, body) = call(good.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["headers"]["authorization"], format!("Bearer {good}"));
    assert_eq!(state.hits.load(Ordering::SeqCst), 1);

    let (expired, _) = signer
        .issue("u1", Some("t1"), "user", "s1", -10)
        .expect("token");
    let other = generate_key().expect("key");
    let (foreign, _) = Signer::new(&other.kid, &other.private_pkcs8, "metatron", "metatron")
        .expect("signer")
        .issue("u1", Some("t1"), "user", "s1", 60)
        .expect("token");
    for bad in [
        "garbage".to_string(),
        format!("{good}x"),
        expired,
        foreign.clone(),
    ] {
        let (status, _, body) = call(bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert_eq!(
        state.hits.load(Ordering::SeqCst),
        1,
        "no bad token reached the upstream"
    );

    // Auth rotates in a new key: the unknown kid triggers a refresh.
    *auth_state.jwks.write().expect("lock") = json!({ "keys": [jwk(&key), jwk(&other)] });
    assert_eq!(call(foreign).await.0, StatusCode::OK);
    assert_eq!(call(good).await.0, StatusCode::OK);

    // Without a token the request passes (the service decides).
    let (status, _, _) = get_json(&http, format!("{}/api/a/login", gw.base)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_the_limit_answer_413() {
    let (a, state) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.max_body_bytes = 1_000;
    cfg.route_max_body_bytes
        .insert("/api/a/import".into(), 10_000);
    let gw = gateway(cfg).await;
    let http = client();
    let post = |path: &str, size: usize| {
        http.post(format!("{}{path}", gw.base))
            .body(vec![b'x'; size])
            .send()
    };
    let (status, _, body) = json(post("/api/a/x", 1_001).await.expect("send")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "body_too_large");
    assert_eq!(
        json(post("/api/a/import", 5_000).await.expect("send"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(state.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cors_follows_the_configured_origins() {
    let (a, _) = upstream("a").await;
    let mut cfg = config(&[("a", vec![url(a)])]);
    cfg.cors_allowed_origins = vec!["https://app.example".into()];
    let gw = gateway(cfg).await;
    let http = client();
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/api/a/x", gw.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("send");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let response = http
        .get(format!("{}/api/a/x", gw.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let foreign = http
        .get(format!("{}/api/a/x", gw.base))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    assert!(!foreign
        .headers()
        .contains_key("access-control-allow-origin"));
}
