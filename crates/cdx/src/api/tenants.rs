//! Tenants: each client's isolated customer spaces. Every change is delivered to the other
//! services' tenant replicas before the request returns.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::{etag, Json, Path, Query};
use platform::ids::Timestamp;
use platform::page::{page, Page, PageParams};
use platform::tenants::{setup_token_hash, InitialAdmin, TenantStatus};
use platform::validate::Email;
use platform::ApiError;
use serde::{Deserialize, Serialize};

use crate::model::{parse_name, Slug, Tenant};
use crate::store::{self, NewTenant, SortValue, TenantChanges, TenantFilter};
use crate::tenant_list::{TenantListItem, TenantSort};
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/tenants", get(list).post(create))
        .route(
            "/api/cdx/tenants/{id}",
            get(get_one).patch(update).delete(delete),
        )
        .route("/api/cdx/tenants/{id}/purge", get(purge))
}

/// `DELETE /api/cdx/tenants/{id}` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeleteParams {
    /// The tenant's slug, repeated to confirm.
    confirm: Option<String>,
}

/// Delete a tenant and all its data in every service. Confirm with `?confirm=<slug>`. The
/// tenant leaves the registry at once; each service purges its data when the
/// `cdx.tenant.deleted` event reaches it, and `GET /api/cdx/tenants/{id}/purge` reports which
/// have.
#[utoipa::path(delete, path = "/api/cdx/tenants/{id}", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug"), DeleteParams),
    responses((status = 202, body = store::PurgeStatus), (status = 404),
        (status = 422, description = "the confirmation is missing or wrong")))]
#[tracing::instrument(skip_all)]
pub(super) async fn delete(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Path(id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Result<impl IntoResponse, ApiError> {
    let status =
        store::delete_tenant(cdx.db(), &id, params.confirm.as_deref(), &caller.actor()).await?;
    cdx.announce_now().await;
    // In-process services have purged by now; report what is known.
    let status = store::purge_status(cdx.db().reader(), &status.tenant_id)
        .await?
        .unwrap_or(status);
    Ok((StatusCode::ACCEPTED, Json(status)))
}

/// Where the deletion of a tenant stands in each service.
#[utoipa::path(get, path = "/api/cdx/tenants/{id}/purge", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "the deleted tenant's id or slug")),
    responses((status = 200, body = store::PurgeStatus),
        (status = 404, description = "no deletion of such a tenant")))]
#[tracing::instrument(skip_all)]
pub(super) async fn purge(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let status = store::purge_status(cdx.db().reader(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant deletion"))?;
    Ok(Json(status))
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
    /// Order: `name`, `created` or a numeric column of the summary (`users_total`, alias
    /// `users`, `users_active`, `logins_24h`, `customers`, `companies`, `open_deals`,
    /// `content_items`, `analytics_events`; `null` slots order as 0); a leading `-` sorts
    /// descending. By id (creation order) when absent. Ties are ordered by id.
    sort: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Tenants with their aggregates (`summary`, as `GET /api/cdx/tenants/{id}/summary` has
/// them), in creation order or by `sort`, in keyset pages.
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
        None | Some("") => TenantSort::ID,
        Some(s) => TenantSort::parse(s).ok_or_else(|| {
            let allowed = TenantSort::allowed();
            ApiError::bad_request(
                "invalid_sort",
                format!(
                    "sort must be one of {}, optionally prefixed by - for descending",
                    allowed.join(", ")
                ),
            )
            .with_details(serde_json::json!({ "field": "sort", "allowed": allowed }))
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
    match (sort.by_id(), sort.value_of(item)) {
        (true, _) => item.tenant.id.clone(),
        (_, SortValue::Text(v)) => serde_json::json!([v, item.tenant.id]).to_string(),
        (_, SortValue::Int(v)) => serde_json::json!([v, item.tenant.id]).to_string(),
    }
}

fn decode_cursor(sort: TenantSort, cursor: &str) -> Result<(SortValue, String), ApiError> {
    let invalid =
        || ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued");
    if sort.by_id() {
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
    /// Email of the tenant's first admin: auth creates the account, and the answer carries a
    /// one-time setup token with which its holder chooses the password.
    #[serde(default)]
    admin_email: Option<String>,
}

/// How long the setup token of a new tenant's first admin stays valid.
const SETUP_TOKEN_TTL_SECS: i64 = 7 * 24 * 3600;

/// The one-time token that activates a new tenant's first admin; shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AdminSetup {
    /// The admin's email.
    email: String,
    /// Send it to the admin: `POST /api/auth/setup-password` with `{"token", "password"}`.
    token: String,
    /// Until when the token works.
    #[schema(value_type = String, format = DateTime)]
    expires_at: Timestamp,
    /// Where to use it.
    set_password_path: &'static str,
}

/// A created tenant, with its first admin's setup token when one was asked for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CreatedTenant {
    #[serde(flatten)]
    tenant: Tenant,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_setup: Option<AdminSetup>,
}

/// Create an active tenant of a client; with `admin_email`, its first admin too (provisioned
/// in auth through events; the answer's `admin_setup.token` activates the account), and the
/// CRM gives it its default pipeline.
#[utoipa::path(post, path = "/api/cdx/tenants", tag = "cdx", security(("bearer" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = CreatedTenant), (status = 409, description = "slug taken"),
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
    let setup = body
        .admin_email
        .as_deref()
        .map(|email| {
            let email = Email::parse(email)
                .map_err(|_| ApiError::validation("admin_email", "must be an email address"))?;
            Ok::<_, ApiError>(AdminSetup {
                email: email.as_str().to_string(),
                token: platform::ids::random_token(32),
                expires_at: Timestamp::now().plus_secs(SETUP_TOKEN_TTL_SECS),
                set_password_path: "/api/auth/setup-password",
            })
        })
        .transpose()?;
    let admin = setup.as_ref().map(|s| InitialAdmin {
        email: s.email.clone(),
        setup_token_hash: setup_token_hash(&s.token),
        expires_at: s.expires_at,
    });
    let tenant = store::create_tenant(cdx.db(), &new, admin.as_ref(), &caller.actor()).await?;
    cdx.announce_now().await;
    Ok((
        StatusCode::CREATED,
        [etag(tenant.version)],
        Json(CreatedTenant {
            tenant,
            admin_setup: setup,
        }),
    ))
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
