//! A tenant's lifecycle end to end: the events its suspension and deletion make the services
//! record leave at once.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{within, TestApp, SUPERADMIN, USER};

#[tokio::test]
async fn events_recorded_on_suspension_and_deletion_leave_without_waiting_for_the_poll() {
    // Relays poll once a minute: whatever arrives sooner was delivered because its commit
    // woke the relay.
    let app = TestApp::spawn_with(|settings| settings.events.poll_ms = 60_000).await;
    let root = app.token(SUPERADMIN).await;
    app.token(USER).await;
    let (_, demo) = app
        .call(Method::GET, "/api/cdx/tenants/demo", Some(&root), None)
        .await;
    let tenant = demo["id"].as_str().expect("tenant id").to_string();

    let (status, body) = app
        .call(
            Method::PATCH,
            "/api/cdx/tenants/demo",
            Some(&root),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = format!("/api/cdx/audit?action=auth.session.revoked&tenant={tenant}");
    let audited = within(Duration::from_secs(2), || async {
        let (_, audit) = app.call(Method::GET, &revoked, Some(&root), None).await;
        audit["items"]
            .as_array()
            .filter(|items| !items.is_empty())
            .cloned()
    })
    .await;
    assert!(
        audited.is_some(),
        "auth's revocations of the suspended tenant's sessions are not audited within 2 s"
    );

    // Every service's purge report (auth's and the CRM's events) arrives within 2 s.
    let report = app
        .delete_tenant(&root, "demo", Duration::from_secs(2))
        .await;
    assert_eq!(
        report["services"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
}
