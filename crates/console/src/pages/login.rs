//! Logging in and out, the landing redirect, and the superadmin's choice of tenant.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::api::ApiCall;
use crate::session::{random_token, FlashKind, Principal, Role, SessionData};
use crate::views::{bare_page, csrf_field, field, FormErrors};
use crate::web::NoFields;
use crate::web::{
    checked_form, form_bytes, see_other, Browser, Ctx, PageError, Posted, LOGIN_CSRF_COOKIE,
    SESSION_COOKIE, TENANT_COOKIE,
};
use crate::Console;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console", get(landing))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/tenant-context", post(tenant_context))
}

/// The superadmin lands on the overview, tenant members on their customers.
async fn landing(ctx: Result<Ctx, PageError>) -> Response {
    match ctx {
        Ok(ctx) if ctx.role() == Role::Superadmin && ctx.data.tenant.is_none() => {
            see_other("/console/overview")
        }
        Ok(_) => see_other("/console/customers"),
        Err(_) => see_other("/console/login"),
    }
}

#[derive(Deserialize, Default)]
struct LoginNotice {
    #[serde(default)]
    ended: Option<String>,
    #[serde(default)]
    out: Option<String>,
}

#[derive(Deserialize, Default)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    tenant: String,
}

async fn login_page(
    ctx: Result<Ctx, PageError>,
    browser: Browser,
    Query(notice): Query<LoginNotice>,
) -> Response {
    if ctx.is_ok() {
        return see_other("/console");
    }
    let notice = if notice.ended.is_some() {
        Some("Your session has ended. Please log in again.")
    } else if notice.out.is_some() {
        Some("You are logged out.")
    } else {
        None
    };
    let form = LoginForm {
        tenant: browser.cookie(TENANT_COOKIE).unwrap_or_default(),
        ..LoginForm::default()
    };
    login_form(
        &browser,
        StatusCode::OK,
        &form,
        &FormErrors::default(),
        notice,
    )
}

/// The login form; it carries (and sets) the pre-session form token.
fn login_form(
    browser: &Browser,
    status: StatusCode,
    form: &LoginForm,
    errors: &FormErrors,
    notice: Option<&str>,
) -> Response {
    let token = browser
        .cookie(LOGIN_CSRF_COOKIE)
        .filter(|t| t.len() == 43)
        .unwrap_or_else(random_token);
    let body = html! {
        div.card.narrow {
            @if let Some(n) = notice { div.flash.ok role="status" { (n) } }
            (errors.summary())
            form method="post" action="/console/login" {
                (csrf_field(&token))
                (field(errors, "username", "User name or email", "text", &form.username, true))
                (field(errors, "password", "Password", "password", "", true))
                (field(errors, "tenant", "Tenant (optional)", "text", &form.tenant, false))
                p.hint { "Name the tenant only if your email exists in several tenants." }
                button type="submit" { "Log in" }
            }
        }
    };
    let mut response = bare_page(status, "Log in", body);
    response.headers_mut().append(
        header::SET_COOKIE,
        browser.set_cookie(LOGIN_CSRF_COOKIE, &token, None),
    );
    response
}

#[derive(Deserialize)]
struct LoginAnswer {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
    user: Principal,
}

