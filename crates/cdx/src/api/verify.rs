//! The verification of the audit hash chain, run in the background: a walk takes about
//! 16 s per million entries, longer than a request may.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use platform::caller::Superadmin;
use platform::http::{Json, Query};
use platform::ApiError;
use serde::Deserialize;

use crate::verification::{Started, VerificationStatus};
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new().route("/api/cdx/audit/verify", get(status).post(start))
}

/// How long to wait for a running verification.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitParams {
    /// Wait up to this many milliseconds for the running verification to finish before
    /// answering (default 0; at most nine tenths of the request timeout, 27000 by default).
    wait_ms: Option<u64>,
}

impl WaitParams {
    fn wait(&self, cdx: &CdxState) -> Result<Duration, ApiError> {
        let wait = Duration::from_millis(self.wait_ms.unwrap_or(0));
        let max = cdx.max_verify_wait();
        if wait > max {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "wait_ms must be at most {} (the request would time out first)",
                    max.as_millis()
                ),
            )
            .with_details(serde_json::json!({ "field": "wait_ms", "max": max.as_millis() })));
        }
        Ok(wait)
    }
}

/// Where the audit chain's verification stands: the newest verdict (`latest`, with
/// `valid`, the counts and the first break), the run in progress (`running`) and the
/// newest run that stopped without a verdict (`failed`). With `wait_ms`, waits that long at
/// most for the running verification to finish first.
#[utoipa::path(get, path = "/api/cdx/audit/verify", tag = "cdx", security(("bearer" = [])),
    params(WaitParams),
    responses((status = 200, body = VerificationStatus),
        (status = 400, description = "wait_ms too long"), (status = 401), (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn status(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Query(params): Query<WaitParams>,
) -> Result<Json<VerificationStatus>, ApiError> {
    let wait = params.wait(&cdx)?;
    if !wait.is_zero() {
        cdx.verifications().wait(None, wait).await?;
    }
    Ok(Json(cdx.verifications().status().await?))
}

/// Starts a verification of the whole audit chain in the background: 202 with the status
/// while the new run is in progress (`running`), 200 once it finished, within `wait_ms` or
/// already (`latest` is its verdict). One runs at a time: while one is in progress, 409
/// `verification_running` with the status in `details`.
#[utoipa::path(post, path = "/api/cdx/audit/verify", tag = "cdx", security(("bearer" = [])),
    params(WaitParams),
    responses((status = 202, body = VerificationStatus, description = "started, still running"),
        (status = 200, body = VerificationStatus, description = "started and finished within wait_ms"),
        (status = 400, description = "wait_ms too long"), (status = 401), (status = 403),
        (status = 409, description = "a verification is already running")))]
#[tracing::instrument(skip_all)]
pub(super) async fn start(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Query(params): Query<WaitParams>,
) -> Result<impl IntoResponse, ApiError> {
    let wait = params.wait(&cdx)?;
    let verifications = cdx.verifications();
    let id = match verifications.start().await? {
        Started::New(id) => id,
        Started::AlreadyRunning(id) => {
            let status = verifications.status().await?;
            return Err(ApiError::conflict(
                "verification_running",
                format!(
                    "the audit verification {id} is still running; wait for it with \
                     GET /api/cdx/audit/verify?wait_ms="
                ),
            )
            .with_details(
                serde_json::to_value(status)
                    .map_err(|e| ApiError::internal("encoding the verification status", e))?,
            ));
        }
    };
    if !wait.is_zero() {
        verifications.wait(Some(&id), wait).await?;
    }
    let status = verifications.status().await?;
    let still_running = status.running.as_ref().is_some_and(|run| run.id == id);
    let code = if still_running {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(status)))
}
