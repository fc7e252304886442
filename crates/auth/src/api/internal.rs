//! Endpoints for other platform services (the distributed topology), under `/internal/auth`:
//! the sessions revoked recently, which a restarted service loads before it serves, and a
//! tenant's data for CDX's export. Each
//! requires a valid service token ([`platform::identity`]); the gateway never routes
//! `/internal/...`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use platform::caller::{RevokedSession, REVOCATIONS_PATH};
use platform::identity::{CallingService, ServiceIdentity};
use platform::ApiError;

use crate::Auth;

type Internal = platform::identity::Internal<Auth>;

/// The internal routes, checking callers with `identity`.
pub(crate) fn router(auth: Auth, identity: ServiceIdentity) -> Router {
    Router::new()
        .route(REVOCATIONS_PATH, get(revocations))
        .route("/internal/auth/tenants/{id}/export", get(export))
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
