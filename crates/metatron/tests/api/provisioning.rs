//! Tenant provisioning across services: a tenant created with its first admin's email gets
//! that admin in auth (activated with a one-time setup token) and its default pipeline in the
//! CRM, through events only.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{within, TestApp, SUPERADMIN};

pub(crate) async fn create_with_admin(
    app: &TestApp,
    root: &str,
    slug: &str,
    admin: &str,
) -> (StatusCode, Value) {
    let (_, clients) = app
        .call(Method::GET, "/api/cdx/clients", Some(root), None)
        .await;
    let client = clients["items"][0]["id"].clone();
    app.call(
        Method::POST,
        "/api/cdx/tenants",
        Some(root),
        Some(
            json!({"slug": slug, "name": "Provisioned", "client_id": client, "admin_email": admin}),
        ),
    )
    .await
}

#[tokio::test]
async fn a_tenant_created_with_an_admin_email_is_ready_in_every_service() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let (status, tenant) =
        create_with_admin(&app, &root, "provisioned", "Boss@Provisioned.example").await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert_eq!(tenant["slug"], "provisioned");
    let setup = &tenant["admin_setup"];
    assert_eq!(setup["email"], "boss@provisioned.example");
    assert_eq!(setup["set_password_path"], "/api/auth/setup-password");
    let token = setup["token"].as_str().expect("setup token").to_string();
    assert!(token.len() >= 40, "{token}");

    // The admin exists in auth, but nobody can log in before the password is set.
    let admin = ("boss@provisioned.example", "a-good-password");
    let (status, _) = app.login_as(admin, Some("provisioned")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, users) = app
        .call_with(
            Method::GET,
            "/api/auth/users",
            Some(&root),
            None,
            &[("x-tenant", "provisioned")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{users}");
    assert_eq!(users["items"][0]["email"], "boss@provisioned.example");
    assert_eq!(users["items"][0]["role"], "admin");

    // Bad input first: a wrong token, a weak password. Neither uses the token up.
    let set = |token: &str, password: &str| json!({"token": token, "password": password});
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(set("not-the-token", "a-good-password")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_setup_token");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(set(&token, "short")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The token sets the password once; the admin logs in and manages the tenant.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(set(&token, admin.1)),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(set(&token, "another-password")),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a used token is refused: {body}"
    );
    let (status, login) = app.login_as(admin, Some("provisioned")).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let boss = login["access_token"].as_str().expect("token").to_string();
    app.create_user(&boss, None, "staff@provisioned.example", "user")
        .await;

    // The CRM has the tenant's default pipeline without anyone asking for it.
    let (status, pipelines) = app
        .call(Method::GET, "/api/crm/pipelines", Some(&boss), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{pipelines}");
    assert_eq!(pipelines["items"][0]["name"], "Sales", "{pipelines}");

    // The audit trail has the provisioning, without the token.
    let (_, audit) = app
        .call(
            Method::GET,
            "/api/cdx/audit?action=auth.user.created",
            Some(&root),
            None,
        )
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("boss@provisioned.example")
            || text.contains(tenant["id"].as_str().expect("id")),
        "{text}"
    );
    assert!(!text.contains(&token));
}

#[tokio::test]
async fn a_bad_admin_email_creates_nothing() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let (status, body) = create_with_admin(&app, &root, "never", "not an email").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .call(Method::GET, "/api/cdx/tenants/never", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_tenant_purges_it_from_every_service() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let (status, tenant) = create_with_admin(&app, &root, "doomed", "boss@doomed.example").await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let id = tenant["id"].as_str().expect("id").to_string();
    let token = tenant["admin_setup"]["token"].as_str().expect("token");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(json!({"token": token, "password": "a-good-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let boss = ("boss@doomed.example", "a-good-password");
    let (_, login) = app.login_as(boss, Some("doomed")).await;
    let boss_token = login["access_token"].as_str().expect("token").to_string();
    let (status, _) = app
        .call(
            Method::POST,
            "/api/crm/customers",
            Some(&boss_token),
            Some(json!({"first_name": "Soon", "last_name": "Gone"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Without the right confirmation nothing happens.
    for query in ["", "?confirm=demo", "?confirm=DOOMED"] {
        let (status, body) = app
            .call(
                Method::DELETE,
                &format!("/api/cdx/tenants/doomed{query}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
    }
    let (status, _) = app
        .call(Method::GET, "/api/cdx/tenants/doomed", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    // Only the superadmin may delete.
    let (status, _) = app
        .call(
            Method::DELETE,
            "/api/cdx/tenants/doomed?confirm=doomed",
            Some(&boss_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let report = app
        .delete_tenant(&root, "doomed", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(report["tenant_id"], id.as_str());
    let services: Vec<&str> = report["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert_eq!(services, ["auth", "cdx", "crm"], "{report}");
    for step in report["services"].as_array().expect("services") {
        assert!(step["rows"].as_i64().unwrap_or(0) > 0, "{report}");
    }

    // Gone everywhere: the registry, the sessions, the users, the CRM's data.
    let (status, _) = app
        .call(Method::GET, "/api/cdx/tenants/doomed", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&boss_token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.login_as(boss, Some("doomed")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call_with(
            Method::GET,
            "/api/crm/customers",
            Some(&root),
            None,
            &[("x-tenant", id.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, overview) = app
        .call(Method::GET, "/api/cdx/overview", Some(&root), None)
        .await;
    assert_eq!(overview["tenants"]["total"], 1, "{overview}");
    assert_eq!(overview["totals"]["customers"], 2, "{overview}");

    // The slug is free again.
    let (status, body) = create_with_admin(&app, &root, "doomed", "next@doomed.example").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_tenant_exports_its_data_from_every_service_without_secrets() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let response = app
        .client
        .get(format!("{}/api/cdx/tenants/demo/export", app.base))
        .bearer_auth(&root)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), StatusCode::OK);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .expect("header")
        .to_string();
    assert_eq!(disposition, "attachment; filename=\"tenant-demo.json\"");
    let text = response.text().await.expect("body");
    let export: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(export["format"], "metatron-tenant-export/1");
    assert_eq!(export["tenant"]["slug"], "demo");
    let services = &export["services"];
    assert_eq!(services["cdx"]["tenant"]["slug"], "demo");
    let emails: Vec<&str> = services["auth"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert!(emails.contains(&"jane.smith@demo.com"), "{emails:?}");
    assert_eq!(
        services["crm"]["customers"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(services["crm"]["companies"][0]["name"], "Acme Corporation");
    assert_eq!(services["crm"]["deals"][0]["value"], 1_200_000);
    // Nothing secret leaves a service.
    assert!(!text.contains("password"), "{text}");
    assert!(!text.contains("$argon2"), "{text}");

    // Only the superadmin exports, and the export is audited.
    let admin = app.token(crate::common::ADMIN).await;
    let (status, _) = app
        .call(
            Method::GET,
            "/api/cdx/tenants/demo/export",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::GET,
            "/api/cdx/tenants/nope/export",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let audited = within(std::time::Duration::from_secs(10), || async {
        let (_, audit) = app
            .call(
                Method::GET,
                "/api/cdx/audit?action=cdx.tenant.exported",
                Some(&root),
                None,
            )
            .await;
        audit["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
            .then_some(())
    })
    .await;
    assert!(audited.is_some());
}
