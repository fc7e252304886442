//! Login, refresh, logout, the caller's own account and sessions, and signing keys.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{extract::State, Router};
use platform::caller::{Caller, RequestMeta, Superadmin};
use platform::http::{Json, Path};
use platform::ids::Timestamp;
use platform::ApiError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{Auth, LoginRequest, Principal, TokenResponse};

pub fn router() -> Router<Auth> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/me", get(me))
        .route("/api/auth/password", post(change_password))
        .route("/api/auth/setup-password", post(setup_password))
        .route("/api/auth/sessions", get(sessions))
        .route("/api/auth/sessions/{id}", delete(end_session))
        .route("/api/auth/.well-known/jwks.json", get(jwks))
        .route("/api/auth/keys/rotate", post(rotate_keys))
}

/// Log in as a superadmin (user name) or a tenant user (email).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "wrong credentials"),
              (status = 403, description = "disabled account or suspended tenant"),
              (status = 409, description = "email in several tenants: name the tenant"),
              (status = 429, description = "too many failures; see Retry-After")))]
pub async fn login(
    State(auth): State<Auth>,
    meta: RequestMeta,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    auth.login(body, &meta, user_agent).await.map(Json)
}

/// `POST /api/auth/refresh` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from login or the previous refresh.
    pub refresh_token: String,
}

/// Exchange a refresh token for a new token pair (the old refresh token stops working).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid, used or expired")))]
pub async fn refresh(
    State(auth): State<Auth>,
    meta: RequestMeta,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    auth.refresh(&body.refresh_token, &meta).await.map(Json)
}

/// End the current session; its access token stops working at once.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "logged out"), (status = 401)))]
pub async fn logout(State(auth): State<Auth>, caller: Caller) -> Result<StatusCode, ApiError> {
    auth.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who am I.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Principal), (status = 401)))]
pub async fn me(State(auth): State<Auth>, caller: Caller) -> Result<Json<Principal>, ApiError> {
    auth.me(&caller).await.map(Json)
}

/// `POST /api/auth/password` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// The new password (at least 8 characters).
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Change my password; my other sessions are revoked.
#[utoipa::path(post, path = "/api/auth/password", tag = "auth", security(("bearer" = [])), request_body = PasswordChange,
    responses((status = 204, description = "changed"), (status = 403, description = "wrong current password"), (status = 422)))]
pub async fn change_password(
    State(auth): State<Auth>,
    caller: Caller,
    Json(body): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    auth.change_password(&caller, &body.current_password, &body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Activate a new tenant's first admin: choose the password with the one-time setup token
/// returned when the tenant was created (no login needed; the token works once).
#[utoipa::path(post, path = "/api/auth/setup-password", tag = "auth",
    request_body = crate::users::SetupPassword,
    responses((status = 204, description = "password set; log in with it"),
        (status = 400, description = "`invalid_setup_token`: unknown, used or expired"),
        (status = 422, description = "the password fails the policy")))]
pub async fn setup_password(
    State(auth): State<Auth>,
    meta: RequestMeta,
    Json(body): Json<crate::users::SetupPassword>,
) -> Result<StatusCode, ApiError> {
    auth.setup_password(&body, &meta).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of my sessions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: String,
    /// Whether this is the session of the calling token.
    pub current: bool,
    /// IP address at login.
    pub ip: Option<String>,
    /// Browser or client at login.
    pub user_agent: Option<String>,
    /// Login time.
    pub created_at: Timestamp,
    /// Last refresh.
    pub last_used_at: Timestamp,
    /// When the session ends at the latest.
    pub expires_at: Timestamp,
}

/// My active sessions.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "`{\"items\": [SessionView]}`")))]
pub async fn sessions(
    State(auth): State<Auth>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let items: Vec<SessionView> = auth
        .my_sessions(&caller)
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: s.id == caller.session_id(),
            id: s.id,
            ip: s.ip,
            user_agent: s.user_agent,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

/// Revoke one of my sessions.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "session id")),
    responses((status = 204, description = "revoked"), (status = 404)))]
pub async fn end_session(
    State(auth): State<Auth>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.end_my_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/api/auth/.well-known/jwks.json", tag = "auth",
    responses((status = 200, body = crate::keys::Jwks)))]
pub async fn jwks(State(auth): State<Auth>) -> Json<crate::keys::Jwks> {
    Json(auth.jwks())
}

/// Rotate the signing key (superadmin). Tokens signed by the old key stay valid until they expire.
#[utoipa::path(post, path = "/api/auth/keys/rotate", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "`{\"kid\": \"...\"}`"), (status = 403)))]
pub async fn rotate_keys(
    State(auth): State<Auth>,
    Superadmin(caller): Superadmin,
) -> Result<impl IntoResponse, ApiError> {
    let kid = auth.rotate_keys(&caller).await?;
    Ok(Json(serde_json::json!({ "kid": kid })))
}
