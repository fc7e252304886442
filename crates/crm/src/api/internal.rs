//! Endpoints for other platform services (the distributed topology), under `/internal/crm`:
//! a tenant's data for CDX's export, and the facts CDX's aggregates are checked against. Each requires a valid service token
//! ([`platform::identity`]); the gateway never routes `/internal/...`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use platform::export::TenantExport;
use platform::facts::{FactsPage, FactsQuery};
use platform::http::Query;
use platform::identity::{CallingService, ServiceIdentity};
use platform::ApiError;

use crate::Crm;

type Internal = platform::identity::Internal<Crm>;

/// The internal routes, checking callers with `identity`.
pub(crate) fn router(crm: Crm, identity: ServiceIdentity) -> Router {
    Router::new()
        .route("/internal/crm/tenants/{id}/export", get(export))
        .route("/internal/crm/facts", get(facts))
        .with_state(Internal {
            service: crm,
            identity,
        })
}

async fn export(
    State(state): State<Internal>,
    _: CallingService,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(state.service.export_tenant(&id).await?))
}

async fn facts(
    State(state): State<Internal>,
    _: CallingService,
    Query(query): Query<FactsQuery>,
) -> Result<Json<FactsPage>, ApiError> {
    Ok(Json(query.answer(&state.service.facts()).await?))
}
