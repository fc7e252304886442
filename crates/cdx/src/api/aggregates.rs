//! The aggregates: one tenant's summary and the platform overview, built from events.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::{Json, Path};
use platform::ids::Timestamp;
use platform::ApiError;

use crate::aggregates::{Overview, TenantSummary};
use crate::store;
use crate::CdxState;

/// Days of activity the overview shows.
const OVERVIEW_DAYS: i64 = 30;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/tenants/{id}/summary", get(summary))
        .route("/api/cdx/overview", get(overview))
}

/// One tenant's aggregates: users, logins in the last 24 h, customers, companies, open deals
/// and their value per currency.
#[utoipa::path(get, path = "/api/cdx/tenants/{id}/summary", tag = "cdx",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = TenantSummary), (status = 401), (status = 403),
        (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn summary(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Path(id): Path<String>,
) -> Result<Json<TenantSummary>, ApiError> {
    store::tenant_summary(cdx.db().reader(), &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// The platform overview: tenants by status, totals across tenants, activity per day for
/// the last 30 days.
#[utoipa::path(get, path = "/api/cdx/overview", tag = "cdx", security(("bearer" = [])),
    responses((status = 200, body = Overview), (status = 401), (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn overview(
    State(cdx): State<CdxState>,
    _: Superadmin,
) -> Result<Json<Overview>, ApiError> {
    let version = cdx.feed().aggregates_version();
    let compute = store::overview(cdx.db().reader(), Timestamp::now(), OVERVIEW_DAYS);
    Ok(Json(cdx.overview_cache().get(version, compute).await?))
}
