//! The page frame (header, navigation by role, flash) and the small pieces every page uses.
//! maud escapes every interpolated value, so API data can never inject markup.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::session::{FlashKind, Role};
use crate::web::Ctx;

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Tenants,
    Clients,
    Services,
    Customers,
    Companies,
    Deals,
    Users,
    Settings,
    Audit,
    Account,
}

impl Nav {
    fn href(self) -> &'static str {
        match self {
            Nav::Overview => "/console/overview",
            Nav::Tenants => "/console/tenants",
            Nav::Clients => "/console/clients",
            Nav::Services => "/console/services",
            Nav::Customers => "/console/customers",
            Nav::Companies => "/console/companies",
            Nav::Deals => "/console/deals",
            Nav::Users => "/console/users",
            Nav::Settings => "/console/settings",
            Nav::Audit => "/console/audit",
            Nav::Account => "/console/account",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Nav::Overview => "Overview",
            Nav::Tenants => "Tenants",
            Nav::Clients => "Clients",
            Nav::Services => "Services",
            Nav::Customers => "Customers",
            Nav::Companies => "Companies",
            Nav::Deals => "Deals",
            Nav::Users => "Users",
            Nav::Settings => "CRM settings",
            Nav::Audit => "Audit log",
            Nav::Account => "My account",
        }
    }
}

/// The sections `role` may use; `in_tenant` when pages act in a tenant. The same rules as
/// the role gates in `web`, so a link is shown exactly when following it works.
pub fn sections(role: Role, in_tenant: bool) -> Vec<Nav> {
    let mut items = Vec::new();
    if role == Role::Superadmin {
        items.extend([Nav::Overview, Nav::Tenants, Nav::Clients, Nav::Services]);
    }
    if in_tenant {
        items.extend([Nav::Customers, Nav::Companies, Nav::Deals]);
        if role != Role::User {
            items.extend([Nav::Users, Nav::Settings]);
        }
    }
    if role != Role::User {
        items.push(Nav::Audit);
    }
    items.push(Nav::Account);
    items
}

/// A whole page for a logged-in session.
pub fn page(ctx: &Ctx, active: Option<Nav>, title: &str, body: Markup) -> Response {
    page_with_status(ctx, StatusCode::OK, active, title, body)
}

/// [`page`] with another status (a form shown again with its errors answers 422).
pub fn page_with_status(
    ctx: &Ctx,
    status: StatusCode,
    active: Option<Nav>,
    title: &str,
    body: Markup,
) -> Response {
    let principal = ctx.principal();
    let tenant = ctx.data.tenant();
    let flash = ctx.take_flash();
    let chrome = html! {
        header.top {
            a.brand href="/console" { "Metatron" }
            nav aria-label="Main" {
                ul {
                    @for item in sections(principal.role, tenant.is_some()) {
                        li {
                            @if Some(item) == active {
                                a href=(item.href()) aria-current="page" { (item.label()) }
                            } @else {
                                a href=(item.href()) { (item.label()) }
                            }
                        }
                    }
                }
            }
            div.who {
                span { (principal.display()) " · " (role_name(principal.role)) }
                @if let Some(t) = tenant {
                    " · " span.tenant { "tenant " strong { (t) } }
                    @if principal.role == Role::Superadmin {
                        form.inline method="post" action="/console/tenant-context" {
                            (csrf_field(&ctx.data.csrf))
                            button.link type="submit" { "leave" }
                        }
                    }
                }
                form.inline method="post" action="/console/logout" {
                    (csrf_field(&ctx.data.csrf))
                    button.link type="submit" { "Log out" }
                }
            }
        }
    };
    let flash = html! {
        @if let Some(f) = flash {
            div.flash.(flash_class(f.kind)) role="status" { (f.text) }
        }
    };
    document(status, title, chrome, flash, body)
}

/// A page without a session (login, errors).
pub fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let chrome = html! {
        header.top { a.brand href="/console" { "Metatron" } }
    };
    document(status, title, chrome, html! {}, body)
}

fn document(
    status: StatusCode,
    title: &str,
    chrome: Markup,
    flash: Markup,
    body: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Metatron" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                (chrome)
                main #main { (flash) h1 { (title) } (body) }
            }
        }
    };
    (status, Html(markup.into_string())).into_response()
}

/// The 403/404/5xx pages, in the console's style.
pub fn error_page(status: StatusCode, title: &str, text: &str) -> Response {
    bare_page(
        status,
        title,
        html! {
            p.error-code { (status.as_u16()) }
            p { (text) }
            p { a href="/console" { "Back to the console" } }
        },
    )
}

fn flash_class(kind: FlashKind) -> &'static str {
    match kind {
        FlashKind::Ok => "ok",
        FlashKind::Error => "error",
    }
}

/// How a role is named on the page.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Superadmin => "superadmin",
        Role::Admin => "admin",
        Role::User => "user",
    }
}

/// The hidden CSRF field every form carries.
pub fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

