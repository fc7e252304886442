//! The export of a tenant's data from every service (data portability), streamed: the
//! document is written as each service produces its part, never held in memory.

use std::future::ready;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, StreamExt};
use platform::caller::Superadmin;
use platform::export::{json_response, logging_failures, ExportStream};
use platform::http::Path;
use platform::ids::Timestamp;
use platform::ApiError;

use crate::model::Tenant;
use crate::store;
use crate::CdxState;

/// The format id of the document, for the programs that read it back.
pub(crate) const FORMAT: &str = "metatron-tenant-export/1";

pub(super) fn router() -> Router<CdxState> {
    Router::new().route("/api/cdx/tenants/{id}/export", get(export))
}

/// Download one document with all of a tenant's data in every service (data portability):
/// `{"format", "exported_at", "tenant", "services": {"cdx": …, "auth": {"users": […]},
/// "crm": {"customers": […], …}}}`. Password hashes and tokens never leave their service.
///
/// The document is streamed as the services read their tables, so its size has no limit.
/// Every service is reached before the answer starts (one that cannot be answers 503);
/// a failure after that cannot change the status any more: it aborts the transfer, and
/// the client sees an incomplete body rather than a shorter document that parses. The
/// export is audited (`cdx.tenant.exported`) before any data leaves.
#[utoipa::path(get, path = "/api/cdx/tenants/{id}/export", tag = "cdx", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses(
        (status = 200, description = "the export, a JSON attachment streamed as it is read; \
            a failure midway aborts the transfer"),
        (status = 404),
        (status = 503, description = "a service could not be reached; nothing was sent")))]
#[tracing::instrument(skip_all)]
pub(super) async fn export(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = store::tenant_by_key(cdx.db().reader(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    // Starting each service's export first (for another process: its answer's head) turns
    // the commonest failure, a service that is down, into a clean 503.
    let mut parts = Vec::new();
    for (service, exporter) in cdx.exporters() {
        let export = exporter.export_tenant(&tenant.id).await?;
        parts.push((
            service.clone(),
            logging_failures(export, service, &tenant.id),
        ));
    }
    store::record_export(cdx.db(), &tenant, &caller.actor()).await?;
    cdx.announce();
    let disposition = HeaderValue::from_str(&format!(
        "attachment; filename=\"tenant-{}.json\"",
        tenant.slug
    ))
    .map_err(|e| ApiError::internal("naming the export file", e))?;
    let mut response = json_response(document(&tenant, parts)?);
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, disposition);
    Ok(response)
}

/// The export document: CDX's own part, then each service's part as it streams in.
fn document(
    tenant: &Tenant,
    services: Vec<(String, ExportStream)>,
) -> Result<ExportStream, ApiError> {
    let tenant = to_json(tenant)?;
    let head = [
        "{\"format\":",
        &to_json(&FORMAT)?,
        ",\"exported_at\":",
        &to_json(&Timestamp::now())?,
        ",\"tenant\":",
        &tenant,
        ",\"services\":{",
        &to_json(&crate::SERVICE.name)?,
        ":{\"tenant\":",
        &tenant,
        "}",
    ]
    .concat();
    let mut parts = Vec::with_capacity(services.len());
    for (service, export) in services {
        let label = Bytes::from(format!(",{}:", to_json(&service)?));
        parts.push(stream::once(ready(Ok(label))).chain(export));
    }
    let document = stream::once(ready(Ok(Bytes::from(head))))
        .chain(stream::iter(parts).flatten())
        .chain(stream::once(ready(Ok(Bytes::from_static(b"}}")))))
        // Nothing after an error: not even the closing braces, which would make a
        // truncated document whole for a reader that ignores the error.
        .scan(false, |failed, chunk| {
            if *failed {
                return ready(None);
            }
            *failed = chunk.is_err();
            ready(Some(chunk))
        });
    Ok(document.boxed())
}

fn to_json(value: &impl serde::Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::internal("serializing the export", e))
}
