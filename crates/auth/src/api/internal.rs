//! Endpoints for other platform services (the distributed topology), under `/internal/auth`:
//! the sessions revoked recently, which a restarted service loads before it serves, and the
//! routes of every service with tenant data ([`platform::identity::data_routes`]: a
//! tenant's data for CDX's export, and the facts CDX's aggregates are checked against).
//! Each requires a valid service token ([`platform::identity`]); the gateway never routes
//! `/internal/...`.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use platform::caller::{RevokedSession, REVOCATIONS_PATH};
use platform::identity::{CallingService, ServiceIdentity};
use platform::ApiError;

use crate::Auth;

type Internal = platform::identity::Internal<Auth>;

/// The internal routes, checking callers with `identity`.
pub(crate) fn router(auth: Auth, identity: ServiceIdentity) -> Router {
    let data = platform::identity::data_routes(
        "auth",
        Arc::new(auth.clone()),
        Arc::new(auth.facts()),
        identity.clone(),
    );
    Router::new()
        .route(REVOCATIONS_PATH, get(revocations))
        .with_state(Internal {
            service: auth,
            identity,
        })
        .merge(data)
}

async fn revocations(
    State(state): State<Internal>,
    _: CallingService,
) -> Result<Json<Vec<RevokedSession>>, ApiError> {
    Ok(Json(state.service.recent_revocations().await?))
}
