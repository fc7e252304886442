//! The tenant export document, assembled from the services' parts as they stream in.

use std::sync::Arc;
use std::time::Duration;

use platform::testing::{ChannelExport, ExportFeed};
use platform::ApiError;
use reqwest::{header, StatusCode};
use serde_json::Value;

use crate::common::{spawn_app, App};

/// Longer than anything here takes when it works; a failure rather than a hang otherwise.
const WAIT: Duration = Duration::from_secs(30);

/// An app with a tenant `acme` whose auth and CRM parts the test feeds.
async fn app_with_fed_exports() -> (App, ExportFeed, ExportFeed) {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    app.tenant("acme", client["id"].as_str().expect("id")).await;
    let (auth, auth_export) = ChannelExport::new();
    let (crm, crm_export) = ChannelExport::new();
    app.cdx.set_exporters(vec![
        ("auth".to_string(), Arc::new(auth_export)),
        ("crm".to_string(), Arc::new(crm_export)),
    ]);
    (app, auth, crm)
}

fn feed(feed: &ExportFeed, text: &'static str) {
    feed.send(Ok(text.into()))
        .expect("the export is being read");
}

/// Reads the body until what was received contains `needle` (failing, not hanging, when
/// it never comes); answers everything received so far.
async fn read_until(response: &mut reqwest::Response, received: &mut Vec<u8>, needle: &str) {
    let reading = async {
        while !String::from_utf8_lossy(received).contains(needle) {
            match response.chunk().await.expect("body") {
                Some(chunk) => received.extend_from_slice(&chunk),
                None => panic!("the body ended before {needle}"),
            }
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{needle} never arrived: {}",
                String::from_utf8_lossy(received)
            )
        });
}

/// Starts the export of `acme`: answers once the head has arrived (failing, not hanging,
/// when it never does).
async fn start_export(app: &App) -> reqwest::Response {
    let request = app
        .http
        .get(format!("{}/api/cdx/tenants/acme/export", app.base))
        .bearer_auth(&app.token)
        .send();
    tokio::time::timeout(WAIT, request)
        .await
        .expect("the answer starts before the export is complete")
        .expect("export")
}

#[tokio::test]
async fn the_export_goes_out_as_the_services_produce_it() {
    let (app, auth, crm) = app_with_fed_exports().await;
    feed(&auth, "{\"users\":[{\"id\":\"u1\"}");
    let mut response = start_export(&app).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"tenant-acme.json\""
    );
    assert!(headers.get(header::CONTENT_LENGTH).is_none(), "{headers:?}");

    // The auth part is unfinished and the CRM's not begun: what has arrived was sent
    // before the document existed as a whole.
    let mut received = Vec::new();
    read_until(
        &mut response,
        &mut received,
        "\"auth\":{\"users\":[{\"id\":\"u1\"}",
    )
    .await;
    feed(&auth, ",{\"id\":\"u2\"}]}");
    drop(auth);
    feed(&crm, "{\"customers\":[]}");
    drop(crm);
    while let Some(chunk) = response.chunk().await.expect("body") {
        received.extend_from_slice(&chunk);
    }
    let document: Value = serde_json::from_slice(&received).expect("the whole document parses");
    assert_eq!(document["format"], "metatron-tenant-export/1");
    assert!(document["exported_at"].is_string(), "{document}");
    assert_eq!(document["tenant"]["slug"], "acme");
    let services = &document["services"];
    assert_eq!(services["cdx"]["tenant"], document["tenant"]);
    assert_eq!(services["auth"]["users"][1]["id"], "u2");
    assert_eq!(services["crm"]["customers"], serde_json::json!([]));

    // A service that cannot start its export (this one was taken) answers 503 before
    // anything is sent.
    let again = app.get("/api/cdx/tenants/acme/export").await;
    assert_eq!(
        again.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        again.body
    );
    assert_eq!(again.body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn an_export_failing_midway_aborts_the_transfer() {
    let (app, auth, crm) = app_with_fed_exports().await;
    feed(&auth, "{\"users\":[");
    let mut response = start_export(&app).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut received = Vec::new();
    read_until(&mut response, &mut received, "\"auth\":{\"users\":[").await;
    auth.send(Err(ApiError::unavailable("the database went away")))
        .expect("the export is being read");
    // The CRM part is ready, but nothing follows a failure.
    feed(&crm, "{\"customers\":[]}");
    drop(crm);
    let rest = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        rest.is_err(),
        "the transfer ended cleanly: {}",
        String::from_utf8_lossy(&received)
    );
    assert!(serde_json::from_slice::<Value>(&received).is_err());
    assert!(!String::from_utf8_lossy(&received).contains("crm"));

    // The export was audited when it started.
    app.delivered().await;
    let audit = app.get("/api/cdx/audit?action=cdx.tenant.exported").await;
    assert_eq!(
        audit.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        audit.body
    );
}
