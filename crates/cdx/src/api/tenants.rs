//! Tenants: each client's isolated customer spaces. Every change is delivered to the other
//! services' tenant replicas before the request returns.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::{etag, Json, Path, Query};
use platform::page::{page, Page, PageParams};
use platform::tenants::TenantStatus;
use platform::ApiError;
use serde::Deserialize;

use crate::aggregates::{TenantListItem, TenantSort};
use crate::model::{parse_name, Slug, Tenant};
use crate::store::{self, NewTenant, SortValue, TenantChanges, TenantFilter};
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/tenants", get(list).post(create))
        .route("/api/cdx/tenants/{id}", get(get_one).patch(update))
}

/// Filters and paging of the tenant list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only tenants in this state.
    status: Option<TenantStatus>,
    /// Only tenants of this client.
    client_id: Option<String>,
    /// Case-insensitive search in slug and name.
    q: Option<String>,
    /// Order: `name`, `created`, `customers` or `users` (a leading `-` sorts descending);
    /// by id (creation order) when absent.
    sort: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Tenants with their summary columns (`summary`), in creation order or by `sort`.
#[utoipa::path(get, path = "/api/cdx/tenants", tag = "cdx", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = Page<TenantListItem>),
        (status = 400, description = "invalid sort or cursor"), (status = 401), (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<TenantListItem>>, ApiError> {
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let sort = match params.sort.as_deref() {
        None | Some("") => TenantSort::Id,
        Some(s) => TenantSort::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_sort",
                "sort must be one of name, created, customers, users (optionally prefixed by -)",
            )
        })?,
    };
    let filter = TenantFilter {
        status: params.status,
        client_id: params.client_id,
        q: params
            .q
            .map(|q| q.trim().to_string())
            .filter(|q| !q.is_empty()),
    };
    let after = paging
        .after()?
        .map(|cursor| decode_cursor(sort, &cursor))
        .transpose()?;
    let rows = store::list_tenant_items(cdx.db().reader(), &filter, sort, after, limit + 1).await?;
    Ok(Json(page(rows, limit, |item| encode_cursor(sort, item))))
}

/// The cursor after `item`: its id in id order (as before sorting existed), else the sort
/// value and the id as a JSON pair.
fn encode_cursor(sort: TenantSort, item: &TenantListItem) -> String {
    match (sort, sort.value_of(item)) {
        (TenantSort::Id, _) => item.tenant.id.clone(),
        (_, SortValue::Text(v)) => serde_json::json!([v, item.tenant.id]).to_string(),
        (_, SortValue::Int(v)) => serde_json::json!([v, item.tenant.id]).to_string(),
    }
}

fn decode_cursor(sort: TenantSort, cursor: &str) -> Result<(SortValue, String), ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued");
    if sort == TenantSort::Id {
        return Ok((SortValue::Text(cursor.to_string()), cursor.to_string()));
    }
    let (value, id): (serde_json::Value, String) =
        serde_json::from_str(cursor).map_err(|_| invalid())?;
    let value = if sort.is_text() {
        SortValue::Text(value.as_str().ok_or_else(invalid)?.to_string())
    } else {
        SortValue::Int(value.as_i64().ok_or_else(invalid)?)
    };
    Ok((value, id))
}

/// `POST /api/cdx/tenants` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    /// Unique short name: 2..=63 of `[a-z0-9-]`, starting with a letter or digit, not
    /// ending with `-`.
    slug: String,
    /// Display name (1..=200 characters).
    name: String,
    /// The owning client's id.
    client_id: String,
}

/// Create an active tenant of a client.
#[utoipa::path(post, path = "/api/cdx/tenants", tag = "cdx", security(("bearer" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 409, description = "slug taken"),
        (status = 422, description = "invalid input or unknown client")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Json(body): Json<CreateTenant>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewTenant {
        slug: Slug::parse(&body.slug)?,
        name: parse_name("name", &body.name)?,
        client_id: body.client_id,
    };
    let tenant = store::create_tenant(cdx.db(), &new, &caller.actor()).await?;
    cdx.announce_now().await;
    Ok((StatusCode::CREATED, [etag(tenant.version)], Json(tenant)))
}

/// One tenant, by id or slug; its `ETag` is its version.
#[utoipa::path(get, path = "/api/cdx/tenants/{id}", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = store::tenant_by_key(cdx.db().reader(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(([etag(tenant.version)], Json(tenant)))
}

/// `PATCH /api/cdx/tenants/{id}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateTenant {
    /// `suspended` to suspend, `active` to resume.
    #[serde(default)]
    status: Option<TenantStatus>,
    /// New display name.
    #[serde(default)]
    name: Option<String>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Rename, suspend or resume a tenant. Honors `If-Match` (or `version`): a stale one
/// answers 409.
#[utoipa::path(patch, path = "/api/cdx/tenants/{id}", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateTenant,
    responses((status = 200, body = Tenant), (status = 404),
        (status = 409, description = "stale version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateTenant>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = platform::http::expected_version(&headers, body.version)?;
    let changes = TenantChanges {
        name: body
            .name
            .as_deref()
            .map(|n| parse_name("name", n))
            .transpose()?,
        status: body.status,
    };
    let tenant = store::update_tenant(cdx.db(), &id, &changes, expected, &caller.actor()).await?;
    cdx.announce_now().await;
    Ok(([etag(tenant.version)], Json(tenant)))
}
