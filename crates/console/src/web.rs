//! The console's HTTP plumbing: cookies, the logged-in page context, role gates, CSRF-checked
//! forms, and the error pages every handler falls back on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::api::{ApiAnswer, ApiCall, ApiError, Forwarded};
use crate::session::{
    random_token, refresh_deadline, same_secret, Flash, FlashKind, Principal, Role, SessionData,
    SessionEntry,
};
use crate::views;
use crate::Console;

/// The session cookie (an opaque id; the tokens stay on the server).
pub const SESSION_COOKIE: &str = "mt_session";
/// The login form's token before there is a session (double-submit).
pub const LOGIN_CSRF_COOKIE: &str = "mt_login_csrf";
/// The tenant last typed at login, to fill it in next time.
pub const TENANT_COOKIE: &str = "mt_tenant";
/// Where the cookies apply: the API never receives them.
const COOKIE_PATH: &str = "/console";
/// Largest form the console accepts (the CSV upload has its own limit).
const FORM_LIMIT: usize = 64 * 1024;

/// Adds the headers every console answer carries: no framing, no sniffing, no caching of
/// pages with personal data, and a policy that allows only the console's own resources.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; \
             connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if is_html {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Facts about the browser's request every handler may need.
#[derive(Debug, Clone)]
pub struct Browser {
    /// Forwarded to every API call.
    pub forwarded: Forwarded,
    /// Whether cookies get `Secure`.
    pub secure: bool,
    headers: HeaderMap,
}

impl Browser {
    fn from_parts(parts: &Parts, console: &Console) -> Browser {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let tls = header("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"))
            || parts.uri.scheme_str() == Some("https");
        let request_id = header("x-request-id")
            .filter(|id| valid_request_id(id))
            .unwrap_or_else(random_token);
        Browser {
            forwarded: Forwarded {
                client: parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0),
                forwarded_for: header("x-forwarded-for"),
                request_id: Some(request_id),
                user_agent: header("user-agent"),
            },
            secure: console.settings.secure_cookies.unwrap_or(tls),
            headers: parts.headers.clone(),
        }
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// A `Set-Cookie` value for `name`; `max_age` `None` makes it a browser-session cookie.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax");
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={age}"));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("invalid=1"))
    }

    /// A `Set-Cookie` value that deletes `name`.
    pub fn clear_cookie(&self, name: &str) -> HeaderValue {
        self.set_cookie(name, "", Some(0))
    }
}

/// The same rule as the API's for ids it accepts: up to 128 of `[A-Za-z0-9-_.:]`.
fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(&c))
}

impl FromRequestParts<Console> for Browser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        Ok(Browser::from_parts(parts, console))
    }
}

/// Why a page could not be shown; each becomes a page (or a redirect) of its own.
#[derive(Debug)]
pub enum PageError {
    /// No session: to the login page.
    LoginRequired,
    /// The API no longer accepts the session (logged out elsewhere, disabled, expired).
    SessionEnded,
    /// The role may not see this.
    Forbidden,
    /// No such thing (or another tenant's).
    NotFound,
    /// A form without the right CSRF token.
    Csrf,
    /// A superadmin opened a tenant page without choosing a tenant.
    TenantRequired,
    /// The API refused for another reason.
    Api(StatusCode, ApiError),
    /// The API could not be reached or answered nonsense.
    Unreachable(String),
}

impl From<crate::api::Unreachable> for PageError {
    fn from(e: crate::api::Unreachable) -> Self {
        PageError::Unreachable(e.0)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            PageError::LoginRequired => return see_other("/console/login"),
            PageError::SessionEnded => {
                let mut response = see_other("/console/login?ended=1");
                // Secure or not does not matter for a deletion.
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{SESSION_COOKIE}=; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age=0"
                )) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                return response;
            }
            PageError::TenantRequired => return see_other("/console/tenants?choose=1"),
            PageError::Forbidden => (
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your role may not open this page.".to_string(),
            ),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page, or it belongs to another tenant.".to_string(),
            ),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form was not sent from this session. Reload the page and try again."
                    .to_string(),
            ),
            PageError::Api(status, error) => {
                let status = if status.is_server_error() {
                    StatusCode::BAD_GATEWAY
                } else {
                    status
                };
                (status, "Something went wrong", error.message)
            }
            PageError::Unreachable(detail) => {
                tracing::error!(%detail, "the console could not use the API");
                (
                    StatusCode::BAD_GATEWAY,
                    "Service unavailable",
                    "The platform did not answer. Try again in a moment.".to_string(),
                )
            }
        };
        (status, views::error_page(status, title, &text)).into_response()
    }
}

/// 303 to `to` (post/redirect/get).
pub fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A logged-in request: the session (its tokens refreshed when due) and the browser.
pub struct Ctx {
    console: Console,
    entry: Arc<SessionEntry>,
    session_id: String,
    /// A copy of the session as the request began.
    pub data: SessionData,
    /// The browser.
    pub browser: Browser,
}

