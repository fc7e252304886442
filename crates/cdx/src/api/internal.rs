//! Endpoints for other platform services (the distributed topology), under `/internal/cdx`:
//! the superadmin directory that auth consults at login. Each requires a valid service
//! token ([`platform::identity`]); the gateway never routes `/internal/...`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use platform::directory::{
    AdminAnswer, AdminDirectory, ChangeAdminPassword, PasswordChanged, VerifyAdmin, ADMIN_PATH,
    VERIFY_ADMIN_PATH,
};
use platform::http::Json as Body;
use platform::identity::{CallingService, ServiceIdentity};
use platform::ApiError;

use crate::Cdx;

type Internal = platform::identity::Internal<Cdx>;

/// The internal routes, checking callers with `identity`.
pub(crate) fn router(cdx: Cdx, identity: ServiceIdentity) -> Router {
    Router::new()
        .route(VERIFY_ADMIN_PATH, post(verify_admin))
        .route(&format!("{ADMIN_PATH}/{{id}}"), get(admin_by_id))
        .route(
            &format!("{ADMIN_PATH}/{{id}}/password"),
            post(change_password),
        )
        .with_state(Internal {
            service: cdx,
            identity,
        })
}

async fn verify_admin(
    State(state): State<Internal>,
    _: CallingService,
    Body(body): Body<VerifyAdmin>,
) -> Result<Json<AdminAnswer>, ApiError> {
    let admin = state
        .service
        .verify_admin(&body.username, &body.password)
        .await?;
    Ok(Json(AdminAnswer {
        admin: admin.map(Into::into),
    }))
}

async fn admin_by_id(
    State(state): State<Internal>,
    _: CallingService,
    Path(id): Path<String>,
) -> Result<Json<AdminAnswer>, ApiError> {
    let admin = state.service.admin_by_id(&id).await?;
    Ok(Json(AdminAnswer {
        admin: admin.map(Into::into),
    }))
}

async fn change_password(
    State(state): State<Internal>,
    _: CallingService,
    Path(id): Path<String>,
    Body(body): Body<ChangeAdminPassword>,
) -> Result<Json<PasswordChanged>, ApiError> {
    let changed = state
        .service
        .change_admin_password(&id, &body.current, &body.new, &body.actor)
        .await?;
    Ok(Json(PasswordChanged { changed }))
}
