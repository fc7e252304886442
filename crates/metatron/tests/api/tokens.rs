//! Access and refresh tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, SUPERADMIN, USER};

async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.call(Method::GET, "/api/auth/me", Some(token), None)
        .await
        .0
}

async fn sessions_status(app: &TestApp, token: &str) -> StatusCode {
    app.call(Method::GET, "/api/auth/sessions", Some(token), None)
        .await
        .0
}

#[tokio::test]
async fn forged_tampered_unsigned_and_foreign_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token(USER).await;
    assert_eq!(me_status(&app, &token).await, StatusCode::OK);

    let parts: Vec<&str> = token.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("utf8");
    let elevated =
        URL_SAFE_NO_PAD.encode(payload.replace("\"role\":\"user\"", "\"role\":\"admin\""));
    let tampered = format!("{}.{elevated}.{}", parts[0], parts[2]);
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{none_header}.{}.", parts[1]);
    let hs_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let wrong_alg = format!("{hs_header}.{}.{}", parts[1], parts[2]);

    let key = platform::token::generate_key().expect("key");
    let foreign =
        platform::token::Signer::new(&key.kid, &key.private_pkcs8, "metatron", "metatron")
            .expect("signer")
            .issue("someone", None, "superadmin", "s", 600)
            .expect("token")
            .0;
    for bad in [
        tampered.as_str(),
        unsigned.as_str(),
        wrong_alg.as_str(),
        foreign.as_str(),
        "garbage",
        "",
    ] {
        let (status, body) = app.call(Method::GET, "/api/auth/me", Some(bad), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
    }
    let (status, _) = app.call(Method::GET, "/api/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    // `exp` has whole-second resolution: a 3 s lifetime leaves at least 2 s for the first
    // check, and 3.2 s later the token is past its expiry whatever the rounding.
    let app = TestApp::spawn_with(|s| s.auth.access_token_ttl_secs = 3).await;
    let token = app.token(USER).await;
    assert_eq!(me_status(&app, &token).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let (status, body) = app
        .call(Method::GET, "/api/auth/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let app = TestApp::spawn().await;
    let (_, login) = app.login_as(USER, None).await;
    let first = login["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    let (status, next) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": first })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let second = next["refresh_token"].as_str().expect("refresh").to_string();
    let access = next["access_token"].as_str().expect("access").to_string();
    assert_ne!(first, second);
    assert_eq!(me_status(&app, &access).await, StatusCode::OK);

    // The rotated token comes back: treat it as stolen and end the whole session.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": first })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        me_status(&app, &access).await,
        StatusCode::UNAUTHORIZED,
        "the session's access token dies too"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": second })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the latest refresh token died with the session"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": "made-up" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_kills_the_access_token_at_once_and_only_that_session() {
    let app = TestApp::spawn().await;
    let (_, a) = app.login_as(USER, None).await;
    let other = app.token(USER).await;
    let token = a["access_token"].as_str().expect("token");
    assert_eq!(me_status(&app, token).await, StatusCode::OK);
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, token).await, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/refresh",
            None,
            Some(json!({ "refresh_token": a["refresh_token"] })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refresh token ends with the session"
    );
    assert_eq!(
        me_status(&app, &other).await,
        StatusCode::OK,
        "the other session lives"
    );
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let app = TestApp::spawn().await;
    let token = app.token(USER).await;
    app.call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    let (dbs, settings) = app.stop().await;
    let app = TestApp::spawn_on(dbs, settings).await;
    assert_eq!(me_status(&app, &token).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_deleted_tenants_tokens_stay_refused_after_a_restart() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    app.create_tenant(&root, "short-lived").await;
    app.create_user(
        &root,
        Some("short-lived"),
        "ann@short-lived.example",
        "user",
    )
    .await;
    let (status, login) = app
        .login_as(
            ("ann@short-lived.example", "password123"),
            Some("short-lived"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["access_token"].as_str().expect("token").to_string();
    // Listing one's sessions needs nothing but an unrevoked token, so only the revocation
    // can refuse it once the tenant's users and sessions are gone.
    assert_eq!(sessions_status(&app, &token).await, StatusCode::OK);

    app.delete_tenant(&root, "short-lived", std::time::Duration::from_secs(30))
        .await;
    assert_eq!(
        sessions_status(&app, &token).await,
        StatusCode::UNAUTHORIZED
    );
    let (dbs, settings) = app.stop().await;
    let app = TestApp::spawn_on(dbs, settings).await;
    assert_eq!(
        sessions_status(&app, &token).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn password_change_needs_the_current_one_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let mine = app.token(USER).await;
    let elsewhere = app.token(USER).await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(json!({ "current_password": "wrong-one", "new_password": "brand-new-pw" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(json!({ "current_password": USER.1, "new_password": "short" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(json!({ "current_password": USER.1, "new_password": "brand-new-pw" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(me_status(&app, &mine).await, StatusCode::OK);
    assert_eq!(me_status(&app, &elsewhere).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.login_as(USER, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login_as((USER.0, "brand-new-pw"), None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn sessions_are_listed_and_revocable_by_their_owner() {
    let app = TestApp::spawn().await;
    let mine = app.token(USER).await;
    let _second = app.token(USER).await;
    let (status, list) = app
        .call(Method::GET, "/api/auth/sessions", Some(&mine), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let other = items
        .iter()
        .find(|s| s["current"] == false)
        .expect("the other session");
    let path = format!("/api/auth/sessions/{}", other["id"].as_str().expect("id"));
    let admin = app.token(crate::common::ADMIN).await;
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&admin), None).await.0,
        StatusCode::NOT_FOUND,
        "not the admin's session"
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&mine), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, list) = app
        .call(Method::GET, "/api/auth/sessions", Some(&mine), None)
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 1);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let (status, jwks) = app
        .call(Method::GET, "/api/auth/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");

    let user = app.token(USER).await;
    assert_eq!(
        app.call(Method::POST, "/api/auth/keys/rotate", Some(&user), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, rotated) = app
        .call(Method::POST, "/api/auth/keys/rotate", Some(&root), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (_, jwks) = app
        .call(Method::GET, "/api/auth/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 2);
    assert_eq!(
        me_status(&app, &user).await,
        StatusCode::OK,
        "tokens of the old key still work"
    );
    let fresh = app.token(USER).await;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["kid"], rotated["kid"], "new tokens use the new key");
    assert_eq!(me_status(&app, &fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn superadmins_change_their_password_through_cdx() {
    let app = TestApp::spawn().await;
    let mine = app.token(SUPERADMIN).await;
    let elsewhere = app.token(SUPERADMIN).await;
    let change =
        |current: &str, new: &str| json!({ "current_password": current, "new_password": new });
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(change("wrong-one", "brand-new-pw")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(change(SUPERADMIN.1, "short")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&mine),
            Some(change(SUPERADMIN.1, "brand-new-pw")),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(me_status(&app, &mine).await, StatusCode::OK);
    assert_eq!(me_status(&app, &elsewhere).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login_as(SUPERADMIN, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login_as((SUPERADMIN.0, "brand-new-pw"), None).await.0,
        StatusCode::OK
    );
}
