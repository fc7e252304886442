//! Clients (superadmin): the companies tenants belong to. The list with search and paging,
//! creating one, and renaming one (based on the version the page was built from).

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::session::FlashKind;
use crate::views::{
    csrf_field, field, page_with_status, pager, query, query_value, when, FormErrors, Nav,
};
use crate::web::{expect_ok, see_other, Ctx, PageError, Posted, Superadmin};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/clients", get(list).post(create))
        .route("/console/clients/{id}", get(detail).post(rename))
}

#[derive(Deserialize)]
struct Client {
    id: String,
    name: String,
    created_at: String,
    updated_at: String,
    version: i64,
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
}

#[derive(Deserialize, Default)]
struct NewClient {
    #[serde(default)]
    name: String,
}

async fn list(
    Superadmin(ctx): Superadmin,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    render(
        &ctx,
        &f,
        &NewClient::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render(
    ctx: &Ctx,
    f: &Filters,
    form: &NewClient,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let limit = ctx.page_size().to_string();
    let api = query(&[("q", f.q.trim()), ("limit", &limit), ("cursor", &f.cursor)]);
    let clients: Page<Client> = ctx.get(format!("/api/cdx/clients{api}")).await?;
    let base = format!("/console/clients{}", query(&[("q", f.q.trim())]));
    let body = html! {
        form.filters method="get" action="/console/clients" role="search" {
            div.field { label for="q" { "Search" } input #q type="search" name="q" value=(f.q) placeholder="name"; }
            button type="submit" { "Filter" }
        }
        @if clients.items.is_empty() {
            p.empty { "No clients match." }
        } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Changed" } } }
                tbody {
                    @for c in &clients.items {
                        tr {
                            td { a href={ "/console/clients/" (c.id) } { (c.name) } }
                            td { (when(&c.created_at)) }
                            td { (when(&c.updated_at)) }
                        }
                    }
                }
            } }
        }
        (pager(&base, clients.next_cursor.as_deref(), !f.cursor.is_empty()))
        section.card #create {
            h2 { "Create a client" }
            (errors.summary())
            form method="post" action="/console/clients" {
                (csrf_field(&ctx.data.csrf))
                (field(errors, "name", "Name", "text", &form.name, true))
                button type="submit" { "Create client" }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Clients),
        "Clients",
        body,
    ))
}

/// The form errors of a refused create or rename.
fn refusal(answer: &crate::ApiAnswer) -> Result<FormErrors, PageError> {
    let error = answer.error();
    Ok(match (answer.status, error.code.as_str()) {
        (StatusCode::UNPROCESSABLE_ENTITY, _) => FormErrors::from_api(&error),
        (StatusCode::CONFLICT, "name_taken") => FormErrors {
            fields: vec![("name".into(), "is taken by another client".into())],
            general: None,
        },
        (StatusCode::CONFLICT, "version_conflict") => FormErrors::general(
            "Someone changed this client since you opened the page. Reload it and try again.",
        ),
        (StatusCode::CONFLICT, _) => FormErrors::general(error.message),
        _ => {
            expect_ok(answer)?;
            FormErrors::default()
        }
    })
}

async fn create(Posted { ctx, form }: Posted<NewClient>) -> Result<Response, PageError> {
    ctx.ensure_superadmin()?;
    let answer = ctx
        .send(
            ctx.call(Method::POST, "/api/cdx/clients")
                .json(&json!({ "name": form.name.trim() })),
        )
        .await?;
    if !answer.ok() {
        let errors = refusal(&answer)?;
        return render(&ctx, &Filters::default(), &form, &errors, answer.status).await;
    }
    let client: Client = answer.json()?;
    ctx.flash(FlashKind::Ok, format!("Client {} created.", client.name));
    Ok(see_other("/console/clients"))
}

#[derive(Deserialize, Default)]
struct EditClient {
    #[serde(default)]
    name: String,
    version: i64,
}

async fn detail(
    Superadmin(ctx): Superadmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let client: Client = ctx
        .get(format!("/api/cdx/clients/{}", query_value(&id)))
        .await?;
    let form = EditClient {
        name: client.name.clone(),
        version: client.version,
    };
    edit_page(&ctx, &client, &form, &FormErrors::default(), StatusCode::OK)
}

fn edit_page(
    ctx: &Ctx,
    client: &Client,
    form: &EditClient,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let body = html! {
        p { "Created " (when(&client.created_at)) " · changed " (when(&client.updated_at)) }
        div.card {
            (errors.summary())
            form method="post" action={ "/console/clients/" (client.id) } {
                (csrf_field(&ctx.data.csrf))
                input type="hidden" name="version" value=(form.version);
                (field(errors, "name", "Name", "text", &form.name, true))
                div.actions {
                    button type="submit" { "Save" }
                    a href="/console/clients" { "Back to the clients" }
                }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Clients),
        &client.name,
        body,
    ))
}

async fn rename(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<EditClient>,
) -> Result<Response, PageError> {
    ctx.ensure_superadmin()?;
    let path = format!("/api/cdx/clients/{}", query_value(&id));
    let answer = ctx
        .send(
            ctx.call(Method::PATCH, path.clone())
                .if_match(form.version)
                .json(&json!({ "name": form.name.trim() })),
        )
        .await?;
    if !answer.ok() {
        let errors = refusal(&answer)?;
        let current: Client = ctx.get(path).await?;
        return edit_page(&ctx, &current, &form, &errors, answer.status);
    }
    let client: Client = answer.json()?;
    ctx.flash(FlashKind::Ok, format!("Client {} saved.", client.name));
    Ok(see_other("/console/clients"))
}
