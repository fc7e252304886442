//! HTTP routes of the auth service (`/api/auth/...`).

pub(crate) mod internal;
mod session;
mod users;

use axum::Router;
use platform::http::BearerAuth;

use crate::Auth;

/// Every route of the service.
pub fn router() -> Router<Auth> {
    Router::new()
        .merge(session::router())
        .merge(users::router())
}

/// The OpenAPI description of the auth API.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        session::login, session::refresh, session::logout, session::me, session::change_password,
        session::setup_password,
        session::sessions, session::end_session, session::jwks, session::rotate_keys,
        users::list, users::create, users::get_one, users::update, users::delete
    ),
    components(schemas(
        crate::LoginRequest, crate::TokenResponse, crate::Principal, crate::UserView,
        crate::keys::Jwks, crate::keys::Jwk, session::RefreshRequest, session::PasswordChange,
        session::SessionView, users::CreateUser, crate::users::SetupPassword, crate::users::UserChanges
    )),
    modifiers(&BearerAuth),
    tags((name = "auth", description = "Login, tokens, sessions and tenant users"))
)]
pub struct ApiDoc;
