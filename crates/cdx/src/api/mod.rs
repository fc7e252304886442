//! HTTP routes of CDX (`/api/cdx/...`), all for the superadmin only.

mod audit;
mod clients;
mod services;
mod tenants;

use axum::http::HeaderMap;
use axum::Router;
use platform::http::if_match_version;
use platform::ApiError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::CdxState;

/// Every route of the service, with full paths.
pub(crate) fn router() -> Router<CdxState> {
    Router::new()
        .merge(clients::router())
        .merge(tenants::router())
        .merge(services::router())
        .merge(audit::router())
}

/// The version a write expects: `If-Match` or the body's `version`; when both are given
/// they must agree.
fn expected_version(headers: &HeaderMap, body: Option<i64>) -> Result<Option<i64>, ApiError> {
    match (if_match_version(headers)?, body) {
        (Some(a), Some(b)) if a != b => Err(ApiError::bad_request(
            "conflicting_versions",
            "If-Match and the body's version disagree",
        )),
        (header, body) => Ok(header.or(body)),
    }
}

/// Declares the bearer token every CDX route requires.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI description of the CDX API.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        clients::list, clients::create, clients::get_one, clients::update,
        tenants::list, tenants::create, tenants::get_one, tenants::update,
        services::list,
        audit::list,
    ),
    components(schemas(
        crate::model::Client, crate::model::Tenant, crate::model::ServiceEntry,
        crate::model::AuditEntry, crate::model::AuditActor,
        clients::CreateClient, clients::UpdateClient,
        tenants::CreateTenant, tenants::UpdateTenant,
        services::ServiceList,
    )),
    modifiers(&BearerAuth),
    tags((name = "cdx", description = "Master registry: clients, tenants, services, audit log"))
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderValue};

    #[test]
    fn if_match_and_body_version_must_agree() {
        let mut headers = HeaderMap::new();
        assert_eq!(expected_version(&headers, Some(3)).ok(), Some(Some(3)));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"4\""));
        assert_eq!(expected_version(&headers, None).ok(), Some(Some(4)));
        assert_eq!(expected_version(&headers, Some(4)).ok(), Some(Some(4)));
        assert!(expected_version(&headers, Some(3)).is_err());
    }

    #[test]
    fn openapi_lists_every_route() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for path in [
            "/api/cdx/clients",
            "/api/cdx/clients/{id}",
            "/api/cdx/tenants",
            "/api/cdx/tenants/{id}",
            "/api/cdx/services",
            "/api/cdx/audit",
        ] {
            assert!(
                paths.iter().any(|p| *p == path),
                "{path} missing from {paths:?}"
            );
        }
    }

    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn openapi_references_resolve() {
        let doc = serde_json::to_value(crate::openapi()).expect("serializable");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a schema reference");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{r} does not resolve"
            );
        }
        assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    }
}
