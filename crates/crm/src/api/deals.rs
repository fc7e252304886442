//! Deals: list with filters, search, sort and cursor paging, or the board of a pipeline
//! (`?view=board`); CRUD, stage moves and the won/lost shortcut.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{TenantAdmin, TenantMember};
use platform::http::{etag, Json, Path, Query};
use platform::ids::Timestamp;
use platform::page::{page, Page, PageParams};
use platform::validate::{optional_text, text};
use platform::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{check_owner, default_owner, id_param, reference, search};
use crate::model::{
    currency, date, deal_value, nullable, Deal, Pipeline, Stage, StageKind, MAX_TEXT,
};
use crate::store::{self, DealChanges, DealFilter, NewDeal, Sort, DEAL_SORTS};
use crate::Crm;

/// Longest close reason, in characters.
const MAX_CLOSE_REASON: usize = 500;
/// Most (and default) deals per stage on the board.
const BOARD_DEALS: i64 = 100;
/// Currency of a deal created without one.
const DEFAULT_CURRENCY: &str = "EUR";

/// The deal routes.
pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/deals", get(list).post(create))
        .route(
            "/api/crm/deals/{id}",
            get(get_one).patch(update).delete(remove),
        )
}

/// Filters, search, sort and paging of the deal list, or the board view.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DealListParams {
    /// `list` (default): a page of deals; `board`: the pipeline's stages with their newest
    /// deals, counts and totals per currency.
    pub view: Option<String>,
    /// In this pipeline id (the board's pipeline; default: the tenant's default pipeline).
    pub pipeline: Option<String>,
    /// In this stage id.
    pub stage: Option<String>,
    /// open, won or lost.
    #[param(value_type = Option<String>)]
    pub status: Option<StageKind>,
    /// Owned by this user id.
    pub owner: Option<String>,
    /// With this customer id.
    pub customer: Option<String>,
    /// With this company id.
    pub company: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<String>)]
    pub created_from: Option<Timestamp>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<String>)]
    pub created_to: Option<Timestamp>,
    /// Case-insensitive search in the title.
    pub q: Option<String>,
    /// `created` (default `-created`, newest first), `updated`, `name` (the title) or
    /// `value`; `-` for descending. Not for the board.
    pub sort: Option<String>,
    /// Page size (1..=500, default 50); on the board, deals per stage (1..=100, default 100).
    pub limit: Option<i64>,
    /// Cursor from the previous page. Not for the board.
    pub cursor: Option<String>,
}

impl DealListParams {
    /// The validated filter.
    fn filter(&self) -> Result<DealFilter, ApiError> {
        Ok(DealFilter {
            stage_id: id_param("stage", self.stage.as_deref())?,
            pipeline_id: id_param("pipeline", self.pipeline.as_deref())?,
            status: self.status,
            owner_id: id_param("owner", self.owner.as_deref())?,
            customer_id: id_param("customer", self.customer.as_deref())?,
            company_id: id_param("company", self.company.as_deref())?,
            created_from: self.created_from,
            created_to: self.created_to,
            q: search(self.q.as_deref())?,
        })
    }
}

/// A currency's total in one stage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CurrencyTotal {
    /// ISO 4217 code.
    currency: String,
    /// Sum of the deals' values, in minor units.
    value: i64,
}

/// One column of the board.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct BoardStage {
    /// The stage.
    stage: Stage,
    /// Its newest deals (up to 100), newest first.
    deals: Vec<Deal>,
    /// How many deals it holds in all.
    count: i64,
    /// Total value of all its deals, per currency.
    totals: Vec<CurrencyTotal>,
}

/// A pipeline's board: its stages in order with their deals.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Board {
    /// The pipeline.
    pipeline: Pipeline,
    /// Its stages in order.
    stages: Vec<BoardStage>,
}

/// The deal list: a page of deals, or the board with `view=board`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum DealListing {
    /// A page of deals.
    Page(Page<Deal>),
    /// The board.
    Board(Board),
}

/// The tenant's deals, or with `view=board` the board of a pipeline (creates the default
/// pipeline on first use).
#[utoipa::path(get, path = "/api/crm/deals", tag = "crm", security(("bearer" = [])),
    params(DealListParams),
    responses((status = 200, body = DealListing,
            description = "a page of deals, or the board with view=board"),
        (status = 400), (status = 401), (status = 404, description = "no such pipeline")))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<DealListParams>,
) -> Result<Json<DealListing>, ApiError> {
    match params.view.as_deref().map(str::trim) {
        None | Some("") | Some("list") => list_page(&crm, &member, &params).await,
        Some("board") => board(&crm, &member, &params).await,
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "view must be list or board",
        )),
    }
    .map(Json)
}