#[derive(Deserialize)]
struct TokenPair {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, PageError> {
        let browser = Browser::from_parts(parts, console);
        let session_id = browser
            .cookie(SESSION_COOKIE)
            .ok_or(PageError::LoginRequired)?;
        let entry = console
            .sessions
            .get(&session_id)
            .ok_or(PageError::LoginRequired)?;
        let data = entry.lock().clone();
        let mut ctx = Ctx {
            data,
            console: console.clone(),
            entry,
            session_id,
            browser,
        };
        ctx.refresh_if_due().await?;
        Ok(ctx)
    }
}

impl Ctx {
    /// Who is logged in.
    pub fn principal(&self) -> &Principal {
        &self.data.principal
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.data.principal.role
    }

    /// The console's settings.
    pub fn page_size(&self) -> u32 {
        self.console.settings.page_size
    }

    /// Swaps the tokens before the access token expires. Under the session's refresh lock,
    /// so that concurrent pages of one session refresh once.
    async fn refresh_if_due(&mut self) -> Result<(), PageError> {
        if std::time::Instant::now() < self.data.refresh_at {
            return Ok(());
        }
        let _guard = self.entry.refreshing.lock().await;
        let current = self.entry.lock().clone();
        if std::time::Instant::now() < current.refresh_at {
            // Another request refreshed while this one waited.
            self.data = current;
            return Ok(());
        }
        let answer = self
            .console
            .api
            .send(
                ApiCall::new(Method::POST, "/api/auth/refresh")
                    .json(&serde_json::json!({ "refresh_token": current.refresh_token }))
                    .forwarded(&self.browser.forwarded),
            )
            .await?;
        if !answer.ok() {
            self.end();
            return Err(PageError::SessionEnded);
        }
        let pair: TokenPair = answer.json()?;
        let mut data = self.entry.lock();
        data.access_token = pair.access_token;
        data.refresh_token = pair.refresh_token;
        data.refresh_at = refresh_deadline(pair.expires_in);
        self.data = data.clone();
        Ok(())
    }

    /// Forgets this browser session (the auth session is ended separately).
    pub fn end(&self) {
        self.console.sessions.remove(&self.session_id);
    }

    /// A call as this session, in its tenant when a superadmin chose one.
    pub fn call(&self, method: Method, path: impl Into<String>) -> ApiCall {
        let tenant = match self.role() {
            Role::Superadmin => self.data.tenant.as_deref(),
            _ => None,
        };
        ApiCall::new(method, path)
            .token(&self.data.access_token)
            .tenant(tenant)
            .forwarded(&self.browser.forwarded)
    }

    /// Sends `call`; a 401 ends the console session (its auth session is gone).
    pub async fn send(&self, call: ApiCall) -> Result<ApiAnswer, PageError> {
        let answer = self.console.api.send(call).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            self.end();
            return Err(PageError::SessionEnded);
        }
        Ok(answer)
    }

    /// Sends `call` and hands back its answer still streaming (a CSV download); a refusal
    /// becomes its error page.
    pub async fn stream(&self, call: ApiCall) -> Result<Response, PageError> {
        let response = self.console.api.send_streaming(call).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        // Errors are small JSON: read it to pick the page.
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, 64 * 1024)
            .await
            .map_err(|e| PageError::Unreachable(e.to_string()))?;
        let answer = ApiAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        if answer.status == StatusCode::UNAUTHORIZED {
            self.end();
            return Err(PageError::SessionEnded);
        }
        expect_ok(&answer)?;
        Err(PageError::Api(answer.status, answer.error()))
    }

    /// GETs `path` and reads it as `T`; refusals become the matching error page.
    pub async fn get<T: DeserializeOwned>(&self, path: impl Into<String>) -> Result<T, PageError> {
        let answer = self.send(self.call(Method::GET, path)).await?;
        expect_ok(&answer)?;
        Ok(answer.json()?)
    }

    /// Leaves a message for the next page.
    pub fn flash(&self, kind: FlashKind, text: impl Into<String>) {
        self.entry.lock().flash = Some(Flash {
            kind,
            text: text.into(),
        });
    }

    /// Takes the message left for this page.
    pub fn take_flash(&self) -> Option<Flash> {
        self.entry.lock().flash.take()
    }

    /// Chooses (or, with `None`, leaves) the tenant a superadmin works in.
    pub fn set_tenant(&self, tenant: Option<String>) {
        self.entry.lock().tenant = tenant;
    }

    /// The tenant the tenant pages act in, or a redirect to choose one.
    pub fn tenant(&self) -> Result<&str, PageError> {
        self.data.tenant().ok_or(PageError::TenantRequired)
    }
}

/// Maps a refusal to its page.
pub fn expect_ok(answer: &ApiAnswer) -> Result<(), PageError> {
    if answer.ok() {
        return Ok(());
    }
    let error = answer.error();
    Err(match (answer.status, error.code.as_str()) {
        (StatusCode::FORBIDDEN, _) => PageError::Forbidden,
        (StatusCode::NOT_FOUND, _) => PageError::NotFound,
        (StatusCode::BAD_REQUEST, "tenant_required") => PageError::TenantRequired,
        (status, _) => PageError::Api(status, error),
    })
}

