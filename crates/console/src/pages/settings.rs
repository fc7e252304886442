//! CRM settings of a tenant (its admins, or the superadmin inside the tenant): the pipelines
//! with their ordered stages (add, rename, move up or down, remove) and the custom field
//! definitions (list, create, delete).
//!
//! Every stage change sends the pipeline's whole new stage list with the version the page
//! was built from (`If-Match`), so a change that lost a race is refused, never applied over
//! the other one.

use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::session::FlashKind;
use crate::views::{
    badge, csrf_field, field, page_with_status, query_value, select, FormErrors, Nav,
};
use crate::web::{expect_ok, see_other, Ctx, PageError, Posted, TenantAdmin};
use crate::Console;

use super::Page;

const HOME: &str = "/console/settings";

pub fn router() -> Router<Console> {
    Router::new()
        .route(HOME, get(show))
        .route("/console/settings/pipelines/{id}/stages", post(add_stage))
        .route(
            "/console/settings/pipelines/{id}/stages/{stage}",
            post(change_stage),
        )
        .route("/console/settings/fields", post(create_field))
        .route("/console/settings/fields/{id}/delete", post(delete_field))
}

const STAGE_KINDS: [(&str, &str); 3] = [("open", "open"), ("won", "won"), ("lost", "lost")];
const ENTITIES: [(&str, &str); 3] = [
    ("customer", "customer"),
    ("company", "company"),
    ("deal", "deal"),
];
const FIELD_KINDS: [(&str, &str); 5] = [
    ("text", "text"),
    ("number", "number"),
    ("date", "date"),
    ("boolean", "boolean"),
    ("select", "select"),
];

#[derive(Deserialize)]
struct Pipelines {
    items: Vec<Pipeline>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: String,
    name: String,
    #[serde(default)]
    is_default: bool,
    stages: Vec<Stage>,
    version: i64,
}

#[derive(Deserialize, Clone)]
struct Stage {
    id: String,
    name: String,
    kind: String,
}

#[derive(Deserialize)]
struct Field {
    id: String,
    entity: String,
    name: String,
    label: String,
    kind: String,
    #[serde(default)]
    options: Vec<String>,
    required: bool,
    version: i64,
}

/// The add-stage form of one pipeline.
#[derive(Deserialize, Default)]
struct NewStage {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    version: i64,
}

/// The new custom field form.
#[derive(Deserialize, Default)]
struct NewField {
    #[serde(default)]
    entity: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    kind: String,
    /// One option per line (select fields).
    #[serde(default)]
    options: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    required: Option<String>,
}

/// What the forms show: empty, or the input sent with the reasons it was refused.
#[derive(Default)]
struct Shown {
    /// The pipeline whose add-stage form `stage` belongs to.
    stage_pipeline: String,
    stage: NewStage,
    stage_errors: FormErrors,
    field: NewField,
    field_errors: FormErrors,
}

async fn show(TenantAdmin(ctx): TenantAdmin) -> Result<Response, PageError> {
    render(&ctx, &Shown::default(), StatusCode::OK).await
}

