//! Customers: CRUD, validation, optimistic concurrency, filters, search, sort and paging.

use serde_json::{json, Value};

use crate::common::spawn_app;

#[tokio::test]
async fn customer_crud_round_trip() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;

    let created = app
        .post(
            &user,
            "/api/crm/customers",
            json!({"first_name": " Ada ", "last_name": "Lovelace", "email": "Ada@Example.com",
                   "phone": "+44 20 1234", "tags": ["VIP", "vip", "b2b"], "status": "prospect"}),
        )
        .await
        .expect(201);
    let id = created.id();
    assert_eq!(created.body["first_name"], "Ada");
    assert_eq!(created.body["email"], "ada@example.com");
    assert_eq!(created.body["tags"], json!(["vip", "b2b"]));
    assert_eq!(created.body["owner_id"], user.user_id.as_str());
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.etag(), "\"1\"");

    let got = app
        .get(&user, &format!("/api/crm/customers/{id}"))
        .await
        .expect(200);
    assert_eq!(got.body, created.body);

    // PATCH needs the version it is based on.
    app.patch(
        &user,
        &format!("/api/crm/customers/{id}"),
        json!({"status": "customer"}),
        None,
    )
    .await
    .expect(428);
    let patched = app
        .patch(
            &user,
            &format!("/api/crm/customers/{id}"),
            json!({"status": "customer", "phone": null}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["status"], "customer");
    assert_eq!(patched.body["phone"], Value::Null);
    assert_eq!(patched.body["version"], 2);

    // A stale version is refused with the current one.
    let stale = app
        .patch(
            &user,
            &format!("/api/crm/customers/{id}"),
            json!({"last_name": "X", "version": 1}),
            None,
        )
        .await
        .expect(409);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);

    // Users may not delete; admins may.
    app.delete(&user, &format!("/api/crm/customers/{id}"))
        .await
        .expect(403);
    app.delete(&admin, &format!("/api/crm/customers/{id}"))
        .await
        .expect(204);
    app.get(&user, &format!("/api/crm/customers/{id}"))
        .await
        .expect(404);

    let created_events = app.events_of("crm.customer.created").await;
    assert_eq!(created_events.len(), 1);
    assert_eq!(
        created_events[0].actor.id.as_deref(),
        Some(user.user_id.as_str())
    );
    assert!(
        created_events[0]
            .data
            .to_string()
            .find("ada@example.com")
            .is_none(),
        "events carry field names, not personal data"
    );
    let updated = app.events_of("crm.customer.updated").await;
    assert_eq!(updated[0].data["changed"], json!(["phone", "status"]));
    assert_eq!(app.events_of("crm.customer.deleted").await.len(), 1);
}

#[tokio::test]
async fn emails_are_unique_per_tenant_only() {
    let app = spawn_app().await;
    let (_, _, a) = app.tenant_with_people("one").await;
    let (_, _, b) = app.tenant_with_people("two").await;
    let body = json!({"first_name": "Sam", "email": "sam@example.com"});
    app.customer(&a, body.clone()).await;
    app.post(
        &a,
        "/api/crm/customers",
        json!({"first_name": "Other", "email": "SAM@example.com"}),
    )
    .await
    .expect(409);
    app.customer(&b, body).await;
    // Customers without email never collide.
    app.customer(&a, json!({"first_name": "No"})).await;
    app.customer(&a, json!({"first_name": "Mail"})).await;
}

