//! Customers (contacts): list with filters, search, sort and cursor paging; CRUD.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{TenantAdmin, TenantMember};
use platform::http::{etag, Json, Path, Query};
use platform::ids::Timestamp;
use platform::page::{page, Page, PageParams};
use platform::validate::{optional_text, text, Email};
use platform::ApiError;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_owner, default_owner, id_param, reference, search, text_param};
use crate::model::{nullable, phone, tags, Customer, CustomerStatus, MAX_TAG, MAX_TEXT};
use crate::store::{self, CustomerChanges, CustomerFilter, NewCustomer, Sort, CUSTOMER_SORTS};
use crate::Crm;

pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/customers", get(list).post(create))
        .route(
            "/api/crm/customers/{id}",
            get(get_one).patch(update).delete(remove),
        )
}

/// Filters, search, sort and paging of the customer list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CustomerListParams {
    /// Life-cycle stage: lead, prospect, customer or churned.
    #[param(value_type = Option<String>)]
    pub status: Option<CustomerStatus>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Owned by this user id.
    pub owner: Option<String>,
    /// Works for this company id.
    pub company: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>)]
    pub created_from: Option<Timestamp>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>)]
    pub created_to: Option<Timestamp>,
    /// Case-insensitive search in name, email and company name.
    pub q: Option<String>,
    /// `created` (default `-created`, newest first), `updated` or `name`; `-` for descending.
    pub sort: Option<String>,
    /// Page size (1..=500, default 50).
    pub limit: Option<i64>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

impl CustomerListParams {
    /// The validated filter and sort.
    pub(crate) fn filter(&self) -> Result<(CustomerFilter, Sort), ApiError> {
        let filter = CustomerFilter {
            status: self.status,
            tag: text_param("tag", self.tag.as_deref(), MAX_TAG)?.map(|t| t.to_lowercase()),
            owner_id: id_param("owner", self.owner.as_deref())?,
            company_id: id_param("company", self.company.as_deref())?,
            created_from: self.created_from,
            created_to: self.created_to,
            q: search(self.q.as_deref())?,
        };
        let sort = Sort::parse(self.sort.as_deref(), CUSTOMER_SORTS, "-created")?;
        Ok((filter, sort))
    }
}

/// The tenant's customers.
#[utoipa::path(get, path = "/api/crm/customers", tag = "crm", security(("bearer" = [])),
    params(CustomerListParams),
    responses((status = 200, body = Page<Customer>), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<CustomerListParams>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let (filter, sort) = params.filter()?;
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit()?;
    let rows = store::list_customers(
        crm.db().reader(),
        &member.scope,
        &filter,
        &sort,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |c| {
        Sort::cursor(store::customer_sort_value(c, &sort), &c.id)
    })))
}

/// `POST /api/crm/customers` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateCustomer {
    /// First name (1..=200 characters).
    first_name: String,
    /// Last name.
    #[serde(default)]
    last_name: Option<String>,
    /// Email, unique in the tenant.
    #[serde(default)]
    email: Option<String>,
    /// Phone.
    #[serde(default)]
    phone: Option<String>,
    /// Company id.
    #[serde(default)]
    company_id: Option<String>,
    /// Status (default `lead`).
    #[serde(default)]
    status: Option<CustomerStatus>,
    /// Owner: a user id of the tenant (default: the caller, for tenant users).
    #[serde(default)]
    owner_id: Option<String>,
    /// Tags.
    #[serde(default)]
    tags: Vec<String>,
    /// Custom field values.
    #[serde(default)]
    #[schema(value_type = Object)]
    custom: Map<String, Value>,
}

/// Create a customer.
#[utoipa::path(post, path = "/api/crm/customers", tag = "crm", security(("bearer" = [])),
    request_body = CreateCustomer,
    responses((status = 201, body = Customer), (status = 409, description = "email taken"),
        (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    member: TenantMember,
    Json(body): Json<CreateCustomer>,
) -> Result<impl IntoResponse, ApiError> {
    let owner_id = match body.owner_id.as_deref() {
        Some(owner) => Some(check_owner(&crm, &member, owner).await?),
        None => default_owner(&member),
    };
    let new = NewCustomer {
        first_name: text("first_name", &body.first_name, MAX_TEXT)?,
        last_name: body
            .last_name
            .as_deref()
            .map(|l| optional_text("last_name", l, MAX_TEXT))
            .transpose()?
            .flatten()
            .unwrap_or_default(),
        email: body
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .map(Email::parse)
            .transpose()?,
        phone: body.phone.as_deref().map(phone).transpose()?.flatten(),
        company_id: body
            .company_id
            .as_deref()
            .map(|c| reference("company_id", c))
            .transpose()?,
        status: body.status.unwrap_or(CustomerStatus::Lead),
        owner_id,
        tags: tags(&body.tags)?,
        custom: body.custom,
    };
    let customer = store::create_customer(
        crm.db(),
        crm.writes(),
        &member.scope,
        new,
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok((
        StatusCode::CREATED,
        [etag(customer.version)],
        Json(customer),
    ))
}

/// One customer; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/customers/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "customer id")),
    responses((status = 200, body = Customer), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let customer = store::customer_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("customer"))?;
    Ok(([etag(customer.version)], Json(customer)))
}

/// `PATCH /api/crm/customers/{id}` body: only the fields given change; `null` clears an
/// optional one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateCustomer {
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    company_id: Option<Option<String>>,
    #[serde(default)]
    status: Option<CustomerStatus>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    owner_id: Option<Option<String>>,
    /// The whole new tag list.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Custom values to set; `null` removes one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    custom: Option<Map<String, Value>>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Change a customer. Requires `If-Match` (or `version`): a stale one answers 409 with the
/// current version.
#[utoipa::path(patch, path = "/api/crm/customers/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "customer id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateCustomer,
    responses((status = 200, body = Customer), (status = 404),
        (status = 409, description = "stale version or email taken"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateCustomer>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = super::required_version(&headers, body.version)?;
    let owner_id = super::owner_change(&crm, &member, body.owner_id).await?;
    let changes = CustomerChanges {
        first_name: body
            .first_name
            .as_deref()
            .map(|f| text("first_name", f, MAX_TEXT))
            .transpose()?,
        last_name: body
            .last_name
            .as_deref()
            .map(|l| optional_text("last_name", l, MAX_TEXT).map(Option::unwrap_or_default))
            .transpose()?,
        email: body
            .email
            .map(|e| {
                e.filter(|e| !e.trim().is_empty())
                    .as_deref()
                    .map(Email::parse)
                    .transpose()
            })
            .transpose()?,
        phone: body
            .phone
            .map(|p| p.as_deref().map(phone).transpose().map(Option::flatten))
            .transpose()?,
        company_id: body
            .company_id
            .map(|c| c.as_deref().map(|c| reference("company_id", c)).transpose())
            .transpose()?,
        status: body.status,
        owner_id,
        tags: body.tags.as_deref().map(tags).transpose()?,
        custom: body.custom,
    };
    let customer = store::update_customer(
        crm.db(),
        &member.scope,
        &id,
        changes,
        Some(expected),
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(customer.version)], Json(customer)))
}

/// Delete a customer (admins). Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/customers/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "customer id")),
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
        &store::CUSTOMER_REMOVAL,
        &id,
        &headers,
    )
    .await
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove),
    components(schemas(Customer, CustomerStatus, CreateCustomer, UpdateCustomer))
)]
pub(super) struct Doc;