async fn render(ctx: &Ctx, shown: &Shown, status: StatusCode) -> Result<Response, PageError> {
    let (pipelines, fields) = tokio::join!(
        ctx.get::<Pipelines>("/api/crm/pipelines"),
        ctx.get::<Page<Field>>("/api/crm/fields"),
    );
    let (pipelines, fields) = (pipelines?, fields?);
    let csrf = &ctx.data.csrf;
    let none = FormErrors::default();
    let body = html! {
        p.hint { "The stages deals move through, and the extra fields customers, companies and deals carry." }
        section #pipelines {
            h2 { "Pipelines" }
            @for p in &pipelines.items {
                @let (form, errors) = if shown.stage_pipeline == p.id {
                    (&shown.stage, &shown.stage_errors)
                } else {
                    (&NewStage::default(), &none)
                };
                (pipeline_card(csrf, p, form, errors))
            }
        }
        section #fields {
            h2 { "Custom fields" }
            @if fields.items.is_empty() {
                p.empty { "No custom fields yet." }
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th scope="col" { "Record type" } th scope="col" { "Key" } th scope="col" { "Label" }
                        th scope="col" { "Kind" } th scope="col" { "Options" } th scope="col" { "Required" }
                        th scope="col" { span.sr-only { "Actions" } }
                    } }
                    tbody {
                        @for f in &fields.items {
                            tr {
                                td { (f.entity) }
                                td { code { (f.name) } }
                                td { (f.label) }
                                td { (badge(&f.kind)) }
                                td { (f.options.join(", ")) }
                                td { @if f.required { "yes" } @else { "no" } }
                                td {
                                    form.inline method="post" action={ "/console/settings/fields/" (f.id) "/delete" } {
                                        (csrf_field(csrf))
                                        input type="hidden" name="version" value=(f.version);
                                        button.small.danger type="submit" aria-label={ "Delete field " (f.name) " of " (f.entity) } { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                } }
                p.hint { "Deleting a field removes its values from every record." }
            }
            (field_form(csrf, &shown.field, &shown.field_errors))
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Settings),
        "CRM settings",
        body,
    ))
}

/// One pipeline: its stages, each with rename / up / down / remove, and the add-stage form.
fn pipeline_card(csrf: &str, p: &Pipeline, form: &NewStage, errors: &FormErrors) -> Markup {
    let last = p.stages.len().saturating_sub(1);
    let name_id = format!("stage-name-{}", p.id);
    let kind_id = format!("stage-kind-{}", p.id);
    let name_error = errors
        .fields
        .iter()
        .find(|(f, _)| f == "name")
        .map(|(_, r)| r.as_str());
    html! {
        div.card id={ "pipeline-" (p.id) } {
            h3 { (p.name) @if p.is_default { " " span.badge { "default" } } }
            ol.stages {
                @for (i, s) in p.stages.iter().enumerate() {
                    li {
                        form.stage method="post" action={ "/console/settings/pipelines/" (p.id) "/stages/" (s.id) } {
                            (csrf_field(csrf))
                            input type="hidden" name="version" value=(p.version);
                            label.sr-only for={ "rename-" (s.id) } { "Name of stage " (s.name) }
                            input id={ "rename-" (s.id) } type="text" name="name" value=(s.name) required;
                            " " (badge(&s.kind)) " "
                            button.small type="submit" name="op" value="rename" { "Rename" }
                            button.small type="submit" name="op" value="up" formnovalidate disabled[i == 0]
                                aria-label={ "Move " (s.name) " up" } { "↑" }
                            button.small type="submit" name="op" value="down" formnovalidate disabled[i == last]
                                aria-label={ "Move " (s.name) " down" } { "↓" }
                            button.small.danger type="submit" name="op" value="remove" formnovalidate
                                aria-label={ "Remove stage " (s.name) } { "Remove" }
                        }
                    }
                }
            }
            (errors.summary())
            form method="post" action={ "/console/settings/pipelines/" (p.id) "/stages" } {
                (csrf_field(csrf))
                input type="hidden" name="version" value=(p.version);
                div.grid2 {
                    div.field.invalid[name_error.is_some()] {
                        label for=(name_id) { "New stage " abbr title="required" { "*" } }
                        input id=(name_id) type="text" name="name" value=(form.name) required
                            aria-invalid=[name_error.map(|_| "true")];
                        @if let Some(e) = name_error { p.field-error { (e) } }
                    }
                    div.field {
                        label for=(kind_id) { "Kind" }
                        select id=(kind_id) name="kind" {
                            @for (v, t) in STAGE_KINDS { option value=(v) selected[v == form.kind] { (t) } }
                        }
                    }
                }
                button type="submit" { "Add stage" }
            }
        }
    }
}

