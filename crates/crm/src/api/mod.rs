//! HTTP routes of the CRM (`/api/crm/...`). Every route takes a tenant caller extractor:
//! [`TenantMember`] to read and write records, [`platform::caller::TenantAdmin`] to delete
//! them and to configure pipelines and custom fields. The superadmin acts with `X-Tenant`.

mod companies;
mod customers;
mod deals;
mod fields;
mod import;
mod notes;
mod pipelines;

use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use platform::caller::{Caller, Role, TenantMember, TenantScope};
use platform::http::BearerAuth;
use platform::ApiError;
use utoipa::OpenApi;

use crate::store::{self, Reference};
use crate::{Config, Crm};

pub(crate) use customers::CustomerListParams;

/// Every route of the service, with full paths.
pub(crate) fn router(config: &Config) -> Router<Crm> {
    Router::new()
        .merge(customers::router())
        .merge(companies::router())
        .merge(deals::router())
        .merge(pipelines::router())
        .merge(notes::router())
        .merge(fields::router())
        .merge(import::router(config))
}

/// The OpenAPI description of the CRM API.
#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerAuth),
    tags((name = "crm", description = "CRM: customers, companies, deals, pipelines, notes"))
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The whole document: every route module's part merged.
    pub fn document() -> utoipa::openapi::OpenApi {
        let mut doc = ApiDoc::openapi();
        for part in [
            customers::Doc::openapi(),
            companies::Doc::openapi(),
            deals::Doc::openapi(),
            pipelines::Doc::openapi(),
            notes::Doc::openapi(),
            fields::Doc::openapi(),
            import::Doc::openapi(),
        ] {
            doc.merge(part);
        }
        doc
    }
}

/// Validates an id given as input `field` (a query parameter or body field).
pub(crate) fn reference(field: &str, id: &str) -> Result<String, ApiError> {
    Ok(crate::model::reference(field, id.trim())?)
}

/// Validates an id given as query parameter `name` (400 otherwise).
pub(crate) fn id_param(name: &str, id: Option<&str>) -> Result<Option<String>, ApiError> {
    id.map(|id| {
        crate::model::reference(name, id.trim())
            .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
    })
    .transpose()
}

/// Longest search text, in characters.
const MAX_SEARCH: usize = 200;

/// Validates `?q=`: trimmed, lower-cased; blank means no search.
pub(crate) fn search(q: Option<&str>) -> Result<Option<String>, ApiError> {
    text_param("q", q, MAX_SEARCH).map(|q| q.map(|q| q.to_lowercase()))
}

/// Validates a one-line text query parameter (400 otherwise); blank means absent.
pub(crate) fn text_param(
    name: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    Ok(value
        .map(|v| platform::validate::optional_text(name, v, max))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?
        .flatten())
}

/// The owner of a record a tenant user creates without naming one: that user. The
/// superadmin is not a tenant user, so its records start without an owner.
pub(crate) fn default_owner(member: &TenantMember) -> Option<String> {
    (member.caller.role != Role::Superadmin).then(|| member.caller.id().to_string())
}

/// Checks that `owner` is a user of the member's tenant (422 otherwise). The caller itself
/// always qualifies.
pub(crate) async fn check_owner(
    crm: &Crm,
    member: &TenantMember,
    owner: &str,
) -> Result<String, ApiError> {
    let owner = reference("owner_id", owner)?;
    if default_owner(member).as_deref() == Some(owner.as_str())
        || store::exists(crm.db().reader(), &member.scope, Reference::Owner, &owner).await?
    {
        Ok(owner)
    } else {
        Err(platform::validate::Invalid::new("owner_id", "no such user in this tenant").into())
    }
}

/// The owner a PATCH sets: absent stays absent, `null` clears, an id is checked with
/// [`check_owner`].
pub(crate) async fn owner_change(
    crm: &Crm,
    member: &TenantMember,
    owner: Option<Option<String>>,
) -> Result<Option<Option<String>>, ApiError> {
    match owner {
        Some(Some(owner)) => Ok(Some(Some(check_owner(crm, member, &owner).await?))),
        other => Ok(other.map(|_| None)),
    }
}

/// Deletes the record `id` as `removal` describes, honouring `If-Match`; answers 204.
pub(crate) async fn remove_record(
    crm: &Crm,
    scope: &TenantScope,
    caller: &Caller,
    removal: &store::Removal,
    id: &str,
    headers: &HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = platform::http::expected_version(headers, None)?;
    store::delete_record(crm.db(), scope, removal, id, expected, &caller.actor()).await?;
    crm.announce();
    Ok(StatusCode::NO_CONTENT)
}

/// The version a change must be based on: `If-Match` or the body's `version` (428 when
/// neither is given, so that no change overwrites one its author has not seen).
pub(crate) fn required_version(headers: &HeaderMap, body: Option<i64>) -> Result<i64, ApiError> {
    platform::http::expected_version(headers, body)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "version_required",
            "send If-Match with the ETag you read, or the record's version in the body",
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_lists_every_route() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for path in [
            "/api/crm/customers",
            "/api/crm/customers/{id}",
            "/api/crm/customers/{id}/timeline",
            "/api/crm/customers/import",
            "/api/crm/customers/export",
            "/api/crm/companies",
            "/api/crm/companies/{id}",
            "/api/crm/deals",
            "/api/crm/deals/{id}",
            "/api/crm/pipelines",
            "/api/crm/pipelines/{id}",
            "/api/crm/notes",
            "/api/crm/notes/{id}",
            "/api/crm/fields",
            "/api/crm/fields/{id}",
        ] {
            assert!(
                paths.iter().any(|p| *p == path),
                "{path} missing from {paths:?}"
            );
        }
    }
}
