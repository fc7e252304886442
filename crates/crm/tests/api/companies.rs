//! Companies: CRUD, validation, optimistic concurrency, filters, search, sort and paging, a
//! company's customers, and what deleting a company does to the records linked to it.

use platform::ids::new_id;
use serde_json::{json, Value};

use crate::common::{spawn_app, App, Who};

/// Creates a company and answers it (fails the test otherwise).
async fn company(app: &App, who: &Who, body: Value) -> Value {
    app.post(who, "/api/crm/companies", body)
        .await
        .expect(201)
        .body
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

fn names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test]
async fn company_crud_round_trip() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;

    let created = app
        .post(
            &user,
            "/api/crm/companies",
            json!({"name": " Initech ", "domain": "Initech.COM", "industry": "Software",
                   "size": "11-50", "address": "1 Loop Road, Austin"}),
        )
        .await
        .expect(201);
    let id = created.id();
    assert_eq!(created.body["name"], "Initech");
    assert_eq!(created.body["domain"], "initech.com");
    assert_eq!(created.body["industry"], "Software");
    assert_eq!(created.body["size"], "11-50");
    assert_eq!(created.body["address"], "1 Loop Road, Austin");
    assert_eq!(created.body["custom"], json!({}));
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.etag(), "\"1\"");

    let path = format!("/api/crm/companies/{id}");
    let got = app.get(&user, &path).await.expect(200);
    assert_eq!(got.body, created.body);
    assert_eq!(got.etag(), "\"1\"");

    // PATCH needs the version it is based on.
    app.patch(&user, &path, json!({"industry": "Finance"}), None)
        .await
        .expect(428);
    let patched = app
        .patch(
            &user,
            &path,
            json!({"industry": "Finance", "size": null, "name": "Initech"}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["industry"], "Finance");
    assert_eq!(patched.body["size"], Value::Null);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.etag(), "\"2\"");
    assert_eq!(app.get(&user, &path).await.expect(200).body, patched.body);

    // A change that changes nothing keeps the version and emits nothing.
    let same = app
        .patch(
            &user,
            &path,
            json!({"industry": "Finance", "version": 2}),
            None,
        )
        .await
        .expect(200);
    assert_eq!(same.body["version"], 2);

    // A stale version is refused with the current one.
    let stale = app
        .patch(&user, &path, json!({"name": "X", "version": 1}), None)
        .await
        .expect(409);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);

    // Users may not delete; a stale If-Match is refused; admins may.
    app.delete(&user, &path).await.expect(403);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &path,
        None,
        &[("if-match", "\"1\"")],
    )
    .await
    .expect(409);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &path,
        None,
        &[("if-match", "\"2\"")],
    )
    .await
    .expect(204);
    app.get(&user, &path).await.expect(404);
    app.delete(&admin, &path).await.expect(404);

    let created_events = app.events_of("crm.company.created").await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(created_events[0].aggregate_id, id);
    assert_eq!(
        created_events[0].actor.id.as_deref(),
        Some(user.user_id.as_str())
    );
    assert_eq!(
        created_events[0].data["changed"],
        json!(["name", "domain", "industry", "size", "address", "custom"])
    );
    let updated = app.events_of("crm.company.updated").await;
    assert_eq!(updated.len(), 1, "a no-op change emits nothing");
    assert_eq!(updated[0].data["changed"], json!(["industry", "size"]));
    let deleted = app.events_of("crm.company.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].actor.id.as_deref(), Some(admin.user_id.as_str()));
}

