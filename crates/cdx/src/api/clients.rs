//! Clients: the platform's customers, each owning tenants.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::{etag, Json, Path, Query};
use platform::page::{page, Page, PageParams};
use platform::ApiError;
use serde::Deserialize;

use crate::model::{parse_name, Client};
use crate::store::{self, ClientChanges, ClientFilter};
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/clients", get(list).post(create))
        .route("/api/cdx/clients/{id}", get(get_one).patch(update))
}

/// Filters and paging of the client list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Case-insensitive search in the name.
    q: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Clients in creation order.
#[utoipa::path(get, path = "/api/cdx/clients", tag = "cdx", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = Page<Client>), (status = 401), (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<Client>>, ApiError> {
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let filter = ClientFilter {
        q: params
            .q
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty()),
    };
    let rows = store::list_clients(
        cdx.db().reader(),
        &filter,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |c| c.id.clone())))
}

/// `POST /api/cdx/clients` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateClient {
    /// Unique display name (1..=200 characters).
    name: String,
}

/// Create a client.
#[utoipa::path(post, path = "/api/cdx/clients", tag = "cdx", security(("bearer" = [])),
    request_body = CreateClient,
    responses((status = 201, body = Client), (status = 409, description = "name taken"),
        (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Json(body): Json<CreateClient>,
) -> Result<impl IntoResponse, ApiError> {
    let name = parse_name("name", &body.name)?;
    let client = store::create_client(cdx.db(), &name, &caller.actor()).await?;
    cdx.announce();
    Ok((StatusCode::CREATED, [etag(client.version)], Json(client)))
}

/// One client; its `ETag` is its version.
#[utoipa::path(get, path = "/api/cdx/clients/{id}", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "client id")),
    responses((status = 200, body = Client), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let client = store::client_by_id(cdx.db().reader(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("client"))?;
    Ok(([etag(client.version)], Json(client)))
}

/// `PATCH /api/cdx/clients/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateClient {
    /// New display name.
    #[serde(default)]
    name: Option<String>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Rename a client. Honors `If-Match` (or `version`): a stale one answers 409.
#[utoipa::path(patch, path = "/api/cdx/clients/{id}", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "client id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateClient,
    responses((status = 200, body = Client), (status = 404),
        (status = 409, description = "stale version or name taken"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateClient>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = platform::http::expected_version(&headers, body.version)?;
    let changes = ClientChanges {
        name: body
            .name
            .as_deref()
            .map(|n| parse_name("name", n))
            .transpose()?,
    };
    let client = store::update_client(cdx.db(), &id, &changes, expected, &caller.actor()).await?;
    cdx.announce();
    Ok(([etag(client.version)], Json(client)))
}
