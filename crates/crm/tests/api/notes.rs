//! Notes and activities: CRUD per kind, task rules, links, tenant isolation, who may
//! delete, filters, sort and paging; the customer timeline (notes merged with the stage
//! changes of the customer's deals, newest first, paged without duplicates).

use std::collections::HashSet;

use platform::ids::{new_id, Timestamp};
use serde_json::{json, Value};

use crate::common::{spawn_app, App, Who};

/// Creates a note as `who` and answers it (fails the test otherwise).
async fn note(app: &App, who: &Who, body: Value) -> Value {
    app.post(who, "/api/crm/notes", body).await.expect(201).body
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

/// A customer of `who`'s tenant; answers its id.
async fn customer(app: &App, who: &Who, name: &str) -> String {
    id_of(&app.customer(who, json!({"first_name": name})).await)
}

/// A company row written directly (the companies API is not needed for notes).
async fn company(app: &App, tenant: &str, name: &str) -> String {
    let id = new_id();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO companies (tenant_id, id, name, name_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(&id)
    .bind(name)
    .bind(name.to_lowercase())
    .bind(now)
    .bind(now)
    .execute(app.db.writer())
    .await
    .expect("company");
    id
}

/// A stage row written directly; answers its id.
async fn stage(app: &App, tenant: &str, name: &str, position: i64) -> String {
    let id = new_id();
    sqlx::query(
        "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind) \
         VALUES ($1, $2, $3, $4, $5, 'open')",
    )
    .bind(tenant)
    .bind(&id)
    .bind(new_id())
    .bind(name)
    .bind(position)
    .execute(app.db.writer())
    .await
    .expect("stage");
    id
}

/// A deal row written directly (in stage `stage_id`); answers its id.
async fn deal(
    app: &App,
    tenant: &str,
    title: &str,
    customer_id: Option<&str>,
    stage_id: &str,
) -> String {
    let id = new_id();
    let now = Timestamp::now().millis();
    sqlx::query(
        "INSERT INTO deals (tenant_id, id, title, title_key, value, currency, pipeline_id, \
         stage_id, status, customer_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 0, 'EUR', $5, $6, 'open', $7, $8, $9)",
    )
    .bind(tenant)
    .bind(&id)
    .bind(title)
    .bind(title.to_lowercase())
    .bind(new_id())
    .bind(stage_id)
    .bind(customer_id)
    .bind(now)
    .bind(now)
    .execute(app.db.writer())
    .await
    .expect("deal");
    id
}

/// A stage change row written directly, the way the deals store records one.
struct Move<'a> {
    tenant: &'a str,
    deal: &'a str,
    customer: Option<&'a str>,
    from: Option<&'a str>,
    to: &'a str,
    actor: &'a str,
    at: i64,
}

async fn stage_change(app: &App, m: Move<'_>) -> String {
    let id = new_id();
    sqlx::query(
        "INSERT INTO stage_changes (tenant_id, id, deal_id, customer_id, from_stage, to_stage, \
         actor_id, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(m.tenant)
    .bind(&id)
    .bind(m.deal)
    .bind(m.customer)
    .bind(m.from)
    .bind(m.to)
    .bind(m.actor)
    .bind(m.at)
    .execute(app.db.writer())
    .await
    .expect("stage change");
    id
}

fn millis(rfc3339: &Value) -> i64 {
    Timestamp::parse_rfc3339(rfc3339.as_str().expect("a time"))
        .expect("RFC 3339")
        .millis()
}

/// Every page of `path` (which has a query) with `limit`, following the cursors; answers
/// the items in order.
async fn all_pages(app: &App, who: &Who, path: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}&limit={limit}&cursor={c}"),
            None => format!("{path}&limit={limit}"),
        };
        let page = app.get(who, &url).await.expect(200);
        let got = page.body["items"].as_array().expect("items").clone();
        assert!(got.len() <= limit);
        items.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("paging did not end");
}

