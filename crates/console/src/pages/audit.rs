//! The audit log: the whole platform's for the superadmin, the own tenant's trail for an
//! admin; filters by action and date, keyset paging.

use axum::extract::Query;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use crate::session::Role;
use crate::views::{page, pager, query, when, FormErrors, Nav};
use crate::web::{expect_ok, Ctx, PageError};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/audit", get(audit))
        .route("/console/audit/stream", get(stream))
}

#[derive(Deserialize)]
struct Entry {
    occurred_at: String,
    actor: Actor,
    action: String,
    target: Option<String>,
    ip: Option<String>,
    #[serde(default)]
    changed: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Actor {
    role: String,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    action: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

/// A date from the form (`YYYY-MM-DD`) as the start of that UTC day.
fn day_start(date: &str) -> String {
    if date.is_empty() {
        String::new()
    } else {
        format!("{date}T00:00:00Z")
    }
}

async fn audit(ctx: Ctx, Query(f): Query<Filters>) -> Result<Response, PageError> {
    // The platform log for the superadmin, the tenant's own trail for its admins.
    let endpoint = match ctx.role() {
        Role::Superadmin => "/api/cdx/audit",
        Role::Admin => "/api/cdx/tenant-audit",
        Role::User => return Err(PageError::Forbidden),
    };
    let limit = ctx.page_size().to_string();
    let (from, to) = (day_start(&f.from), day_start(&f.to));
    let api = query(&[
        ("action", f.action.trim()),
        ("from", &from),
        ("to", &to),
        ("limit", &limit),
        ("cursor", &f.cursor),
    ]);
    let answer = ctx
        .send(ctx.call(Method::GET, format!("{endpoint}{api}")))
        .await?;
    // A bad filter is the form's problem, not a page error.
    let (entries, errors) = if answer.status == StatusCode::BAD_REQUEST {
        (
            Page {
                items: Vec::new(),
                next_cursor: None,
            },
            FormErrors::from_api(&answer.error()),
        )
    } else {
        expect_ok(&answer)?;
        (answer.json::<Page<Entry>>()?, FormErrors::default())
    };
    let base = format!(
        "/console/audit{}",
        query(&[
            ("action", f.action.trim()),
            ("from", &f.from),
            ("to", &f.to)
        ])
    );
    let title = if ctx.role() == Role::Superadmin {
        "Audit log"
    } else {
        "Audit trail"
    };
    let body = html! {
        (errors.summary())
        form.filters method="get" action="/console/audit" role="search" {
            div.field { label for="action" { "Action" } input #action name="action" value=(f.action) placeholder="auth.login.*"; }
            div.field { label for="from" { "From (UTC day)" } input #from type="date" name="from" value=(f.from); }
            div.field { label for="to" { "Before (UTC day)" } input #to type="date" name="to" value=(f.to); }
            button type="submit" { "Filter" }
        }
        @if entries.items.is_empty() { p.empty { "No entries match." } } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Changed" } th scope="col" { "IP" } } }
                // The live tail (console.js) adds new entries here, on the first page only.
                tbody data-live=[f.cursor.is_empty().then(|| format!(
                    "/console/audit/stream{}", query(&[("type", f.action.trim())])))] {
                    @for e in &entries.items {
                        tr {
                            td.when { (when(&e.occurred_at)) }
                            td { (e.actor.name.as_deref().unwrap_or("")) " " span.badge { (e.actor.role) } }
                            td { code { (e.action) } }
                            td { (e.target.as_deref().unwrap_or("")) }
                            td { (e.changed.as_ref().map(|c| c.join(", ")).unwrap_or_default()) }
                            td { (e.ip.as_deref().unwrap_or("")) }
                        }
                    }
                }
            } }
        }
        (pager(&base, entries.next_cursor.as_deref(), !f.cursor.is_empty()))
    };
    Ok(page(&ctx, Some(Nav::Audit), title, body))
}

#[derive(Deserialize, Default)]
struct StreamFilters {
    #[serde(default, rename = "type")]
    kind: String,
}

/// The live audit stream (Server-Sent Events), passed through from the API with this
/// session's token, so the browser never holds one. The browser resumes with
/// `Last-Event-ID` after a reconnect (e.g. when the access token expired and the stream
/// ended); the console then sends the fresh token.
async fn stream(
    ctx: Ctx,
    headers: HeaderMap,
    Query(f): Query<StreamFilters>,
) -> Result<Response, PageError> {
    let endpoint = match ctx.role() {
        Role::Superadmin => "/api/cdx/stream",
        Role::Admin => "/api/cdx/tenant-stream",
        Role::User => return Err(PageError::Forbidden),
    };
    let mut call = ctx.call(
        Method::GET,
        format!("{endpoint}{}", query(&[("type", f.kind.trim())])),
    );
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        call = call.header("last-event-id", last);
    }
    ctx.stream(call).await
}