#[tokio::test]
async fn company_lists_filter_search_sort_and_page_without_gaps() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let industry = if i % 3 == 0 { "Software" } else { "Retail" };
        let c = company(
            &app,
            &user,
            json!({"name": format!("Firm{i:02}"), "domain": format!("firm{i}.example"),
                   "industry": industry}),
        )
        .await;
        ids.push(id_of(&c));
    }
    company(
        &app,
        &user,
        json!({"name": "100% Natural_Foods", "domain": "natural.example"}),
    )
    .await;

    let count = |v: &Value| v["items"].as_array().expect("items").len();
    let r = app
        .get(&user, "/api/crm/companies?industry=Software")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 4);
    let r = app
        .get(&user, "/api/crm/companies?q=FIRM1")
        .await
        .expect(200);
    assert_eq!(
        count(&r.body),
        3,
        "Firm10, Firm11 by name and firm1. by domain"
    );
    let r = app
        .get(&user, "/api/crm/companies?q=NATURAL.EX")
        .await
        .expect(200);
    assert_eq!(names(&r.body), vec!["100% Natural_Foods"], "domain search");
    let r = app.get(&user, "/api/crm/companies?q=%25").await.expect(200);
    assert_eq!(count(&r.body), 1, "LIKE wildcards are literal");
    let r = app
        .get(&user, "/api/crm/companies?q=firm_0")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 0, "LIKE wildcards are literal");
    let r = app
        .get(&user, "/api/crm/companies?q=firm&industry=Retail&limit=100")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 8);

    let r = app
        .get(&user, "/api/crm/companies?sort=name&limit=2")
        .await
        .expect(200);
    assert_eq!(names(&r.body), vec!["100% Natural_Foods", "Firm00"]);
    let r = app
        .get(&user, "/api/crm/companies?sort=-name&limit=2")
        .await
        .expect(200);
    assert_eq!(names(&r.body), vec!["Firm11", "Firm10"]);

    // Updated order follows the last change.
    let first = format!("/api/crm/companies/{}", ids[0]);
    app.patch(&user, &first, json!({"size": "1-10"}), Some("\"1\""))
        .await
        .expect(200);
    let r = app
        .get(&user, "/api/crm/companies?sort=-updated&limit=1")
        .await
        .expect(200);
    assert_eq!(names(&r.body), vec!["Firm00"]);

    // Created range.
    let all = app
        .get(&user, "/api/crm/companies?sort=created&limit=100")
        .await
        .expect(200);
    let created_at = all.body["items"][5]["created_at"]
        .as_str()
        .expect("time")
        .to_string();
    let r = app
        .get(
            &user,
            &format!(
                "/api/crm/companies?created_from={}&limit=100",
                urlencode(&created_at)
            ),
        )
        .await
        .expect(200);
    assert!(count(&r.body) >= 8 && count(&r.body) <= 13);
    let r = app
        .get(
            &user,
            "/api/crm/companies?created_to=2000-01-01T00:00:00Z&limit=100",
        )
        .await
        .expect(200);
    assert_eq!(count(&r.body), 0);

    // Page by name while new companies arrive: no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/crm/companies?q=firm&sort=name&limit=5&cursor={c}"),
            None => "/api/crm/companies?q=firm&sort=name&limit=5".to_string(),
        };
        let page = app.get(&user, &path).await.expect(200);
        seen.extend(names(&page.body));
        company(
            &app,
            &user,
            json!({"name": format!("Aaa firm late {extra}")}),
        )
        .await;
        extra += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..12).map(|i| format!("Firm{i:02}")).collect();
    assert_eq!(seen, expected);

    // Newest first by default.
    let r = app
        .get(&user, "/api/crm/companies?limit=1")
        .await
        .expect(200);
    assert_eq!(names(&r.body), vec![format!("Aaa firm late {}", extra - 1)]);

    for bad in [
        "sort=domain",
        "sort=-",
        "limit=0",
        "limit=501",
        "cursor=abc",
        "created_from=yesterday",
        "created_to=1",
        "unknown=1",
        "industry=%07",
    ] {
        app.get(&user, &format!("/api/crm/companies?{bad}"))
            .await
            .expect(400);
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn a_company_lists_its_customers() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let acme = id_of(&company(&app, &user, json!({"name": "Acme"})).await);
    let other = id_of(&company(&app, &user, json!({"name": "Other"})).await);
    let mut mine = Vec::new();
    for i in 0..5 {
        let c = app
            .customer(
                &user,
                json!({"first_name": format!("Emp{i}"), "company_id": acme}),
            )
            .await;
        assert_eq!(c["company_name"], "Acme");
        mine.push(id_of(&c));
    }
    app.customer(
        &user,
        json!({"first_name": "Elsewhere", "company_id": other}),
    )
    .await;
    app.customer(&user, json!({"first_name": "Nowhere"})).await;

    // Newest first, paged.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/crm/companies/{acme}/customers?limit=2&cursor={c}"),
            None => format!("/api/crm/companies/{acme}/customers?limit=2"),
        };
        let page = app.get(&user, &path).await.expect(200);
        for item in page.body["items"].as_array().expect("items") {
            assert_eq!(item["company_id"], acme.as_str());
            seen.push(id_of(item));
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = mine.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let r = app
        .get(
            &user,
            &format!("/api/crm/companies/{acme}/customers?sort=name"),
        )
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["first_name"], "Emp0");
    assert_eq!(r.body["items"].as_array().expect("items").len(), 5);

    // The customer list's company filter agrees.
    let r = app
        .get(&user, &format!("/api/crm/customers?company={other}"))
        .await
        .expect(200);
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);

    let empty = id_of(&company(&app, &user, json!({"name": "Empty"})).await);
    let r = app
        .get(&user, &format!("/api/crm/companies/{empty}/customers"))
        .await
        .expect(200);
    assert_eq!(r.body, json!({"items": [], "next_cursor": null}));

    app.get(&user, &format!("/api/crm/companies/{}/customers", new_id()))
        .await
        .expect(404);
    app.get(&user, "/api/crm/companies/nope/customers")
        .await
        .expect(404);
    for bad in ["sort=email", "limit=0", "cursor=abc", "status=lead"] {
        app.get(&user, &format!("/api/crm/companies/{acme}/customers?{bad}"))
            .await
            .expect(400);
    }
}