#[tokio::test]
async fn note_crud_for_every_kind() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let cust = customer(&app, &user, "Ada").await;

    for kind in ["note", "call", "meeting", "task"] {
        let created = app
            .post(
                &user,
                "/api/crm/notes",
                json!({"kind": kind, "body": format!("  Secret {kind}\nline two  "),
                       "customer_id": cust}),
            )
            .await
            .expect(201);
        let id = created.id();
        assert_eq!(created.body["kind"], kind);
        assert_eq!(created.body["body"], format!("Secret {kind}\nline two"));
        assert_eq!(created.body["customer_id"], cust.as_str());
        assert_eq!(created.body["company_id"], Value::Null);
        assert_eq!(created.body["deal_id"], Value::Null);
        assert_eq!(created.body["due_on"], Value::Null);
        assert_eq!(created.body["done"], false);
        assert_eq!(created.body["author_id"], user.user_id.as_str());
        assert_eq!(created.body["version"], 1);
        assert_eq!(created.etag(), "\"1\"");

        let path = format!("/api/crm/notes/{id}");
        let got = app.get(&admin, &path).await.expect(200);
        assert_eq!(got.body, created.body);

        // PATCH needs the version it is based on.
        app.patch(&admin, &path, json!({"body": "x"}), None)
            .await
            .expect(428);
        let patched = app
            .patch(&admin, &path, json!({"body": "Edited"}), Some("\"1\""))
            .await
            .expect(200);
        assert_eq!(patched.body["body"], "Edited");
        assert_eq!(patched.body["version"], 2);
        assert_eq!(patched.etag(), "\"2\"");
        assert_eq!(
            patched.body["author_id"],
            user.user_id.as_str(),
            "the author stays"
        );
        // The same change again changes nothing.
        let same = app
            .patch(&admin, &path, json!({"body": "Edited", "version": 2}), None)
            .await
            .expect(200);
        assert_eq!(same.body["version"], 2);
        let stale = app
            .patch(&user, &path, json!({"body": "Late", "version": 1}), None)
            .await
            .expect(409);
        assert_eq!(stale.body["error"]["details"]["current_version"], 2);

        app.delete(&user, &path).await.expect(204);
        app.get(&user, &path).await.expect(404);
        app.delete(&user, &path).await.expect(404);
    }

    let created = app.events_of("crm.note.created").await;
    assert_eq!(created.len(), 4);
    assert_eq!(created[0].actor.id.as_deref(), Some(user.user_id.as_str()));
    assert_eq!(created[0].data["changed"][0], "kind");
    let updated = app.events_of("crm.note.updated").await;
    assert_eq!(updated.len(), 4, "no event without a change");
    assert_eq!(updated[0].data["changed"], json!(["body"]));
    assert_eq!(app.events_of("crm.note.deleted").await.len(), 4);
    for e in created.iter().chain(&updated) {
        let text = e.data.to_string();
        assert!(
            !text.contains("Secret") && !text.contains("Edited"),
            "events carry field names, not the body: {text}"
        );
    }
}

