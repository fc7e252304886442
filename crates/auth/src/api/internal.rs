//! Endpoints for other platform services (the distributed topology), under `/internal/auth`:
//! the sessions revoked recently, which a restarted service loads before it serves, a
//! tenant's data for CDX's export, and the facts CDX's aggregates are checked against. Each
//! requires a valid service token ([`platform::identity`]); the gateway never routes
//! `/internal/...`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use platform::caller::{RevokedSession, REVOCATIONS_PATH};
use platform::facts::{FactsPage, FactsQuery};
use platform::http::Query;
use platform::identity::{CallingService, ServiceIdentity};
use platform::ApiError;

use crate::Auth;

type Internal = platform::identity::Internal<Auth>;

/// The internal routes, checking callers with `identity`.
pub(crate) fn router(auth: Auth, identity: ServiceIdentity) -> Router {
    Router::new()
        .route(REVOCATIONS_PATH, get(revocations))
        .route("/internal/auth/tenants/{id}/export", get(export))
        .route("/internal/auth/facts", get(facts))
        .with_state(Internal {
            service: auth,
            identity,
        })
}

async fn revocations(
    State(state): State<Internal>,
    _: CallingService,
) -> Result<Json<Vec<RevokedSession>>, ApiError> {
    Ok(Json(state.service.recent_revocations().await?))
}

async fn export(
    State(state): State<Internal>,
    _: CallingService,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use platform::export::TenantExport;
    Ok(Json(state.service.export_tenant(&id).await?))
}

async fn facts(
    State(state): State<Internal>,
    _: CallingService,
    Query(query): Query<FactsQuery>,
) -> Result<Json<FactsPage>, ApiError> {
    Ok(Json(query.answer(&state.service.facts()).await?))
}