fn field_form(csrf: &str, form: &NewField, errors: &FormErrors) -> Markup {
    let options_error = errors
        .fields
        .iter()
        .find(|(f, _)| f == "options")
        .map(|(_, r)| r.as_str());
    html! {
        section.card #create {
            h3 { "New custom field" }
            (errors.summary())
            form method="post" action="/console/settings/fields" {
                (csrf_field(csrf))
                div.grid2 {
                    (select(errors, "entity", "Record type", &ENTITIES, &form.entity))
                    (select(errors, "kind", "Kind", &FIELD_KINDS, &form.kind))
                    (field(errors, "name", "Key (a-z, 0-9, _)", "text", &form.name, true))
                    (field(errors, "label", "Label", "text", &form.label, true))
                }
                div.field.invalid[options_error.is_some()] {
                    label for="f-options" { "Options of a select field (one per line)" }
                    textarea #f-options name="options" rows="3" { (form.options) }
                    @if let Some(e) = options_error { p.field-error { (e) } }
                }
                div.field {
                    label { input type="checkbox" name="required" value="1" checked[form.required.is_some()]; " Required on every record" }
                }
                button type="submit" { "Create field" }
            }
        }
    }
}

async fn add_stage(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<NewStage>,
) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let pipeline = current(&ctx, &id).await?;
    let mut stages = kept(&pipeline.stages);
    let kind = if form.kind.is_empty() {
        "open"
    } else {
        form.kind.as_str()
    };
    stages.push(json!({ "name": form.name.trim(), "kind": kind }));
    let answer = save(&ctx, &id, form.version, stages).await?;
    if !answer.ok() {
        let error = answer.error();
        let errors = match answer.status {
            // The new stage is the last of the list: `stages[n].name` is this form's name.
            StatusCode::UNPROCESSABLE_ENTITY => {
                let mut errors = FormErrors::from_api(&error);
                for (f, _) in &mut errors.fields {
                    if f.starts_with("stages[") && f.ends_with(".name") {
                        *f = "name".into();
                    }
                }
                if errors.fields.iter().any(|(f, _)| f != "name") {
                    errors = FormErrors::general(error.message);
                }
                errors
            }
            StatusCode::CONFLICT => FormErrors::general(conflict_text(&error)),
            _ => {
                expect_ok(&answer)?;
                FormErrors::default()
            }
        };
        let shown = Shown {
            stage_pipeline: id,
            stage: form,
            stage_errors: errors,
            ..Shown::default()
        };
        return render(&ctx, &shown, answer.status).await;
    }
    ctx.flash(
        FlashKind::Ok,
        format!("Stage {} added to {}.", form.name.trim(), pipeline.name),
    );
    Ok(see_other(HOME))
}

#[derive(Deserialize)]
struct StageChange {
    op: String,
    #[serde(default)]
    name: String,
    version: i64,
}

async fn change_stage(
    Path((id, stage)): Path<(String, String)>,
    Posted { ctx, form }: Posted<StageChange>,
) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let pipeline = current(&ctx, &id).await?;
    let mut stages = pipeline.stages.clone();
    let Some(at) = stages.iter().position(|s| s.id == stage) else {
        return Err(PageError::NotFound);
    };
    let old = stages[at].name.clone();
    let done = match form.op.as_str() {
        "rename" => {
            stages[at].name = form.name.trim().to_string();
            format!("Stage {old} renamed to {}.", form.name.trim())
        }
        "up" if at > 0 => {
            stages.swap(at, at - 1);
            format!("Stage {old} moved up.")
        }
        "down" if at + 1 < stages.len() => {
            stages.swap(at, at + 1);
            format!("Stage {old} moved down.")
        }
        "remove" => {
            stages.remove(at);
            format!("Stage {old} removed.")
        }
        // Up from the top, down from the bottom: nothing to do.
        "up" | "down" => return Ok(see_other(HOME)),
        _ => return Err(PageError::NotFound),
    };
    let answer = save(&ctx, &id, form.version, kept(&stages)).await?;
    match answer.status {
        StatusCode::CONFLICT => ctx.flash(FlashKind::Error, conflict_text(&answer.error())),
        StatusCode::UNPROCESSABLE_ENTITY => {
            let error = answer.error();
            let reason = error
                .field_errors()
                .into_iter()
                .next()
                .map(|(_, r)| format!("Stage {old} was not changed: {r}."))
                .unwrap_or(error.message);
            ctx.flash(FlashKind::Error, reason);
        }
        _ => {
            expect_ok(&answer)?;
            ctx.flash(FlashKind::Ok, done);
        }
    }
    Ok(see_other(HOME))
}

