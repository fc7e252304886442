//! The pages, one module per area; each owns its routes.

mod account;
mod audit;
mod clients;
mod companies;
mod csv;
mod customers;
mod deals;
mod login;
mod overview;
mod services;
mod settings;
mod tenants;
mod users;

use axum::Router;
use serde::Deserialize;

use crate::web::PageError;
use crate::Console;

/// Every page of the console, under `/console`.
pub fn router() -> Router<Console> {
    Router::new()
        .merge(login::router())
        .merge(overview::router())
        .merge(services::router())
        .merge(tenants::router())
        .merge(clients::router())
        .merge(customers::router())
        .merge(csv::router())
        .merge(companies::router())
        .merge(deals::router())
        .merge(users::router())
        .merge(settings::router())
        .merge(account::router())
        .merge(audit::router())
        // Unknown console paths get the console's 404 page; everything else stays the API's.
        .route(
            "/console/{*rest}",
            axum::routing::any(|| async { PageError::NotFound }),
        )
}

/// One page of an API list: `{"items": [...], "next_cursor": ...}`.
#[derive(Deserialize)]
pub(crate) struct Page<T> {
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}
