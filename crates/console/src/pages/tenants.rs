//! Tenants (superadmin): the list with search and paging, creating one, its summary, and
//! suspending or resuming it.

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use crate::session::FlashKind;
use crate::views::{
    badge, csrf_field, field, money, page_with_status, pager, query, query_value, select, when,
    FormErrors, Nav,
};
use crate::web::{expect_ok, safe_back, see_other, Ctx, PageError, Posted, Superadmin};
use crate::Console;

use super::Page;

use super::overview::Pipeline;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/tenants", get(list).post(create))
        .route("/console/tenants/{slug}", get(detail))
        .route("/console/tenants/{slug}/status", post(set_status))
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    choose: Option<String>,
}

#[derive(Deserialize)]
struct Tenant {
    slug: String,
    name: String,
    status: String,
    version: i64,
    created_at: String,
    #[serde(default)]
    summary: Option<Counters>,
}

#[derive(Deserialize, Default)]
struct Counters {
    users_total: u64,
    customers: u64,
    open_deals: u64,
}

#[derive(Deserialize)]
struct Client {
    id: String,
    name: String,
}

#[derive(Deserialize, Default)]
struct NewTenant {
    #[serde(default)]
    slug: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    new_client: String,
}

async fn list(
    Superadmin(ctx): Superadmin,
    Query(filters): Query<Filters>,
) -> Result<Response, PageError> {
    render_list(
        &ctx,
        &filters,
        &NewTenant::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render_list(
    ctx: &Ctx,
    filters: &Filters,
    form: &NewTenant,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let limit = ctx.page_size().to_string();
    let api_query = query(&[
        ("q", filters.q.trim()),
        ("status", &filters.status),
        ("sort", "name"),
        ("limit", &limit),
        ("cursor", &filters.cursor),
    ]);
    let (tenants, clients) = tokio::join!(
        ctx.get::<Page<Tenant>>(format!("/api/cdx/tenants{api_query}")),
        ctx.get::<Page<Client>>("/api/cdx/clients?limit=500"),
    );
    let (tenants, clients) = (tenants?, clients?);
    let base = format!(
        "/console/tenants{}",
        query(&[("q", filters.q.trim()), ("status", &filters.status)])
    );
    let mut options: Vec<(&str, &str)> = clients
        .items
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect();
    options.push(("", "— a new client —"));
    let body = html! {
        @if filters.choose.is_some() {
            div.flash.ok role="status" { "Choose a tenant to work in its CRM and users." }
        }
        form.filters method="get" action="/console/tenants" role="search" {
            div.field { label for="q" { "Search" } input #q type="search" name="q" value=(filters.q) placeholder="name or slug"; }
            (select(&FormErrors::default(), "status", "Status",
                &[("", "any"), ("active", "active"), ("suspended", "suspended")], &filters.status))
            button type="submit" { "Filter" }
        }
        @if tenants.items.is_empty() {
            p.empty { "No tenants match." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Slug" } th scope="col" { "Status" }
                    th scope="col" class="num" { "Users" } th scope="col" class="num" { "Customers" }
                    th scope="col" class="num" { "Open deals" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } }
                } }
                tbody {
                    @for t in &tenants.items {
                        @let c = t.summary.as_ref();
                        tr {
                            td { a href={ "/console/tenants/" (t.slug) } { (t.name) } }
                            td { code { (t.slug) } }
                            td { (badge(&t.status)) }
                            td.num { (c.map_or(0, |c| c.users_total)) }
                            td.num { (c.map_or(0, |c| c.customers)) }
                            td.num { (c.map_or(0, |c| c.open_deals)) }
                            td { (when(&t.created_at)) }
                            td { (status_form(&ctx.data.csrf, t, &base)) }
                        }
                    }
                }
            } }
        }
        (pager(&base, tenants.next_cursor.as_deref(), !filters.cursor.is_empty()))
        section.card #create {
            h2 { "Create a tenant" }
            (errors.summary())
            form method="post" action="/console/tenants" {
                (csrf_field(&ctx.data.csrf))
                (field(errors, "slug", "Slug", "text", &form.slug, true))
                p.hint { "2–63 characters: a-z, 0-9 and '-'. It cannot be changed later." }
                (field(errors, "name", "Name", "text", &form.name, true))
                // A fresh form proposes the first client; "a new client" is chosen on purpose.
                @let chosen = if form.client_id.is_empty() && form.new_client.is_empty() {
                    clients.items.first().map_or("", |c| c.id.as_str())
                } else {
                    form.client_id.as_str()
                };
                (select(errors, "client_id", "Client", &options, chosen))
                (field(errors, "new_client", "New client's name (when creating one)", "text", &form.new_client, false))
                button type="submit" { "Create tenant" }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Tenants),
        "Tenants",
        body,
    ))
}

