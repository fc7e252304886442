//! Every login path.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{within, TestApp, ADMIN, SUPERADMIN, USER};

#[tokio::test]
async fn each_demo_role_logs_in_and_sees_itself() {
    let app = TestApp::spawn().await;
    for (who, role, tenant) in [
        (SUPERADMIN, "superadmin", None),
        (ADMIN, "admin", Some("demo")),
        (USER, "user", Some("demo")),
    ] {
        let (status, body) = app.login_as(who, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        assert!(body["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 43));
        assert_eq!(body["user"]["role"], role);
        let token = body["access_token"].as_str().expect("token");
        let (status, me) = app
            .call(Method::GET, "/api/auth/me", Some(token), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["role"], role);
        assert_eq!(me["tenant_slug"].as_str(), tenant);
        assert_eq!(me["id"], body["user"]["id"]);
    }
}

#[tokio::test]
async fn tenant_may_be_named_and_is_checked() {
    let app = TestApp::spawn().await;
    let (status, body) = app.login_as(USER, Some("demo")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.login_as(USER, Some("no-such-tenant")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_credentials");
}

#[tokio::test]
async fn same_email_in_two_tenants_needs_the_tenant() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    app.create_tenant(&root, "acme").await;
    app.create_user(&root, Some("acme"), "pat@shared.io", "user")
        .await;
    app.create_user(&root, Some("demo"), "pat@shared.io", "admin")
        .await;
    let pat = ("pat@shared.io", "password123");

    let (status, body) = app.login_as(pat, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "tenant_required");
    let (status, body) = app.login_as(pat, Some("acme")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["tenant_slug"], "acme");
    assert_eq!(body["user"]["role"], "user");
    let (status, body) = app.login_as(pat, Some("demo")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "admin");
    // A wrong password never reveals that the address exists in several tenants.
    let (status, _) = app
        .login_as(("pat@shared.io", "wrong-password"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = TestApp::spawn().await;
    let (s1, b1) = app.login_as((USER.0, "nope-nope"), None).await;
    let (s2, b2) = app.login_as(("nobody@demo.com", "nope-nope"), None).await;
    let (s3, b3) = app.login_as(("root", "nope-nope"), None).await;
    let (s4, b4) = app.login_as((SUPERADMIN.0, "nope-nope"), None).await;
    for (s, b) in [(s1, &b1), (s2, &b2), (s3, &b3), (s4, &b4)] {
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(b["error"]["code"], "invalid_credentials");
        assert_eq!(b["error"]["message"], b1["error"]["message"]);
    }
}

#[tokio::test]
async fn disabled_user_cannot_log_in_and_loses_sessions() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    let user_token = app.token(USER).await;
    let (_, me) = app
        .call(Method::GET, "/api/auth/me", Some(&user_token), None)
        .await;
    let id = me["id"].as_str().expect("id");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/auth/users/{id}"),
            Some(&admin),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&user_token), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the disabled user's token stops working at once"
    );
    let (status, body) = app.login_as(USER, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "account_disabled");
}

#[tokio::test]
async fn suspended_tenant_cannot_log_in_and_its_sessions_end() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let user_token = app.token(USER).await;
    let (_, tenant) = app
        .call(Method::GET, "/api/cdx/tenants/demo", Some(&root), None)
        .await;
    let id = tenant["id"].as_str().expect("tenant id");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/cdx/tenants/{id}"),
            Some(&root),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suspended");

    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&user_token), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "suspension revokes sessions at once"
    );
    let (status, body) = app.login_as(USER, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "tenant_suspended");

    // Its data is read-only in every service, even for the superadmin; reads still work.
    let demo = [("x-tenant", "demo")];
    let (status, body) = app
        .call_with(
            Method::POST,
            "/api/crm/customers",
            Some(&root),
            Some(json!({ "first_name": "Frozen", "last_name": "Out" })),
            &demo,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "tenant_suspended");
    let (status, body) = app
        .call_with(Method::GET, "/api/crm/customers", Some(&root), None, &demo)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/cdx/tenants/{id}"),
            Some(&root),
            Some(json!({ "status": "active" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.login_as(USER, None).await;
    assert_eq!(status, StatusCode::OK, "resumed tenant logs in again");
    let (status, body) = app
        .call_with(
            Method::POST,
            "/api/crm/customers",
            Some(&root),
            Some(json!({ "first_name": "Thawed", "last_name": "In" })),
            &demo,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn throttling_locks_an_account_with_retry_after() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        let (status, _) = app.login_as((USER.0, "wrong-pass"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let res = app
        .client
        .post(format!("{}/api/auth/login", app.base))
        .json(&json!({ "username": USER.0, "password": USER.1 }))
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry), "{retry}");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // Another account is not affected.
    let (status, _) = app.login_as(ADMIN, None).await;
    assert_eq!(status, StatusCode::OK);
    // The refused attempt is audited, without extending the lockout.
    let root = app.token(crate::common::SUPERADMIN).await;
    let throttled = within(std::time::Duration::from_secs(10), || async {
        let (_, page) = app
            .call(
                Method::GET,
                "/api/cdx/audit?action=auth.login.failed&limit=500",
                Some(&root),
                None,
            )
            .await;
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["detail"]["reason"] == "throttled")
            .then_some(())
    })
    .await;
    assert!(
        throttled.is_some(),
        "a throttled attempt leaves an audit entry"
    );
    let (failures,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM login_attempts WHERE succeeded = 0")
            .fetch_one(
                app.app()
                    .services
                    .iter()
                    .find(|s| s.info.name == "auth")
                    .expect("auth")
                    .db
                    .reader(),
            )
            .await
            .expect("count");
    assert_eq!(
        failures, 5,
        "only real password checks count towards the lockout"
    );
}

#[tokio::test]
async fn hashes_are_upgraded_when_parameters_change() {
    let app = TestApp::spawn().await;
    let (dbs, mut settings) = app.stop().await;
    settings.password.memory_kib = 2048;
    let app = TestApp::spawn_on(dbs, settings).await;
    let (status, _) = app.login_as(USER, None).await;
    assert_eq!(status, StatusCode::OK);
    let db = &app
        .app()
        .services
        .iter()
        .find(|s| s.info.name == "auth")
        .expect("auth")
        .db;
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'john.doe@demo.com'")
            .fetch_one(db.reader())
            .await
            .expect("hash");
    assert!(
        hash.contains("m=2048"),
        "re-hashed with the new parameters: {hash}"
    );
    let (status, _) = app.login_as(USER, None).await;
    assert_eq!(status, StatusCode::OK, "the new hash verifies");
}

#[tokio::test]
async fn a_successful_login_resets_the_account_failures() {
    let app = TestApp::spawn().await;
    for round in 0..2 {
        for _ in 0..4 {
            assert_eq!(
                app.login_as((USER.0, "wrong-pass"), None).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        let (status, body) = app.login_as(USER, None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "round {round}: four failures do not lock: {body}"
        );
    }
    for _ in 0..5 {
        app.login_as((USER.0, "wrong-pass"), None).await;
    }
    assert_eq!(
        app.login_as(USER, None).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "five in a row do"
    );
}
