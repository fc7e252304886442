//! Pipelines and their stages: every member reads them, admins configure them. The tenant's
//! default pipeline ("Sales") is created the first time it is needed.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{TenantAdmin, TenantMember};
use platform::http::{etag, expected_version, Json, Path};
use platform::validate::{text, Invalid};
use platform::ApiError;
use serde::{Deserialize, Serialize};

use super::reference;
use crate::model::{Pipeline, Stage, StageKind, MAX_TEXT};
use crate::store::{self, NewPipeline, PipelineChanges, StageInput};
use crate::Crm;

/// The pipeline routes.
pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/pipelines", get(list).post(create))
        .route(
            "/api/crm/pipelines/{id}",
            get(get_one).patch(update).delete(remove),
        )
}

/// Every pipeline of the tenant (at most 50), not paged.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct PipelineList {
    /// The default pipeline first, then the others in the order they were created.
    items: Vec<Pipeline>,
}

/// The tenant's pipelines with their ordered stages (creates the default one on first use).
#[utoipa::path(get, path = "/api/crm/pipelines", tag = "crm", security(("bearer" = [])),
    responses((status = 200, body = PipelineList), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
) -> Result<Json<PipelineList>, ApiError> {
    store::default_pipeline(crm.db(), &member.scope, &member.caller.actor()).await?;
    crm.announce();
    let items = store::list_pipelines(crm.db().reader(), &member.scope).await?;
    Ok(Json(PipelineList { items }))
}

/// A stage of a new pipeline.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateStage {
    /// Name (1..=200 characters, unique in the pipeline).
    name: String,
    /// `open` (default), `won` or `lost`.
    #[serde(default)]
    kind: Option<StageKind>,
}

/// `POST /api/crm/pipelines` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreatePipeline {
    /// Name (1..=200 characters, unique in the tenant).
    name: String,
    /// 1 to 30 stages in order, at least one of them open.
    stages: Vec<CreateStage>,
}

/// Validates a stage's name given as input `stages[i].name`.
fn stage_name(i: usize, name: &str) -> Result<String, Invalid> {
    text(&format!("stages[{i}].name"), name, MAX_TEXT)
}

/// Create a pipeline (admins).
#[utoipa::path(post, path = "/api/crm/pipelines", tag = "crm", security(("bearer" = [])),
    request_body = CreatePipeline,
    responses((status = 201, body = Pipeline), (status = 403),
        (status = 409, description = "name taken or too many pipelines"),
        (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Json(body): Json<CreatePipeline>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewPipeline {
        name: text("name", &body.name, MAX_TEXT)?,
        stages: body
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(StageInput {
                    id: None,
                    name: stage_name(i, &s.name)?,
                    kind: s.kind,
                })
            })
            .collect::<Result<_, Invalid>>()?,
    };
    let pipeline =
        store::create_pipeline(crm.db(), &admin.scope, new, &admin.caller.actor()).await?;
    crm.announce();
    Ok((
        StatusCode::CREATED,
        [etag(pipeline.version)],
        Json(pipeline),
    ))
}

/// One pipeline with its stages; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/pipelines/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "pipeline id")),
    responses((status = 200, body = Pipeline), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let pipeline = store::pipeline_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    Ok(([etag(pipeline.version)], Json(pipeline)))
}

/// A stage in the new stage list of a pipeline.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateStage {
    /// The stage this entry keeps (renamed, moved or re-kinded); absent for a new stage.
    #[serde(default)]
    id: Option<String>,
    /// Name (unique in the pipeline).
    name: String,
    /// `open`, `won` or `lost`; absent keeps a kept stage's kind, and makes a new one open.
    #[serde(default)]
    kind: Option<StageKind>,
}

/// `PATCH /api/crm/pipelines/{id}` body: only the fields given change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdatePipeline {
    /// New name.
    #[serde(default)]
    name: Option<String>,
    /// `true` makes this the tenant's default pipeline (the previous default stops being
    /// it); `false` is refused: make another pipeline the default instead.
    #[serde(default)]
    is_default: Option<bool>,
    /// The complete new ordered stage list: entries with an `id` keep that stage, entries
    /// without add one, stages left out are removed (409 `stage_in_use` while deals are in
    /// them).
    #[serde(default)]
    stages: Option<Vec<UpdateStage>>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Change a pipeline and its stages (admins). Requires `If-Match` (or `version`).
#[utoipa::path(patch, path = "/api/crm/pipelines/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "pipeline id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdatePipeline,
    responses((status = 200, body = Pipeline), (status = 403), (status = 404),
        (status = 409, description = "stale version, name taken, or a removed stage has deals"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdatePipeline>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = super::required_version(&headers, body.version)?;
    if body.is_default == Some(false) {
        return Err(Invalid::new(
            "is_default",
            "only true is accepted: make another pipeline the default instead",
        )
        .into());
    }
    let stages = body
        .stages
        .map(|stages| {
            stages
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Ok(StageInput {
                        id: s
                            .id
                            .as_deref()
                            .map(|id| reference(&format!("stages[{i}].id"), id))
                            .transpose()?,
                        name: stage_name(i, &s.name)?,
                        kind: s.kind,
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .transpose()?;
    let changes = PipelineChanges {
        name: body
            .name
            .as_deref()
            .map(|n| text("name", n, MAX_TEXT))
            .transpose()?,
        make_default: body.is_default == Some(true),
        stages,
    };
    let pipeline = store::update_pipeline(
        crm.db(),
        &admin.scope,
        &id,
        changes,
        Some(expected),
        &admin.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(pipeline.version)], Json(pipeline)))
}

/// Delete a pipeline (admins): refused with 409 for the default pipeline and while deals
/// are in it. Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/pipelines/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "pipeline id")),
    responses((status = 204), (status = 403), (status = 404),
        (status = 409, description = "the default pipeline, has deals, or stale version")))]
#[tracing::instrument(skip_all)]
pub(super) async fn remove(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = expected_version(&headers, None)?;
    store::delete_pipeline(crm.db(), &admin.scope, &id, expected, &admin.caller.actor()).await?;
    crm.announce();
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove),
    components(schemas(
        Pipeline,
        Stage,
        StageKind,
        PipelineList,
        CreatePipeline,
        CreateStage,
        UpdatePipeline,
        UpdateStage
    ))
)]
pub(super) struct Doc;
