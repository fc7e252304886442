//! Notes and activities (notes, calls, meetings, tasks): list with filters, sort and cursor
//! paging; CRUD. And the customer timeline: its notes and the stage changes of its deals.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{Role, TenantMember};
use platform::http::{etag, Json, Path, Query};
use platform::page::{page, Page, PageParams};
use platform::validate::long_text;
use platform::ApiError;
use serde::Deserialize;

use super::{id_param, reference};
use crate::model::{date, nullable, Note, NoteKind, MAX_BODY};
use crate::store::{self, NewNote, NoteChanges, NoteFilter, Sort, TimelineItem, NOTE_SORTS};
use crate::Crm;

pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/notes", get(list).post(create))
        .route(
            "/api/crm/notes/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/api/crm/customers/{id}/timeline", get(timeline))
}

/// Filters, sort and paging of the note list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NoteListParams {
    /// About this customer id.
    customer: Option<String>,
    /// About this company id.
    company: Option<String>,
    /// About this deal id.
    deal: Option<String>,
    /// Kind: note, call, meeting or task.
    #[param(value_type = Option<String>)]
    kind: Option<NoteKind>,
    /// Tasks that are done (`true`) or open (`false`).
    done: Option<bool>,
    /// Tasks due on or before this date (`YYYY-MM-DD`).
    due_before: Option<String>,
    /// `created` (default `-created`, newest first) or `due` (tasks with a due date, by
    /// date); `-` for descending.
    sort: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

impl NoteListParams {
    /// The validated filter and sort.
    fn filter(&self) -> Result<(NoteFilter, Sort), ApiError> {
        let filter = NoteFilter {
            customer_id: id_param("customer", self.customer.as_deref())?,
            company_id: id_param("company", self.company.as_deref())?,
            deal_id: id_param("deal", self.deal.as_deref())?,
            kind: self.kind,
            done: self.done,
            due_before: self
                .due_before
                .as_deref()
                .map(|d| date("due_before", d))
                .transpose()
                .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?,
        };
        let sort = Sort::parse(self.sort.as_deref(), NOTE_SORTS, "-created")?;
        Ok((filter, sort))
    }
}

/// The tenant's notes and activities.
#[utoipa::path(get, path = "/api/crm/notes", tag = "crm", security(("bearer" = [])),
    params(NoteListParams),
    responses((status = 200, body = Page<Note>), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<NoteListParams>,
) -> Result<Json<Page<Note>>, ApiError> {
    let (filter, sort) = params.filter()?;
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit()?;
    let rows = store::list_notes(
        crm.db().reader(),
        &member.scope,
        &filter,
        &sort,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |n| {
        Sort::cursor(store::note_sort_value(n, &sort), &n.id)
    })))
}

/// `POST /api/crm/notes` body. At least one of `customer_id`, `company_id`, `deal_id`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateNote {
    /// Kind (default `note`).
    #[serde(default)]
    kind: Option<NoteKind>,
    /// Text (1..=10000 characters, line breaks allowed).
    body: String,
    /// Customer id.
    #[serde(default)]
    customer_id: Option<String>,
    /// Company id.
    #[serde(default)]
    company_id: Option<String>,
    /// Deal id.
    #[serde(default)]
    deal_id: Option<String>,
    /// Due date `YYYY-MM-DD` (tasks only).
    #[serde(default)]
    due_on: Option<String>,
    /// Whether the task is done (tasks only; default `false`).
    #[serde(default)]
    done: Option<bool>,
}

/// Validates an optional link given as body field `field`.
fn link(field: &str, id: Option<&str>) -> Result<Option<String>, ApiError> {
    id.map(|id| reference(field, id)).transpose()
}

/// Create a note or activity; its author is the caller.
#[utoipa::path(post, path = "/api/crm/notes", tag = "crm", security(("bearer" = [])),
    request_body = CreateNote,
    responses((status = 201, body = Note), (status = 422, description = "invalid input")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    member: TenantMember,
    Json(body): Json<CreateNote>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewNote {
        kind: body.kind.unwrap_or(NoteKind::Note),
        body: long_text("body", &body.body, MAX_BODY)?,
        customer_id: link("customer_id", body.customer_id.as_deref())?,
        company_id: link("company_id", body.company_id.as_deref())?,
        deal_id: link("deal_id", body.deal_id.as_deref())?,
        due_on: body
            .due_on
            .as_deref()
            .map(|d| date("due_on", d))
            .transpose()?,
        done: body.done.unwrap_or(false),
        author_id: Some(member.caller.id().to_string()),
    };
    let note = store::create_note(crm.db(), &member.scope, new, &member.caller.actor()).await?;
    crm.announce();
    Ok((StatusCode::CREATED, [etag(note.version)], Json(note)))
}

