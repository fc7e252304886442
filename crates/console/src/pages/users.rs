//! A tenant's users (its admins, or the superadmin inside the tenant): list, create, change
//! role, disable and enable.

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::session::FlashKind;
use crate::views::{
    badge, csrf_field, field, page_with_status, pager, query, query_value, select, when,
    FormErrors, Nav,
};
use crate::web::{expect_ok, safe_back, see_other, Ctx, PageError, Posted, TenantAdmin};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/users", get(list).post(create))
        .route("/console/users/{id}", get(detail).post(change))
        .route("/console/users/{id}/edit", post(edit))
}

const ROLES: [(&str, &str); 2] = [("user", "user"), ("admin", "admin")];

#[derive(Deserialize)]
struct User {
    id: String,
    email: String,
    name: Option<String>,
    role: String,
    status: String,
    created_at: String,
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
struct NewUser {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

async fn list(
    TenantAdmin(ctx): TenantAdmin,
    Query(f): Query<Filters>,
) -> Result<Response, PageError> {
    render(
        &ctx,
        &f,
        &NewUser::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render(
    ctx: &Ctx,
    f: &Filters,
    form: &NewUser,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let limit = ctx.page_size().to_string();
    let api = query(&[("q", f.q.trim()), ("limit", &limit), ("cursor", &f.cursor)]);
    let users: Page<User> = ctx.get(format!("/api/auth/users{api}")).await?;
    let base = format!("/console/users{}", query(&[("q", f.q.trim())]));
    let me = ctx.principal().id.clone();
    let body = html! {
        form.filters method="get" action="/console/users" role="search" {
            div.field { label for="q" { "Search" } input #q type="search" name="q" value=(f.q) placeholder="email or name"; }
            button type="submit" { "Filter" }
        }
        @if users.items.is_empty() { p.empty { "No users match." } } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Name" } th scope="col" { "Role" }
                    th scope="col" { "Status" } th scope="col" { "Created" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for u in &users.items {
                        tr {
                            td { a href={ "/console/users/" (u.id) } { (u.email) } }
                            td { (u.name.as_deref().unwrap_or("")) }
                            td {
                                @if u.id == me { (u.role) " (you)" } @else {
                                    form.inline method="post" action={ "/console/users/" (u.id) } {
                                        (csrf_field(&ctx.data.csrf))
                                        input type="hidden" name="version" value=(u.version);
                                        input type="hidden" name="back" value=(base);
                                        label.sr-only for={ "role-" (u.id) } { "Role of " (u.email) }
                                        select id={ "role-" (u.id) } name="role" {
                                            @for (v, t) in ROLES { option value=(v) selected[v == u.role] { (t) } }
                                        }
                                        " " button.small type="submit" { "Change" }
                                    }
                                }
                            }
                            td { (badge(&u.status)) }
                            td { (when(&u.created_at)) }
                            td {
                                @if u.id != me {
                                    @let (to, label) = if u.status == "active" { ("disabled", "Disable") } else { ("active", "Enable") };
                                    form.inline method="post" action={ "/console/users/" (u.id) } {
                                        (csrf_field(&ctx.data.csrf))
                                        input type="hidden" name="version" value=(u.version);
                                        input type="hidden" name="back" value=(base);
                                        input type="hidden" name="status" value=(to);
                                        button.small.danger[to == "disabled"] type="submit" aria-label={ (label) " " (u.email) } { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
        (pager(&base, users.next_cursor.as_deref(), !f.cursor.is_empty()))
        section.card #create {
            h2 { "Create a user" }
            (errors.summary())
            form method="post" action="/console/users" {
                (csrf_field(&ctx.data.csrf))
                div.grid2 {
                    (field(errors, "email", "Email", "email", &form.email, true))
                    (field(errors, "name", "Name", "text", &form.name, false))
                    (field(errors, "password", "Initial password (at least 8 characters)", "password", "", true))
                    (select(errors, "role", "Role", &ROLES, &form.role))
                }
                button type="submit" { "Create user" }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Users),
        "Users",
        body,
    ))
}

async fn create(Posted { ctx, form }: Posted<NewUser>) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let mut body =
        json!({ "email": form.email.trim(), "password": form.password, "role": form.role });
    if !form.name.trim().is_empty() {
        body["name"] = json!(form.name.trim());
    }
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/auth/users").json(&body))
        .await?;
    if !answer.ok() {
        let error = answer.error();
        let errors = match error.code.as_str() {
            "email_taken" => FormErrors {
                fields: vec![("email".into(), "a user with this email exists".into())],
                general: None,
            },
            "validation_failed" | "tenant_suspended" | "invalid_body" => {
                FormErrors::from_api(&error)
            }
            _ => {
                expect_ok(&answer)?;
                FormErrors::default()
            }
        };
        return render(&ctx, &Filters::default(), &form, &errors, answer.status).await;
    }
    ctx.flash(
        FlashKind::Ok,
        format!("User {} created.", form.email.trim()),
    );
    Ok(see_other("/console/users"))
}

#[derive(Deserialize)]
struct Change {
    version: i64,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    back: String,
}

async fn change(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<Change>,
) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let mut body = serde_json::Map::new();
    if let Some(role) = &form.role {
        body.insert("role".into(), json!(role));
    }
    if let Some(status) = &form.status {
        body.insert("status".into(), json!(status));
    }
    let answer = ctx
        .send(
            ctx.call(
                Method::PATCH,
                format!("/api/auth/users/{}", query_value(&id)),
            )
            .if_match(form.version)
            .json(&Value::Object(body)),
        )
        .await?;
    match answer.status {
        StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY => {
            ctx.flash(FlashKind::Error, answer.error().message);
        }
        _ => {
            expect_ok(&answer)?;
            let user: User = answer.json()?;
            ctx.flash(
                FlashKind::Ok,
                format!("{} is now {}, {}.", user.email, user.role, user.status),
            );
        }
    }
    Ok(see_other(safe_back(&form.back, "/console/users")))
}

async fn detail(
    TenantAdmin(ctx): TenantAdmin,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user: User = ctx
        .get(format!("/api/auth/users/{}", query_value(&id)))
        .await?;
    let form = EditUser {
        name: user.name.clone().unwrap_or_default(),
        role: user.role.clone(),
        status: user.status.clone(),
        password: String::new(),
        version: user.version,
    };
    edit_page(&ctx, &user, &form, &FormErrors::default(), StatusCode::OK)
}

#[derive(Deserialize, Default)]
struct EditUser {
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    password: String,
    version: i64,
}

fn edit_page(
    ctx: &Ctx,
    user: &User,
    form: &EditUser,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let me = user.id == ctx.principal().id;
    let body = html! {
        p { "Created " (when(&user.created_at)) " · " (badge(&user.status)) }
        div.card {
            (errors.summary())
            @if me { p.hint { "You cannot change your own role or disable yourself." } }
            form method="post" action={ "/console/users/" (user.id) "/edit" } {
                (csrf_field(&ctx.data.csrf))
                input type="hidden" name="version" value=(form.version);
                (field(errors, "name", "Name", "text", &form.name, false))
                @if me {
                    input type="hidden" name="role" value=(form.role);
                    input type="hidden" name="status" value=(form.status);
                } @else {
                    (select(errors, "role", "Role", &ROLES, &form.role))
                    (select(errors, "status", "Status", &[("active", "active"), ("disabled", "disabled")], &form.status))
                }
                (field(errors, "password", "New password (leave empty to keep it)", "password", "", false))
                p.hint { "Changing the role, the status or the password ends the user's sessions." }
                div.actions {
                    button type="submit" { "Save" }
                    a href="/console/users" { "Back to the users" }
                }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Users),
        &user.email,
        body,
    ))
}

async fn edit(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<EditUser>,
) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let path = format!("/api/auth/users/{}", query_value(&id));
    let current: User = ctx.get(path.clone()).await?;
    // Only what changed is sent: an admin's own unchanged role and status stay out of the
    // request (the API refuses any change of them by their owner).
    let mut body = serde_json::Map::new();
    if form.name.trim() != current.name.as_deref().unwrap_or("") {
        body.insert("name".into(), json!(form.name.trim()));
    }
    if form.role != current.role {
        body.insert("role".into(), json!(form.role));
    }
    if form.status != current.status {
        body.insert("status".into(), json!(form.status));
    }
    if !form.password.is_empty() {
        body.insert("password".into(), json!(form.password));
    }
    let answer = ctx
        .send(
            ctx.call(Method::PATCH, path)
                .if_match(form.version)
                .json(&Value::Object(body)),
        )
        .await?;
    if !answer.ok() {
        let error = answer.error();
        let errors = match answer.status {
            StatusCode::UNPROCESSABLE_ENTITY => FormErrors::from_api(&error),
            StatusCode::CONFLICT if error.code == "version_conflict" => FormErrors::general(
                "Someone changed this user since you opened the page. Reload it and try again.",
            ),
            StatusCode::CONFLICT => FormErrors::general(error.message),
            _ => {
                expect_ok(&answer)?;
                FormErrors::default()
            }
        };
        return edit_page(&ctx, &current, &form, &errors, answer.status);
    }
    ctx.flash(FlashKind::Ok, format!("{} saved.", current.email));
    Ok(see_other("/console/users"))
}
