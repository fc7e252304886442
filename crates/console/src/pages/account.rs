//! My account: who I am, changing my password, my sessions and revoking them.

use axum::extract::Path;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::session::{FlashKind, Role};
use crate::views::{
    csrf_field, field, page_with_status, query_value, role_name, when, FormErrors, Nav,
};
use crate::web::NoFields;
use crate::web::{expect_ok, see_other, Ctx, PageError, Posted, SESSION_COOKIE};
use crate::Console;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/account", get(account))
        .route("/console/account/password", post(change_password))
        .route("/console/account/sessions/{id}/revoke", post(revoke))
}

#[derive(Deserialize)]
struct Sessions {
    items: Vec<SessionInfo>,
}

#[derive(Deserialize)]
struct SessionInfo {
    id: String,
    #[serde(default)]
    current: bool,
    ip: Option<String>,
    user_agent: Option<String>,
    created_at: String,
    last_used_at: Option<String>,
}

async fn account(ctx: Ctx) -> Result<Response, PageError> {
    render(&ctx, &FormErrors::default(), StatusCode::OK).await
}

async fn render(ctx: &Ctx, errors: &FormErrors, status: StatusCode) -> Result<Response, PageError> {
    let sessions: Sessions = ctx.get("/api/auth/sessions").await?;
    let p = ctx.principal();
    let body = html! {
        dl.facts {
            @if let Some(u) = &p.username { dt { "User name" } dd { (u) } }
            @if let Some(e) = &p.email { dt { "Email" } dd { (e) } }
            @if let Some(n) = &p.name { dt { "Name" } dd { (n) } }
            dt { "Role" } dd { (role_name(p.role)) }
            @if p.role != Role::Superadmin { @if let Some(t) = &p.tenant_slug { dt { "Tenant" } dd { (t) } } }
        }
        section.card #password {
            h2 { "Change my password" }
            (errors.summary())
            form method="post" action="/console/account/password" {
                (csrf_field(&ctx.data.csrf))
                (field(errors, "current_password", "Current password", "password", "", true))
                (field(errors, "new_password", "New password (at least 8 characters)", "password", "", true))
                (field(errors, "confirm", "New password again", "password", "", true))
                p.hint { "Your other sessions end when the password changes." }
                button type="submit" { "Change password" }
            }
        }
        section.card #sessions {
            h2 { "My sessions" }
            div.table-wrap { table {
                thead { tr { th scope="col" { "Started" } th scope="col" { "Last refreshed" } th scope="col" { "From" }
                    th scope="col" { "Browser" } th scope="col" { span.sr-only { "Actions" } } } }
                tbody {
                    @for s in &sessions.items {
                        tr {
                            td { (when(&s.created_at)) @if s.current { " " strong { "(this one)" } } }
                            td { (s.last_used_at.as_deref().map(when).unwrap_or_default()) }
                            td { (s.ip.as_deref().unwrap_or("")) }
                            td { (s.user_agent.as_deref().unwrap_or("")) }
                            td {
                                form.inline method="post" action={ "/console/account/sessions/" (s.id) "/revoke" } {
                                    (csrf_field(&ctx.data.csrf))
                                    button.small.danger type="submit" { @if s.current { "Log out" } @else { "Revoke" } }
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Account),
        "My account",
        body,
    ))
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

async fn change_password(
    Posted { ctx, form }: Posted<PasswordForm>,
) -> Result<Response, PageError> {
    if form.new_password != form.confirm {
        let errors = FormErrors {
            fields: vec![("confirm".into(), "does not match the new password".into())],
            general: None,
        };
        return render(&ctx, &errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/auth/password").json(&json!({
            "current_password": form.current_password, "new_password": form.new_password,
        })))
        .await?;
    let error = answer.error();
    let errors = match (answer.status, error.code.as_str()) {
        (s, _) if s.is_success() => {
            ctx.flash(
                FlashKind::Ok,
                "Password changed. Your other sessions were ended.",
            );
            return Ok(see_other("/console/account"));
        }
        (_, "wrong_password") => FormErrors {
            fields: vec![(
                "current_password".into(),
                "is not your current password".into(),
            )],
            general: None,
        },
        (StatusCode::UNPROCESSABLE_ENTITY, _) => FormErrors::from_api(&error),
        _ => {
            expect_ok(&answer)?;
            FormErrors::default()
        }
    };
    render(&ctx, &errors, answer.status).await
}

async fn revoke(
    Path(id): Path<String>,
    Posted { ctx, .. }: Posted<NoFields>,
) -> Result<Response, PageError> {
    let answer = ctx
        .send(ctx.call(
            Method::DELETE,
            format!("/api/auth/sessions/{}", query_value(&id)),
        ))
        .await?;
    expect_ok(&answer)?;
    // Revoking this very session is logging out: check whether it still works.
    let me = ctx.send(ctx.call(Method::GET, "/api/auth/me")).await;
    if let Err(PageError::SessionEnded) = me {
        let mut response = see_other("/console/login?out=1");
        response
            .headers_mut()
            .append(header::SET_COOKIE, ctx.browser.clear_cookie(SESSION_COOKIE));
        return Ok(response.into_response());
    }
    ctx.flash(FlashKind::Ok, "The session was revoked.");
    Ok(see_other("/console/account#sessions"))
}