/// Inserts a note row directly (the notes API is not under test here).
async fn insert_note(
    app: &App,
    tenant: &str,
    customer: Option<&str>,
    company: Option<&str>,
) -> String {
    let id = new_id();
    sqlx::query(
        "INSERT INTO notes (tenant_id, id, kind, body, customer_id, company_id, deal_id, \
         done, created_at, updated_at, version) \
         VALUES ($1, $2, 'note', 'text', $3, $4, NULL, 0, 0, 0, 1)",
    )
    .bind(tenant)
    .bind(&id)
    .bind(customer)
    .bind(company)
    .execute(app.db.writer())
    .await
    .expect("note");
    id
}

/// Inserts a deal row directly (the deals API is not under test here).
async fn insert_deal(app: &App, tenant: &str, company: &str) -> String {
    let id = new_id();
    sqlx::query(
        "INSERT INTO deals (tenant_id, id, title, title_key, value, currency, pipeline_id, \
         stage_id, status, company_id, custom, created_at, updated_at, version) \
         VALUES ($1, $2, 'Deal', 'deal', 100, 'EUR', $3, $4, 'open', $5, '{}', 0, 0, 1)",
    )
    .bind(tenant)
    .bind(&id)
    .bind(new_id())
    .bind(new_id())
    .bind(company)
    .execute(app.db.writer())
    .await
    .expect("deal");
    id
}

async fn column(app: &App, sql: &str, id: &str) -> Option<Option<String>> {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .bind(id)
        .fetch_optional(app.db.reader())
        .await
        .expect("query")
}

