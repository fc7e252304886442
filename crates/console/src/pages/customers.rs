//! CRM customers: the list with search, status filter and paging; create and edit with the
//! API's validation messages inline; the detail page with its timeline and a note form.

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::session::FlashKind;
use crate::views::{
    badge, csrf_field, field, page_with_status, pager, query, query_value, select, when,
    FormErrors, Nav,
};
use crate::web::{see_other, Ctx, Member, PageError, Posted};
use crate::Console;

use super::Page;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/customers", get(list).post(create))
        .route("/console/customers/new", get(new_form))
        .route("/console/customers/{id}", get(detail).post(update))
        .route("/console/customers/{id}/edit", get(edit_form))
        .route("/console/customers/{id}/notes", post(add_note))
}

const STATUSES: [(&str, &str); 4] = [
    ("lead", "Lead"),
    ("prospect", "Prospect"),
    ("customer", "Customer"),
    ("churned", "Churned"),
];

#[derive(Deserialize)]
struct Customer {
    id: String,
    first_name: String,
    #[serde(default)]
    last_name: String,
    email: Option<String>,
    phone: Option<String>,
    company_id: Option<String>,
    company_name: Option<String>,
    status: String,
    #[serde(default)]
    tags: Vec<String>,
    created_at: String,
    version: i64,
}

impl Customer {
    fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_string()
    }
}

#[derive(Deserialize)]
struct Company {
    id: String,
    name: String,
}

#[derive(Deserialize, Default)]
struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    cursor: String,
}

async fn list(Member(ctx): Member, Query(f): Query<Filters>) -> Result<Response, PageError> {
    let limit = ctx.page_size().to_string();
    let api = query(&[
        ("q", f.q.trim()),
        ("status", &f.status),
        ("tag", f.tag.trim()),
        ("limit", &limit),
        ("cursor", &f.cursor),
    ]);
    let customers: Page<Customer> = ctx.get(format!("/api/crm/customers{api}")).await?;
    let base = format!(
        "/console/customers{}",
        query(&[
            ("q", f.q.trim()),
            ("status", &f.status),
            ("tag", f.tag.trim())
        ])
    );
    let mut statuses = vec![("", "any")];
    statuses.extend(STATUSES);
    let body = html! {
        div.actions {
            a.button href="/console/customers/new" { "New customer" }
            a href="/console/customers/import" { "Import CSV" }
            a href={ "/console/customers/export" (query(&[("q", f.q.trim()), ("status", &f.status), ("tag", f.tag.trim())])) } { "Export CSV" }
        }
        form.filters method="get" action="/console/customers" role="search" {
            div.field { label for="q" { "Search" } input #q type="search" name="q" value=(f.q) placeholder="name, email or company"; }
            (select(&FormErrors::default(), "status", "Status", &statuses, &f.status))
            div.field { label for="tag" { "Tag" } input #tag name="tag" value=(f.tag); }
            button type="submit" { "Filter" }
        }
        @if customers.items.is_empty() {
            p.empty { "No customers match." }
        } @else {
            div.table-wrap { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Company" }
                    th scope="col" { "Status" } th scope="col" { "Tags" } th scope="col" { "Created" } } }
                tbody {
                    @for c in &customers.items {
                        tr {
                            td { a href={ "/console/customers/" (c.id) } { (c.name()) } }
                            td { (c.email.as_deref().unwrap_or("")) }
                            td { (c.company_name.as_deref().unwrap_or("")) }
                            td { (badge(&c.status)) }
                            td { @for t in &c.tags { span.tag { (t) } " " } }
                            td { (when(&c.created_at)) }
                        }
                    }
                }
            } }
        }
        (pager(&base, customers.next_cursor.as_deref(), !f.cursor.is_empty()))
    };
    Ok(page_with_status(
        &ctx,
        StatusCode::OK,
        Some(Nav::Customers),
        "Customers",
        body,
    ))
}

/// The customer form's fields, as typed.
#[derive(Deserialize, Default)]
struct CustomerForm {
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    company_id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    version: Option<i64>,
}

impl CustomerForm {
    fn from_customer(c: &Customer) -> CustomerForm {
        CustomerForm {
            first_name: c.first_name.clone(),
            last_name: c.last_name.clone(),
            email: c.email.clone().unwrap_or_default(),
            phone: c.phone.clone().unwrap_or_default(),
            company_id: c.company_id.clone().unwrap_or_default(),
            status: c.status.clone(),
            tags: c.tags.join(", "),
            version: Some(c.version),
        }
    }

