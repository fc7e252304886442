//! Companies: list with filters, search, sort and cursor paging; CRUD; a company's
//! customers.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{TenantAdmin, TenantMember};
use platform::http::{etag, Json, Path, Query};
use platform::ids::Timestamp;
use platform::page::{page, Page, PageParams};
use platform::validate::{optional_text, text, Invalid};
use platform::ApiError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{search, text_param};
use crate::model::{nullable, Company, Customer, MAX_ADDRESS, MAX_TEXT};
use crate::store::{
    self, CompanyChanges, CompanyFilter, CustomerFilter, NewCompany, Sort, COMPANY_SORTS,
    CUSTOMER_SORTS,
};
use crate::Crm;

pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/companies", get(list).post(create))
        .route(
            "/api/crm/companies/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/api/crm/companies/{id}/customers", get(customers))
}

/// Filters, search, sort and paging of the company list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CompanyListParams {
    /// Exactly this industry.
    industry: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>)]
    created_from: Option<Timestamp>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>)]
    created_to: Option<Timestamp>,
    /// Case-insensitive search in name and domain.
    q: Option<String>,
    /// `created` (default `-created`, newest first), `updated` or `name`; `-` for descending.
    sort: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// The tenant's companies.
#[utoipa::path(get, path = "/api/crm/companies", tag = "crm", security(("bearer" = [])),
    params(CompanyListParams),
    responses((status = 200, body = Page<Company>), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<CompanyListParams>,
) -> Result<Json<Page<Company>>, ApiError> {
    let filter = CompanyFilter {
        industry: text_param("industry", params.industry.as_deref(), MAX_TEXT)?,
        created_from: params.created_from,
        created_to: params.created_to,
        q: search(params.q.as_deref())?,
    };
    let sort = Sort::parse(params.sort.as_deref(), COMPANY_SORTS, "-created")?;
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let rows = store::list_companies(
        crm.db().reader(),
        &member.scope,
        &filter,
        &sort,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |c| {
        Sort::cursor(store::company_sort_value(c, &sort), &c.id)
    })))
}

/// Validates an optional one-line text field; blank means absent.
fn optional(field: &str, value: Option<&str>, max: usize) -> Result<Option<String>, Invalid> {
    Ok(value
        .map(|v| optional_text(field, v, max))
        .transpose()?
        .flatten())
}

/// Validates a domain: an optional one-line text, lower-cased.
fn domain(value: Option<&str>) -> Result<Option<String>, Invalid> {
    Ok(optional("domain", value, MAX_TEXT)?.map(|d| d.to_lowercase()))
}

/// `POST /api/crm/companies` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateCompany {
    /// Name (1..=200 characters).
    name: String,
    /// Web domain, e.g. `example.com` (lower-cased).
    #[serde(default)]
    domain: Option<String>,
    /// Industry.
    #[serde(default)]
    industry: Option<String>,
    /// Size, e.g. `11-50`.
    #[serde(default)]
    size: Option<String>,
    /// Postal address (up to 500 characters, one line).
    #[serde(default)]
    address: Option<String>,
    /// Custom field values.
    #[serde(default)]
    #[schema(value_type = Object)]
    custom: Map<String, Value>,
}

/// Create a company.
#[utoipa::path(post, path = "/api/crm/companies", tag = "crm", security(("bearer" = [])),
    request_body = CreateCompany,
    responses((status = 201, body = Company), (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    member: TenantMember,
    Json(body): Json<CreateCompany>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewCompany {
        name: text("name", &body.name, MAX_TEXT)?,
        domain: domain(body.domain.as_deref())?,
        industry: optional("industry", body.industry.as_deref(), MAX_TEXT)?,
        size: optional("size", body.size.as_deref(), MAX_TEXT)?,
        address: optional("address", body.address.as_deref(), MAX_ADDRESS)?,
        custom: body.custom,
    };
    let company =
        store::create_company(crm.db(), &member.scope, new, &member.caller.actor()).await?;
    crm.announce();
    Ok((StatusCode::CREATED, [etag(company.version)], Json(company)))
}

/// One company; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/companies/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "company id")),
    responses((status = 200, body = Company), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let company = store::company_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("company"))?;
    Ok(([etag(company.version)], Json(company)))
}

/// `PATCH /api/crm/companies/{id}` body: only the fields given change; `null` clears an
/// optional one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateCompany {
    /// Name (cannot be cleared).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    domain: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    industry: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    size: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    address: Option<Option<String>>,
    /// Custom values to set; `null` removes one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    custom: Option<Map<String, Value>>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Change a company. Requires `If-Match` (or `version`): a stale one answers 409 with the
/// current version.
#[utoipa::path(patch, path = "/api/crm/companies/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "company id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateCompany,
    responses((status = 200, body = Company), (status = 404),
        (status = 409, description = "stale version"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateCompany>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = super::required_version(&headers, body.version)?;
    let changes = CompanyChanges {
        name: body
            .name
            .map(|n| text("name", n.as_deref().unwrap_or_default(), MAX_TEXT))
            .transpose()?,
        domain: body.domain.map(|d| domain(d.as_deref())).transpose()?,
        industry: body
            .industry
            .map(|i| optional("industry", i.as_deref(), MAX_TEXT))
            .transpose()?,
        size: body
            .size
            .map(|s| optional("size", s.as_deref(), MAX_TEXT))
            .transpose()?,
        address: body
            .address
            .map(|a| optional("address", a.as_deref(), MAX_ADDRESS))
            .transpose()?,
        custom: body.custom,
    };
    let company = store::update_company(
        crm.db(),
        &member.scope,
        &id,
        changes,
        Some(expected),
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(company.version)], Json(company)))
}

/// Delete a company (admins). Its customers and deals lose the link; notes only about it
/// are deleted. Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/companies/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "company id"),
        ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub(super) async fn remove(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    super::remove_record(
        &crm,
        &admin.scope,
        &admin.caller,
        &store::COMPANY_REMOVAL,
        &id,
        &headers,
    )
    .await
}

/// Sort and paging of a company's customers (as in the customer list).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CompanyCustomersParams {
    /// `created` (default `-created`, newest first), `updated` or `name`; `-` for descending.
    sort: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// The customers working for a company.
#[utoipa::path(get, path = "/api/crm/companies/{id}/customers", tag = "crm",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "company id"), CompanyCustomersParams),
    responses((status = 200, body = Page<Customer>), (status = 400), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn customers(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    Query(params): Query<CompanyCustomersParams>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let sort = Sort::parse(params.sort.as_deref(), CUSTOMER_SORTS, "-created")?;
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let after = paging.after()?;
    let company = store::company_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("company"))?;
    let filter = CustomerFilter {
        company_id: Some(company.id),
        ..CustomerFilter::default()
    };
    let rows = store::list_customers(
        crm.db().reader(),
        &member.scope,
        &filter,
        &sort,
        after.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |c| {
        Sort::cursor(store::customer_sort_value(c, &sort), &c.id)
    })))
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove, customers),
    components(schemas(Company, CreateCompany, UpdateCompany))
)]
pub(super) struct Doc;
