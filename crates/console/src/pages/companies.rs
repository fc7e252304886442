//! CRM companies: the list with search and paging, and creating one.

use axum::extract::Query;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::session::FlashKind;
use crate::views::{csrf_field, field, page_with_status, pager, query, when, FormErrors, Nav};
use crate::web::{expect_ok, see_other, Ctx, Member, PageError, Posted};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new().route("/console/companies", get(list).post(create))
}

#[derive(Deserialize)]
struct Company {
    name: String,
    domain: Option<String>,
    industry: Option<String>,
    size: Option<String>,
    created_at: String,
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Deserialize, Default)]
struct NewCompany {
    #[serde(default)]
    name: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    industry: String,
    #[serde(default)]
    size: String,
}

async fn list(Member(ctx): Member, Query(f): Query<Filters>) -> Result<Response, PageError> {
    render(
        &ctx,
        &f,
        &NewCompany::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render(
    ctx: &Ctx,
    f: &Filters,
    form: &NewCompany,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let limit = ctx.page_size().to_string();
    let api = query(&[
        ("q", f.q.trim()),
        ("sort", "name"),
        ("limit", &limit),
        ("cursor", &f.cursor),
    ]);
    let companies: Page<Company> = ctx.get(format!("/api/crm/companies{api}")).await?;
    let base = format!("/console/companies{}", query(&[("q", f.q.trim())]));
    let body = html! {
        form.filters method="get" action="/console/companies" role="search" {
            div.field { label for="q" { "Search" } input #q type="search" name="q" value=(f.q) placeholder="name or domain"; }
            button type="submit" { "Filter" }
        }
        @if companies.items.is_empty() { p.empty { "No companies match." } } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Domain" } th scope="col" { "Industry" }
                    th scope="col" { "Size" } th scope="col" { "Created" } } }
                tbody {
                    @for c in &companies.items {
                        tr {
                            td { (c.name) }
                            td { (c.domain.as_deref().unwrap_or("")) }
                            td { (c.industry.as_deref().unwrap_or("")) }
                            td { (c.size.as_deref().unwrap_or("")) }
                            td { (when(&c.created_at)) }
                        }
                    }
                }
            } }
        }
        (pager(&base, companies.next_cursor.as_deref(), !f.cursor.is_empty()))
        section.card #create {
            h2 { "Create a company" }
            (errors.summary())
            form method="post" action="/console/companies" {
                (csrf_field(&ctx.data.csrf))
                div.grid2 {
                    (field(errors, "name", "Name", "text", &form.name, true))
                    (field(errors, "domain", "Domain", "text", &form.domain, false))
                    (field(errors, "industry", "Industry", "text", &form.industry, false))
                    (field(errors, "size", "Size (e.g. 11-50)", "text", &form.size, false))
                }
                button type="submit" { "Create company" }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Companies),
        "Companies",
        body,
    ))
}

async fn create(Posted { ctx, form }: Posted<NewCompany>) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let mut body = Map::new();
    body.insert("name".into(), json!(form.name));
    for (key, value) in [
        ("domain", &form.domain),
        ("industry", &form.industry),
        ("size", &form.size),
    ] {
        if !value.trim().is_empty() {
            body.insert(key.into(), json!(value.trim()));
        }
    }
    let answer = ctx
        .send(
            ctx.call(Method::POST, "/api/crm/companies")
                .json(&Value::Object(body)),
        )
        .await?;
    if answer.status == StatusCode::UNPROCESSABLE_ENTITY || answer.status == StatusCode::CONFLICT {
        let errors = FormErrors::from_api(&answer.error());
        return render(&ctx, &Filters::default(), &form, &errors, answer.status).await;
    }
    expect_ok(&answer)?;
    ctx.flash(
        FlashKind::Ok,
        format!("Company {} created.", form.name.trim()),
    );
    Ok(see_other("/console/companies"))
}