/// One note; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/notes/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "note id")),
    responses((status = 200, body = Note), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let note = store::note_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    Ok(([etag(note.version)], Json(note)))
}

/// `PATCH /api/crm/notes/{id}` body: only the fields given change; `null` clears an
/// optional one. The kind and the author never change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateNote {
    /// Text.
    #[serde(default)]
    body: Option<String>,
    /// Customer id.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    customer_id: Option<Option<String>>,
    /// Company id.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    company_id: Option<Option<String>>,
    /// Deal id.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    deal_id: Option<Option<String>>,
    /// Due date `YYYY-MM-DD` (tasks only).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    due_on: Option<Option<String>>,
    /// Whether the task is done (tasks only).
    #[serde(default)]
    done: Option<bool>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
}

/// Validates a nullable link given as body field `field`.
fn nullable_link(
    field: &str,
    id: Option<Option<String>>,
) -> Result<Option<Option<String>>, ApiError> {
    id.map(|id| link(field, id.as_deref())).transpose()
}

/// Change a note (any member). Requires `If-Match` (or `version`): a stale one answers 409
/// with the current version.
#[utoipa::path(patch, path = "/api/crm/notes/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "note id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateNote,
    responses((status = 200, body = Note), (status = 404),
        (status = 409, description = "stale version"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateNote>,
) -> Result<impl IntoResponse, ApiError> {
    let expected = super::required_version(&headers, body.version)?;
    let changes = NoteChanges {
        body: body
            .body
            .as_deref()
            .map(|b| long_text("body", b, MAX_BODY))
            .transpose()?,
        customer_id: nullable_link("customer_id", body.customer_id)?,
        company_id: nullable_link("company_id", body.company_id)?,
        deal_id: nullable_link("deal_id", body.deal_id)?,
        due_on: body
            .due_on
            .map(|d| d.as_deref().map(|d| date("due_on", d)).transpose())
            .transpose()?,
        done: body.done,
    };
    let note = store::update_note(
        crm.db(),
        &member.scope,
        &id,
        changes,
        Some(expected),
        &member.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(note.version)], Json(note)))
}

/// Delete a note: its author or an admin (403 for other users). Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/notes/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "note id")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub(super) async fn remove(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    if member.caller.role == Role::User {
        // Authors never change, so checking before the deletion's transaction is safe.
        let note = store::note_by_id(crm.db().reader(), &member.scope, &id)
            .await?
            .ok_or_else(|| ApiError::not_found("note"))?;
        if note.author_id.as_deref() != Some(member.caller.id()) {
            return Err(ApiError::forbidden(
                "only the note's author or an admin may delete it",
            ));
        }
    }
    super::remove_record(
        &crm,
        &member.scope,
        &member.caller,
        &store::NOTE_REMOVAL,
        &id,
        &headers,
    )
    .await
}

/// Paging of the customer timeline.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TimelineParams {
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// A customer's timeline, newest first: its notes and activities (`"type": "note"`) and
/// the stage changes of its deals (`"type": "stage_change"`).
#[utoipa::path(get, path = "/api/crm/customers/{id}/timeline", tag = "crm",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "customer id"), TimelineParams),
    responses((status = 200, body = Page<TimelineItem>), (status = 400), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn timeline(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
    Query(params): Query<TimelineParams>,
) -> Result<Json<Page<TimelineItem>>, ApiError> {
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit()?;
    let items = store::customer_timeline(
        crm.db().reader(),
        &member.scope,
        &id,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(items, limit, TimelineItem::cursor)))
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove, timeline),
    components(schemas(Note, NoteKind, CreateNote, UpdateNote, TimelineItem))
)]
pub(super) struct Doc;