#[tokio::test]
async fn tasks_alone_have_due_dates_and_done() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let cust = customer(&app, &user, "Ada").await;

    let task = app
        .post(
            &user,
            "/api/crm/notes",
            json!({"kind": "task", "body": "Call back", "customer_id": cust,
                   "due_on": " 2026-03-01 "}),
        )
        .await
        .expect(201);
    assert_eq!(task.body["due_on"], "2026-03-01");
    assert_eq!(task.body["done"], false);
    let path = format!("/api/crm/notes/{}", task.id());
    let done = app
        .patch(
            &user,
            &path,
            json!({"done": true, "due_on": "2026-03-02"}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(done.body["done"], true);
    assert_eq!(done.body["due_on"], "2026-03-02");
    let cleared = app
        .patch(&user, &path, json!({"due_on": null, "version": 2}), None)
        .await
        .expect(200);
    assert_eq!(cleared.body["due_on"], Value::Null);
    assert_eq!(cleared.body["done"], true);
    let updated = app.events_of("crm.note.updated").await;
    assert_eq!(updated[0].data["changed"], json!(["due_on", "done"]));

    // A task created done.
    let finished = note(
        &app,
        &user,
        json!({"kind": "task", "body": "Sent", "customer_id": cust, "done": true}),
    )
    .await;
    assert_eq!(finished["done"], true);
    assert_eq!(finished["due_on"], Value::Null);

    // Other kinds have neither a due date nor a done flag (false is their only value).
    let plain = note(
        &app,
        &user,
        json!({"kind": "call", "body": "Talked", "customer_id": cust, "done": false}),
    )
    .await;
    let before = app.row_counts().await;
    for body in [
        json!({"kind": "note", "body": "x", "customer_id": cust, "due_on": "2026-03-01"}),
        json!({"kind": "meeting", "body": "x", "customer_id": cust, "done": true}),
        json!({"kind": "task", "body": "x", "customer_id": cust, "due_on": "2026-02-30"}),
        json!({"kind": "task", "body": "x", "customer_id": cust, "due_on": "tomorrow"}),
        json!({"kind": "task", "body": "x", "customer_id": cust, "due_on": ""}),
        json!({"kind": "task", "body": "x", "customer_id": cust, "done": "yes"}),
    ] {
        let r = app.post(&user, "/api/crm/notes", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    let plain_path = format!("/api/crm/notes/{}", id_of(&plain));
    for body in [
        json!({"due_on": "2026-03-01"}),
        json!({"done": true}),
        json!({"kind": "task"}),
    ] {
        let r = app
            .patch(&user, &plain_path, body.clone(), Some("\"1\""))
            .await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    // Clearing what a note never has is no change.
    let same = app
        .patch(
            &user,
            &plain_path,
            json!({"due_on": null, "done": false}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(same.body["version"], 1);
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn notes_need_a_link_in_their_own_tenant() {
    let app = spawn_app().await;
    let (tenant, _, user) = app.tenant_with_people("acme").await;
    let (other_tenant, _, other) = app.tenant_with_people("other").await;
    let cust = customer(&app, &user, "Ada").await;
    let comp = company(&app, &tenant, "Acme").await;
    let st = stage(&app, &tenant, "Lead", 0).await;
    let dl = deal(&app, &tenant, "Licence", Some(&cust), &st).await;
    let foreign_cust = customer(&app, &other, "Eve").await;
    let foreign_comp = company(&app, &other_tenant, "Evil").await;
    let foreign_stage = stage(&app, &other_tenant, "Lead", 0).await;
    let foreign_deal = deal(&app, &other_tenant, "Theirs", None, &foreign_stage).await;

    // Each link alone is enough, and all three together too.
    for body in [
        json!({"body": "c", "customer_id": cust}),
        json!({"body": "co", "company_id": comp}),
        json!({"body": "d", "deal_id": dl}),
        json!({"body": "all", "customer_id": cust, "company_id": comp, "deal_id": dl}),
    ] {
        let n = note(&app, &user, body.clone()).await;
        for field in ["customer_id", "company_id", "deal_id"] {
            assert_eq!(n[field], body[field], "{field}");
        }
    }

    let before = app.row_counts().await;
    let events_before = app.events_of("crm.note.created").await.len();
    for (body, field) in [
        (json!({"body": "none"}), "customer_id"),
        (
            json!({"body": "nulls", "customer_id": null, "company_id": null, "deal_id": null}),
            "customer_id",
        ),
        (
            json!({"body": "x", "customer_id": foreign_cust}),
            "customer_id",
        ),
        (
            json!({"body": "x", "company_id": foreign_comp}),
            "company_id",
        ),
        (json!({"body": "x", "deal_id": foreign_deal}), "deal_id"),
        (
            json!({"body": "x", "customer_id": cust, "deal_id": foreign_deal}),
            "deal_id",
        ),
        (json!({"body": "x", "customer_id": new_id()}), "customer_id"),
        (json!({"body": "x", "company_id": "nope"}), "company_id"),
        (json!({"body": "x", "deal_id": ""}), "deal_id"),
    ] {
        let r = app.post(&user, "/api/crm/notes", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
        assert!(
            r.text.contains(field),
            "{body}: the refusal names {field}: {}",
            r.text
        );
    }
    assert_eq!(app.row_counts().await, before, "nothing written");

    // Changing the links follows the same rules.
    let n = note(&app, &user, json!({"body": "n", "customer_id": cust})).await;
    let path = format!("/api/crm/notes/{}", id_of(&n));
    let before = app.row_counts().await;
    for body in [
        json!({"customer_id": null}),
        json!({"customer_id": foreign_cust}),
        json!({"company_id": foreign_comp}),
        json!({"deal_id": foreign_deal}),
        json!({"deal_id": "x"}),
    ] {
        let r = app.patch(&user, &path, body.clone(), Some("\"1\"")).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.get(&user, &path).await.expect(200).body, n);
    let moved = app
        .patch(
            &user,
            &path,
            json!({"customer_id": null, "company_id": comp, "deal_id": dl}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(moved.body["customer_id"], Value::Null);
    assert_eq!(moved.body["company_id"], comp.as_str());
    assert_eq!(moved.body["deal_id"], dl.as_str());
    assert_eq!(
        app.events_of("crm.note.created").await.len(),
        events_before + 1
    );
    let updated = app.events_of("crm.note.updated").await;
    assert_eq!(
        updated.last().expect("event").data["changed"],
        json!(["customer_id", "company_id", "deal_id"])
    );
}

#[tokio::test]
async fn another_tenants_notes_are_not_found() {
    let app = spawn_app().await;
    let (_, _, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let cust = customer(&app, &a, "Secret").await;
    let n = note(
        &app,
        &a,
        json!({"kind": "task", "body": "Hidden", "customer_id": cust, "due_on": "2026-01-01"}),
    )
    .await;
    let path = format!("/api/crm/notes/{}", id_of(&n));
    let before = app.row_counts().await;
    for who in [&b, &admin_b] {
        app.get(who, &path).await.expect(404);
        app.patch(who, &path, json!({"body": "Mine"}), Some("\"1\""))
            .await
            .expect(404);
        app.delete(who, &path).await.expect(404);
        app.get(who, &format!("/api/crm/customers/{cust}/timeline"))
            .await
            .expect(404);
        for query in [
            "".to_string(),
            format!("?customer={cust}"),
            "?sort=due".to_string(),
            "?kind=task&done=false".to_string(),
        ] {
            let list = app
                .get(who, &format!("/api/crm/notes{query}"))
                .await
                .expect(200);
            assert_eq!(list.body["items"], json!([]), "{query}");
        }
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.get(&a, &path).await.expect(200).body, n);
    // The superadmin reaches it through X-Tenant.
    app.get(&app.superadmin(Some("one")), &path)
        .await
        .expect(200);
    app.get(&app.superadmin(Some("two")), &path)
        .await
        .expect(404);
    // Ids that are no UUIDs are simply unknown.
    app.get(&a, "/api/crm/notes/not-an-id").await.expect(404);
    app.get(&a, "/api/crm/customers/not-an-id/timeline")
        .await
        .expect(404);
}

#[tokio::test]
async fn notes_are_deleted_by_their_author_or_an_admin() {
    let app = spawn_app().await;
    let (tenant, admin, author) = app.tenant_with_people("acme").await;
    let colleague = app.user(&tenant, "user").await;
    let cust = customer(&app, &author, "Ada").await;
    let body = json!({"body": "mine", "customer_id": cust});

    // Any member may change a note, only its author or an admin may delete it.
    let n = note(&app, &author, body.clone()).await;
    let path = format!("/api/crm/notes/{}", id_of(&n));
    app.patch(
        &colleague,
        &path,
        json!({"body": "improved"}),
        Some("\"1\""),
    )
    .await
    .expect(200);
    let before = app.row_counts().await;
    app.delete(&colleague, &path).await.expect(403);
    assert_eq!(app.row_counts().await, before);
    // A stale If-Match is refused, a current one accepted.
    let r = app
        .send(
            Some(&author),
            reqwest::Method::DELETE,
            &path,
            None,
            &[("if-match", "\"1\"")],
        )
        .await
        .expect(409);
    assert_eq!(r.body["error"]["details"]["current_version"], 2);
    app.send(
        Some(&author),
        reqwest::Method::DELETE,
        &path,
        None,
        &[("if-match", "\"2\"")],
    )
    .await
    .expect(204);

    let n = note(&app, &author, body.clone()).await;
    app.delete(&admin, &format!("/api/crm/notes/{}", id_of(&n)))
        .await
        .expect(204);

    // An admin's note is not a user's to delete; the superadmin may.
    let n = note(&app, &admin, body.clone()).await;
    assert_eq!(n["author_id"], admin.user_id.as_str());
    let path = format!("/api/crm/notes/{}", id_of(&n));
    app.delete(&author, &path).await.expect(403);
    app.delete(&app.superadmin(Some("acme")), &path)
        .await
        .expect(204);
    assert_eq!(app.events_of("crm.note.deleted").await.len(), 3);
}

#[tokio::test]
async fn bad_note_input_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let cust = customer(&app, &user, "Ada").await;
    let n = note(&app, &user, json!({"body": "keep", "customer_id": cust})).await;
    let path = format!("/api/crm/notes/{}", id_of(&n));
    let before = app.row_counts().await;

    for body in [
        json!({}),
        json!({"customer_id": cust}),
        json!({"body": "", "customer_id": cust}),
        json!({"body": "   \n ", "customer_id": cust}),
        json!({"body": "x".repeat(10_001), "customer_id": cust}),
        json!({"body": "bell\u{7}", "customer_id": cust}),
        json!({"body": 5, "customer_id": cust}),
        json!({"body": "x", "kind": "email", "customer_id": cust}),
        json!({"body": "x", "customer_id": cust, "author_id": admin.user_id}),
        json!({"body": "x", "customer_id": cust, "surprise": 1}),
        json!({"body": "x", "customer_id": 7}),
        json!([]),
    ] {
        let r = app.post(&user, "/api/crm/notes", body.clone()).await;
        assert_eq!(r.status.as_u16(), 422, "{body}: {}", r.text);
    }
    // The longest body is fine (and written; counted below).
    let long = note(
        &app,
        &user,
        json!({"body": "é".repeat(10_000), "customer_id": cust}),
    )
    .await;
    app.delete(&user, &format!("/api/crm/notes/{}", id_of(&long)))
        .await
        .expect(204);
    for (content_type, raw, code) in [
        ("application/json", "{nope", 400),
        ("text/plain", "{}", 415),
    ] {
        let r = app
            .send_raw(
                &user,
                reqwest::Method::POST,
                "/api/crm/notes",
                content_type,
                raw,
            )
            .await;
        assert_eq!(r.status.as_u16(), code, "{raw}: {}", r.text);
        let r = app
            .send_raw(&user, reqwest::Method::PATCH, &path, content_type, raw)
            .await;
        assert_eq!(r.status.as_u16(), code, "{raw}: {}", r.text);
    }

    for (body, if_match, code) in [
        (json!({"body": ""}), Some("\"1\""), 422),
        (json!({"body": "x".repeat(10_001)}), Some("\"1\""), 422),
        (json!({"author_id": admin.user_id}), Some("\"1\""), 422),
        (json!({"kind": "call"}), Some("\"1\""), 422),
        (json!({"customer_id": "nope"}), Some("\"1\""), 422),
        (json!({"done": "yes"}), Some("\"1\""), 422),
        (json!({"body": "x"}), Some("nope"), 400),
        (json!({"body": "x", "version": 2}), Some("\"1\""), 400),
        (json!({"body": "x"}), None, 428),
        (json!({"body": "x"}), Some("\"7\""), 409),
    ] {
        let r = app.patch(&user, &path, body.clone(), if_match).await;
        assert_eq!(r.status.as_u16(), code, "{body} {if_match:?}: {}", r.text);
    }
    let r = app
        .send(
            Some(&admin),
            reqwest::Method::DELETE,
            &path,
            None,
            &[("if-match", "nope")],
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text);

    for bad in [
        "sort=name",
        "sort=-updated",
        "limit=0",
        "limit=501",
        "limit=x",
        "cursor=abc",
        "cursor=!!",
        "kind=email",
        "done=yes",
        "due_before=2026-02-30",
        "due_before=soon",
        "customer=x",
        "company=x",
        "deal=x",
        "unknown=1",
    ] {
        let r = app.get(&user, &format!("/api/crm/notes?{bad}")).await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {}", r.text);
    }
    let timeline = format!("/api/crm/customers/{cust}/timeline");
    for bad in [
        "limit=0",
        "limit=501",
        "cursor=abc",
        "cursor=!!",
        "sort=created",
        "x=1",
    ] {
        let r = app.get(&user, &format!("{timeline}?{bad}")).await;
        assert_eq!(r.status.as_u16(), 400, "{bad}: {}", r.text);
    }
    // A cursor of the wrong shape (valid base64, not `millis\nid`).
    for raw in ["12", "x\ny", "abc\n0190f0a0-0000-7000-8000-000000000000"] {
        let c = base64_url(raw);
        let r = app.get(&user, &format!("{timeline}?cursor={c}")).await;
        assert_eq!(r.status.as_u16(), 400, "{raw:?}: {}", r.text);
        let r = app.get(&user, &format!("/api/crm/notes?cursor={c}")).await;
        assert_eq!(r.status.as_u16(), 400, "{raw:?}: {}", r.text);
    }
    // Anonymous callers get nothing.
    let r = app
        .send(None, reqwest::Method::GET, "/api/crm/notes", None, &[])
        .await;
    assert_eq!(r.status.as_u16(), 401);
    let r = app
        .send(None, reqwest::Method::GET, &timeline, None, &[])
        .await;
    assert_eq!(r.status.as_u16(), 401);

    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.get(&user, &path).await.expect(200).body, n);
}

/// URL-safe unpadded base64, as the API's cursors are encoded.
fn base64_url(raw: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test]
async fn note_lists_filter_sort_and_page() {
    let app = spawn_app().await;
    let (tenant, _, user) = app.tenant_with_people("acme").await;
    let ada = customer(&app, &user, "Ada").await;
    let bob = customer(&app, &user, "Bob").await;
    let comp = company(&app, &tenant, "Acme").await;
    let st = stage(&app, &tenant, "Lead", 0).await;
    let dl = deal(&app, &tenant, "Licence", Some(&ada), &st).await;

    // 12 notes: every kind, alternating customers; tasks due on spread dates.
    let mut created = Vec::new();
    for i in 0..12 {
        let kind = ["note", "call", "meeting", "task"][i % 4];
        let mut body = json!({"kind": kind, "body": format!("n{i}"),
                              "customer_id": if i % 2 == 0 { &ada } else { &bob }});
        if i % 3 == 0 {
            body["company_id"] = json!(comp);
        }
        if i == 5 {
            body["deal_id"] = json!(dl);
        }
        if kind == "task" {
            body["due_on"] = json!(format!("2026-03-{:02}", 20 - i));
            body["done"] = json!(i == 7);
        }
        created.push(id_of(&note(&app, &user, body).await));
    }
    // An undated task.
    created.push(id_of(
        &note(
            &app,
            &user,
            json!({"kind": "task", "body": "someday", "customer_id": ada}),
        )
        .await,
    ));
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    // tasks: i=3 (due 03-17, open), 7 (03-13, done), 11 (03-09, open), 12 (no date, open)
    let (t3, t7, t11, t12) = (&created[3], &created[7], &created[11], &created[12]);

    let list = |q: String| {
        let app = &app;
        let user = &user;
        async move {
            ids(&app
                .get(user, &format!("/api/crm/notes?{q}"))
                .await
                .expect(200)
                .body)
        }
    };
    assert_eq!(list(String::new()).await, newest_first);
    assert_eq!(list("sort=created".into()).await, created, "oldest first");
    let for_ada: Vec<String> = newest_first
        .iter()
        .filter(|id| {
            let i = created.iter().position(|c| c == *id).expect("known");
            i % 2 == 0 || i == 12
        })
        .cloned()
        .collect();
    assert_eq!(list(format!("customer={ada}")).await, for_ada);
    assert_eq!(
        list(format!("company={comp}")).await,
        vec![
            created[9].clone(),
            created[6].clone(),
            created[3].clone(),
            created[0].clone()
        ]
    );
    assert_eq!(list(format!("deal={dl}")).await, vec![created[5].clone()]);
    assert_eq!(
        list("kind=call".into()).await,
        vec![created[9].clone(), created[5].clone(), created[1].clone()]
    );
    assert_eq!(
        list("kind=task".into()).await,
        vec![t12.clone(), t11.clone(), t7.clone(), t3.clone()]
    );
    assert_eq!(list("done=true".into()).await, vec![t7.clone()]);
    assert_eq!(
        list("done=false".into()).await,
        vec![t12.clone(), t11.clone(), t3.clone()],
        "open tasks only"
    );
    assert_eq!(
        list("due_before=2026-03-13".into()).await,
        vec![t11.clone(), t7.clone()],
        "on or before"
    );
    assert_eq!(
        list(format!("due_before=2026-03-20&done=false&customer={bob}")).await,
        vec![t11.clone(), t3.clone()]
    );
    assert_eq!(
        list("kind=note&done=false".into()).await,
        Vec::<String>::new()
    );
    assert_eq!(
        list("sort=due".into()).await,
        vec![t11.clone(), t7.clone(), t3.clone()],
        "dated tasks, soonest first"
    );
    assert_eq!(
        list("sort=-due&done=false".into()).await,
        vec![t3.clone(), t11.clone()]
    );

    // Paging: every note once, in order, whatever the page size.
    for limit in [1, 3, 5, 13, 50] {
        let paged: Vec<String> = all_pages(&app, &user, "/api/crm/notes?sort=-created", limit)
            .await
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(paged, newest_first, "limit {limit}");
    }
    let paged: Vec<String> = all_pages(&app, &user, "/api/crm/notes?sort=due", 2)
        .await
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(paged, vec![t11.clone(), t7.clone(), t3.clone()]);

    // Notes written while paging (newest first) appear neither twice nor in between.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/crm/notes?limit=4&cursor={c}"),
            None => "/api/crm/notes?limit=4".to_string(),
        };
        let page = app.get(&user, &path).await.expect(200);
        seen.extend(ids(&page.body));
        note(&app, &user, json!({"body": "late", "customer_id": bob})).await;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
}

#[tokio::test]
async fn timeline_merges_notes_and_stage_changes_newest_first() {
    let app = spawn_app().await;
    let (tenant, admin, user) = app.tenant_with_people("acme").await;
    let ada = customer(&app, &user, "Ada").await;
    let bob = customer(&app, &user, "Bob").await;
    let lead = stage(&app, &tenant, "Lead", 0).await;
    let won = stage(&app, &tenant, "Won", 1).await;
    let gone_stage = new_id();
    let licence = deal(&app, &tenant, "Licence", Some(&ada), &won).await;
    let gone_deal = new_id();

    // Empty at first.
    let empty = app
        .get(&user, &format!("/api/crm/customers/{ada}/timeline"))
        .await
        .expect(200);
    assert_eq!(empty.body, json!({"items": [], "next_cursor": null}));

    let n1 = note(&app, &user, json!({"body": "first", "customer_id": ada})).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let n2 = note(
        &app,
        &admin,
        json!({"kind": "task", "body": "second", "customer_id": ada, "due_on": "2026-05-01"}),
    )
    .await;
    let (t1, t2) = (millis(&n1["created_at"]), millis(&n2["created_at"]));
    assert!(t2 > t1 + 1);
    // Notes of other customers and companies stay out.
    note(&app, &user, json!({"body": "bob's", "customer_id": bob})).await;

    let base = Move {
        tenant: &tenant,
        deal: &licence,
        customer: Some(&ada),
        from: None,
        to: &lead,
        actor: &user.user_id,
        at: t1 - 1000,
    };
    // The deal was created (no from stage) before the first note…
    let created = stage_change(&app, Move { ..base }).await;
    // …moved between the two notes…
    let moved = stage_change(
        &app,
        Move {
            from: Some(&lead),
            to: &won,
            at: t1 + 1,
            ..base
        },
    )
    .await;
    // …and at the very millisecond of the second note (ties go by id), a deleted deal
    // moved into a stage deleted since.
    let tie_a = stage_change(
        &app,
        Move {
            deal: &gone_deal,
            from: Some(&won),
            to: &gone_stage,
            actor: &admin.user_id,
            at: t2,
            ..base
        },
    )
    .await;
    let tie_b = stage_change(&app, Move { at: t2, ..base }).await;
    // Another customer's deal and another tenant's row stay out.
    stage_change(
        &app,
        Move {
            customer: Some(&bob),
            at: t2 + 5,
            ..base
        },
    )
    .await;
    let (other_tenant, _, other) = app.tenant_with_people("other").await;
    stage_change(
        &app,
        Move {
            tenant: &other_tenant,
            at: t2 + 6,
            ..base
        },
    )
    .await;

    let mut expected: Vec<(i64, String)> = vec![
        (t1, id_of(&n1)),
        (t2, id_of(&n2)),
        (t1 - 1000, created.clone()),
        (t1 + 1, moved.clone()),
        (t2, tie_a.clone()),
        (t2, tie_b.clone()),
    ];
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let path = format!("/api/crm/customers/{ada}/timeline");
    let full = app.get(&user, &path).await.expect(200);
    assert_eq!(full.body["next_cursor"], Value::Null);
    let items = full.body["items"].as_array().expect("items").clone();
    let item_id = |item: &Value| -> String {
        if item["type"] == "note" {
            id_of(&item["note"])
        } else {
            id_of(item)
        }
    };
    assert_eq!(
        items.iter().map(item_id).collect::<Vec<_>>(),
        expected,
        "{items:#?}"
    );
    let times: Vec<i64> = items.iter().map(|i| millis(&i["at"])).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let find = |id: &str| {
        items
            .iter()
            .find(|i| item_id(i) == id)
            .expect("in the timeline")
            .clone()
    };
    let first = find(&id_of(&n1));
    assert_eq!(first["type"], "note");
    assert_eq!(first["at"], n1["created_at"]);
    assert_eq!(first["note"], n1);
    assert_eq!(find(&id_of(&n2))["note"]["due_on"], "2026-05-01");
    assert_eq!(
        find(&moved),
        json!({"type": "stage_change", "at": Timestamp(t1 + 1).to_rfc3339(), "id": moved,
               "deal_id": licence, "deal_title": "Licence", "from_stage": "Lead",
               "to_stage": "Won", "from_stage_id": lead, "to_stage_id": won,
               "actor_id": user.user_id})
    );
    let opened = find(&created);
    assert_eq!(opened["from_stage"], Value::Null);
    assert_eq!(opened["from_stage_id"], Value::Null);
    assert_eq!(opened["to_stage"], "Lead");
    let orphan = find(&tie_a);
    assert_eq!(orphan["deal_id"], gone_deal.as_str());
    assert_eq!(orphan["deal_title"], Value::Null);
    assert_eq!(orphan["from_stage"], "Won");
    assert_eq!(orphan["to_stage"], Value::Null);
    assert_eq!(orphan["to_stage_id"], gone_stage.as_str());
    assert_eq!(orphan["actor_id"], admin.user_id.as_str());

    // Every page size walks the same timeline, each item once.
    for limit in [1, 2, 3, 4, 5, 6, 7] {
        let paged: Vec<String> = all_pages(&app, &user, &format!("{path}?"), limit)
            .await
            .iter()
            .map(item_id)
            .collect();
        assert_eq!(paged, expected, "limit {limit}");
        let unique: HashSet<&String> = paged.iter().collect();
        assert_eq!(unique.len(), paged.len());
    }

    // Newer entries written while paging do not shift the pages already cut.
    let first_page = app.get(&user, &format!("{path}?limit=3")).await.expect(200);
    note(&app, &user, json!({"body": "newest", "customer_id": ada})).await;
    stage_change(
        &app,
        Move {
            at: Timestamp::now().millis() + 10,
            ..base
        },
    )
    .await;
    let cursor = first_page.body["next_cursor"].as_str().expect("more");
    let rest = all_pages(&app, &user, &format!("{path}?cursor={cursor}"), 50).await;
    let mut walked = ids_of_items(&first_page.body["items"], item_id);
    walked.extend(rest.iter().map(item_id));
    assert_eq!(walked, expected);
    let now = app.get(&user, &path).await.expect(200);
    assert_eq!(now.body["items"].as_array().expect("items").len(), 8);
    assert_eq!(now.body["items"][0]["type"], "stage_change");
    assert_eq!(now.body["items"][1]["note"]["body"], "newest");

    // Members read it (admins and the superadmin too); other tenants do not see it.
    app.get(&admin, &path).await.expect(200);
    app.get(&app.superadmin(Some("acme")), &path)
        .await
        .expect(200);
    app.get(&other, &path).await.expect(404);
    app.get(&user, &format!("/api/crm/customers/{}/timeline", new_id()))
        .await
        .expect(404);
    // A deleted customer has no timeline (and its notes and stage changes go with it).
    app.delete(&admin, &format!("/api/crm/customers/{ada}"))
        .await
        .expect(204);
    app.get(&user, &path).await.expect(404);
}

fn ids_of_items(items: &Value, item_id: impl Fn(&Value) -> String) -> Vec<String> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(item_id)
        .collect()
}
