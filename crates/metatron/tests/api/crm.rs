//! The CRM inside the whole platform: demo data, owners that are real auth users, tenant
//! scope from real tokens, suspension, and CRM changes in CDX's audit trail.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestApp, ADMIN, SUPERADMIN, USER};

async fn get(app: &TestApp, token: &str, path: &str, tenant: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = tenant.map(|t| vec![("x-tenant", t)]).unwrap_or_default();
    let (status, body) = app
        .call_with(Method::GET, path, Some(token), None, &headers)
        .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn demo_tenant_has_customers_a_company_and_an_open_deal() {
    let app = TestApp::spawn().await;
    let user = app.token(USER).await;
    let customers = get(&app, &user, "/api/crm/customers", None).await;
    let items = customers["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{customers}");
    assert!(items
        .iter()
        .all(|c| c["company_name"] == "Acme Corporation"));
    let deals = get(&app, &user, "/api/crm/deals", None).await;
    assert_eq!(deals["items"].as_array().expect("items").len(), 1);
    assert_eq!(deals["items"][0]["status"], "open");
    let companies = get(&app, &user, "/api/crm/companies", None).await;
    assert_eq!(companies["items"].as_array().expect("items").len(), 1);

    // Seeding again changes nothing.
    metatron::commands::seed_demo(app.app())
        .await
        .expect("seed again");
    let again = get(&app, &user, "/api/crm/customers", None).await;
    assert_eq!(again["items"].as_array().expect("items").len(), 2);

    // The superadmin sees the same through X-Tenant.
    let root = app.token(SUPERADMIN).await;
    let seen = get(&app, &root, "/api/crm/customers", Some("demo")).await;
    assert_eq!(seen["items"], customers["items"]);
}

#[tokio::test]
async fn owners_are_users_of_the_tenant_as_soon_as_auth_created_them() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    let root = app.token(SUPERADMIN).await;
    let colleague = app
        .create_user(&admin, None, "colleague@demo.com", "user")
        .await;
    let colleague_id = colleague["id"].as_str().expect("id");
    let (status, customer) = app
        .call(
            Method::POST,
            "/api/crm/customers",
            Some(&admin),
            Some(json!({ "first_name": "Owned", "owner_id": colleague_id })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{customer}");
    assert_eq!(customer["owner_id"], colleague_id);

    // A user of another tenant is no owner here.
    app.create_tenant(&root, "other").await;
    let stranger = app
        .create_user(&root, Some("other"), "stranger@other.com", "admin")
        .await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/crm/customers",
            Some(&admin),
            Some(json!({ "first_name": "Nope", "owner_id": stranger["id"] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Once deleted in auth, the colleague can no longer be assigned.
    let path = format!("/api/auth/users/{colleague_id}");
    let (status, _) = app.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/crm/customers",
            Some(&admin),
            Some(json!({ "first_name": "Late", "owner_id": colleague_id })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn crm_changes_reach_the_audit_trail_without_personal_data() {
    let app = TestApp::spawn().await;
    let user = app.token(USER).await;
    let root = app.token(SUPERADMIN).await;
    let (status, customer) = app
        .call(
            Method::POST,
            "/api/crm/customers",
            Some(&user),
            Some(json!({ "first_name": "Audited", "email": "audited@example.com" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{customer}");
    app.app().flush_events().await.expect("flush");
    let audit = get(
        &app,
        &root,
        "/api/cdx/audit?action=crm.customer.created",
        None,
    )
    .await;
    let entries = audit["items"].as_array().expect("items");
    let entry = entries
        .iter()
        .find(|e| e["target"] == customer["id"])
        .unwrap_or_else(|| panic!("no audit entry for the customer in {audit}"));
    assert_eq!(entry["actor"]["role"], "user");
    assert!(!entry.to_string().contains("audited@example.com"));
}

#[tokio::test]
async fn crm_needs_a_token_and_a_tenant() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .call(Method::GET, "/api/crm/customers", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let root = app.token(SUPERADMIN).await;
    let (status, _) = app
        .call(Method::GET, "/api/crm/customers", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