    /// The JSON for the API. A blank optional field is left out when creating and cleared
    /// (`null`) when editing, as the API's PATCH reads `null`.
    fn to_json(&self, editing: bool) -> Value {
        let mut body = Map::new();
        body.insert("first_name".into(), json!(self.first_name));
        for (key, value) in [
            ("last_name", &self.last_name),
            ("email", &self.email),
            ("phone", &self.phone),
            ("company_id", &self.company_id),
        ] {
            let value = value.trim();
            if !value.is_empty() {
                body.insert(key.into(), json!(value));
            } else if editing {
                body.insert(key.into(), Value::Null);
            }
        }
        if !self.status.is_empty() {
            body.insert("status".into(), json!(self.status));
        }
        let tags: Vec<&str> = self
            .tags
            .split([',', ';'])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        body.insert("tags".into(), json!(tags));
        Value::Object(body)
    }
}

async fn companies(ctx: &Ctx) -> Result<Vec<Company>, PageError> {
    let page: Page<Company> = ctx.get("/api/crm/companies?sort=name&limit=500").await?;
    Ok(page.items)
}

/// The create or edit form page; `id` is the customer edited.
async fn form_page(
    ctx: &Ctx,
    id: Option<&str>,
    form: &CustomerForm,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let companies = companies(ctx).await?;
    let mut company_options = vec![("", "— none —")];
    company_options.extend(companies.iter().map(|c| (c.id.as_str(), c.name.as_str())));
    let (title, action) = match id {
        Some(id) => ("Edit customer", format!("/console/customers/{id}")),
        None => ("New customer", "/console/customers".to_string()),
    };
    let status_value = if form.status.is_empty() {
        "lead"
    } else {
        &form.status
    };
    let body = html! {
        div.card {
            (errors.summary())
            form method="post" action=(action) novalidate {
                (csrf_field(&ctx.data.csrf))
                @if let Some(v) = form.version { input type="hidden" name="version" value=(v); }
                div.grid2 {
                    (field(errors, "first_name", "First name", "text", &form.first_name, true))
                    (field(errors, "last_name", "Last name", "text", &form.last_name, false))
                    (field(errors, "email", "Email", "email", &form.email, false))
                    (field(errors, "phone", "Phone", "tel", &form.phone, false))
                    (select(errors, "company_id", "Company", &company_options, &form.company_id))
                    (select(errors, "status", "Status", &STATUSES, status_value))
                }
                (field(errors, "tags", "Tags (separated by commas)", "text", &form.tags, false))
                div.actions {
                    button type="submit" { "Save" }
                    a href=(id.map(|i| format!("/console/customers/{i}")).unwrap_or_else(|| "/console/customers".into())) { "Cancel" }
                }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Customers),
        title,
        body,
    ))
}

