//! The role matrix and tenant isolation.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, ADMIN, SUPERADMIN, USER};

#[tokio::test]
async fn users_cannot_manage_users() {
    let app = TestApp::spawn().await;
    let user = app.token(USER).await;
    let (status, body) = app
        .call(Method::GET, "/api/auth/users", Some(&user), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/users",
            Some(&user),
            Some(json!({ "email": "x@demo.com", "password": "password123", "role": "admin" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in [
        "/api/cdx/tenants",
        "/api/cdx/clients",
        "/api/cdx/audit",
        "/api/cdx/services",
    ] {
        assert_eq!(
            app.call(Method::GET, path, Some(&user), None).await.0,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
}

#[tokio::test]
async fn admins_manage_their_own_tenant() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    let created = app
        .create_user(&admin, None, "new.hire@demo.com", "user")
        .await;
    let id = created["id"].as_str().expect("id");
    assert_eq!(created["tenant_id"].as_str().map(str::len), Some(36));

    let (status, list) = app
        .call(
            Method::GET,
            "/api/auth/users?q=NEW.HIRE",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().expect("items").len(), 1);

    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/auth/users/{id}"),
            Some(&admin),
            Some(json!({ "role": "admin", "name": "New Hire" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "admin");
    assert_eq!(body["version"], 2);
    // A stale precondition is refused with the current version.
    let (status, body) = app
        .call_with(
            Method::PATCH,
            &format!("/api/auth/users/{id}"),
            Some(&admin),
            Some(json!({ "name": "Late" })),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["details"]["current_version"], 2);

    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/users",
            Some(&admin),
            Some(
                json!({ "email": "NEW.HIRE@demo.com", "password": "password123", "role": "user" }),
            ),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "emails are unique per tenant, case-insensitively"
    );

    let (_, me) = app
        .call(Method::GET, "/api/auth/me", Some(&admin), None)
        .await;
    let me_id = me["id"].as_str().expect("id");
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/auth/users/{me_id}"),
            Some(&admin),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an admin cannot lock themself out"
    );

    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/auth/users/{id}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(
            Method::GET,
            &format!("/api/auth/users/{id}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn admins_cannot_reach_another_tenant_even_by_id() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    app.create_tenant(&root, "rival").await;
    let outsider = app
        .create_user(&root, Some("rival"), "boss@rival.io", "admin")
        .await;
    let outsider_id = outsider["id"].as_str().expect("id");
    let admin = app.token(ADMIN).await;

    for method in [Method::GET, Method::DELETE] {
        let (status, _) = app
            .call(
                method,
                &format!("/api/auth/users/{outsider_id}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/auth/users/{outsider_id}"),
            Some(&admin),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call_with(
            Method::GET,
            "/api/auth/users",
            Some(&admin),
            None,
            &[("x-tenant", "rival")],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "X-Tenant is for the superadmin"
    );
    let (_, list) = app
        .call(Method::GET, "/api/auth/users?limit=500", Some(&admin), None)
        .await;
    assert!(list["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|u| u["email"] != "boss@rival.io"));
    // The outsider still works: nothing was changed.
    assert_eq!(
        app.login_as(("boss@rival.io", "password123"), None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn superadmin_acts_in_any_tenant_with_x_tenant() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let (status, body) = app
        .call(Method::GET, "/api/auth/users", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "tenant_required");
    let (status, list) = app
        .call_with(
            Method::GET,
            "/api/auth/users",
            Some(&root),
            None,
            &[("x-tenant", "demo")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
    let (status, _) = app
        .call_with(
            Method::GET,
            "/api/auth/users",
            Some(&root),
            None,
            &[("x-tenant", "ghost")],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_new_tenant_is_usable_as_soon_as_it_is_created() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let tenant_id = app.create_tenant(&root, "fresh").await;
    // No wait: the create call returns after auth has the tenant.
    let user = app
        .create_user(&root, Some(&tenant_id), "first@fresh.io", "admin")
        .await;
    assert_eq!(user["tenant_id"], tenant_id.as_str());
    let (status, body) = app
        .login_as(("first@fresh.io", "password123"), Some("fresh"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn paging_users_has_no_gaps_or_duplicates() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    for i in 0..7 {
        app.create_user(&admin, None, &format!("u{i}@demo.com"), "user")
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/auth/users?limit=3&cursor={c}"),
            None => "/api/auth/users?limit=3".to_string(),
        };
        let (status, page) = app.call(Method::GET, &path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for u in page["items"].as_array().expect("items") {
            seen.push(u["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 9);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, seen, "ordered, no duplicates");
}
