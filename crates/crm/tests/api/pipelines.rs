//! Pipelines: the lazily created default, configuration by admins (create, rename, reorder,
//! add, remove and re-kind stages, move the default), the rules that protect deals, and
//! tenant isolation.

use serde_json::{json, Value};

use crate::common::spawn_app;
use crate::deals::{default_pipeline, stage_id, stage_names};

fn path(id: &str) -> String {
    format!("/api/crm/pipelines/{id}")
}

fn two_stages(name: &str) -> Value {
    json!({"name": name, "stages": [{"name": "Open"}, {"name": "Won", "kind": "won"}]})
}

#[tokio::test]
async fn the_default_pipeline_is_created_once_even_under_concurrent_first_use() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let deal = json!({"title": "First", "value": 100, "currency": "EUR"});
    let (a, b, c, d, e, f, g) = tokio::join!(
        app.get(&user, "/api/crm/pipelines"),
        app.get(&admin, "/api/crm/pipelines"),
        app.get(&user, "/api/crm/deals?view=board"),
        app.post(&user, "/api/crm/deals", deal.clone()),
        app.post(&admin, "/api/crm/deals", deal.clone()),
        app.post(&user, "/api/crm/deals", deal.clone()),
        app.get(&admin, "/api/crm/deals?view=board"),
    );
    for r in [a, b, c, g] {
        r.expect(200);
    }
    let deals: Vec<Value> = [d, e, f].into_iter().map(|r| r.expect(201).body).collect();

    let list = app.get(&user, "/api/crm/pipelines").await.expect(200);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{}", list.text);
    let sales = &items[0];
    assert_eq!(sales["name"], "Sales");
    assert_eq!(sales["is_default"], true);
    assert_eq!(
        stage_names(sales),
        [
            "Lead",
            "Qualified",
            "Proposal",
            "Negotiation",
            "Won",
            "Lost"
        ]
    );
    let kinds: Vec<&str> = sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["open", "open", "open", "open", "won", "lost"]);
    let positions: Vec<i64> = sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["position"].as_i64().expect("position"))
        .collect();
    assert_eq!(positions, [0, 1, 2, 3, 4, 5]);
    for deal in &deals {
        assert_eq!(deal["pipeline_id"], sales["id"]);
        assert_eq!(deal["stage_id"], stage_id(sales, "Lead"));
        assert_eq!(deal["status"], "open");
    }
    let counts = app.row_counts().await;
    let count = |t: &str| counts.iter().find(|(n, _)| n == t).map(|(_, c)| *c);
    assert_eq!(count("pipelines"), Some(1));
    assert_eq!(count("stages"), Some(6));
    assert_eq!(app.events_of("crm.pipeline.created").await.len(), 1);

    // Another tenant gets its own default.
    let (_, _, other) = app.tenant_with_people("other").await;
    let theirs = default_pipeline(&app, &other).await;
    assert_ne!(theirs["id"], sales["id"]);
    assert_eq!(app.events_of("crm.pipeline.created").await.len(), 2);
}

