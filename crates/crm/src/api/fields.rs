//! Custom field definitions: which keys customers, companies and deals of the tenant may
//! carry in `custom`, of which type, and whether they are required. Members read them;
//! admins configure them.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::{TenantAdmin, TenantMember};
use platform::http::{etag, expected_version, Json, Path, Query};
use platform::page::Page;
use platform::validate::{text, Invalid};
use platform::ApiError;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{
    field_name, invalid_fields, nullable, Entity, FieldDefinition, FieldKind, MAX_TEXT,
};
use crate::store::{self, FieldChanges, NewField};
use crate::Crm;

/// Most options of a select field.
const MAX_OPTIONS: usize = 50;
/// Longest option, in characters.
const MAX_OPTION: usize = 100;

pub(super) fn router() -> Router<Crm> {
    Router::new()
        .route("/api/crm/fields", get(list).post(create))
        .route(
            "/api/crm/fields/{id}",
            get(get_one).patch(update).delete(remove),
        )
}

/// Validates the options of a select field: 1..=50 distinct one-line texts of up to 100
/// characters each (trimmed).
fn options(raw: &[String]) -> Result<Vec<String>, Invalid> {
    if raw.is_empty() || raw.len() > MAX_OPTIONS {
        return Err(Invalid::new(
            "options",
            format!("a select field needs 1 to {MAX_OPTIONS} options"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for option in raw {
        let option = text("options", option, MAX_OPTION)?;
        if out.contains(&option) {
            return Err(Invalid::new(
                "options",
                format!("{option:?} is listed twice"),
            ));
        }
        out.push(option);
    }
    Ok(out)
}

/// `GET /api/crm/fields` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct FieldListParams {
    /// Only the fields of this record type: customer, company or deal.
    #[param(value_type = Option<String>)]
    entity: Option<Entity>,
}

/// The tenant's custom field definitions (by record type, then name); not paged, there are
/// at most 50 per record type.
#[utoipa::path(get, path = "/api/crm/fields", tag = "crm", security(("bearer" = [])),
    params(FieldListParams),
    responses((status = 200, body = Page<FieldDefinition>), (status = 400), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<FieldListParams>,
) -> Result<Json<Page<FieldDefinition>>, ApiError> {
    let items = store::list_fields(crm.db().reader(), &member.scope, params.entity).await?;
    // One page holds them all; the shape is that of every list.
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// `POST /api/crm/fields` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateField {
    /// Record type: customer, company or deal.
    entity: Entity,
    /// Key in `custom`: `[a-z][a-z0-9_]*`, up to 50 characters, unique per record type.
    name: String,
    /// Label shown to people (1..=200 characters).
    label: String,
    /// text, number, date, boolean or select.
    kind: FieldKind,
    /// Allowed values of a select field (1..=50 distinct texts of up to 100 characters);
    /// only for select fields.
    #[serde(default)]
    options: Vec<String>,
    /// Whether every record must have a value (default false).
    #[serde(default)]
    required: bool,
}

/// Define a custom field (admins).
#[utoipa::path(post, path = "/api/crm/fields", tag = "crm", security(("bearer" = [])),
    request_body = CreateField,
    responses((status = 201, body = FieldDefinition), (status = 403),
        (status = 409, description = "a field of this name exists for the record type"),
        (status = 422, description = "invalid input, or 50 fields exist already")))]
#[tracing::instrument(skip_all)]
pub(super) async fn create(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Json(body): Json<CreateField>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors = Vec::new();
    let name = field_name(body.name.trim())
        .map_err(|e| errors.push(e))
        .ok();
    let label = text("label", &body.label, MAX_TEXT)
        .map_err(|e| errors.push(e))
        .ok();
    let options = match body.kind {
        FieldKind::Select => options(&body.options).map_err(|e| errors.push(e)).ok(),
        _ if body.options.is_empty() => Some(Vec::new()),
        _ => {
            errors.push(Invalid::new("options", "only select fields have options"));
            None
        }
    };
    let (Some(name), Some(label), Some(options)) = (name, label, options) else {
        return Err(invalid_fields(errors));
    };
    let new = NewField {
        entity: body.entity,
        name,
        label,
        kind: body.kind,
        options,
        required: body.required,
    };
    let field = store::create_field(crm.db(), &admin.scope, new, &admin.caller.actor()).await?;
    crm.announce();
    Ok((StatusCode::CREATED, [etag(field.version)], Json(field)))
}

/// One definition; its `ETag` is its version.
#[utoipa::path(get, path = "/api/crm/fields/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "field definition id")),
    responses((status = 200, body = FieldDefinition), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn get_one(
    State(crm): State<Crm>,
    member: TenantMember,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let field = store::field_by_id(crm.db().reader(), &member.scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("field"))?;
    Ok(([etag(field.version)], Json(field)))
}

/// `PATCH /api/crm/fields/{id}` body: only the fields given change. The record type, name
/// and kind are immutable (422 when sent): define a new field instead.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateField {
    /// Label.
    #[serde(default)]
    label: Option<String>,
    /// The whole new option list of a select field.
    #[serde(default)]
    options: Option<Vec<String>>,
    /// Whether every record must have a value; applies on each record's next write.
    #[serde(default)]
    required: Option<bool>,
    /// The version this change is based on (alternative to `If-Match`).
    #[serde(default)]
    version: Option<i64>,
    /// Immutable: refused.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(ignore)]
    entity: Option<Option<Value>>,
    /// Immutable: refused.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(ignore)]
    name: Option<Option<Value>>,
    /// Immutable: refused.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(ignore)]
    kind: Option<Option<Value>>,
}

/// Change a definition's label, options or required flag (admins). Requires `If-Match`
/// (or `version`). Stored values are not rewritten: a field made required, or a select
/// value no longer among the options, is enforced on the next write of each record.
#[utoipa::path(patch, path = "/api/crm/fields/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "field definition id"),
        ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = UpdateField,
    responses((status = 200, body = FieldDefinition), (status = 403), (status = 404),
        (status = 409, description = "stale version"),
        (status = 428, description = "no If-Match or version"), (status = 422)))]
