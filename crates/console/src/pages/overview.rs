//! The superadmin's landing page: the platform at a glance, from `GET /api/cdx/overview`.

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use crate::chart::{activity_svg, Day};
use crate::views::{badge, money, page, trusted_svg, Nav};
use crate::web::{PageError, Superadmin};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new().route("/console/overview", get(overview))
}

#[derive(Deserialize)]
struct Overview {
    tenants: TenantCounts,
    totals: Totals,
    activity: Vec<Activity>,
}

#[derive(Deserialize)]
struct TenantCounts {
    total: u64,
    by_status: StatusCounts,
}

#[derive(Deserialize)]
struct StatusCounts {
    #[serde(default)]
    active: u64,
    #[serde(default)]
    suspended: u64,
}

#[derive(Deserialize)]
struct Totals {
    users_total: u64,
    users_active: u64,
    customers: u64,
    companies: u64,
    open_deals: u64,
    logins_24h: u64,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
}

#[derive(Deserialize)]
pub(super) struct Pipeline {
    pub currency: String,
    pub open_value: i64,
}

#[derive(Deserialize)]
struct Activity {
    day: String,
    logins: u64,
    events: u64,
}

#[derive(Deserialize)]
struct RecentTenant {
    slug: String,
    name: String,
    status: String,
    created_at: String,
}

async fn overview(Superadmin(ctx): Superadmin) -> Result<Response, PageError> {
    // The two reads are independent: one round trip's time, not two.
    let (overview, recent) = tokio::join!(
        ctx.get::<Overview>("/api/cdx/overview"),
        ctx.get::<Page<RecentTenant>>("/api/cdx/tenants?sort=-created&limit=5"),
    );
    let (o, recent) = (overview?, recent?);
    let days: Vec<Day> = o
        .activity
        .iter()
        .map(|a| Day {
            day: a.day.clone(),
            events: a.events,
            logins: a.logins,
        })
        .collect();
    let t = &o.totals;
    let body = html! {
        section.stats aria-label="Totals" {
            div.stat { span.num { (o.tenants.total) } span.label { "tenants" }
                span.sub { (o.tenants.by_status.active) " active · " (o.tenants.by_status.suspended) " suspended" } }
            div.stat { span.num { (t.users_total) } span.label { "users" }
                span.sub { (t.users_active) " active" } }
            div.stat { span.num { (t.customers) } span.label { "customers" }
                span.sub { (t.companies) " companies" } }
            div.stat { span.num { (t.open_deals) } span.label { "open deals" }
                span.sub {
                    @for (i, p) in t.pipeline.iter().enumerate() {
                        @if i > 0 { " · " } (money(p.open_value, &p.currency))
                    }
                    @if t.pipeline.is_empty() { "no open value" }
                } }
            div.stat { span.num { (t.logins_24h) } span.label { "logins, 24 h" } }
        }
        section.card {
            h2 { "Activity, last 30 days" }
            (trusted_svg(activity_svg(&days)))
            p.legend { span.key.key-bar {} " events " span.key.key-line {} " logins" }
        }
        section.card {
            h2 { "Newest tenants" }
            @if recent.items.is_empty() {
                p { "No tenants yet. " a href="/console/tenants#create" { "Create one" } "." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Slug" } th scope="col" { "Status" } th scope="col" { "Created" } } }
                    tbody {
                        @for tenant in &recent.items {
                            tr {
                                td { a href={ "/console/tenants/" (tenant.slug) } { (tenant.name) } }
                                td { code { (tenant.slug) } }
                                td { (badge(&tenant.status)) }
                                td { (crate::views::when(&tenant.created_at)) }
                            }
                        }
                    }
                }
                p { a href="/console/tenants" { "All tenants »" } }
            }
        }
    };
    Ok(page(&ctx, Some(Nav::Overview), "Platform overview", body))
}
