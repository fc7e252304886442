//! The all-in-one platform with the NATS JetStream transport (the server on 127.0.0.1:4222,
//! which `.ci/run` starts): events flow through NATS, and the same consumers apply them.

use platform::events::nats::{Nats, Transport};
use reqwest::{Method, StatusCode};

use crate::common::{within, TestApp, SUPERADMIN};

#[tokio::test]
async fn a_tenant_created_in_cdx_reaches_auth_through_nats() {
    // Own streams and consumer for this test, so parallel runs do not interfere.
    let prefix = format!("mtest{}", platform::ids::new_id().replace('-', ""));
    let app = TestApp::spawn_with(|s| {
        s.events.transport = Transport::Nats;
        s.events.prefix = prefix.clone();
        s.events.poll_ms = 100;
    })
    .await;
    // The demo data was seeded across services through NATS already.
    let root = app.token(SUPERADMIN).await;
    app.create_tenant(&root, "natsco").await;
    let user = app
        .create_user(&root, Some("natsco"), "first@natsco.com", "admin")
        .await;
    assert_eq!(user["email"], "first@natsco.com");
    let (status, body) = app
        .login_as(("first@natsco.com", "password123"), Some("natsco"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // CDX's audit consumer got auth's event through NATS too.
    let audited = within(std::time::Duration::from_secs(10), || async {
        let (status, page) = app
            .call(
                Method::GET,
                "/api/cdx/audit?action=auth.user.created",
                Some(&root),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        items
            .iter()
            .any(|e| e["target"] == user["id"])
            .then_some(())
    })
    .await;
    assert!(audited.is_some(), "auth.user.created reached the audit log");

    let settings = app.settings.events.clone();
    app.stop().await;
    let nats = Nats::connect(&settings).await.expect("connect");
    // The events travelled through this test's streams.
    assert!(nats.stream_messages("cdx").await.expect("cdx stream") >= 2);
    assert!(nats.stream_messages("auth").await.expect("auth stream") >= 3);
    for service in ["cdx", "auth", "crm"] {
        nats.delete_stream(service).await.expect("cleanup");
    }
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_nats_is_down_and_flow_when_it_is_back() {
    let prefix = format!("mtest{}", platform::ids::new_id().replace('-', ""));
    let app = TestApp::spawn_with(|s| {
        s.events.transport = Transport::Nats;
        s.events.prefix = prefix.clone();
        s.events.poll_ms = 100;
    })
    .await;
    let root = app.token(SUPERADMIN).await;
    let (dbs, settings) = app.stop().await;

    // NATS unreachable: the platform still starts, and writes still succeed.
    let mut down = settings.clone();
    down.events.nats_url = "nats://127.0.0.1:1".into();
    // Publishing gives up quickly while the server is away (with the server up, a loaded
    // machine needs the default: the demo seeding waits for its events to be applied).
    down.events.request_timeout_ms = 300;
    let app = TestApp::spawn_on_without_demo(dbs, down).await;
    let (status, client) = app
        .call(
            Method::POST,
            "/api/cdx/clients",
            Some(&root),
            Some(serde_json::json!({"name": "Written while NATS was down"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    let (dbs, down) = app.stop().await;
    // Starting again while NATS is still down, with that event pending, works too.
    let app = TestApp::spawn_on_without_demo(dbs, down).await;
    let (status, _) = app.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (dbs, _) = app.stop().await;

    // NATS back: the waiting event reaches the audit log.
    let app = TestApp::spawn_on(dbs, settings.clone()).await;
    let audited = within(std::time::Duration::from_secs(15), || async {
        let (status, page) = app
            .call(
                Method::GET,
                "/api/cdx/audit?action=cdx.client.created",
                Some(&root),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| e["target"] == client["id"]))
            .then_some(())
    })
    .await;
    assert!(
        audited.is_some(),
        "the event written while NATS was down was delivered"
    );
    app.stop().await;
    let nats = Nats::connect(&settings.events).await.expect("connect");
    for service in ["cdx", "auth", "crm"] {
        nats.delete_stream(service).await.expect("cleanup");
    }
}