#[tokio::test]
async fn invalid_customers_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let before = app.row_counts().await;
    for (body, code) in [
        (json!({}), 422),
        (json!({"first_name": ""}), 422),
        (json!({"first_name": "x".repeat(201)}), 422),
        (json!({"first_name": "A", "email": "not-an-email"}), 422),
        (json!({"first_name": "A", "status": "vip"}), 422),
        (json!({"first_name": "A", "phone": "call me"}), 422),
        (json!({"first_name": "A", "company_id": "nope"}), 422),
        (
            json!({"first_name": "A", "company_id": platform::ids::new_id()}),
            422,
        ),
        (
            json!({"first_name": "A", "owner_id": platform::ids::new_id()}),
            422,
        ),
        (json!({"first_name": "A", "tags": ["a,b"]}), 422),
        (json!({"first_name": "A", "custom": {"unknown": 1}}), 422),
        (json!({"first_name": "A", "surprise": 1}), 422),
        (json!({"first_name": 5}), 422),
    ] {
        let r = app.post(&user, "/api/crm/customers", body.clone()).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
    }
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/customers",
            "application/json",
            "{nope",
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = app
        .send_raw(
            &user,
            reqwest::Method::POST,
            "/api/crm/customers",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 415);
    assert_eq!(app.row_counts().await, before);
}

#[tokio::test]
async fn another_tenants_customer_is_not_found() {
    let app = spawn_app().await;
    let (_, _, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let id = app.customer(&a, json!({"first_name": "Secret"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let path = format!("/api/crm/customers/{id}");
    app.get(&b, &path).await.expect(404);
    app.patch(&b, &path, json!({"first_name": "Mine"}), Some("\"1\""))
        .await
        .expect(404);
    app.delete(&admin_b, &path).await.expect(404);
    let list = app.get(&b, "/api/crm/customers").await.expect(200);
    assert_eq!(list.body["items"], json!([]));
    // A tenant user cannot name another tenant; the superadmin can.
    let mut sneaky = b.clone();
    sneaky.x_tenant = Some("one".into());
    app.get(&sneaky, &path).await.expect(403);
    let root = app.superadmin(Some("one"));
    app.get(&root, &path).await.expect(200);
    app.get(&app.superadmin(None), &path).await.expect(400);
}

#[tokio::test]
async fn lists_filter_search_sort_and_page_without_gaps() {
    let app = spawn_app().await;
    let (_, _, user) = app.tenant_with_people("acme").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let status = if i % 5 == 0 { "customer" } else { "lead" };
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!([])
        };
        let c = app
            .customer(
                &user,
                json!({"first_name": format!("Person{i:02}"), "last_name": "Test",
                       "email": format!("p{i}@example.com"), "status": status, "tags": tags}),
            )
            .await;
        ids.push(c["id"].as_str().expect("id").to_string());
    }
    let count = |v: &Value| v["items"].as_array().expect("items").len();
    let r = app
        .get(&user, "/api/crm/customers?status=customer")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 5);
    let r = app
        .get(&user, "/api/crm/customers?tag=EVEN")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 13);
    let r = app
        .get(&user, "/api/crm/customers?q=person1")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 10);
    let r = app
        .get(&user, "/api/crm/customers?q=P3%40EXAMPLE")
        .await
        .expect(200);
    assert_eq!(count(&r.body), 1);
    let r = app.get(&user, "/api/crm/customers?q=%25").await.expect(200);
    assert_eq!(count(&r.body), 0, "LIKE wildcards are literal");
    let r = app
        .get(&user, "/api/crm/customers?sort=name&limit=3")
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["first_name"], "Person00");
    let r = app
        .get(&user, "/api/crm/customers?sort=-name&limit=3")
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["first_name"], "Person24");

    // Page newest first while new customers arrive: no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/crm/customers?limit=4&cursor={c}"),
            None => "/api/crm/customers?limit=4".to_string(),
        };
        let page = app.get(&user, &path).await.expect(200);
        for item in page.body["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        app.customer(&user, json!({"first_name": format!("Late{extra}")}))
            .await;
        extra += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    for bad in [
        "sort=email",
        "limit=0",
        "limit=501",
        "cursor=abc",
        "status=vip",
        "owner=x",
        "created_from=yesterday",
        "unknown=1",
    ] {
        app.get(&user, &format!("/api/crm/customers?{bad}"))
            .await
            .expect(400);
    }
}