/// The pipeline as it is now (its stages are the base of every change).
async fn current(ctx: &Ctx, id: &str) -> Result<Pipeline, PageError> {
    ctx.get(format!("/api/crm/pipelines/{}", query_value(id)))
        .await
}

/// `stages` as the API's stage list entries that keep each stage.
fn kept(stages: &[Stage]) -> Vec<Value> {
    stages
        .iter()
        .map(|s| json!({ "id": s.id, "name": s.name, "kind": s.kind }))
        .collect()
}

/// Sends the new stage list, based on `version`.
async fn save(
    ctx: &Ctx,
    id: &str,
    version: i64,
    stages: Vec<Value>,
) -> Result<crate::api::ApiAnswer, PageError> {
    ctx.send(
        ctx.call(
            Method::PATCH,
            format!("/api/crm/pipelines/{}", query_value(id)),
        )
        .if_match(version)
        .json(&json!({ "stages": stages })),
    )
    .await
}

/// What a 409 means for the person who sent the form.
fn conflict_text(error: &crate::api::ApiError) -> String {
    match error.code.as_str() {
        "version_conflict" => {
            "The pipeline was changed meanwhile; nothing was done. Look at it again and retry."
                .to_string()
        }
        "stage_in_use" => format!("The stage was not removed: {}.", error.message),
        _ => error.message.clone(),
    }
}

async fn create_field(Posted { ctx, form }: Posted<NewField>) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let options: Vec<&str> = form
        .options
        .lines()
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/crm/fields").json(&json!({
            "entity": form.entity,
            "name": form.name.trim(),
            "label": form.label,
            "kind": form.kind,
            "options": options,
            "required": form.required.is_some(),
        })))
        .await?;
    if !answer.ok() {
        let error = answer.error();
        let errors = match answer.status {
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
                FormErrors::from_api(&error)
            }
            StatusCode::CONFLICT => FormErrors {
                fields: vec![(
                    "name".into(),
                    "is taken by another field of this record type".into(),
                )],
                general: None,
            },
            _ => {
                expect_ok(&answer)?;
                FormErrors::default()
            }
        };
        let shown = Shown {
            field: form,
            field_errors: errors,
            ..Shown::default()
        };
        return render(&ctx, &shown, answer.status).await;
    }
    ctx.flash(
        FlashKind::Ok,
        format!("Field {} created.", form.name.trim()),
    );
    Ok(see_other(HOME))
}

#[derive(Deserialize)]
struct Versioned {
    version: i64,
}

async fn delete_field(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<Versioned>,
) -> Result<Response, PageError> {
    ctx.ensure_tenant_admin()?;
    let answer = ctx
        .send(
            ctx.call(
                Method::DELETE,
                format!("/api/crm/fields/{}", query_value(&id)),
            )
            .if_match(form.version),
        )
        .await?;
    if answer.status == StatusCode::CONFLICT {
        ctx.flash(
            FlashKind::Error,
            "The field was changed meanwhile; it was not deleted. Look at it again and retry.",
        );
    } else {
        expect_ok(&answer)?;
        ctx.flash(FlashKind::Ok, "Field deleted.");
    }
    Ok(see_other(HOME))
}