#[tokio::test]
async fn admins_create_pipelines_and_reshape_their_stages() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let created = app
        .post(
            &admin,
            "/api/crm/pipelines",
            json!({"name": " Renewals ", "stages": [
                {"name": "Due"}, {"name": "Quoted", "kind": "open"},
                {"name": "Renewed", "kind": "won"}, {"name": "Churned", "kind": "lost"}]}),
        )
        .await
        .expect(201);
    assert_eq!(created.etag(), "\"1\"");
    let p = created.body;
    let id = p["id"].as_str().expect("id").to_string();
    assert_eq!(p["name"], "Renewals");
    assert_eq!(p["is_default"], false);
    assert_eq!(stage_names(&p), ["Due", "Quoted", "Renewed", "Churned"]);
    // The tenant's default exists too, and is listed first.
    let list = app.get(&user, "/api/crm/pipelines").await.expect(200);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["Sales", "Renewals"]);
    app.post(&admin, "/api/crm/pipelines", two_stages("Renewals"))
        .await
        .expect(409);
    app.post(&admin, "/api/crm/pipelines", two_stages("Sales"))
        .await
        .expect(409);
    let got = app.get(&user, &path(&id)).await.expect(200);
    assert_eq!(got.body, p);

    // PATCH needs the version.
    app.patch(&admin, &path(&id), json!({"name": "X"}), None)
        .await
        .expect(428);
    app.patch(&admin, &path(&id), json!({"name": "X", "version": 7}), None)
        .await
        .expect(409);

    // Rename "Due", swap the open stages, add "Signed" (won), drop "Churned", re-kind nothing.
    let due = stage_id(&p, "Due");
    let quoted = stage_id(&p, "Quoted");
    let renewed = stage_id(&p, "Renewed");
    let churned = stage_id(&p, "Churned");
    let patched = app
        .patch(
            &admin,
            &path(&id),
            json!({"name": "Renewals 2026", "stages": [
                {"id": quoted, "name": "Quoted"},
                {"id": due, "name": "Due soon"},
                {"name": "Signed", "kind": "won"},
                {"id": renewed, "name": "Renewed"}]}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    let q = &patched.body;
    assert_eq!(q["name"], "Renewals 2026");
    assert_eq!(q["version"], 2);
    assert_eq!(stage_names(q), ["Quoted", "Due soon", "Signed", "Renewed"]);
    assert_eq!(stage_id(q, "Quoted"), quoted);
    assert_eq!(stage_id(q, "Due soon"), due);
    assert_eq!(stage_id(q, "Renewed"), renewed);
    assert_eq!(q["stages"][2]["kind"], "won");
    assert!(!q.to_string().contains(&churned));
    let updated = app.events_of("crm.pipeline.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].data["changed"], json!(["name", "stages"]));
    assert_eq!(updated[0].data["stages"]["removed"], json!([churned]));

    // The same list again changes nothing.
    let same = app
        .patch(
            &admin,
            &path(&id),
            json!({"stages": q["stages"].as_array().expect("stages").iter()
                .map(|s| json!({"id": s["id"], "name": s["name"], "kind": s["kind"]}))
                .collect::<Vec<_>>()}),
            Some("\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(same.body["version"], 2);

    // Moving the default.
    let sales = default_pipeline(&app, &user).await;
    app.patch(
        &admin,
        &path(&id),
        json!({"is_default": false}),
        Some("\"2\""),
    )
    .await
    .expect(422);
    let now_default = app
        .patch(
            &admin,
            &path(&id),
            json!({"is_default": true}),
            Some("\"2\""),
        )
        .await
        .expect(200);
    assert_eq!(now_default.body["is_default"], true);
    let old = app
        .get(&user, &path(sales["id"].as_str().expect("id")))
        .await
        .expect(200);
    assert_eq!(old.body["is_default"], false);
    assert_eq!(old.body["version"], 2);
    // New deals now land in the new default's first open stage.
    let deal = app
        .post(&user, "/api/crm/deals", json!({"title": "Renewal"}))
        .await
        .expect(201);
    assert_eq!(deal.body["pipeline_id"], id.as_str());
    assert_eq!(deal.body["stage_id"], quoted.as_str());
}

#[tokio::test]
async fn invalid_pipelines_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, admin, _) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &admin).await;
    let sales_id = sales["id"].as_str().expect("id").to_string();
    let lead = stage_id(&sales, "Lead");
    let before = app.row_counts().await;
    let many: Vec<Value> = (0..31).map(|i| json!({"name": format!("S{i}")})).collect();
    for (body, code) in [
        (json!({}), 422),
        (json!({"name": "P"}), 422),
        (json!({"name": "P", "stages": []}), 422),
        (json!({"name": "P", "stages": many}), 422),
        (json!({"name": "", "stages": [{"name": "A"}]}), 422),
        (
            json!({"name": "x".repeat(201), "stages": [{"name": "A"}]}),
            422,
        ),
        (json!({"name": "P", "stages": [{"name": ""}]}), 422),
        (
            json!({"name": "P", "stages": [{"name": "A"}, {"name": " a "}]}),
            422,
        ),
        (
            json!({"name": "P", "stages": [{"name": "W", "kind": "won"}]}),
            422,
        ),
        (
            json!({"name": "P", "stages": [{"name": "A", "kind": "maybe"}]}),
            422,
        ),
        (
            json!({"name": "P", "stages": [{"name": "A", "id": lead}]}),
            422,
        ),
        (
            json!({"name": "P", "stages": [{"name": "A"}], "is_default": true}),
            422,
        ),
        (json!({"name": 5, "stages": [{"name": "A"}]}), 422),
        (json!({"name": "Sales", "stages": [{"name": "A"}]}), 409),
    ] {
        let r = app.post(&admin, "/api/crm/pipelines", body.clone()).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
    }
    let p = path(&sales_id);
    let keep: Vec<Value> = sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| json!({"id": s["id"], "name": s["name"]}))
        .collect();
    for (body, code) in [
        (json!({"name": ""}), 422),
        (json!({"stages": []}), 422),
        (json!({"stages": [{"name": "Won", "kind": "won"}]}), 422),
        (json!({"stages": [{"id": "nope", "name": "A"}]}), 422),
        (
            json!({"stages": [{"id": platform::ids::new_id(), "name": "A"}]}),
            422,
        ),
        (
            json!({"stages": [{"id": lead, "name": "A"}, {"id": lead, "name": "B"}]}),
            422,
        ),
        (
            json!({"stages": [{"id": lead, "name": "A"}, {"name": "a"}]}),
            422,
        ),
        (json!({"stages": keep, "surprise": 1}), 422),
        (json!({"is_default": "yes"}), 422),
    ] {
        let r = app.patch(&admin, &p, body.clone(), Some("\"1\"")).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
    }
    app.patch(&admin, &p, json!({"name": "X"}), Some("nope"))
        .await
        .expect(400);
    app.get(&admin, &path("nope")).await.expect(404);
    app.delete(&admin, &path(&platform::ids::new_id()))
        .await
        .expect(404);
    let r = app
        .send_raw(
            &admin,
            reqwest::Method::POST,
            "/api/crm/pipelines",
            "application/json",
            "{nope",
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(app.row_counts().await, before);
    let again = app.get(&admin, &p).await.expect(200);
    assert_eq!(again.body, sales);
}

#[tokio::test]
async fn a_stage_with_deals_cannot_be_removed_until_they_move() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let id = sales["id"].as_str().expect("id").to_string();
    let proposal = stage_id(&sales, "Proposal");
    let deal = app
        .post(
            &user,
            "/api/crm/deals",
            json!({"title": "Big", "stage_id": proposal}),
        )
        .await
        .expect(201);
    let without_proposal: Vec<Value> = sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter(|s| s["id"] != proposal.as_str())
        .map(|s| json!({"id": s["id"], "name": s["name"]}))
        .collect();
    let before = app.row_counts().await;
    let refused = app
        .patch(
            &admin,
            &path(&id),
            json!({"name": "Renamed", "stages": without_proposal}),
            Some("\"1\""),
        )
        .await
        .expect(409);
    assert_eq!(refused.body["error"]["code"], "stage_in_use");
    assert_eq!(
        refused.body["error"]["details"]["stage_id"],
        proposal.as_str()
    );
    assert_eq!(refused.body["error"]["details"]["deals"], 1);
    assert_eq!(app.row_counts().await, before);
    let unchanged = app.get(&user, &path(&id)).await.expect(200);
    assert_eq!(unchanged.body, sales);
    assert!(app.events_of("crm.pipeline.updated").await.is_empty());

    // Once the deal moved on, the stage can go.
    app.patch(
        &user,
        &format!("/api/crm/deals/{}", deal.id()),
        json!({"stage_id": stage_id(&sales, "Negotiation")}),
        Some("\"1\""),
    )
    .await
    .expect(200);
    let done = app
        .patch(
            &admin,
            &path(&id),
            json!({"stages": without_proposal}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(
        stage_names(&done.body),
        ["Lead", "Qualified", "Negotiation", "Won", "Lost"]
    );
    // The moved deal's stage history still names the removed stage.
    let counts = app.row_counts().await;
    assert!(
        counts.contains(&("stage_changes".to_string(), 2)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn changing_a_stage_kind_changes_the_status_of_its_deals() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let negotiation = stage_id(&sales, "Negotiation");
    let deal = app
        .post(
            &user,
            "/api/crm/deals",
            json!({"title": "Big", "stage_id": negotiation}),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(deal["status"], "open");
    let stages: Vec<Value> = sales["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| {
            let kind = if s["id"] == negotiation.as_str() {
                json!("won")
            } else {
                s["kind"].clone()
            };
            json!({"id": s["id"], "name": s["name"], "kind": kind})
        })
        .collect();
    app.patch(
        &admin,
        &path(sales["id"].as_str().expect("id")),
        json!({"stages": stages}),
        Some("\"1\""),
    )
    .await
    .expect(200);
    let now = app
        .get(
            &user,
            &format!("/api/crm/deals/{}", deal["id"].as_str().expect("id")),
        )
        .await
        .expect(200);
    assert_eq!(now.body["status"], "won");
    assert!(now.body["closed_at"].is_string());
    assert_eq!(now.body["version"], 2);
}

#[tokio::test]
async fn pipelines_with_deals_and_the_default_cannot_be_deleted() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let sales_id = sales["id"].as_str().expect("id").to_string();
    let r = app.delete(&admin, &path(&sales_id)).await.expect(409);
    assert_eq!(r.body["error"]["code"], "default_pipeline");

    let other = app
        .post(&admin, "/api/crm/pipelines", two_stages("Partners"))
        .await
        .expect(201)
        .body;
    let other_id = other["id"].as_str().expect("id").to_string();
    let deal = app
        .post(
            &user,
            "/api/crm/deals",
            json!({"title": "Via partner", "pipeline_id": other_id}),
        )
        .await
        .expect(201);
    assert_eq!(deal.body["stage_id"], stage_id(&other, "Open"));
    let before = app.row_counts().await;
    let r = app.delete(&admin, &path(&other_id)).await.expect(409);
    assert_eq!(r.body["error"]["code"], "pipeline_in_use");
    assert_eq!(r.body["error"]["details"]["deals"], 1);
    assert_eq!(app.row_counts().await, before);
    app.get(&user, &path(&other_id)).await.expect(200);

    // Users may not; a stale If-Match is refused; then the admin deletes it.
    app.delete(&user, &format!("/api/crm/deals/{}", deal.id()))
        .await
        .expect(403);
    app.delete(&admin, &format!("/api/crm/deals/{}", deal.id()))
        .await
        .expect(204);
    app.delete(&user, &path(&other_id)).await.expect(403);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &path(&other_id),
        None,
        &[("if-match", "\"9\"")],
    )
    .await
    .expect(409);
    app.delete(&admin, &path(&other_id)).await.expect(204);
    app.get(&user, &path(&other_id)).await.expect(404);
    let list = app.get(&user, "/api/crm/pipelines").await.expect(200);
    assert_eq!(list.body["items"].as_array().expect("items").len(), 1);
    let deleted = app.events_of("crm.pipeline.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].aggregate_id, other_id);
}

#[tokio::test]
async fn users_read_pipelines_but_cannot_configure_them() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let sales = default_pipeline(&app, &user).await;
    let id = sales["id"].as_str().expect("id").to_string();
    let before = app.row_counts().await;
    app.post(&user, "/api/crm/pipelines", two_stages("Mine"))
        .await
        .expect(403);
    app.patch(&user, &path(&id), json!({"name": "Mine"}), Some("\"1\""))
        .await
        .expect(403);
    app.delete(&user, &path(&id)).await.expect(403);
    assert_eq!(app.row_counts().await, before);
    app.get(&user, &path(&id)).await.expect(200);
    // The superadmin configures with X-Tenant.
    let root = app.superadmin(Some("acme"));
    app.post(&root, "/api/crm/pipelines", two_stages("Root"))
        .await
        .expect(201);
    app.patch(&admin, &path(&id), json!({"name": "Main"}), Some("\"1\""))
        .await
        .expect(200);
}

#[tokio::test]
async fn another_tenants_pipelines_and_stages_are_not_found() {
    let app = spawn_app().await;
    let (_, admin_a, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let theirs = app
        .post(&admin_a, "/api/crm/pipelines", two_stages("Secret"))
        .await
        .expect(201)
        .body;
    let id = theirs["id"].as_str().expect("id").to_string();
    let their_stage = stage_id(&theirs, "Open");
    let their_default = default_pipeline(&app, &a).await;
    let mine = default_pipeline(&app, &b).await;
    let mine_id = mine["id"].as_str().expect("id").to_string();

    app.get(&b, &path(&id)).await.expect(404);
    app.patch(&admin_b, &path(&id), json!({"name": "Mine"}), Some("\"1\""))
        .await
        .expect(404);
    app.delete(&admin_b, &path(&id)).await.expect(404);
    let list = app.get(&b, "/api/crm/pipelines").await.expect(200);
    assert!(!list.text.contains(&id) && !list.text.contains("Secret"));
    app.get(&b, &format!("/api/crm/deals?view=board&pipeline={id}"))
        .await
        .expect(404);

    let before = app.row_counts().await;
    // Referencing them is refused as unknown.
    for body in [
        json!({"title": "X", "pipeline_id": id}),
        json!({"title": "X", "stage_id": their_stage}),
        json!({"title": "X", "pipeline_id": mine_id, "stage_id": their_stage}),
        json!({"title": "X", "stage_id": stage_id(&their_default, "Lead")}),
    ] {
        let r = app.post(&b, "/api/crm/deals", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    let r = app
        .patch(
            &admin_b,
            &path(&mine_id),
            json!({"stages": [{"id": their_stage, "name": "Stolen"}]}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.text);
    assert_eq!(app.row_counts().await, before);
    // Their stage is untouched.
    let still = app.get(&a, &path(&id)).await.expect(200);
    assert_eq!(still.body, theirs);
}

#[tokio::test]
async fn a_stage_is_never_removed_under_a_deal_entering_it() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    for round in 0..6 {
        let p = app
            .post(
                &admin,
                "/api/crm/pipelines",
                json!({"name": format!("Race {round}"), "stages": [{"name": "A"}, {"name": "B"}]}),
            )
            .await
            .expect(201)
            .body;
        let id = p["id"].as_str().expect("id").to_string();
        let b = stage_id(&p, "B");
        let body = json!({"title": "Racer", "pipeline_id": id, "stage_id": b});
        let only_a = json!({"stages": [{"id": stage_id(&p, "A"), "name": "A"}]});
        let pipeline_path = path(&id);
        let (d1, d2, change, d3) = tokio::join!(
            app.post(&user, "/api/crm/deals", body.clone()),
            app.post(&user, "/api/crm/deals", body.clone()),
            app.patch(&admin, &pipeline_path, only_a, Some("\"1\"")),
            app.post(&user, "/api/crm/deals", body.clone()),
        );
        let created = [d1, d2, d3]
            .iter()
            .filter(|r| r.status.as_u16() == 201)
            .count();
        match change.status.as_u16() {
            200 => assert!(created < 3),
            409 => assert!(created > 0),
            other => panic!("{other}: {}", change.text),
        }
    }
    let orphans: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM deals d WHERE NOT EXISTS (SELECT 1 FROM stages s \
         WHERE s.tenant_id = d.tenant_id AND s.id = d.stage_id AND s.pipeline_id = d.pipeline_id)",
    )
    .fetch_one(app.db.reader())
    .await
    .expect("orphans");
    assert_eq!(orphans, 0);
}
