//! HTTP routes of CDX (`/api/cdx/...`), all for the superadmin only, except a tenant's own
//! audit trail (`/api/cdx/tenant-audit`, live: `/api/cdx/tenant-stream`), which its admins
//! read too.

mod aggregates;
mod audit;
mod clients;
mod export;
pub(crate) mod internal;
mod services;
mod stream;
mod tenants;
mod verify;

use axum::Router;
use platform::http::BearerAuth;

use crate::CdxState;

/// Every route of the service, with full paths.
pub(crate) fn router() -> Router<CdxState> {
    Router::new()
        .merge(clients::router())
        .merge(tenants::router())
        .merge(export::router())
        .merge(services::router())
        .merge(audit::router())
        .merge(verify::router())
        .merge(aggregates::router())
        .merge(stream::router())
}
/// The OpenAPI description of the CDX API.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        clients::list, clients::create, clients::get_one, clients::update,
        tenants::list, tenants::create, tenants::get_one, tenants::update,
        tenants::delete, tenants::purge, export::export,
        aggregates::summary, aggregates::overview,
        services::list,
        audit::list, audit::tenant_list, verify::status, verify::start,
        stream::stream, stream::stream_ws, stream::tenant_stream, stream::tenant_stream_ws,
    ),
    components(schemas(
        crate::model::Client, crate::model::Tenant, crate::model::ServiceEntry,
        tenants::CreatedTenant, tenants::AdminSetup, crate::store::PurgeStatus,
        crate::store::PurgeStep,
        crate::tenant_list::TenantListItem, crate::aggregates::TenantCounters,
        crate::aggregates::SummaryColumns, crate::aggregates::ServiceSlots,
        crate::aggregates::Revenue,
        crate::aggregates::TenantSummary, crate::aggregates::PipelineValue,
        crate::aggregates::Overview, crate::aggregates::OverviewTotals,
        crate::aggregates::TenantsByStatus, crate::aggregates::DayActivity,
        crate::model::AuditEntry, crate::model::AuditActor,
        crate::chain::ChainReport, crate::chain::ChainBreak, crate::chain::CheckpointKey,
        crate::verification::VerificationStatus, crate::verification::CompletedVerification,
        crate::verification::RunningVerification, crate::verification::FailedVerification,
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

    #[test]
    fn openapi_lists_every_route() {
        let doc = crate::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for path in [
            "/api/cdx/clients",
            "/api/cdx/clients/{id}",
            "/api/cdx/tenants",
            "/api/cdx/tenants/{id}",
            "/api/cdx/tenants/{id}/summary",
            "/api/cdx/overview",
            "/api/cdx/services",
            "/api/cdx/audit",
            "/api/cdx/audit/verify",
            "/api/cdx/tenant-audit",
            "/api/cdx/stream",
            "/api/cdx/tenant-stream",
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