async fn new_form(Member(ctx): Member) -> Result<Response, PageError> {
    form_page(
        &ctx,
        None,
        &CustomerForm::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn create(Posted { ctx, form }: Posted<CustomerForm>) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let answer = ctx
        .send(
            ctx.call(Method::POST, "/api/crm/customers")
                .json(&form.to_json(false)),
        )
        .await?;
    if !answer.ok() {
        return refused(&ctx, None, &form, &answer).await;
    }
    let created: Customer = answer.json()?;
    ctx.flash(
        FlashKind::Ok,
        format!("Customer {} created.", created.name()),
    );
    Ok(see_other(&format!("/console/customers/{}", created.id)))
}

/// Shows the form again with the API's reasons; other refusals get their page.
async fn refused(
    ctx: &Ctx,
    id: Option<&str>,
    form: &CustomerForm,
    answer: &crate::api::ApiAnswer,
) -> Result<Response, PageError> {
    let error = answer.error();
    let errors = match (answer.status, error.code.as_str()) {
        (StatusCode::UNPROCESSABLE_ENTITY, _) => FormErrors::from_api(&error),
        (StatusCode::CONFLICT, "version_conflict") => FormErrors::general(
            "Someone changed this customer since you opened the form. Reload it and make your change again.",
        ),
        (StatusCode::CONFLICT, _) => FormErrors {
            fields: vec![("email".into(), error.message.clone())],
            general: None,
        },
        _ => {
            crate::web::expect_ok(answer)?;
            FormErrors::default()
        }
    };
    form_page(ctx, id, form, &errors, answer.status).await
}

async fn edit_form(Member(ctx): Member, Path(id): Path<String>) -> Result<Response, PageError> {
    let customer: Customer = ctx
        .get(format!("/api/crm/customers/{}", query_value(&id)))
        .await?;
    form_page(
        &ctx,
        Some(&customer.id),
        &CustomerForm::from_customer(&customer),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn update(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<CustomerForm>,
) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let id = query_value(&id);
    let mut call = ctx
        .call(Method::PATCH, format!("/api/crm/customers/{id}"))
        .json(&form.to_json(true));
    if let Some(v) = form.version {
        call = call.if_match(v);
    }
    let answer = ctx.send(call).await?;
    if !answer.ok() {
        return refused(&ctx, Some(&id), &form, &answer).await;
    }
    ctx.flash(FlashKind::Ok, "Customer saved.");
    Ok(see_other(&format!("/console/customers/{id}")))
}

#[derive(Deserialize)]
struct Timeline {
    items: Vec<TimelineItem>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TimelineItem {
    Note {
        at: String,
        note: Note,
    },
    StageChange {
        at: String,
        deal_title: Option<String>,
        from_stage: Option<String>,
        to_stage: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Note {
    kind: String,
    body: String,
    due_on: Option<String>,
    #[serde(default)]
    done: bool,
}

#[derive(Deserialize, Default)]
struct NoteForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    due_on: String,
}

async fn detail(Member(ctx): Member, Path(id): Path<String>) -> Result<Response, PageError> {
    detail_page(
        &ctx,
        &id,
        &NoteForm::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn detail_page(
    ctx: &Ctx,
    id: &str,
    note: &NoteForm,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let id = query_value(id);
    let (customer, timeline) = tokio::join!(
        ctx.get::<Customer>(format!("/api/crm/customers/{id}")),
        ctx.get::<Timeline>(format!("/api/crm/customers/{id}/timeline?limit=50")),
    );
    let (c, timeline) = (customer?, timeline?);
    let kinds = [
        ("note", "Note"),
        ("call", "Call"),
        ("meeting", "Meeting"),
        ("task", "Task"),
    ];
    let body = html! {
        div.actions { a.button href={ "/console/customers/" (c.id) "/edit" } { "Edit" } }
        dl.facts {
            dt { "Status" } dd { (badge(&c.status)) }
            dt { "Email" } dd { (c.email.as_deref().unwrap_or("—")) }
            dt { "Phone" } dd { (c.phone.as_deref().unwrap_or("—")) }
            dt { "Company" } dd { (c.company_name.as_deref().unwrap_or("—")) }
            dt { "Tags" } dd { @for t in &c.tags { span.tag { (t) } " " } @if c.tags.is_empty() { "—" } }
            dt { "Created" } dd { (when(&c.created_at)) }
        }
        section.card {
            h2 #add-note { "Add a note" }
            (errors.summary())
            form method="post" action={ "/console/customers/" (c.id) "/notes" } {
                (csrf_field(&ctx.data.csrf))
                (select(errors, "kind", "Kind", &kinds, if note.kind.is_empty() { "note" } else { &note.kind }))
                div.field.invalid[errors.fields.iter().any(|(f, _)| f == "body")] {
                    label for="f-body" { "Text" }
                    textarea #f-body name="body" rows="3" required { (note.body) }
                    @for (f, r) in &errors.fields { @if f == "body" { p.field-error { (r) } } }
                }
                (field(errors, "due_on", "Due on (tasks only)", "date", &note.due_on, false))
                button type="submit" { "Add" }
            }
        }
        section.card {
            h2 { "Timeline" }
            @if timeline.items.is_empty() { p.empty { "Nothing yet." } }
            ol.timeline {
                @for item in &timeline.items { (timeline_item(item)) }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Customers),
        &c.name(),
        body,
    ))
}

fn timeline_item(item: &TimelineItem) -> Markup {
    match item {
        TimelineItem::Note { at, note } => html! {
            li {
                time { (when(at)) } " " span.kind { (note.kind) }
                @if let Some(due) = &note.due_on { " · due " (due) @if note.done { " · done" } }
                p.note-body { (note.body) }
            }
        },
        TimelineItem::StageChange {
            at,
            deal_title,
            from_stage,
            to_stage,
        } => html! {
            li {
                time { (when(at)) } " " span.kind { "deal" } " "
                strong { (deal_title.as_deref().unwrap_or("a deleted deal")) } ": "
                @match from_stage {
                    Some(from) => { (from) " → " }
                    None => { "entered " }
                }
                (to_stage.as_deref().unwrap_or("a deleted stage"))
            }
        },
        TimelineItem::Other => html! {},
    }
}

async fn add_note(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<NoteForm>,
) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let mut body = json!({ "kind": form.kind, "body": form.body, "customer_id": id });
    if !form.due_on.is_empty() {
        body["due_on"] = json!(form.due_on);
    }
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/crm/notes").json(&body))
        .await?;
    if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
        let errors = FormErrors::from_api(&answer.error());
        return detail_page(&ctx, &id, &form, &errors, answer.status).await;
    }
    crate::web::expect_ok(&answer)?;
    ctx.flash(FlashKind::Ok, "Note added.");
    Ok(see_other(&format!(
        "/console/customers/{}#add-note",
        query_value(&id)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_fields_are_left_out_on_create_and_cleared_on_edit() {
        let form = CustomerForm {
            first_name: "Ada".into(),
            email: " ".into(),
            tags: "vip, b2b;;".into(),
            ..CustomerForm::default()
        };
        let created = form.to_json(false);
        assert!(created.get("email").is_none());
        assert_eq!(created["tags"], json!(["vip", "b2b"]));
        assert_eq!(form.to_json(true)["email"], Value::Null);
    }
}
