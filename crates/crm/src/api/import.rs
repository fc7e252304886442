//! CSV import and export of customers.

use axum::Router;

use crate::{Config, Crm};

pub(super) fn router(_config: &Config) -> Router<Crm> {
    Router::new()
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi()]
pub(super) struct Doc;