async fn login(State(console): State<Console>, browser: Browser, req: Request) -> Response {
    let expected = browser.cookie(LOGIN_CSRF_COOKIE).unwrap_or_default();
    let bytes = match form_bytes(req.into_body()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // Without the cookie there is nothing to match: a cross-site post, or cookies off.
    let form: LoginForm = match (expected.is_empty(), checked_form(&bytes, &expected)) {
        (false, Ok(form)) => form,
        (_, Err(e)) => return e.into_response(),
        (true, Ok(_)) => return PageError::Csrf.into_response(),
    };
    let mut body = json!({ "username": form.username.trim(), "password": form.password });
    let tenant = form.tenant.trim();
    if !tenant.is_empty() {
        body["tenant"] = json!(tenant);
    }
    let answer = match console
        .api
        .send(
            ApiCall::new(Method::POST, "/api/auth/login")
                .json(&body)
                .forwarded(&browser.forwarded),
        )
        .await
    {
        Ok(a) => a,
        Err(e) => return PageError::from(e).into_response(),
    };
    if !answer.ok() {
        let error = answer.error();
        let message = match (answer.status, error.code.as_str()) {
            (StatusCode::TOO_MANY_REQUESTS, _) => match answer.retry_after() {
                Some(secs) => format!(
                    "Too many failed attempts. Try again in {}.",
                    duration_text(secs)
                ),
                None => format!("Too many failed attempts. {}", error.message),
            },
            (_, "invalid_credentials") => "Wrong user name, email, password or tenant.".to_string(),
            (_, "tenant_suspended") => {
                "This tenant is suspended. Ask the platform operator to resume it.".to_string()
            }
            (_, "account_disabled") => {
                "This account is disabled. Ask your tenant's administrator.".to_string()
            }
            (_, "tenant_required") => {
                "This email has accounts in several tenants: name the tenant.".to_string()
            }
            _ => return relogin(&browser, answer.status, &form, FormErrors::from_api(&error)),
        };
        return relogin(&browser, answer.status, &form, FormErrors::general(message));
    }
    let login: LoginAnswer = match answer.json() {
        Ok(l) => l,
        Err(e) => return PageError::from(e).into_response(),
    };
    let session = console.sessions.insert(SessionData::new(
        login.access_token,
        login.refresh_token,
        login.expires_in,
        login.user,
    ));
    let mut response = see_other("/console");
    let headers: &mut HeaderMap = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        browser.set_cookie(SESSION_COOKIE, &session, None),
    );
    headers.append(header::SET_COOKIE, browser.clear_cookie(LOGIN_CSRF_COOKIE));
    // Remembered for the next login; only a plain slug or id is worth keeping.
    if !tenant.is_empty()
        && tenant
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        headers.append(
            header::SET_COOKIE,
            browser.set_cookie(TENANT_COOKIE, tenant, Some(365 * 24 * 3600)),
        );
    }
    response
}

fn relogin(
    browser: &Browser,
    status: StatusCode,
    form: &LoginForm,
    errors: FormErrors,
) -> Response {
    login_form(browser, status, form, &errors, None)
}

/// "30 seconds", "2 minutes", "15 minutes".
fn duration_text(secs: u64) -> String {
    match secs {
        1 => "1 second".into(),
        s if s < 90 => format!("{s} seconds"),
        s => format!("{} minutes", s.div_ceil(60)),
    }
}

/// Ends the auth session (so the tokens stop working everywhere), then the browser's.
async fn logout(posted: Posted<NoFields>) -> Response {
    let ctx = posted.ctx;
    match ctx.send(ctx.call(Method::POST, "/api/auth/logout")).await {
        Ok(answer) if !answer.ok() => {
            tracing::warn!(status = %answer.status, "logout was refused by the API");
        }
        // Already ended: nothing more to revoke.
        Ok(_) | Err(PageError::SessionEnded) => {}
        Err(e) => return e.into_response(),
    }
    ctx.end();
    let mut response = see_other("/console/login?out=1");
    response
        .headers_mut()
        .append(header::SET_COOKIE, ctx.browser.clear_cookie(SESSION_COOKIE));
    response
}

#[derive(Deserialize)]
struct TenantChoice {
    #[serde(default)]
    tenant: Option<String>,
}

/// A superadmin enters a tenant (its pages then act in it, via `X-Tenant`) or leaves it.
async fn tenant_context(Posted { ctx, form }: Posted<TenantChoice>) -> Result<Response, PageError> {
    ctx.ensure_superadmin()?;
    match form.tenant.filter(|t| !t.is_empty()) {
        Some(slug) => {
            let path = format!("/api/cdx/tenants/{}", crate::views::query_value(&slug));
            let tenant: serde_json::Value = ctx.get(path).await?;
            let slug = tenant["slug"].as_str().unwrap_or(&slug).to_string();
            ctx.flash(FlashKind::Ok, format!("You are working in tenant {slug}."));
            ctx.set_tenant(Some(slug));
            Ok(see_other("/console/customers"))
        }
        None => {
            ctx.set_tenant(None);
            Ok(see_other("/console/tenants"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_naturally() {
        assert_eq!(duration_text(30), "30 seconds");
        assert_eq!(duration_text(120), "2 minutes");
        assert_eq!(duration_text(900), "15 minutes");
    }
}
