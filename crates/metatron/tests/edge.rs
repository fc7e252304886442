//! The all-in-one edge as a client meets it: the per-IP rate limit (the gateway's code,
//! `platform::limit`) and HTTP/2 with prior knowledge on the same port as HTTP/1.1.

use metatron::Settings;
use platform::limit::RateLimit;
use platform::password::HashParams;
use platform::testing::TestDatabases;
use reqwest::StatusCode;
use serde_json::Value;

fn settings(dbs: &TestDatabases) -> Settings {
    let mut settings = Settings {
        data_dir: dbs.data_dir(),
        password: HashParams {
            concurrency: 2,
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Settings::default()
    };
    settings.cdx.database.url = Some(dbs.url("cdx"));
    settings.auth.database.url = Some(dbs.url("auth"));
    settings.crm.database.url = Some(dbs.url("crm"));
    settings.database.max_connections = 4;
    settings
}

async fn start(settings: Settings) -> (metatron::commands::Running, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = metatron::commands::start(settings, false, listener)
        .await
        .expect("platform starts");
    let base = format!("http://{}", running.addr);
    (running, base)
}

async fn stop(running: metatron::commands::Running) {
    let _ = running.stop.send(true);
    let _ = running.done.await;
}

#[tokio::test]
async fn all_in_one_answers_429_with_retry_after_past_the_per_ip_limit() {
    let dbs = TestDatabases::new();
    let mut settings = settings(&dbs);
    settings.http.rate_limit_per_ip = RateLimit {
        per_second: 0.5,
        burst: 3,
    };
    let (running, base) = start(settings).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = client
        .get(format!("{base}/api/auth/.well-known/jwks.json"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    // One token at 0.5/s: 2 s after the last refill, less the time the requests took.
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    stop(running).await;
}

#[tokio::test]
async fn defaults_match_the_gateway_and_zero_switches_the_limit_off() {
    let defaults = Settings::default();
    assert_eq!(defaults.http.rate_limit_per_ip, RateLimit::PER_IP);
    assert_eq!(
        defaults.http.rate_limit_per_ip,
        defaults.gateway.rate_limit_per_ip
    );
    assert_eq!(
        defaults.http.rate_limit_per_tenant,
        defaults.gateway.rate_limit_per_tenant
    );

    let dbs = TestDatabases::new();
    let mut settings = settings(&dbs);
    settings.http.rate_limit_per_ip = RateLimit {
        per_second: 0.0,
        burst: 1,
    };
    let (running, base) = start(settings).await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
    }
    stop(running).await;
}

#[tokio::test]
async fn all_in_one_speaks_http2_with_prior_knowledge() {
    let dbs = TestDatabases::new();
    let (running, base) = start(settings(&dbs)).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let response = h2
        .get(format!("{base}/api/auth/.well-known/jwks.json"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert!(body["keys"].is_array(), "{body}");
    let response = reqwest::Client::new()
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), StatusCode::OK);
    stop(running).await;
}