/// Inline errors of a form: per field, and one for the whole form.
#[derive(Debug, Default, Clone)]
pub struct FormErrors {
    /// `(field, reason)` as the API named them.
    pub fields: Vec<(String, String)>,
    /// A message not tied to one field.
    pub general: Option<String>,
}

impl FormErrors {
    /// From an API refusal: its field errors, or its message.
    pub fn from_api(error: &crate::api::ApiError) -> FormErrors {
        let fields = error.field_errors();
        let general = fields.is_empty().then(|| error.message.clone());
        FormErrors { fields, general }
    }

    /// A message for the whole form.
    pub fn general(text: impl Into<String>) -> FormErrors {
        FormErrors {
            fields: Vec::new(),
            general: Some(text.into()),
        }
    }

    fn for_field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, r)| r.as_str())
    }

    /// The summary above the form (every error, so none hides behind a closed field).
    pub fn summary(&self) -> Markup {
        html! {
            @if let Some(g) = &self.general {
                div.flash.error role="alert" { (g) }
            } @else if !self.fields.is_empty() {
                div.flash.error role="alert" { "Please correct the fields marked below." }
            }
        }
    }
}

/// A labelled input with its inline error. `kind` is the input type.
pub fn field(
    errors: &FormErrors,
    name: &str,
    label: &str,
    kind: &str,
    value: &str,
    required: bool,
) -> Markup {
    let id = format!("f-{name}");
    let error = errors.for_field(name);
    let error_id = format!("{id}-error");
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) @if required { " " abbr title="required" { "*" } } }
            input id=(id) name=(name) type=(kind) value=(value) required[required]
                aria-invalid=[error.map(|_| "true")] aria-describedby=[error.map(|_| error_id.as_str())];
            @if let Some(e) = error { p.field-error id=(error_id) { (e) } }
        }
    }
}

/// A labelled select with its inline error.
pub fn select(
    errors: &FormErrors,
    name: &str,
    label: &str,
    options: &[(&str, &str)],
    selected: &str,
) -> Markup {
    let id = format!("f-{name}");
    let error = errors.for_field(name);
    html! {
        div.field.invalid[error.is_some()] {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @for (value, text) in options {
                    option value=(value) selected[*value == selected] { (text) }
                }
            }
            @if let Some(e) = error { p.field-error { (e) } }
        }
    }
}

/// "Next page" (and "first page") links of a keyset-paged list; `base` is the page with
/// its filters, `next` the API's `next_cursor`.
pub fn pager(base: &str, next: Option<&str>, on_later_page: bool) -> Markup {
    let sep = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager aria-label="Pages" {
            @if on_later_page { a href=(base) { "« First page" } }
            @if let Some(cursor) = next {
                a href={ (base) (sep) "cursor=" (query_value(cursor)) } { "Next page »" }
            }
        }
    }
}

/// Percent-encodes one query value.
pub fn query_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A query string from the non-empty pairs (with the leading `?`, or empty).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.append_pair(k, v);
    }
    let s = out.finish();
    if s.is_empty() {
        s
    } else {
        format!("?{s}")
    }
}

/// Money in minor units as "12,000.00 EUR" (two decimals: the currencies used so far).
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let units = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02} {currency}", abs % 100)
}

/// An RFC 3339 time as "2026-11-25 05:35" (UTC, as the API gives it).
pub fn when(rfc3339: &str) -> String {
    let s = rfc3339.replace('T', " ");
    s.get(..16).map(str::to_string).unwrap_or(s)
}

/// A status shown as a small badge.
pub fn badge(text: &str) -> Markup {
    html! { span class={ "badge badge-" (text) } { (text) } }
}

/// Pre-rendered markup from the chart (built from numbers only, never from user text).
pub fn trusted_svg(svg: String) -> Markup {
    PreEscaped(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands() {
        assert_eq!(money(1_200_000, "EUR"), "12,000.00 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(-123_456_789, "EUR"), "-1,234,567.89 EUR");
    }

    #[test]
    fn queries_skip_empty_values_and_encode() {
        assert_eq!(query(&[("q", "a b&c"), ("status", "")]), "?q=a+b%26c");
        assert_eq!(query(&[("q", "")]), "");
    }

    #[test]
    fn navigation_follows_the_role() {
        assert_eq!(
            sections(Role::User, true),
            vec![Nav::Customers, Nav::Companies, Nav::Deals, Nav::Account]
        );
        assert!(sections(Role::Admin, true).contains(&Nav::Users));
        assert!(!sections(Role::Superadmin, false).contains(&Nav::Customers));
        assert!(sections(Role::Superadmin, true).contains(&Nav::Users));
        assert!(sections(Role::Admin, true).contains(&Nav::Settings));
        assert!(sections(Role::Superadmin, true).contains(&Nav::Settings));
        assert!(!sections(Role::Superadmin, false).contains(&Nav::Settings));
        assert!(sections(Role::Superadmin, false).contains(&Nav::Clients));
        assert!(!sections(Role::Admin, true).contains(&Nav::Clients));
    }
}
