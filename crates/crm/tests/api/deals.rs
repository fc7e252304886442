//! Deals: CRUD, stage moves and their history, the won/lost shortcut, validation, the
//! board, filters, search, sort and paging, permissions and tenant isolation.

use serde_json::{json, Value};

use crate::common::{spawn_app, App, Who};

/// A `stage_changes` row: from, to, company, actor.
type HistoryRow = (Option<String>, String, Option<String>, Option<String>);

fn path(id: &str) -> String {
    format!("/api/crm/deals/{id}")
}

/// The tenant's default pipeline as `who` sees it (created on first use).
pub(crate) async fn default_pipeline(app: &App, who: &Who) -> Value {
    let list = app.get(who, "/api/crm/pipelines").await.expect(200);
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["is_default"] == true)
        .cloned()
        .expect("a default pipeline")
}

/// The id of the stage named `name` of `pipeline`.
pub(crate) fn stage_id(pipeline: &Value, name: &str) -> String {
    pipeline["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no stage {name} in {pipeline}"))
        .to_string()
}

/// The names of the stages of `pipeline`, in order.
pub(crate) fn stage_names(pipeline: &Value) -> Vec<String> {
    pipeline["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect()
}

/// Creates a deal and answers it.
async fn deal(app: &App, who: &Who, body: Value) -> Value {
    app.post(who, "/api/crm/deals", body).await.expect(201).body
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn titles(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["title"].as_str().expect("title").to_string())
        .collect()
}

fn count_of(counts: &[(String, i64)], table: &str) -> i64 {
    counts
        .iter()
        .find(|(t, _)| t == table)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no table {table}"))
}

#[tokio::test]
async fn deal_crud_round_trip() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let customer = app.customer(&user, json!({"first_name": "Ada"})).await;
    let created = app
        .post(
            &user,
            "/api/crm/deals",
            json!({"title": " Annual Licence ", "value": 1_200_000, "currency": "eur",
                   "customer_id": customer["id"], "expected_close": "2026-06-30"}),
        )
        .await
        .expect(201);
    assert_eq!(created.etag(), "\"1\"");
    let d = created.body.clone();
    let id = id_of(&d);
    let sales = default_pipeline(&app, &user).await;
    assert_eq!(d["title"], "Annual Licence");
    assert_eq!(d["value"], 1_200_000);
    assert_eq!(d["currency"], "EUR");
    assert_eq!(d["pipeline_id"], sales["id"]);
    assert_eq!(d["stage_id"], stage_id(&sales, "Lead"));
    assert_eq!(d["status"], "open");
    assert_eq!(d["customer_id"], customer["id"]);
    assert_eq!(d["owner_id"], user.user_id.as_str());
    assert_eq!(d["expected_close"], "2026-06-30");
    assert_eq!(d["closed_at"], Value::Null);
    assert_eq!(d["custom"], json!({}));
    assert_eq!(d["version"], 1);
    assert_eq!(count_of(&app.row_counts().await, "stage_changes"), 1);

    let got = app.get(&user, &path(&id)).await.expect(200);
    assert_eq!(got.body, d);

    app.patch(&user, &path(&id), json!({"value": 5}), None)
        .await
        .expect(428);
    let patched = app
        .patch(
            &user,
            &path(&id),
            json!({"title": "Licence", "value": 1_500_000, "expected_close": null,
                   "customer_id": null}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["title"], "Licence");
    assert_eq!(patched.body["value"], 1_500_000);
    assert_eq!(patched.body["expected_close"], Value::Null);
    assert_eq!(patched.body["customer_id"], Value::Null);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.etag(), "\"2\"");
    let stale = app
        .patch(&user, &path(&id), json!({"title": "X", "version": 1}), None)
        .await
        .expect(409);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);
    // No change, no new version.
    let same = app
        .patch(
            &user,
            &path(&id),
            json!({"title": "Licence"}),
            Some("\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(same.body["version"], 2);

    app.delete(&user, &path(&id)).await.expect(403);
    app.delete(&admin, &path(&id)).await.expect(204);
    app.get(&user, &path(&id)).await.expect(404);
    app.delete(&admin, &path(&id)).await.expect(404);
    assert_eq!(count_of(&app.row_counts().await, "stage_changes"), 0);

    let created_events = app.events_of("crm.deal.created").await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(
        created_events[0].actor.id.as_deref(),
        Some(user.user_id.as_str())
    );
    assert!(!created_events[0].data.to_string().contains("Licence"));
    let updated = app.events_of("crm.deal.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0].data["changed"],
        json!(["title", "value", "customer_id", "expected_close"])
    );
    assert!(app.events_of("crm.deal.stage_changed").await.is_empty());
    assert_eq!(app.events_of("crm.deal.deleted").await.len(), 1);
}

#[tokio::test]
async fn stage_moves_are_recorded_and_won_closes_the_deal() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let company = app
        .post(&user, "/api/crm/companies", json!({"name": "Acme"}))
        .await
        .expect(201)
        .body;
    let d = deal(
        &app,
        &user,
        json!({"title": "Move me", "company_id": company["id"]}),
    )
    .await;
    let id = id_of(&d);
    let lead = stage_id(&sales, "Lead");
    let qualified = stage_id(&sales, "Qualified");
    let won = stage_id(&sales, "Won");

    let moved = app
        .patch(
            &user,
            &path(&id),
            json!({"stage_id": qualified}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(moved.body["stage_id"], qualified.as_str());
    assert_eq!(moved.body["status"], "open");
    let events = app.events_of("crm.deal.stage_changed").await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].data,
        json!({"from": lead, "to": qualified, "status": "open", "value": 0, "currency": "EUR"})
    );
    assert_eq!(events[0].actor.id.as_deref(), Some(user.user_id.as_str()));
    let updated = app.events_of("crm.deal.updated").await;
    assert_eq!(updated[0].data["changed"], json!(["stage_id"]));

    let closed = app
        .patch(
            &user,
            &path(&id),
            json!({"stage_id": won, "close_reason": "Best offer"}),
            Some("\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(closed.body["status"], "won");
    assert_eq!(closed.body["close_reason"], "Best offer");
    assert!(closed.body["closed_at"].is_string());
    let closed_events = app.events_of("crm.deal.closed").await;
    assert_eq!(closed_events.len(), 1);
    assert_eq!(
        closed_events[0].data,
        json!({"status": "won", "has_reason": true, "value": 0, "currency": "EUR"})
    );
    assert_eq!(app.events_of("crm.deal.stage_changed").await.len(), 2);

    // Back to an open stage: reopened, closed_at and the reason cleared.
    let reopened = app
        .patch(&user, &path(&id), json!({"stage_id": lead}), Some("\"3\""))
        .await
        .expect(200);
    assert_eq!(reopened.body["status"], "open");
    assert_eq!(reopened.body["closed_at"], Value::Null);
    assert_eq!(reopened.body["close_reason"], Value::Null);
    assert_eq!(app.events_of("crm.deal.closed").await.len(), 1);

    // The history rows: created + 3 moves, each with the deal's company and the actor.
    let rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT from_stage, to_stage, company_id, actor_id FROM stage_changes \
         WHERE deal_id = $1 ORDER BY occurred_at, id",
    )
    .bind(&id)
    .fetch_all(app.db.reader())
    .await
    .expect("history");
    let company_id = company["id"].as_str().map(str::to_string);
    let actor = Some(user.user_id.clone());
    assert_eq!(
        rows,
        vec![
            (None, lead.clone(), company_id.clone(), actor.clone()),
            (
                Some(lead.clone()),
                qualified.clone(),
                company_id.clone(),
                actor.clone()
            ),
            (
                Some(qualified),
                won.clone(),
                company_id.clone(),
                actor.clone()
            ),
            (Some(won), lead, company_id, actor),
        ]
    );
}

#[tokio::test]
async fn the_status_shortcut_moves_to_the_first_won_or_lost_stage() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let d = deal(&app, &user, json!({"title": "Shortcut"})).await;
    let id = id_of(&d);

    let won = app
        .patch(
            &user,
            &path(&id),
            json!({"status": "won", "close_reason": "Signed"}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(won.body["stage_id"], stage_id(&sales, "Won"));
    assert_eq!(won.body["status"], "won");
    assert_eq!(won.body["close_reason"], "Signed");
    // Already won: the same status moves nothing.
    let same = app
        .patch(&user, &path(&id), json!({"status": "won"}), Some("\"2\""))
        .await
        .expect(200);
    assert_eq!(same.body["version"], 2);
    let lost = app
        .patch(&user, &path(&id), json!({"status": "lost"}), Some("\"2\""))
        .await
        .expect(200);
    assert_eq!(lost.body["stage_id"], stage_id(&sales, "Lost"));
    assert_eq!(lost.body["status"], "lost");
    assert!(lost.body["closed_at"].is_string());
    let closed = app.events_of("crm.deal.closed").await;
    assert_eq!(closed.len(), 2);
    assert_eq!(
        lost.body["close_reason"],
        Value::Null,
        "the reason was the win's"
    );
    assert_eq!(
        closed[1].data,
        json!({"status": "lost", "has_reason": false, "value": 0, "currency": "EUR"})
    );
    let reopened = app
        .patch(&user, &path(&id), json!({"status": "open"}), Some("\"3\""))
        .await
        .expect(200);
    assert_eq!(reopened.body["stage_id"], stage_id(&sales, "Lead"));
    assert_eq!(reopened.body["close_reason"], Value::Null);

    let before = app.row_counts().await;
    for body in [
        // A status that contradicts the stage.
        json!({"status": "won", "stage_id": stage_id(&sales, "Lost")}),
        // A close reason on an open deal.
        json!({"close_reason": "Why"}),
        json!({"status": "open", "close_reason": "Why"}),
        json!({"status": "maybe"}),
    ] {
        let r = app
            .patch(&user, &path(&id), body.clone(), Some("\"4\""))
            .await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    assert_eq!(app.row_counts().await, before);
    // A pipeline without a won stage cannot win.
    let no_won = app
        .post(
            &admin,
            "/api/crm/pipelines",
            json!({"name": "Support", "stages": [{"name": "Open"}, {"name": "Dropped", "kind": "lost"}]}),
        )
        .await
        .expect(201)
        .body;
    let other = deal(
        &app,
        &user,
        json!({"title": "Support deal", "pipeline_id": no_won["id"]}),
    )
    .await;
    let before = app.row_counts().await;
    let r = app
        .patch(
            &user,
            &path(&id_of(&other)),
            json!({"status": "won"}),
            Some("\"1\""),
        )
        .await
        .expect(422);
    assert_eq!(r.body["error"]["details"]["field"], "status");
    assert_eq!(app.row_counts().await, before);

    // Created right in a closed stage: closed at once, with its reason.
    let born_won = deal(
        &app,
        &user,
        json!({"title": "Done deal", "stage_id": stage_id(&sales, "Won"), "close_reason": "Repeat"}),
    )
    .await;
    assert_eq!(born_won["status"], "won");
    assert!(born_won["closed_at"].is_string());
    assert_eq!(born_won["close_reason"], "Repeat");
    assert_eq!(app.events_of("crm.deal.closed").await.len(), 3);
}

#[tokio::test]
async fn deals_move_between_pipelines() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let other = app
        .post(
            &admin,
            "/api/crm/pipelines",
            json!({"name": "Partners", "stages": [{"name": "New"}, {"name": "Closed", "kind": "won"}]}),
        )
        .await
        .expect(201)
        .body;
    let d = deal(&app, &user, json!({"title": "Travelling"})).await;
    let id = id_of(&d);
    // A stage of another pipeline than the deal's is refused.
    app.patch(
        &user,
        &path(&id),
        json!({"stage_id": stage_id(&other, "New")}),
        Some("\"1\""),
    )
    .await
    .expect(422);
    let moved = app
        .patch(
            &user,
            &path(&id),
            json!({"pipeline_id": other["id"]}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(moved.body["pipeline_id"], other["id"]);
    assert_eq!(moved.body["stage_id"], stage_id(&other, "New"));
    let back = app
        .patch(
            &user,
            &path(&id),
            json!({"pipeline_id": sales["id"], "stage_id": stage_id(&sales, "Won")}),
            Some("\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(back.body["status"], "won");
    let changed = app.events_of("crm.deal.updated").await;
    assert_eq!(
        changed[0].data["changed"],
        json!(["pipeline_id", "stage_id"])
    );
}

#[tokio::test]
async fn values_and_currencies_are_validated() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    default_pipeline(&app, &user).await;
    let d = deal(
        &app,
        &user,
        json!({"title": "Money", "value": 0, "currency": " usd "}),
    )
    .await;
    assert_eq!(d["currency"], "USD");
    let max = deal(
        &app,
        &user,
        json!({"title": "Max", "value": 1_000_000_000_000_000_i64}),
    )
    .await;
    assert_eq!(max["value"], 1_000_000_000_000_000_i64);
    assert_eq!(max["currency"], "EUR");
    let id = id_of(&d);
    let before = app.row_counts().await;
    for (body, field) in [
        (json!({"title": "V", "value": -1}), Some("value")),
        (
            json!({"title": "V", "value": 1_000_000_000_000_001_i64}),
            Some("value"),
        ),
        (json!({"title": "V", "value": 12.5}), None),
        (json!({"title": "V", "value": "12"}), None),
        (json!({"title": "V", "value": 1e30}), None),
        (json!({"title": "V", "currency": "EURO"}), Some("currency")),
        (json!({"title": "V", "currency": "E1R"}), Some("currency")),
        (json!({"title": "V", "currency": ""}), Some("currency")),
    ] {
        let r = app.post(&user, "/api/crm/deals", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
        if let Some(field) = field {
            assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
        }
        let patch = body
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| *k != "title")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<serde_json::Map<_, _>>()
            })
            .expect("object");
        let r = app
            .patch(&user, &path(&id), Value::Object(patch), Some("\"1\""))
            .await;
        assert_eq!(r.status.as_u16(), 422, "PATCH {body}: {}", r.text);
    }
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn invalid_deals_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let existing = deal(&app, &user, json!({"title": "Existing"})).await;
    let id = id_of(&existing);
    let (_, _, stranger) = app.tenant_with_people("other").await;
    let foreign_customer = app
        .customer(&stranger, json!({"first_name": "Foreign"}))
        .await;
    let unknown = platform::ids::new_id();
    let before = app.row_counts().await;
    for body in [
        json!({}),
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"title": 5}),
        json!({"title": "A", "surprise": 1}),
        json!({"title": "A", "pipeline_id": "nope"}),
        json!({"title": "A", "pipeline_id": unknown}),
        json!({"title": "A", "stage_id": "nope"}),
        json!({"title": "A", "stage_id": unknown}),
        json!({"title": "A", "customer_id": unknown}),
        json!({"title": "A", "customer_id": foreign_customer["id"]}),
        json!({"title": "A", "company_id": "nope"}),
        json!({"title": "A", "company_id": unknown}),
        json!({"title": "A", "owner_id": unknown}),
        json!({"title": "A", "owner_id": stranger.user_id}),
        json!({"title": "A", "expected_close": "2026-02-30"}),
        json!({"title": "A", "expected_close": "soon"}),
        json!({"title": "A", "close_reason": "Not closed"}),
        json!({"title": "A", "close_reason": "x".repeat(501), "stage_id": stage_id(&sales, "Won")}),
        json!({"title": "A", "custom": {"unknown": 1}}),
        json!({"title": "A", "status": "won"}),
    ] {
        let r = app.post(&user, "/api/crm/deals", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    for body in [
        json!({"title": ""}),
        json!({"title": null, "value": -5}),
        json!({"pipeline_id": unknown}),
        json!({"stage_id": unknown}),
        json!({"stage_id": "nope"}),
        json!({"customer_id": foreign_customer["id"]}),
        json!({"company_id": unknown}),
        json!({"owner_id": unknown}),
        json!({"expected_close": "31/12/2026"}),
        json!({"custom": {"unknown": 1}}),
        json!({"surprise": true}),
    ] {
        let r = app
            .patch(&user, &path(&id), body.clone(), Some("\"1\""))
            .await;
        assert_eq!(r.status.as_u16(), 422, "PATCH {body}: {}", r.text);
    }
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/deals",
            "application/json",
            "{nope",
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/deals",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 415);
    app.patch(&user, &path(&id), json!({"title": "B"}), Some("\"x\""))
        .await
        .expect(400);
    app.patch(&user, &path(&unknown), json!({"title": "B"}), Some("\"1\""))
        .await
        .expect(404);
    app.get(&user, &path("nope")).await.expect(404);
    app.delete(&admin, &path(&unknown)).await.expect(404);
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.get(&user, &path(&id)).await.expect(200).body, existing);
}

#[tokio::test]
async fn the_board_groups_deals_by_stage_with_totals_per_currency() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let lead = stage_id(&sales, "Lead");
    let proposal = stage_id(&sales, "Proposal");
    let won = stage_id(&sales, "Won");
    let mut lead_titles = Vec::new();
    for (i, (value, currency)) in [(100, "EUR"), (250, "EUR"), (1_000, "USD")]
        .iter()
        .enumerate()
    {
        let title = format!("Lead {i}");
        deal(
            &app,
            &user,
            json!({"title": title, "value": value, "currency": currency}),
        )
        .await;
        lead_titles.push(title);
    }
    lead_titles.reverse();
    deal(
        &app,
        &user,
        json!({"title": "Proposal", "value": 7, "currency": "USD", "stage_id": proposal}),
    )
    .await;
    deal(
        &app,
        &user,
        json!({"title": "Won", "value": 40, "stage_id": won}),
    )
    .await;
    // Deals of other pipelines stay off this board.
    let other = app
        .post(
            &admin,
            "/api/crm/pipelines",
            json!({"name": "Other", "stages": [{"name": "Only"}]}),
        )
        .await
        .expect(201)
        .body;
    deal(
        &app,
        &user,
        json!({"title": "Elsewhere", "value": 999, "pipeline_id": other["id"]}),
    )
    .await;

    let board = app
        .get(&user, "/api/crm/deals?view=board")
        .await
        .expect(200)
        .body;
    assert_eq!(board["pipeline"]["id"], sales["id"]);
    let stages = board["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages
        .iter()
        .map(|s| s["stage"]["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "Lead",
            "Qualified",
            "Proposal",
            "Negotiation",
            "Won",
            "Lost"
        ]
    );
    let column = |name: &str| {
        stages
            .iter()
            .find(|s| s["stage"]["name"] == name)
            .cloned()
            .expect("column")
    };
    let lead_col = column("Lead");
    assert_eq!(lead_col["stage"]["id"], lead.as_str());
    assert_eq!(lead_col["count"], 3);
    let card_titles: Vec<&str> = lead_col["deals"]
        .as_array()
        .expect("deals")
        .iter()
        .map(|d| d["title"].as_str().expect("title"))
        .collect();
    assert_eq!(card_titles, lead_titles, "newest first");
    assert_eq!(
        lead_col["totals"],
        json!([{"currency": "EUR", "value": 350}, {"currency": "USD", "value": 1000}])
    );
    assert_eq!(column("Proposal")["count"], 1);
    assert_eq!(
        column("Proposal")["totals"],
        json!([{"currency": "USD", "value": 7}])
    );
    assert_eq!(column("Won")["deals"][0]["status"], "won");
    assert_eq!(
        column("Won")["totals"],
        json!([{"currency": "EUR", "value": 40}])
    );
    let empty = column("Qualified");
    assert_eq!(empty["count"], 0);
    assert_eq!(empty["deals"], json!([]));
    assert_eq!(empty["totals"], json!([]));

    // Fewer cards per stage; counts and totals still cover every deal.
    let small = app
        .get(&user, "/api/crm/deals?view=board&limit=1")
        .await
        .expect(200)
        .body;
    assert_eq!(
        small["stages"][0]["deals"].as_array().expect("deals").len(),
        1
    );
    assert_eq!(small["stages"][0]["deals"][0]["title"], "Lead 2");
    assert_eq!(small["stages"][0]["count"], 3);
    // Filters apply to the board too.
    let usd = app
        .get(&user, "/api/crm/deals?view=board&q=lead%202")
        .await
        .expect(200)
        .body;
    assert_eq!(usd["stages"][0]["count"], 1);
    assert_eq!(usd["stages"][4]["count"], 0);
    // Another pipeline's board.
    let theirs = app
        .get(
            &user,
            &format!("/api/crm/deals?view=board&pipeline={}", id_of(&other)),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(theirs["stages"].as_array().expect("stages").len(), 1);
    assert_eq!(theirs["stages"][0]["count"], 1);
    assert_eq!(
        theirs["stages"][0]["totals"],
        json!([{"currency": "EUR", "value": 999}])
    );
    for bad in [
        "view=kanban",
        "view=board&sort=value",
        "view=board&cursor=abc",
        "view=board&limit=101",
        "view=board&limit=0",
        "view=board&pipeline=nope",
    ] {
        app.get(&user, &format!("/api/crm/deals?{bad}"))
            .await
            .expect(400);
    }
    app.get(
        &user,
        &format!(
            "/api/crm/deals?view=board&pipeline={}",
            platform::ids::new_id()
        ),
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn deal_lists_filter_search_sort_and_page() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let customer = app.customer(&user, json!({"first_name": "Ada"})).await;
    let company = app
        .post(&user, "/api/crm/companies", json!({"name": "Acme"}))
        .await
        .expect(201)
        .body;
    let qualified = stage_id(&sales, "Qualified");
    let mut ids = Vec::new();
    for i in 0..12 {
        let mut body = json!({"title": format!("Deal {i:02}"), "value": (i % 4) * 100});
        if i % 3 == 0 {
            body["stage_id"] = json!(qualified);
        }
        if i % 4 == 0 {
            body["customer_id"] = customer["id"].clone();
        }
        if i == 5 {
            body["company_id"] = company["id"].clone();
            body["title"] = json!("50% off_deal");
        }
        let who = if i % 2 == 0 { &user } else { &admin };
        ids.push(id_of(&deal(&app, who, body).await));
    }
    let won = app
        .patch(
            &user,
            &path(&ids[1]),
            json!({"status": "won"}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(won.body["status"], "won");
    let len = |v: &Value| v["items"].as_array().expect("items").len();
    let get = |q: String| {
        let app = &app;
        let user = &user;
        async move {
            app.get(user, &format!("/api/crm/deals?{q}"))
                .await
                .expect(200)
                .body
        }
    };
    assert_eq!(len(&get(format!("stage={qualified}")).await), 4);
    assert_eq!(len(&get(format!("pipeline={}", id_of(&sales))).await), 12);
    assert_eq!(
        len(&get(format!("pipeline={}", platform::ids::new_id())).await),
        0
    );
    assert_eq!(len(&get("status=won".into()).await), 1);
    assert_eq!(len(&get("status=open".into()).await), 11);
    assert_eq!(len(&get(format!("owner={}", admin.user_id)).await), 6);
    assert_eq!(len(&get(format!("customer={}", id_of(&customer))).await), 3);
    assert_eq!(len(&get(format!("company={}", id_of(&company))).await), 1);
    assert_eq!(titles(&get("q=DEAL%200".into()).await).len(), 9);
    assert_eq!(titles(&get("q=50%25".into()).await), ["50% off_deal"]);
    assert_eq!(titles(&get("q=%25".into()).await), ["50% off_deal"]);
    assert_eq!(len(&get("q=f_d".into()).await), 1, "_ is literal");
    assert_eq!(len(&get("q=0_".into()).await), 0, "_ is literal");
    let all = get("sort=created".into()).await;
    let created: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["created_at"].as_str().expect("created_at"))
        .collect();
    let from = get(format!("created_from={}", created[4])).await;
    assert_eq!(
        len(&from),
        created.iter().filter(|c| **c >= created[4]).count()
    );
    let to = get(format!("created_to={}", created[4])).await;
    assert_eq!(
        len(&to),
        created.iter().filter(|c| **c < created[4]).count()
    );
    let none = get("created_to=2000-01-01T00:00:00Z".into()).await;
    assert_eq!(len(&none), 0);

    let by_name = get("sort=name&limit=2".into()).await;
    assert_eq!(titles(&by_name), ["50% off_deal", "Deal 00"]);
    let by_name_desc = get("sort=-name&limit=1".into()).await;
    assert_eq!(titles(&by_name_desc), ["Deal 11"]);
    assert_eq!(
        get("limit=1".into()).await["items"][0]["id"],
        ids[11].as_str()
    );

    // Page by value (with ties), in both directions: every deal once, in order.
    for sort in ["value", "-value"] {
        let mut seen: Vec<(i64, String)> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("sort={sort}&limit=5&cursor={c}"),
                None => format!("sort={sort}&limit=5"),
            };
            let page = get(q).await;
            for item in page["items"].as_array().expect("items") {
                seen.push((
                    item["value"].as_i64().expect("value"),
                    item["id"].as_str().expect("id").to_string(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut expected = seen.clone();
        expected.sort();
        if sort == "-value" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{sort}");
        assert_eq!(seen.len(), 12);
    }

    for bad in [
        "sort=email",
        "limit=0",
        "limit=501",
        "cursor=abc",
        "status=maybe",
        "stage=x",
        "pipeline=x",
        "owner=x",
        "customer=x",
        "company=x",
        "created_from=yesterday",
        "unknown=1",
        "view=",
    ] {
        let r = app.get(&user, &format!("/api/crm/deals?{bad}")).await;
        if bad == "view=" {
            r.expect(200);
        } else {
            r.expect(400);
        }
    }
}

#[tokio::test]
async fn custom_deal_fields_are_checked() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    // Defined straight in the table: the fields API belongs to another module.
    let now = 1_i64;
    sqlx::query(
        "INSERT INTO field_definitions (tenant_id, id, entity, name, label, kind, options, \
         required, created_at, updated_at, version) \
         VALUES ($1, $2, 'deal', 'source', 'Source', 'select', '[\"web\",\"event\"]', 0, $3, $4, 1)",
    )
    .bind(admin.tenant_id.as_deref().expect("tenant"))
    .bind(platform::ids::new_id())
    .bind(now)
    .bind(now)
    .execute(app.db.writer())
    .await
    .expect("definition");
    let d = deal(
        &app,
        &user,
        json!({"title": "Sourced", "custom": {"source": "web"}}),
    )
    .await;
    assert_eq!(d["custom"], json!({"source": "web"}));
    app.post(
        &user,
        "/api/crm/deals",
        json!({"title": "Bad", "custom": {"source": "fax"}}),
    )
    .await
    .expect(422);
    let cleared = app
        .patch(
            &user,
            &path(&id_of(&d)),
            json!({"custom": {"source": null}}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(cleared.body["custom"], json!({}));
}

#[tokio::test]
async fn another_tenants_deals_are_not_found() {
    let app = spawn_app().await;
    let (_, _, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let theirs = deal(&app, &a, json!({"title": "Secret", "value": 77})).await;
    let id = id_of(&theirs);
    let p = path(&id);
    app.get(&b, &p).await.expect(404);
    app.patch(&b, &p, json!({"title": "Mine"}), Some("\"1\""))
        .await
        .expect(404);
    app.patch(&b, &p, json!({"status": "won"}), Some("\"1\""))
        .await
        .expect(404);
    app.delete(&admin_b, &p).await.expect(404);
    let list = app.get(&b, "/api/crm/deals").await.expect(200);
    assert_eq!(list.body["items"], json!([]));
    let board = app.get(&b, "/api/crm/deals?view=board").await.expect(200);
    assert!(!board.text.contains(&id) && !board.text.contains("Secret"));
    assert_eq!(board.body["stages"][0]["count"], 0);
    let still = app.get(&a, &p).await.expect(200);
    assert_eq!(still.body, theirs);
    // The superadmin sees it through X-Tenant.
    app.get(&app.superadmin(Some("one")), &p).await.expect(200);
}
