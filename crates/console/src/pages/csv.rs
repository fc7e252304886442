//! CSV export and import of customers, through the API's own CSV endpoints: the export is
//! streamed to the browser as the API writes it; the import shows the per-line report.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use crate::session::{same_secret, FlashKind};
use crate::views::{csrf_field, page, page_with_status, query, FormErrors, Nav};
use crate::web::{expect_ok, see_other, Ctx, Member, PageError};
use crate::Console;

/// Largest upload through the console; larger files go to the API directly (256 MiB).
const UPLOAD_LIMIT: usize = 32 * 1024 * 1024;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/customers/export", get(export))
        .route(
            "/console/customers/import",
            get(import_form)
                .post(import)
                .layer(DefaultBodyLimit::max(UPLOAD_LIMIT)),
        )
}

#[derive(Deserialize, Default)]
struct ExportFilters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    tag: String,
}

async fn export(
    Member(ctx): Member,
    Query(f): Query<ExportFilters>,
) -> Result<Response, PageError> {
    let api = query(&[
        ("q", f.q.trim()),
        ("status", &f.status),
        ("tag", f.tag.trim()),
    ]);
    let mut response = ctx
        .stream(ctx.call(Method::GET, format!("/api/crm/customers/export{api}")))
        .await?;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"customers.csv\""),
    );
    Ok(response)
}

async fn import_form(Member(ctx): Member) -> Result<Response, PageError> {
    Ok(page(
        &ctx,
        Some(Nav::Customers),
        "Import customers",
        form(&ctx, &FormErrors::default()),
    ))
}

fn form(ctx: &Ctx, errors: &FormErrors) -> maud::Markup {
    html! {
        div.card {
            (errors.summary())
            p { "A CSV file with a header row: " code { "first_name" } " (required), " code { "last_name" } ", "
                code { "email" } ", " code { "phone" } ", " code { "company" } ", " code { "status" } ", "
                code { "tags" } " and custom fields. A row whose email exists updates that customer. "
                a href="/console/customers/export" { "An export" } " imports back." }
            form method="post" action="/console/customers/import" enctype="multipart/form-data" {
                (csrf_field(&ctx.data.csrf))
                div.field { label for="file" { "CSV file" } input #file type="file" name="file" accept=".csv,text/csv" required; }
                div.field.check {
                    label { input type="checkbox" name="skip_invalid" value="1"; " Import the valid rows even if some are invalid" }
                }
                button type="submit" { "Import" }
            }
        }
    }
}

#[derive(Deserialize, Default)]
struct Report {
    #[serde(default)]
    created: u64,
    #[serde(default)]
    updated: u64,
    #[serde(default)]
    skipped: u64,
    #[serde(default)]
    errors: Vec<LineErrors>,
}

#[derive(Deserialize)]
struct LineErrors {
    line: u64,
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    field: String,
    reason: String,
}

async fn import(State(console): State<Console>, req: Request) -> Result<Response, PageError> {
    let (mut parts, body) = req.into_parts();
    let ctx = <Member as axum::extract::FromRequestParts<Console>>::from_request_parts(
        &mut parts, &console,
    )
    .await?
    .0;
    let mut multipart = Multipart::from_request(Request::from_parts(parts, body), &console)
        .await
        .map_err(|_| PageError::Csrf)?;
    let (mut csrf, mut file, mut skip_invalid) = (None, Bytes::new(), false);
    // The form's fields come in its order: the token first, so nothing is read unchecked.
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad_upload(&e.to_string()))?
    {
        match field.name() {
            Some("csrf") => csrf = field.text().await.ok(),
            Some("skip_invalid") => skip_invalid = true,
            Some("file") => {
                if !csrf
                    .as_deref()
                    .is_some_and(|t| same_secret(t, &ctx.data.csrf))
                {
                    return Err(PageError::Csrf);
                }
                file = field
                    .bytes()
                    .await
                    .map_err(|e| bad_upload(&e.to_string()))?;
            }
            _ => {}
        }
    }
    if !csrf
        .as_deref()
        .is_some_and(|t| same_secret(t, &ctx.data.csrf))
    {
        return Err(PageError::Csrf);
    }
    if file.is_empty() {
        let errors = FormErrors::general("Choose a CSV file to import.");
        return Ok(page_with_status(
            &ctx,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(Nav::Customers),
            "Import customers",
            form(&ctx, &errors),
        ));
    }
    let path = if skip_invalid {
        "/api/crm/customers/import?mode=skip_invalid"
    } else {
        "/api/crm/customers/import"
    };
    let answer = ctx
        .send(ctx.call(Method::POST, path).raw("text/csv", file))
        .await?;
    let (report, refused) = if answer.ok() {
        (answer.json::<Report>()?, None)
    } else if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
        let error = answer.error();
        let report = error
            .details
            .clone()
            .and_then(|d| serde_json::from_value::<Report>(d).ok())
            .unwrap_or_default();
        (report, Some(error.message))
    } else {
        expect_ok(&answer)?;
        (Report::default(), None)
    };
    if refused.is_none() && report.errors.is_empty() {
        ctx.flash(
            FlashKind::Ok,
            format!(
                "Imported: {} created, {} updated.",
                report.created, report.updated
            ),
        );
        return Ok(see_other("/console/customers"));
    }
    let body = html! {
        @if let Some(message) = &refused {
            div.flash.error role="alert" { "Nothing was imported: " (message) }
        } @else {
            div.flash.ok role="status" { (report.created) " created, " (report.updated) " updated, "
                (report.skipped) " skipped." }
        }
        @if !report.errors.is_empty() {
            h2 { "Lines with errors" }
            div.table-wrap { table {
                thead { tr { th scope="col" class="num" { "Line" } th scope="col" { "Field" } th scope="col" { "Problem" } } }
                tbody {
                    @for line in &report.errors { @for e in &line.errors {
                        tr { td.num { (line.line) } td { code { (e.field) } } td { (e.reason) } }
                    } }
                }
            } }
        }
        (form(&ctx, &FormErrors::default()))
    };
    Ok(page_with_status(
        &ctx,
        answer.status,
        Some(Nav::Customers),
        "Import customers",
        body,
    ))
}

fn bad_upload(detail: &str) -> PageError {
    PageError::Api(
        StatusCode::BAD_REQUEST,
        crate::api::ApiError {
            code: "bad_upload".into(),
            message: format!("The upload could not be read: {detail}"),
            details: None,
        },
    )
}
