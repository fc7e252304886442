//! The service registry (superadmin): where each service is served and its last health check.

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use crate::views::{badge, page, when, Nav};
use crate::web::{PageError, Superadmin};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new().route("/console/services", get(services))
}

#[derive(Deserialize)]
struct Service {
    name: String,
    version: String,
    url: String,
    status: String,
    last_checked_at: Option<String>,
}

async fn services(Superadmin(ctx): Superadmin) -> Result<Response, PageError> {
    let services: Page<Service> = ctx.get("/api/cdx/services").await?;
    let body = html! {
        div.table-wrap { table {
            thead { tr { th scope="col" { "Service" } th scope="col" { "Version" } th scope="col" { "URL" }
                th scope="col" { "Status" } th scope="col" { "Last check" } } }
            tbody {
                @for s in &services.items {
                    tr {
                        td { (s.name) }
                        td { (s.version) }
                        td { code { (s.url) } }
                        td { (badge(&s.status)) }
                        td { (s.last_checked_at.as_deref().map(when).unwrap_or_else(|| "not yet".into())) }
                    }
                }
            }
        } }
        p.hint { "Checked every 30 seconds." }
    };
    Ok(page(&ctx, Some(Nav::Services), "Services", body))
}