/// `GET /api/crm/deals`: a page of the filtered, sorted list.
async fn list_page(
    crm: &Crm,
    member: &TenantMember,
    params: &DealListParams,
) -> Result<DealListing, ApiError> {
    let filter = params.filter()?;
    let sort = Sort::parse(params.sort.as_deref(), DEAL_SORTS, "-created")?;
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit()?;
    let rows = store::list_deals(
        crm.db().reader(),
        &member.scope,
        &filter,
        &sort,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(DealListing::Page(page(rows, limit, |d| {
        Sort::cursor(store::deal_sort_value(d, &sort), &d.id)
    })))
}

/// `GET /api/crm/deals?view=board`: the pipeline's stages in order, each with its newest
/// deals, its deal count and its totals per currency (all under the list's filters).
async fn board(
    crm: &Crm,
    member: &TenantMember,
    params: &DealListParams,
) -> Result<DealListing, ApiError> {
    if params.sort.is_some() || params.cursor.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "sort and cursor do not apply to the board",
        ));
    }
    let per_stage = match params.limit {
        None => BOARD_DEALS,
        Some(n) if (1..=BOARD_DEALS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("on the board, limit must be between 1 and {BOARD_DEALS}"),
            ))
        }
    };
    let mut filter = params.filter()?;
    let pipeline_id = match filter.pipeline_id.clone() {
        Some(id) => id,
        None => {
            let id =
                store::default_pipeline(crm.db(), &member.scope, &member.caller.actor()).await?;
            crm.announce();
            id
        }
    };
    let pipeline = store::pipeline_by_id(crm.db().reader(), &member.scope, &pipeline_id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    filter.pipeline_id = Some(pipeline.id.clone());
    let deals = store::board_deals(crm.db().reader(), &member.scope, &filter, per_stage).await?;
    let totals = store::stage_totals(crm.db().reader(), &member.scope, &filter).await?;
    let stages = pipeline
        .stages
        .iter()
        .map(|stage| {
            let of_stage = totals.iter().filter(|t| t.stage_id == stage.id);
            BoardStage {
                stage: stage.clone(),
                deals: deals
                    .iter()
                    .filter(|d| d.stage_id == stage.id)
                    .cloned()
                    .collect(),
                count: of_stage.clone().map(|t| t.deals).sum(),
                totals: of_stage
                    .map(|t| CurrencyTotal {
                        currency: t.currency.clone(),
                        value: t.value,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(DealListing::Board(Board { pipeline, stages }))
}

/// `POST /api/crm/deals` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateDeal {
    /// Title (1..=200 characters).
    title: String,
    /// Value in minor units of `currency` (default 0).
    #[serde(default)]
    value: Option<i64>,
    /// ISO 4217 code (default EUR).
    #[serde(default)]
    currency: Option<String>,
    /// Pipeline id (default: the tenant's default pipeline).
    #[serde(default)]
    pipeline_id: Option<String>,
    /// Stage id of that pipeline (default: its first open stage).
    #[serde(default)]
    stage_id: Option<String>,
    /// Customer id.
    #[serde(default)]
    customer_id: Option<String>,
    /// Company id.
    #[serde(default)]
    company_id: Option<String>,
    /// Owner: a user id of the tenant (default: the caller, for tenant users).
    #[serde(default)]
    owner_id: Option<String>,
    /// Expected close date `YYYY-MM-DD`.
    #[serde(default)]
    expected_close: Option<String>,
    /// Why it was won or lost (only for a deal created in a won or lost stage).
    #[serde(default)]
    close_reason: Option<String>,
    /// Custom field values.
    #[serde(default)]
    #[schema(value_type = Object)]
    custom: Map<String, Value>,
}

/// Validates an optional close reason (blank clears it).
fn close_reason(s: &str) -> Result<Option<String>, ApiError> {
    Ok(optional_text("close_reason", s, MAX_CLOSE_REASON)?)
}

/// Create a deal.
#[utoipa::path(post, path = "/api/crm/deals", tag = "crm", security(("bearer" = [])),
    request_body = CreateDeal,
    responses((status = 201, body = Deal), (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    member: TenantMember,
    Json(body): Json<CreateDeal>,
) -> Result<impl IntoResponse, ApiError> {
    let owner_id = match body.owner_id.as_deref() {
        Some(owner) => Some(check_owner(&crm, &member, owner).await?),
        None => default_owner(&member),
    };
    let optional_id = |field: &str, id: Option<&str>| id.map(|id| reference(field, id)).transpose();
    let new = NewDeal {
        title: text("title", &body.title, MAX_TEXT)?,
        value: deal_value(body.value.unwrap_or(0))?,
        currency: currency(body.currency.as_deref().unwrap_or(DEFAULT_CURRENCY))?,
        pipeline_id: optional_id("pipeline_id", body.pipeline_id.as_deref())?,
        stage_id: optional_id("stage_id", body.stage_id.as_deref())?,
        customer_id: optional_id("customer_id", body.customer_id.as_deref())?,
        company_id: optional_id("company_id", body.company_id.as_deref())?,
        owner_id,
        expected_close: body
            .expected_close
            .as_deref()
            .map(|d| date("expected_close", d))
            .transpose()?,
        custom: body.custom,
    };
    let reason = body
        .close_reason
        .as_deref()
        .map(close_reason)
        .transpose()?
        .flatten();
    let deal = store::create_deal_with_reason(
        crm.db(),
        &member.scope,
        new,
        reason,
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok((StatusCode::CREATED, [etag(deal.version)], Json(deal)))
}

/// One deal; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/deals/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "deal id")),
    responses((status = 200, body = Deal), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let deal = store::deal_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("deal"))?;
    Ok(([etag(deal.version)], Json(deal)))
}

/// `PATCH /api/crm/deals/{id}` body: only the fields given change; `null` clears an
/// optional one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateDeal {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    value: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    /// Move to this pipeline: to `stage_id`, or to its first stage of the deal's status.
    #[serde(default)]
    pipeline_id: Option<String>,
    /// Move to this stage of the deal's (or the new) pipeline.
    #[serde(default)]
    stage_id: Option<String>,
    /// `won` or `lost` (or `open`): move to the pipeline's first stage of that kind, unless
    /// the deal has that status already.
    #[serde(default)]
    status: Option<StageKind>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    customer_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    company_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    owner_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    expected_close: Option<Option<String>>,
    /// Why it was won or lost (cleared when the deal reopens).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    close_reason: Option<Option<String>>,
    /// Custom values to set; `null` removes one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    custom: Option<Map<String, Value>>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Change a deal, move it between stages or pipelines, or close it with
/// `"status": "won"|"lost"`. Requires `If-Match` (or `version`): a stale one answers 409 with
/// the current version.
#[utoipa::path(patch, path = "/api/crm/deals/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "deal id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateDeal,
    responses((status = 200, body = Deal), (status = 404),
        (status = 409, description = "stale version"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateDeal>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = super::required_version(&headers, body.version)?;
    let owner_id = super::owner_change(&crm, &member, body.owner_id).await?;
    let optional_ref = |field: &str, id: Option<Option<String>>| {
        id.map(|id| id.as_deref().map(|id| reference(field, id)).transpose())
            .transpose()
    };
    let changes = DealChanges {
        title: body
            .title
            .as_deref()
            .map(|t| text("title", t, MAX_TEXT))
            .transpose()?,
        value: body.value.map(deal_value).transpose()?,
        currency: body.currency.as_deref().map(currency).transpose()?,
        pipeline_id: body
            .pipeline_id
            .as_deref()
            .map(|p| reference("pipeline_id", p))
            .transpose()?,
        stage_id: body
            .stage_id
            .as_deref()
            .map(|s| reference("stage_id", s))
            .transpose()?,
        status: body.status,
        customer_id: optional_ref("customer_id", body.customer_id)?,
        company_id: optional_ref("company_id", body.company_id)?,
        owner_id,
        expected_close: body
            .expected_close
            .map(|d| d.as_deref().map(|d| date("expected_close", d)).transpose())
            .transpose()?,
        close_reason: body
            .close_reason
            .map(|r| {
                r.as_deref()
                    .map(close_reason)
                    .transpose()
                    .map(Option::flatten)
            })
            .transpose()?,
        custom: body.custom,
    };
    let deal = store::update_deal(
        crm.db(),
        &member.scope,
        &id,
        changes,
        Some(expected),
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(deal.version)], Json(deal)))
}

/// Delete a deal (admins). Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/deals/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "deal id")),
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
        &store::DEAL_REMOVAL,
        &id,
        &headers,
    )
    .await
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove),
    components(schemas(
        Deal,
        StageKind,
        DealListing,
        Board,
        BoardStage,
        CurrencyTotal,
        CreateDeal,
        UpdateDeal
    ))
)]
pub(super) struct Doc;
