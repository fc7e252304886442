//! The deals board: one column per stage of a pipeline, each deal with a form that moves
//! it to another stage (works without JavaScript). With it, the script also lets a card be
//! dragged onto another column: the drop submits that same form (`data-stage` names the
//! column's stage), so moving has one server path.

use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use crate::session::FlashKind;
use crate::views::{
    csrf_field, field, money, page_with_status, query, query_value, FormErrors, Nav,
};
use crate::web::{expect_ok, safe_back, see_other, Ctx, Member, PageError, Posted};
use crate::Console;

pub fn router() -> Router<Console> {
    Router::new()
        .route("/console/deals", get(board).post(create))
        .route("/console/deals/{id}/stage", post(move_deal))
}

#[derive(Deserialize)]
struct Board {
    pipeline: Pipeline,
    stages: Vec<Column>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct Column {
    stage: Stage,
    deals: Vec<Deal>,
    count: u64,
    #[serde(default)]
    totals: Vec<Total>,
}

#[derive(Deserialize, Clone)]
struct Stage {
    id: String,
    name: String,
    kind: String,
}

#[derive(Deserialize)]
struct Deal {
    id: String,
    title: String,
    value: i64,
    currency: String,
    stage_id: String,
    version: i64,
    #[serde(default)]
    expected_close: Option<String>,
}

#[derive(Deserialize)]
struct Total {
    currency: String,
    value: i64,
}

#[derive(Deserialize, Default)]
struct BoardQuery {
    #[serde(default)]
    pipeline: String,
    #[serde(default)]
    q: String,
}

async fn board(Member(ctx): Member, Query(f): Query<BoardQuery>) -> Result<Response, PageError> {
    render(
        &ctx,
        &f,
        &NewDeal::default(),
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render(
    ctx: &Ctx,
    f: &BoardQuery,
    form: &NewDeal,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let api = query(&[
        ("view", "board"),
        ("pipeline", &f.pipeline),
        ("q", f.q.trim()),
        ("limit", "50"),
    ]);
    let board: Board = ctx.get(format!("/api/crm/deals{api}")).await?;
    let back = format!(
        "/console/deals{}",
        query(&[("pipeline", &f.pipeline), ("q", f.q.trim())])
    );
    let stages: Vec<Stage> = board.stages.iter().map(|c| c.stage.clone()).collect();
    let body = html! {
        p { "Pipeline " strong { (board.pipeline.name) } }
        form.filters method="get" action="/console/deals" role="search" {
            input type="hidden" name="pipeline" value=(board.pipeline.id);
            div.field { label for="q" { "Search titles" } input #q type="search" name="q" value=(f.q); }
            button type="submit" { "Filter" }
        }
        div.board {
            @for column in &board.stages {
                section.column aria-labelledby={ "stage-" (column.stage.id) } data-stage=(column.stage.id) {
                    h2 id={ "stage-" (column.stage.id) } {
                        (column.stage.name)
                        " " span.count { (column.count) }
                    }
                    p.totals {
                        @for t in &column.totals { (money(t.value, &t.currency)) " " }
                        @if column.totals.is_empty() { "—" }
                    }
                    @if column.stage.kind != "open" { p.hint { (column.stage.kind) } }
                    @for deal in &column.deals {
                        article.deal {
                            h3 { (deal.title) }
                            p { (money(deal.value, &deal.currency))
                                @if let Some(d) = &deal.expected_close { " · closes " (d) } }
                            form method="post" action={ "/console/deals/" (deal.id) "/stage" } {
                                (csrf_field(&ctx.data.csrf))
                                input type="hidden" name="version" value=(deal.version);
                                input type="hidden" name="back" value=(back);
                                label for={ "move-" (deal.id) } { "Move to" }
                                select id={ "move-" (deal.id) } name="stage_id" {
                                    @for s in &stages {
                                        option value=(s.id) selected[s.id == deal.stage_id] { (s.name) }
                                    }
                                }
                                button.small type="submit" { "Move" }
                            }
                        }
                    }
                    @if column.count > column.deals.len() as u64 {
                        p.hint { "and " (column.count - column.deals.len() as u64) " more" }
                    }
                }
            }
        }
        section.card #create {
            h2 { "New deal" }
            (errors.summary())
            form method="post" action="/console/deals" {
                (csrf_field(&ctx.data.csrf))
                input type="hidden" name="pipeline_id" value=(board.pipeline.id);
                div.grid2 {
                    (field(errors, "title", "Title", "text", &form.title, true))
                    (field(errors, "value", "Value (e.g. 1200.50)", "text", &form.value, false))
                    (field(errors, "currency", "Currency", "text",
                        if form.currency.is_empty() { "EUR" } else { &form.currency }, false))
                }
                button type="submit" { "Create deal" }
            }
        }
    };
    Ok(page_with_status(
        ctx,
        status,
        Some(Nav::Deals),
        "Deals",
        body,
    ))
}

#[derive(Deserialize, Default)]
struct NewDeal {
    #[serde(default)]
    title: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    pipeline_id: String,
}

/// "1,200.50" or "1200" as minor units (two decimals); `None` when it is not an amount.
fn minor_units(text: &str) -> Option<i64> {
    let text: String = text
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != ' ')
        .collect();
    if text.is_empty() {
        return Some(0);
    }
    let (units, cents) = text.split_once('.').unwrap_or((&text, ""));
    if units.is_empty() && cents.is_empty()
        || cents.len() > 2
        || !units
            .bytes()
            .chain(cents.bytes())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let units: i64 = if units.is_empty() {
        0
    } else {
        units.parse().ok()?
    };
    let cents: i64 = format!("{cents:0<2}").parse().ok()?;
    units.checked_mul(100)?.checked_add(cents)
}

async fn create(Posted { ctx, form }: Posted<NewDeal>) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let back = BoardQuery {
        pipeline: form.pipeline_id.clone(),
        ..BoardQuery::default()
    };
    let Some(value) = minor_units(&form.value) else {
        let errors = FormErrors {
            fields: vec![("value".into(), "must be an amount like 1200.50".into())],
            general: None,
        };
        return render(
            &ctx,
            &back,
            &form,
            &errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let mut body = json!({ "title": form.title, "value": value });
    if !form.currency.trim().is_empty() {
        body["currency"] = json!(form.currency.trim());
    }
    if !form.pipeline_id.is_empty() {
        body["pipeline_id"] = json!(form.pipeline_id);
    }
    let answer = ctx
        .send(ctx.call(Method::POST, "/api/crm/deals").json(&body))
        .await?;
    if answer.status == StatusCode::UNPROCESSABLE_ENTITY {
        let errors = FormErrors::from_api(&answer.error());
        return render(&ctx, &back, &form, &errors, answer.status).await;
    }
    expect_ok(&answer)?;
    ctx.flash(
        FlashKind::Ok,
        format!("Deal {} created.", form.title.trim()),
    );
    Ok(see_other(&format!(
        "/console/deals{}",
        query(&[("pipeline", &form.pipeline_id)])
    )))
}

#[cfg(test)]
mod tests {
    use super::minor_units;

    #[test]
    fn amounts_become_minor_units() {
        assert_eq!(minor_units("1,200.5"), Some(120_050));
        assert_eq!(minor_units("12"), Some(1200));
        assert_eq!(minor_units(".05"), Some(5));
        assert_eq!(minor_units(""), Some(0));
        assert_eq!(minor_units("1.234"), None);
        assert_eq!(minor_units("-5"), None);
        assert_eq!(minor_units("abc"), None);
        assert_eq!(minor_units("."), None);
    }
}

#[derive(Deserialize)]
struct MoveForm {
    stage_id: String,
    version: i64,
    #[serde(default)]
    back: String,
}

async fn move_deal(
    Path(id): Path<String>,
    Posted { ctx, form }: Posted<MoveForm>,
) -> Result<Response, PageError> {
    ctx.ensure_member()?;
    let answer = ctx
        .send(
            ctx.call(
                Method::PATCH,
                format!("/api/crm/deals/{}", query_value(&id)),
            )
            .if_match(form.version)
            .json(&json!({ "stage_id": form.stage_id })),
        )
        .await?;
    match answer.status {
        StatusCode::CONFLICT => ctx.flash(
            FlashKind::Error,
            "The deal was changed meanwhile; it was not moved. Look at it again and retry.",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ctx.flash(FlashKind::Error, answer.error().message),
        _ => {
            expect_ok(&answer)?;
            let title = answer.json::<serde_json::Value>()?["title"]
                .as_str()
                .unwrap_or("The deal")
                .to_string();
            ctx.flash(FlashKind::Ok, format!("{title} moved."));
        }
    }
    Ok(see_other(safe_back(&form.back, "/console/deals")))
}
