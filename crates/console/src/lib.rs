//! The web console: server-rendered pages over the platform's own public JSON API (a
//! backend-for-frontend). It reaches the API through an [`ApiClient`], in-process in the
//! all-in-one topology or over HTTP behind the gateway, so the pages behave the same in both.
//!
//! Mount it with [`router`]; it serves `/` (a redirect) and everything under `/console`,
//! and never touches `/api`, `/health` or `/ready`. See `docs/console.md`.

mod api;
mod chart;
mod pages;
mod session;
mod views;
mod web;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

pub use api::{ApiAnswer, ApiCall, ApiClient, ApiError, Forwarded, Unreachable};
pub use session::{Principal, Role};

/// How the console behaves.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Mark cookies `Secure`: `Some(true)` always, `Some(false)` never, `None` when the
    /// request came over TLS (`X-Forwarded-Proto: https` from the proxy terminating it).
    pub secure_cookies: Option<bool>,
    /// A browser session unused this long is forgotten (the user logs in again).
    pub idle_timeout: Duration,
    /// Rows per page of the lists.
    pub page_size: u32,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            secure_cookies: None,
            idle_timeout: Duration::from_secs(12 * 3600),
            page_size: 25,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) api: ApiClient,
    pub(crate) sessions: session::Sessions,
    pub(crate) settings: Arc<ConsoleSettings>,
}

/// The console's routes: `/` redirects to `/console`, where every page lives. Merge it with
/// the API router: `console::router(api_client, settings).merge(api_router)`.
pub fn router(api: ApiClient, settings: ConsoleSettings) -> Router {
    let state = Console {
        api,
        sessions: session::Sessions::new(settings.idle_timeout),
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/console.js", get(script))
        .merge(pages::router())
        .layer(axum::middleware::from_fn(web::security_headers))
        .with_state(state)
}

/// The one stylesheet, compiled in: no build step, no external resources.
const STYLESHEET: &str = include_str!("../assets/console.css");
/// The one script (the audit page's live tail); every page works without it.
const SCRIPT: &str = include_str!("../assets/console.js");

async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
}