/// The role gates: the extractors below and the form handlers use the same checks.
impl Ctx {
    /// Only the superadmin.
    pub fn ensure_superadmin(&self) -> Result<(), PageError> {
        match self.role() {
            Role::Superadmin => Ok(()),
            _ => Err(PageError::Forbidden),
        }
    }

    /// Whoever administers the tenant in view: its admins, or the superadmin inside it.
    pub fn ensure_tenant_admin(&self) -> Result<(), PageError> {
        match self.role() {
            Role::User => Err(PageError::Forbidden),
            _ => self.tenant().map(|_| ()),
        }
    }

    /// Anyone working inside a tenant (a superadmin must have chosen one).
    pub fn ensure_member(&self) -> Result<(), PageError> {
        self.tenant().map(|_| ())
    }
}

macro_rules! gate {
    ($(#[$doc:meta])* $name:ident, $check:ident) => {
        $(#[$doc])*
        pub struct $name(pub Ctx);

        impl FromRequestParts<Console> for $name {
            type Rejection = PageError;

            async fn from_request_parts(
                parts: &mut Parts,
                console: &Console,
            ) -> Result<Self, PageError> {
                let ctx = Ctx::from_request_parts(parts, console).await?;
                ctx.$check()?;
                Ok($name(ctx))
            }
        }
    };
}

gate!(
    /// The superadmin, and only them.
    Superadmin,
    ensure_superadmin
);
gate!(
    /// A tenant's admin, or the superadmin inside a tenant.
    TenantAdmin,
    ensure_tenant_admin
);
gate!(
    /// Anyone working inside a tenant.
    Member,
    ensure_member
);

/// A form with nothing but its CSRF token (logout, revoke).
#[derive(Deserialize)]
pub struct NoFields {}

/// A posted form whose `csrf` field matches the session's token; anything else is a 403.
pub struct Posted<T> {
    /// The session.
    pub ctx: Ctx,
    /// The form, without `csrf`.
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Console> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, console: &Console) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, console).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| PageError::Api(StatusCode::PAYLOAD_TOO_LARGE, too_large()))?;
        let form = checked_form(&bytes, &ctx.data.csrf)?;
        Ok(Posted { ctx, form })
    }
}

fn too_large() -> ApiError {
    ApiError {
        code: "body_too_large".into(),
        message: "The form is too large.".into(),
        details: None,
    }
}

/// Parses a urlencoded form after checking its `csrf` field against `expected`.
pub fn checked_form<T: DeserializeOwned>(bytes: &Bytes, expected: &str) -> Result<T, PageError> {
    let sent = form_urlencoded::parse(bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    match sent {
        Some(token) if same_secret(&token, expected) => {}
        _ => return Err(PageError::Csrf),
    }
    serde_urlencoded::from_bytes(bytes).map_err(|e| {
        PageError::Api(
            StatusCode::BAD_REQUEST,
            ApiError {
                code: "bad_form".into(),
                message: format!("The form could not be read: {e}"),
                details: None,
            },
        )
    })
}

/// Reads a form body up to the console's limit (the login form, before any session).
pub async fn form_bytes(body: axum::body::Body) -> Result<Bytes, PageError> {
    axum::body::to_bytes(body, FORM_LIMIT)
        .await
        .map_err(|_| PageError::Api(StatusCode::PAYLOAD_TOO_LARGE, too_large()))
}

/// `back` when it is a console path (never another site: no open redirect), else `default`.
pub fn safe_back<'a>(back: &'a str, default: &'a str) -> &'a str {
    let ok = (back == "/console" || back.starts_with("/console/") || back.starts_with("/console?"))
        && !back.contains("//")
        && !back.contains('\\')
        && !back.chars().any(char::is_control);
    if ok {
        back
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_back() {
        assert_eq!(
            safe_back("/console/tenants?q=a", "/d"),
            "/console/tenants?q=a"
        );
        assert_eq!(safe_back("https://evil.example", "/d"), "/d");
        assert_eq!(safe_back("/console//evil.example", "/d"), "/d");
        assert_eq!(safe_back("/consolex", "/d"), "/d");
        assert_eq!(safe_back("", "/d"), "/d");
    }

    #[test]
    fn forms_need_the_session_token() {
        let body = Bytes::from_static(b"csrf=abc&x=1");
        #[derive(Deserialize)]
        struct X {
            x: u8,
        }
        assert!(matches!(
            checked_form::<X>(&body, "abd"),
            Err(PageError::Csrf)
        ));
        assert_eq!(checked_form::<X>(&body, "abc").map(|f| f.x).ok(), Some(1));
        let none = Bytes::from_static(b"x=1");
        assert!(matches!(
            checked_form::<X>(&none, "abc"),
            Err(PageError::Csrf)
        ));
    }
}
