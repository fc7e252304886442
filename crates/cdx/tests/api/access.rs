//! Who gets in, and what bad input gets back.

use platform::ids::new_id;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn only_the_superadmin_gets_in() {
    let app = spawn_app().await;
    let routes = [
        (Method::GET, "/api/cdx/clients"),
        (Method::POST, "/api/cdx/clients"),
        (Method::GET, "/api/cdx/clients/x"),
        (Method::PATCH, "/api/cdx/clients/x"),
        (Method::GET, "/api/cdx/tenants"),
        (Method::POST, "/api/cdx/tenants"),
        (Method::GET, "/api/cdx/tenants/x"),
        (Method::PATCH, "/api/cdx/tenants/x"),
        (Method::GET, "/api/cdx/services"),
        (Method::GET, "/api/cdx/audit"),
    ];
    let user = app.tenant_token("user");
    let admin = app.tenant_token("admin");
    let body = Some(r#"{"name":"Sneaky","slug":"sneaky","client_id":"x"}"#);
    for (method, path) in routes {
        let none = app.send(method.clone(), path, None, body, &[]).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(none.body["error"]["code"], "unauthorized");
        let junk = app
            .send(method.clone(), path, Some("junk"), body, &[])
            .await;
        assert_eq!(junk.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        for token in [&user, &admin] {
            let reply = app.send(method.clone(), path, Some(token), body, &[]).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
            assert_eq!(reply.body["error"]["code"], "forbidden");
        }
    }
    assert_eq!(app.count("clients").await, 0);
    assert_eq!(app.count("tenants").await, 0);
}

#[tokio::test]
async fn bad_input_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    app.delivered().await;
    let audit_before = app.count("audit_log").await;
    let cases = [
        (
            "/api/cdx/clients",
            r#"{"name": "Acme""#,
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/api/cdx/clients",
            r#"{"name": "Acme", "extra": 1}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/cdx/clients",
            r#"{"name": 7}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/cdx/clients",
            r#"{"name": "Acme"}"#,
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "/api/cdx/tenants",
            r#"{"slug": "x-y", "name": "X""#,
            "application/json",
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/api/cdx/tenants",
            r#"{"slug": "xy", "name": "X", "client_id": "c", "status": "active"}"#,
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (path, body, content_type, status, code) in cases {
        let headers = [("content-type", content_type)];
        let reply = app
            .send(Method::POST, path, Some(&app.token), Some(body), &headers)
            .await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], code, "{body}");
    }
    let unknown_query = app.get("/api/cdx/clients?nmae=x").await;
    assert_eq!(unknown_query.status, StatusCode::BAD_REQUEST);
    let bad_if_match = app
        .patch(
            &format!("/api/cdx/clients/{}", new_id()),
            json!({}),
            Some("yesterday"),
        )
        .await;
    assert_eq!(bad_if_match.status, StatusCode::BAD_REQUEST);
    let no_route = app.get("/api/cdx/nothing").await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_eq!(no_route.body["error"]["code"], "not_found");

    app.delivered().await;
    assert_eq!(app.count("clients").await, 0);
    assert_eq!(app.count("tenants").await, 0);
    assert_eq!(
        app.count("audit_log").await,
        audit_before,
        "no events either"
    );
}
