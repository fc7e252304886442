//! The service registry: which services run, where, and whether they answered their last
//! health check.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::Json;
use platform::ApiError;
use serde::Serialize;

use crate::model::ServiceEntry;
use crate::store;
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new().route("/api/cdx/services", get(list))
}

/// Every registered service.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct ServiceList {
    /// The services, by name.
    items: Vec<ServiceEntry>,
}

/// The registered services and their health.
#[utoipa::path(get, path = "/api/cdx/services", tag = "cdx", security(("bearer" = [])),
    responses((status = 200, body = ServiceList), (status = 401), (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(cdx): State<CdxState>,
    _: Superadmin,
) -> Result<Json<ServiceList>, ApiError> {
    let items = store::list_services(cdx.db().reader()).await?;
    Ok(Json(ServiceList { items }))
}