#[tokio::test]
async fn deleting_a_company_unlinks_its_records() {
    let app = spawn_app().await;
    let (tenant, admin, user) = app.tenant_with_people("acme").await;
    let acme = id_of(&company(&app, &user, json!({"name": "Acme"})).await);
    let keep = id_of(&company(&app, &user, json!({"name": "Keep"})).await);
    let worker = id_of(
        &app.customer(&user, json!({"first_name": "Worker", "company_id": acme}))
            .await,
    );
    let stays = id_of(
        &app.customer(&user, json!({"first_name": "Stays", "company_id": keep}))
            .await,
    );
    let deal = insert_deal(&app, &tenant, &acme).await;
    let only_company = insert_note(&app, &tenant, None, Some(&acme)).await;
    let shared = insert_note(&app, &tenant, Some(&worker), Some(&acme)).await;
    let other_note = insert_note(&app, &tenant, None, Some(&keep)).await;

    app.delete(&admin, &format!("/api/crm/companies/{acme}"))
        .await
        .expect(204);

    let got = app
        .get(&user, &format!("/api/crm/customers/{worker}"))
        .await
        .expect(200);
    assert_eq!(got.body["company_id"], Value::Null);
    assert_eq!(got.body["company_name"], Value::Null);
    let got = app
        .get(&user, &format!("/api/crm/customers/{stays}"))
        .await
        .expect(200);
    assert_eq!(got.body["company_id"], keep.as_str());
    assert_eq!(
        column(&app, "SELECT company_id FROM deals WHERE id = $1", &deal).await,
        Some(None),
        "the deal stays, without its company"
    );
    assert_eq!(
        column(
            &app,
            "SELECT company_id FROM notes WHERE id = $1",
            &only_company
        )
        .await,
        None,
        "a note only about the company goes with it"
    );
    assert_eq!(
        column(&app, "SELECT company_id FROM notes WHERE id = $1", &shared).await,
        Some(None),
        "a note also about a customer stays, without the company"
    );
    assert_eq!(
        column(
            &app,
            "SELECT company_id FROM notes WHERE id = $1",
            &other_note
        )
        .await,
        Some(Some(keep.clone()))
    );
    let r = app
        .get(&user, &format!("/api/crm/customers?company={acme}"))
        .await
        .expect(200);
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn another_tenants_company_is_not_found() {
    let app = spawn_app().await;
    let (_, _, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let id = id_of(
        &company(
            &app,
            &a,
            json!({"name": "Secret", "domain": "secret.example"}),
        )
        .await,
    );
    app.customer(&a, json!({"first_name": "Hidden", "company_id": id}))
        .await;
    let path = format!("/api/crm/companies/{id}");
    let before = app.row_counts().await;
    app.get(&b, &path).await.expect(404);
    app.get(&admin_b, &path).await.expect(404);
    app.patch(&b, &path, json!({"name": "Mine"}), Some("\"1\""))
        .await
        .expect(404);
    app.delete(&admin_b, &path).await.expect(404);
    app.get(&b, &format!("{path}/customers")).await.expect(404);
    // Nor can it be named as a customer's company.
    app.post(
        &b,
        "/api/crm/customers",
        json!({"first_name": "X", "company_id": id}),
    )
    .await
    .expect(422);
    assert_eq!(app.row_counts().await, before);
    for q in ["", "?q=secret", "?sort=name"] {
        let list = app
            .get(&b, &format!("/api/crm/companies{q}"))
            .await
            .expect(200);
        assert_eq!(list.body["items"], json!([]));
    }
    // Still there for its own tenant, unchanged; the superadmin reaches it with X-Tenant.
    let got = app.get(&a, &path).await.expect(200);
    assert_eq!(got.body["name"], "Secret");
    assert_eq!(got.body["version"], 1);
    app.get(&app.superadmin(Some("one")), &path)
        .await
        .expect(200);
    app.get(&app.superadmin(Some("two")), &path)
        .await
        .expect(404);
}

#[tokio::test]
async fn invalid_company_input_is_refused_and_writes_nothing() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let id = id_of(&company(&app, &user, json!({"name": "Acme"})).await);
    let path = format!("/api/crm/companies/{id}");
    let before = app.row_counts().await;

    for (body, code) in [
        (json!({}), 422),
        (json!({"name": ""}), 422),
        (json!({"name": "   "}), 422),
        (json!({"name": "x".repeat(201)}), 422),
        (json!({"name": "A\u{7}B"}), 422),
        (json!({"name": 5}), 422),
        (json!({"name": "A", "domain": "d".repeat(201)}), 422),
        (json!({"name": "A", "industry": "i".repeat(201)}), 422),
        (json!({"name": "A", "size": "s".repeat(201)}), 422),
        (json!({"name": "A", "address": "a".repeat(501)}), 422),
        (json!({"name": "A", "address": "line\nbreak"}), 422),
        (json!({"name": "A", "custom": {"unknown": 1}}), 422),
        (json!({"name": "A", "custom": []}), 422),
        (json!({"name": "A", "surprise": 1}), 422),
        (json!("A"), 422),
    ] {
        let r = app.post(&user, "/api/crm/companies", body.clone()).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
    }
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/companies",
            "application/json",
            "{nope",
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/companies",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 415);

    for (body, code) in [
        (json!({"name": "", "version": 1}), 422),
        (json!({"name": null, "version": 1}), 422),
        (json!({"address": "a".repeat(501), "version": 1}), 422),
        (json!({"industry": "\u{0}", "version": 1}), 422),
        (json!({"domain": 7}), 422),
        (json!({"custom": {"unknown": 1}, "version": 1}), 422),
        (json!({"custom": {"unknown": 1}}), 428),
        (json!({"id": "x"}), 422),
        (json!({"version": "one"}), 422),
        (json!({"name": "B"}), 428),
    ] {
        let r = app.patch(&user, &path, body.clone(), None).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
    }
    app.patch(&user, &path, json!({"name": "B"}), Some("nope"))
        .await
        .expect(400);
    app.patch(
        &user,
        &path,
        json!({"name": "B", "version": 2}),
        Some("\"1\""),
    )
    .await
    .expect(400);
    app.patch(&user, &path, json!({"name": "B"}), Some("\"7\""))
        .await
        .expect(409);
    app.patch(
        &user,
        "/api/crm/companies/not-an-id",
        json!({"name": "B"}),
        Some("\"1\""),
    )
    .await
    .expect(404);
    app.get(&user, "/api/crm/companies/not-an-id")
        .await
        .expect(404);
    app.delete(&admin, "/api/crm/companies/not-an-id")
        .await
        .expect(404);
    app.delete(&admin, &format!("/api/crm/companies/{}", new_id()))
        .await
        .expect(404);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &path,
        None,
        &[("if-match", "garbage")],
    )
    .await
    .expect(400);
    app.delete(&user, &path).await.expect(403);
    let anonymous = app
        .send(None, reqwest::Method::GET, "/api/crm/companies", None, &[])
        .await;
    assert_eq!(anonymous.status.as_u16(), 401);

    assert_eq!(app.row_counts().await, before);
    let got = app.get(&user, &path).await.expect(200);
    assert_eq!(got.body["name"], "Acme");
    assert_eq!(got.body["version"], 1);
    assert!(app.events_of("crm.company.updated").await.is_empty());
}
