//! The tenant export at scale: every row of a large tenant, streamed from the services.

use std::collections::BTreeSet;

use reqwest::{header, StatusCode};
use serde_json::Value;

use crate::common::{TestApp, ADMIN, SUPERADMIN};

/// Customers imported: forty pages of the export's reads, and over ten times its
/// page for the tags, whose key many rows share the first column of.
const CUSTOMERS: usize = 20_000;

#[tokio::test]
async fn a_large_tenant_exports_every_row() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    let mut csv = String::from("first_name,last_name,email,tags\n");
    for i in 0..CUSTOMERS {
        csv.push_str(&format!(
            "First{i},Last{i},c{i}@bulk.example,bulk;batch{}\n",
            i % 7
        ));
    }
    let imported = app
        .client
        .post(format!("{}/api/crm/customers/import", app.base))
        .bearer_auth(&admin)
        .header(header::CONTENT_TYPE, "text/csv")
        .body(csv)
        .send()
        .await
        .expect("import");
    assert_eq!(imported.status(), StatusCode::OK);
    let summary: Value = imported.json().await.expect("summary");
    assert_eq!(summary["created"], CUSTOMERS, "{summary}");

    let root = app.token(SUPERADMIN).await;
    let response = app
        .client
        .get(format!("{}/api/cdx/tenants/demo/export", app.base))
        .bearer_auth(&root)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    // Streamed: the length was not known when the answer started.
    assert!(
        response.headers().get(header::CONTENT_LENGTH).is_none(),
        "{:?}",
        response.headers()
    );
    let body = response.bytes().await.expect("the whole body arrives");
    let export: Value = serde_json::from_slice(&body).expect("the document parses");
    assert_eq!(export["format"], "metatron-tenant-export/1");
    let crm = &export["services"]["crm"];

    let customers = crm["customers"].as_array().expect("customers");
    let bulk: BTreeSet<&str> = customers
        .iter()
        .filter_map(|c| c["email"].as_str())
        .filter(|email| email.ends_with("@bulk.example"))
        .collect();
    // Every imported customer, once (the demo's own customers besides).
    assert_eq!(bulk.len(), CUSTOMERS);
    assert_eq!(customers.len(), CUSTOMERS + 2);
    let ids: BTreeSet<&str> = customers.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), customers.len(), "no customer twice");

    let tags = crm["customer_tags"].as_array().expect("customer tags");
    let tagged_bulk: BTreeSet<&str> = tags
        .iter()
        .filter(|t| t["tag"] == "bulk")
        .filter_map(|t| t["customer_id"].as_str())
        .collect();
    assert_eq!(tagged_bulk.len(), CUSTOMERS);
    let tagged_batch: usize = tags
        .iter()
        .filter(|t| {
            t["tag"]
                .as_str()
                .is_some_and(|tag| tag.starts_with("batch"))
        })
        .count();
    assert_eq!(tagged_batch, CUSTOMERS);
}