/// The suspend or resume button of a tenant; `back` is where to return.
fn status_form(csrf: &str, t: &Tenant, back: &str) -> Markup {
    let (to, label) = if t.status == "active" {
        ("suspended", "Suspend")
    } else {
        ("active", "Resume")
    };
    html! {
        form.inline method="post" action={ "/console/tenants/" (t.slug) "/status" } {
            (csrf_field(csrf))
            input type="hidden" name="status" value=(to);
            input type="hidden" name="version" value=(t.version);
            input type="hidden" name="back" value=(back);
            button.small.danger[to == "suspended"] type="submit" aria-label={ (label) " " (t.name) } { (label) }
        }
    }
}

async fn create(Posted { ctx, form }: Posted<NewTenant>) -> Result<Response, PageError> {
    ctx.ensure_superadmin()?;
    let mut client_id = form.client_id.clone();
    if client_id.is_empty() {
        let answer = ctx
            .send(
                ctx.call(Method::POST, "/api/cdx/clients")
                    .json(&json!({ "name": form.new_client })),
            )
            .await?;
        if !answer.ok() {
            let mut errors = FormErrors::from_api(&answer.error());
            // The client's `name` is this form's `new_client`.
            for (f, _) in &mut errors.fields {
                if f == "name" {
                    *f = "new_client".into();
                }
            }
            return render_list(&ctx, &Filters::default(), &form, &errors, answer.status).await;
        }
        client_id = answer.json::<serde_json::Value>()?["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/cdx/tenants").json(&json!({
            "slug": form.slug.trim(), "name": form.name, "client_id": client_id,
        })))
        .await?;
    if !answer.ok() {
        let error = answer.error();
        let mut errors = FormErrors::from_api(&error);
        if error.code == "slug_taken" {
            errors = FormErrors {
                fields: vec![("slug".into(), "is taken by another tenant".into())],
                general: None,
            };
        }
        return render_list(&ctx, &Filters::default(), &form, &errors, answer.status).await;
    }
    let slug = form.slug.trim();
    ctx.flash(FlashKind::Ok, format!("Tenant {slug} created."));
    Ok(see_other(&format!(
        "/console/tenants/{}",
        query_value(slug)
    )))
}

#[derive(Deserialize)]
struct Summary {
    users_total: u64,
    users_active: u64,
    logins_24h: u64,
    customers: u64,
    companies: u64,
    open_deals: u64,
    #[serde(default)]
    pipeline: Vec<Pipeline>,
    updated_at: Option<String>,
}

async fn detail(
    Superadmin(ctx): Superadmin,
    Path(slug): Path<String>,
) -> Result<Response, PageError> {
    let slug = query_value(&slug);
    let (tenant, summary) = tokio::join!(
        ctx.get::<Tenant>(format!("/api/cdx/tenants/{slug}")),
        ctx.get::<Summary>(format!("/api/cdx/tenants/{slug}/summary")),
    );
    let (t, s) = (tenant?, summary?);
    let back = format!("/console/tenants/{}", t.slug);
    let body = html! {
        p { "Slug " code { (t.slug) } " · " (badge(&t.status)) " · created " (when(&t.created_at)) }
        section.stats aria-label="Summary" {
            div.stat { span.num { (s.users_total) } span.label { "users" } span.sub { (s.users_active) " active" } }
            div.stat { span.num { (s.logins_24h) } span.label { "logins, 24 h" } }
            div.stat { span.num { (s.customers) } span.label { "customers" } span.sub { (s.companies) " companies" } }
            div.stat { span.num { (s.open_deals) } span.label { "open deals" }
                span.sub { @for p in &s.pipeline { (money(p.open_value, &p.currency)) " " } } }
        }
        p.hint { "Counters as of " (s.updated_at.as_deref().map(when).unwrap_or_else(|| "—".into())) "." }
        div.actions {
            form.inline method="post" action="/console/tenant-context" {
                (csrf_field(&ctx.data.csrf))
                input type="hidden" name="tenant" value=(t.slug);
                button type="submit" { "Work in this tenant" }
            }
            (status_form(&ctx.data.csrf, &t, &back))
        }
    };
    Ok(page_with_status(
        &ctx,
        StatusCode::OK,
        Some(Nav::Tenants),
        &t.name,
        body,
    ))
}

#[derive(Deserialize)]
struct StatusChange {
    status: String,
    version: i64,
    #[serde(default)]
    back: String,
}

async fn set_status(
    Path(slug): Path<String>,
    Posted { ctx, form }: Posted<StatusChange>,
) -> Result<Response, PageError> {
    ctx.ensure_superadmin()?;
    let answer = ctx
        .send(
            ctx.call(
                Method::PATCH,
                format!("/api/cdx/tenants/{}", query_value(&slug)),
            )
            .if_match(form.version)
            .json(&json!({ "status": form.status })),
        )
        .await?;
    if answer.status == StatusCode::CONFLICT {
        ctx.flash(
            FlashKind::Error,
            "The tenant was changed meanwhile; nothing was done. Try again.",
        );
    } else {
        expect_ok(&answer)?;
        let verb = if form.status == "active" {
            "resumed"
        } else {
            "suspended"
        };
        ctx.flash(FlashKind::Ok, format!("Tenant {slug} {verb}."));
    }
    Ok(see_other(safe_back(&form.back, "/console/tenants")))
}
