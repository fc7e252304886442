//! Notes routes.

use axum::Router;

use crate::Crm;

pub(super) fn router() -> Router<Crm> {
    Router::new()
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(super) struct Doc;
