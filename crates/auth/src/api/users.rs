//! Tenant user management: admins in their own tenant, the superadmin in any (`X-Tenant`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::TenantAdmin;
use platform::http::{etag, expected_version, Json, Path, Query};
use platform::page::{page, Page, PageParams};
use platform::ApiError;
use secrecy::SecretString;
use serde::Deserialize;

use crate::model::{parse_name, Email, NewPassword, UserRole, UserStatus};
use crate::store::UserFilter;
use crate::users::UserChanges;
use crate::{Auth, NewUser, UserView};

pub fn router() -> Router<Auth> {
    Router::new()
        .route("/api/auth/users", get(list).post(create))
        .route(
            "/api/auth/users/{id}",
            get(get_one).patch(update).delete(delete),
        )
}

/// Filters of the user list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only this role.
    role: Option<UserRole>,
    /// Only this status.
    status: Option<UserStatus>,
    /// Case-insensitive search in email and name.
    q: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Users of the tenant, in creation order.
#[utoipa::path(get, path = "/api/auth/users", tag = "auth", security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "a page of UserView"), (status = 403)))]
pub async fn list(
    State(auth): State<Auth>,
    admin: TenantAdmin,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let filter = UserFilter {
        role: params.role,
        status: params.status,
        q: params
            .q
            .map(|q| q.trim().to_lowercase())
            .filter(|q| !q.is_empty()),
    };
    let rows = auth
        .users(&admin.scope, &filter, paging.after()?.as_deref(), limit + 1)
        .await?;
    Ok(Json(page(rows, limit, |u| u.id.clone())))
}

/// `POST /api/auth/users` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email, unique within the tenant.
    email: String,
    /// Initial password (at least 8 characters).
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// `admin` or `user`.
    role: UserRole,
    /// Display name.
    #[serde(default)]
    name: Option<String>,
}

/// Create a user in the tenant.
#[utoipa::path(post, path = "/api/auth/users", tag = "auth", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, description = "email taken"), (status = 422)))]
pub async fn create(
    State(auth): State<Auth>,
    admin: TenantAdmin,
    Json(body): Json<CreateUser>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewUser {
        email: Email::parse(&body.email)?,
        password: NewPassword::parse("password", &body.password)?,
        role: body.role,
        name: parse_name(body.name.as_deref())?,
    };
    let user = auth
        .create_user(&admin.scope, new, &admin.caller.actor())
        .await?;
    Ok((StatusCode::CREATED, [etag(user.version)], Json(user)))
}

/// One user of the tenant.
#[utoipa::path(get, path = "/api/auth/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = UserView), (status = 404)))]
pub async fn get_one(
    State(auth): State<Auth>,
    admin: TenantAdmin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = auth.user(&admin.scope, &id).await?;
    Ok(([etag(user.version)], Json(user)))
}

/// Change a user's name, role, status or password. Honors `If-Match`.
#[utoipa::path(patch, path = "/api/auth/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = UserChanges,
    responses((status = 200, body = UserView), (status = 404), (status = 409, description = "stale version")))]
pub async fn update(
    State(auth): State<Auth>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UserChanges>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = expected_version(&headers, body.version)?;
    let user = auth
        .update_user(&admin.scope, &id, body, expected, &admin.caller)
        .await?;
    Ok(([etag(user.version)], Json(user)))
}

/// Delete a user; their sessions end at once.
#[utoipa::path(delete, path = "/api/auth/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 404)))]
pub async fn delete(
    State(auth): State<Auth>,
    admin: TenantAdmin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.delete_user(&admin.scope, &id, &admin.caller).await?;
    Ok(StatusCode::NO_CONTENT)
}
