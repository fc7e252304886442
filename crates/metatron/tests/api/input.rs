//! Bad input answers 4xx JSON and writes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, ADMIN};

async fn user_count(app: &TestApp, token: &str) -> usize {
    let (_, list) = app
        .call(Method::GET, "/api/auth/users?limit=500", Some(token), None)
        .await;
    list["items"].as_array().expect("items").len()
}

async fn raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    let mut req = app
        .client
        .post(format!("{}{path}", app.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let body: serde_json::Value = res.json().await.expect("every error is JSON");
    (status, body)
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_write_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    let before = user_count(&app, &admin).await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            b"{\"email\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "application/json",
            b"[1,2,3]".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"email":"a@demo.com","role":"user"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"email":7,"password":"password123","role":"user"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"email":"a@demo.com","password":"password123","role":"owner"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"email":"a@demo.com","password":"password123","role":"user","is_admin":true}"#
                .to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"email":"not-an-email","password":"password123","role":"user"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "application/json",
            br#"{"email":"a@demo.com","password":"short","role":"user"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "text/plain",
            br#"{"email":"a@demo.com","password":"password123","role":"user"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!(
                r#"{{"email":"a@demo.com","password":"password123","role":"user","name":"{}"}}"#,
                "x".repeat(2 << 20)
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (content_type, body, status, code) in cases {
        let (got, body) = raw(&app, "/api/auth/users", Some(&admin), content_type, body).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    assert_eq!(
        user_count(&app, &admin).await,
        before,
        "nothing was written"
    );
}

#[tokio::test]
async fn bad_login_input_is_a_client_error() {
    let app = TestApp::spawn().await;
    for body in [
        json!({}),
        json!({ "username": "test" }),
        json!({ "username": 1, "password": "x" }),
        json!({ "username": "", "password": "x" }),
        json!({ "username": "a@b.co", "password": "x".repeat(2000) }),
    ] {
        let (status, body) = app
            .call(Method::POST, "/api/auth/login", None, Some(body))
            .await;
        assert!(
            status.is_client_error() && status != StatusCode::UNAUTHORIZED,
            "{status} {body}"
        );
    }
    let (status, _) = raw(
        &app,
        "/api/auth/login",
        None,
        "application/json",
        b"{{{{".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_paths_queries_and_methods_are_json_errors() {
    let app = TestApp::spawn().await;
    let admin = app.token(ADMIN).await;
    for (method, path, status) in [
        (
            Method::GET,
            "/api/auth/users/not-a-uuid",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/auth/users?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/auth/users?limit=abc",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/auth/users?cursor=%%%",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/auth/users?role=owner",
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/api/nowhere", StatusCode::NOT_FOUND),
        (
            Method::PUT,
            "/api/auth/login",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let (got, body) = app.call(method, path, Some(&admin), None).await;
        assert_eq!(got, status, "{path}: {body}");
    }
}
