//! CSV import and export of customers: `POST /api/crm/customers/import` (the CSV as the
//! body, or as the file of a form) and `GET /api/crm/customers/export` (streamed CSV).

use std::io;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::TryStreamExt;
use platform::caller::TenantMember;
use platform::http::{Json, Query};
use platform::ApiError;
use serde::Deserialize;

use super::{default_owner, CustomerListParams};
use crate::import::{
    export_stream, import_customers, too_large, FieldError, ImportSummary, Limits, LineErrors,
    Mode, TooLarge,
};
use crate::model::Entity;
use crate::store;
use crate::{Config, Crm};

/// What a multipart form may carry beyond its CSV file (boundaries, part headers, small
/// fields) before the whole body is refused.
const FORM_OVERHEAD: usize = 1024 * 1024;

/// Routes of the import and the export. The import lifts the edge's default body limit:
/// it enforces `import_max_bytes` itself while streaming (and caps a form's whole body a
/// little above it).
pub(super) fn router(config: &Config) -> Router<Crm> {
    let form_limit = config.import_max_bytes.saturating_add(FORM_OVERHEAD);
    Router::new()
        .route(
            "/api/crm/customers/import",
            post(import).layer(DefaultBodyLimit::max(form_limit)),
        )
        .route("/api/crm/customers/export", get(export))
}

/// `?mode=` of an import.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ImportParams {
    /// `skip_invalid`: import the valid rows and report the others. By default any invalid
    /// row refuses the whole file.
    mode: Option<String>,
}

/// The body formats an import accepts.
enum Upload {
    Csv,
    Form,
}

/// The body format named by `Content-Type` (415 unless CSV or a multipart form).
fn upload_kind(headers: &HeaderMap) -> Result<Upload, ApiError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match mime.as_str() {
        "text/csv" => Ok(Upload::Csv),
        "multipart/form-data" => Ok(Upload::Form),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV as the body with Content-Type: text/csv, or as the file of a \
             multipart/form-data form",
        )),
    }
}

/// Import customers from CSV.
///
/// The first line names the columns (case-insensitive):
/// `first_name` (required), `last_name`, `email`, `phone`, `company` (a company name,
/// created when the tenant has none of that name), `company_id`, `status`, `owner_id`,
/// `tags` (separated by `;`), and custom fields by name or as `custom.<name>`; `id`,
/// `created_at`, `updated_at` and `company_name` are ignored. A row whose email belongs
/// to an existing customer updates it (the columns of the file; an empty cell clears an
/// optional value), a second row with the same email is an error. Every row is validated
/// first; any invalid row refuses the file (422 `import_invalid`, nothing imported, with the
/// errors by line in `details.errors`: at most 1000 lines, `details.invalid_rows` counts
/// all) unless `mode=skip_invalid`, which imports the valid rows and reports the others.
/// Limits: `import_max_bytes` (413) and `import_max_rows` (422).
#[utoipa::path(post, path = "/api/crm/customers/import", tag = "crm", security(("bearer" = [])),
    params(ImportParams),
    request_body(description = "the CSV (or a multipart/form-data form whose first file is the CSV)",
        content((String = "text/csv"), (String = "multipart/form-data"))),
    responses((status = 200, body = ImportSummary, description = "imported"),
        (status = 413, description = "larger than import_max_bytes"),
        (status = 415, description = "neither text/csv nor multipart/form-data"),
        (status = 422, description = "unknown or missing columns, too many rows, or invalid \
            rows (import_invalid: details.errors lists them by line)")))]
#[tracing::instrument(skip_all)]
pub(super) async fn import(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<ImportParams>,
    request: Request,
) -> Result<Json<ImportSummary>, ApiError> {
    let mode = match params.mode.as_deref().map(str::trim) {
        None | Some("") | Some("all_or_nothing") => Mode::AllOrNothing,
        Some("skip_invalid") => Mode::SkipInvalid,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "mode must be skip_invalid (or absent: all or nothing)",
            ))
        }
    };
    let kind = upload_kind(request.headers())?;
    let limits = Limits {
        max_bytes: crm.config().import_max_bytes,
        max_rows: crm.config().import_max_rows,
    };
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let overhead = match kind {
        Upload::Csv => 0,
        Upload::Form => FORM_OVERHEAD,
    };
    if announced.is_some_and(|n| n > limits.max_bytes.saturating_add(overhead)) {
        return Err(too_large(limits));
    }
    let scope = &member.scope;
    let actor = member.caller.actor();
    let owner = default_owner(&member);
    let summary = match kind {
        Upload::Csv => {
            let body = request
                .into_body()
                .into_data_stream()
                .map_err(io::Error::other);
            import_customers(&crm, scope, &actor, owner, mode, limits, body).await?
        }
        Upload::Form => {
            let mut form = Multipart::from_request(request, &())
                .await
                .map_err(|e| ApiError::bad_request("invalid_form", e.body_text()))?;
            loop {
                let field = form.next_field().await.map_err(|e| form_error(&e))?;
                let Some(field) = field else {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_file",
                        "the form has no file field with the CSV",
                    ));
                };
                if field.file_name().is_none() {
                    continue;
                }
                let body = field.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        io::Error::other(TooLarge)
                    } else {
                        io::Error::other(e)
                    }
                });
                break import_customers(&crm, scope, &actor, owner, mode, limits, body).await?;
            }
        }
    };
    Ok(Json(summary))
}

/// A malformed form (400) or one past the size limit (413).
fn form_error(e: &axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the form exceeds the import size limit",
        )
    } else {
        ApiError::bad_request("invalid_form", e.body_text())
    }
}

/// Export customers as CSV.
///
/// The customers matching the list's filters, in its sort, streamed page by page. Columns:
/// `id`, `first_name`, `last_name`, `email`, `phone`, `company` (its name), `status`,
/// `owner_id`, `tags` (joined with `;`), `created_at`, `updated_at`, then `custom.<name>`
/// per custom customer field of the tenant. `limit` and `cursor` are ignored: the export
/// holds every match. The import reads the file back (into this or another tenant).
#[utoipa::path(get, path = "/api/crm/customers/export", tag = "crm", security(("bearer" = [])),
    params(CustomerListParams),
    responses((status = 200, description = "the customers as CSV", body = String,
            content_type = "text/csv"),
        (status = 400, description = "invalid filter"), (status = 401)))]
#[tracing::instrument(skip_all)]
pub(super) async fn export(
    State(crm): State<Crm>,
    member: TenantMember,
    Query(params): Query<CustomerListParams>,
) -> Result<Response, ApiError> {
    let (filter, sort) = params.filter()?;
    let defs = store::field_definitions(crm.db().reader(), &member.scope, Entity::Customer).await?;
    let stream = export_stream(crm.clone(), member.scope.clone(), filter, sort, defs);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"customers.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(import, export),
    components(schemas(ImportSummary, LineErrors, FieldError))
)]
pub(super) struct Doc;