#[tracing::instrument(skip_all)]
pub(super) async fn update(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<UpdateField>,
) -> Result<impl IntoResponse, ApiError> {
    let mut errors: Vec<Invalid> = [
        ("entity", body.entity.is_some()),
        ("name", body.name.is_some()),
        ("kind", body.kind.is_some()),
    ]
    .into_iter()
    .filter(|(_, sent)| *sent)
    .map(|(field, _)| Invalid::new(field, "cannot be changed; define a new field instead"))
    .collect();
    let label = body
        .label
        .as_deref()
        .map(|l| text("label", l, MAX_TEXT))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let options = body
        .options
        .as_deref()
        .map(options)
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    if !errors.is_empty() {
        return Err(invalid_fields(errors));
    }
    let expected = super::required_version(&headers, body.version)?;
    let changes = FieldChanges {
        label,
        options,
        required: body.required,
    };
    let field = store::update_field(
        crm.db(),
        &admin.scope,
        &id,
        changes,
        Some(expected),
        &admin.caller.actor(),
    )
    .await?;
    crm.announce();
    Ok(([etag(field.version)], Json(field)))
}

/// Delete a definition (admins). Its values are removed from every record of its type in
/// the same transaction (those records get a new version), so a later field of the same
/// name starts empty. Honors `If-Match`.
#[utoipa::path(delete, path = "/api/crm/fields/{id}", tag = "crm", security(("bearer" = [])),
    params(("id" = String, Path, description = "field definition id"),
        ("If-Match" = Option<String>, Header, description = "ETag the deletion is based on")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
#[tracing::instrument(skip_all)]
pub(super) async fn remove(
    State(crm): State<Crm>,
    admin: TenantAdmin,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = expected_version(&headers, None)?;
    store::delete_field(crm.db(), &admin.scope, &id, expected, &admin.caller.actor()).await?;
    crm.announce();
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, get_one, update, remove),
    components(schemas(FieldDefinition, Entity, FieldKind, CreateField, UpdateField))
)]
pub(super) struct Doc;
