//! Custom field definitions: each kind, validation of customer and company values against
//! them, who may configure them, their limits, and tenant isolation.

use platform::ids::new_id;
use serde_json::{json, Value};

use crate::common::{spawn_app, App, Reply, Who};

/// Defines a custom field and answers it (fails the test otherwise).
async fn define(app: &App, admin: &Who, body: Value) -> Value {
    app.post(admin, "/api/crm/fields", body)
        .await
        .expect(201)
        .body
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

/// The input fields a 422 names.
fn refused_fields(r: &Reply) -> Vec<String> {
    let details = &r.body["error"]["details"];
    match details["fields"].as_array() {
        Some(list) => list
            .iter()
            .map(|f| f["field"].as_str().expect("field").to_string())
            .collect(),
        None => vec![details["field"].as_str().expect("field").to_string()],
    }
}

/// Defines one customer field of every kind.
async fn every_kind(app: &App, admin: &Who) {
    for body in [
        json!({"entity": "customer", "name": "nickname", "label": "Nickname", "kind": "text"}),
        json!({"entity": "customer", "name": "score", "label": "Score", "kind": "number"}),
        json!({"entity": "customer", "name": "since", "label": "Customer since", "kind": "date"}),
        json!({"entity": "customer", "name": "vip", "label": "VIP", "kind": "boolean"}),
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "select",
               "options": ["gold", "silver"], "required": true}),
    ] {
        define(app, admin, body).await;
    }
}

#[tokio::test]
async fn fields_of_every_kind_validate_customer_values() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    every_kind(&app, &admin).await;

    let list = app
        .get(&user, "/api/crm/fields?entity=customer")
        .await
        .expect(200);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .expect("list")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["nickname", "score", "since", "tier", "vip"]);
    let tier = &list.body["items"][3];
    assert_eq!(tier["kind"], "select");
    assert_eq!(tier["options"], json!(["gold", "silver"]));
    assert_eq!(tier["required"], true);
    assert_eq!(list.body["items"][0]["options"], json!([]));
    assert_eq!(list.body["items"][0]["required"], false);
    let none = app
        .get(&user, "/api/crm/fields?entity=deal")
        .await
        .expect(200);
    assert_eq!(none.body["items"], json!([]));
    let all = app.get(&user, "/api/crm/fields").await.expect(200);
    assert_eq!(all.body["items"].as_array().expect("list").len(), 5);

    let before = app.row_counts().await;
    for (custom, field) in [
        (json!({"tier": "gold", "score": "high"}), "custom.score"),
        (json!({"tier": "gold", "score": true}), "custom.score"),
        (json!({"tier": "gold", "nickname": 5}), "custom.nickname"),
        (json!({"tier": "gold", "nickname": "  "}), "custom.nickname"),
        (
            json!({"tier": "gold", "nickname": "n".repeat(1001)}),
            "custom.nickname",
        ),
        (
            json!({"tier": "gold", "since": "2026-02-30"}),
            "custom.since",
        ),
        (
            json!({"tier": "gold", "since": "31.01.2026"}),
            "custom.since",
        ),
        (json!({"tier": "gold", "since": 20260131}), "custom.since"),
        (json!({"tier": "gold", "vip": "yes"}), "custom.vip"),
        (json!({"tier": "gold", "vip": 1}), "custom.vip"),
        (json!({"tier": "bronze"}), "custom.tier"),
        (json!({"tier": "Gold"}), "custom.tier"),
        (json!({"tier": ["gold"]}), "custom.tier"),
        (json!({}), "custom.tier"),
        (json!({"tier": null}), "custom.tier"),
        (json!({"tier": "gold", "unknown": 1}), "custom.unknown"),
    ] {
        let r = app
            .post(
                &user,
                "/api/crm/customers",
                json!({"first_name": "A", "custom": custom}),
            )
            .await
            .expect(422);
        assert_eq!(r.body["error"]["code"], "validation_failed");
        assert_eq!(refused_fields(&r), vec![field], "{custom}: {}", r.text);
    }
    // Every refusal at once.
    let r = app
        .post(
            &user,
            "/api/crm/customers",
            json!({"first_name": "A", "custom": {"score": "x", "vip": "y", "other": 1}}),
        )
        .await
        .expect(422);
    let mut fields = refused_fields(&r);
    fields.sort();
    assert_eq!(
        fields,
        vec!["custom.other", "custom.score", "custom.tier", "custom.vip"]
    );
    assert_eq!(app.row_counts().await, before);

    let created = app
        .customer(
            &user,
            json!({"first_name": "A", "custom": {"nickname": " Al ", "score": 4.5,
                   "since": "2026-01-31", "vip": false, "tier": "silver"}}),
        )
        .await;
    assert_eq!(
        created["custom"],
        json!({"nickname": "Al", "score": 4.5, "since": "2026-01-31", "vip": false,
               "tier": "silver"})
    );
    let path = format!("/api/crm/customers/{}", id_of(&created));
    // Changing values: null removes an optional one; a required one cannot be removed.
    let patched = app
        .patch(
            &user,
            &path,
            json!({"custom": {"score": null, "vip": true}}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(
        patched.body["custom"],
        json!({"nickname": "Al", "since": "2026-01-31", "vip": true, "tier": "silver"})
    );
    let r = app
        .patch(
            &user,
            &path,
            json!({"custom": {"tier": null}}),
            Some("\"2\""),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.tier"]);
    let r = app
        .patch(
            &user,
            &path,
            json!({"custom": {"score": "x"}}),
            Some("\"2\""),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.score"]);
}

#[tokio::test]
async fn company_fields_validate_company_values_only() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    define(
        &app,
        &admin,
        json!({"entity": "company", "name": "employees", "label": "Employees",
               "kind": "number", "required": true}),
    )
    .await;
    define(
        &app,
        &admin,
        json!({"entity": "customer", "name": "vip", "label": "VIP", "kind": "boolean"}),
    )
    .await;
    let before = app.row_counts().await;
    for (custom, field) in [
        (json!({}), "custom.employees"),
        (json!({"employees": "many"}), "custom.employees"),
        (json!({"employees": 5, "vip": true}), "custom.vip"),
    ] {
        let r = app
            .post(
                &user,
                "/api/crm/companies",
                json!({"name": "Acme", "custom": custom}),
            )
            .await
            .expect(422);
        assert_eq!(refused_fields(&r), vec![field], "{custom}: {}", r.text);
    }
    assert_eq!(app.row_counts().await, before);
    let company = app
        .post(
            &user,
            "/api/crm/companies",
            json!({"name": "Acme", "custom": {"employees": 120}}),
        )
        .await
        .expect(201);
    assert_eq!(company.body["custom"], json!({"employees": 120}));
    let path = format!("/api/crm/companies/{}", company.id());
    let r = app
        .patch(
            &user,
            &path,
            json!({"custom": {"employees": null}}),
            Some("\"1\""),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.employees"]);
    let patched = app
        .patch(
            &user,
            &path,
            json!({"custom": {"employees": 121}}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["custom"], json!({"employees": 121}));
    // The company field does not apply to customers.
    let r = app
        .post(
            &user,
            "/api/crm/customers",
            json!({"first_name": "A", "custom": {"employees": 3}}),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.employees"]);
    app.customer(&user, json!({"first_name": "A"})).await;
}

#[tokio::test]
async fn definitions_change_and_go_with_their_values() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let tier = define(
        &app,
        &admin,
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "select",
               "options": ["gold", "silver"]}),
    )
    .await;
    let tier_path = format!("/api/crm/fields/{}", id_of(&tier));
    let got = app.get(&user, &tier_path).await.expect(200);
    assert_eq!(got.body, tier);
    assert_eq!(got.etag(), "\"1\"");

    let with = app
        .customer(
            &user,
            json!({"first_name": "With", "custom": {"tier": "gold"}}),
        )
        .await;
    let without = app.customer(&user, json!({"first_name": "Without"})).await;

    // Label, options and required change; the version guards the change.
    app.patch(&admin, &tier_path, json!({"label": "Level"}), None)
        .await
        .expect(428);
    let patched = app
        .patch(
            &admin,
            &tier_path,
            json!({"label": " Level ", "options": ["gold", "platinum"], "required": true}),
            Some("\"1\""),
        )
        .await
        .expect(200);
    assert_eq!(patched.body["label"], "Level");
    assert_eq!(patched.body["options"], json!(["gold", "platinum"]));
    assert_eq!(patched.body["required"], true);
    assert_eq!(patched.body["version"], 2);
    assert_eq!(patched.body["name"], "tier");
    assert_eq!(
        app.get(&user, &tier_path).await.expect(200).body,
        patched.body
    );
    let stale = app
        .patch(
            &admin,
            &tier_path,
            json!({"label": "X", "version": 1}),
            None,
        )
        .await
        .expect(409);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);

    // Required applies on the next write of each record; removed options on the next
    // write of that value.
    let without_path = format!("/api/crm/customers/{}", id_of(&without));
    let r = app
        .patch(
            &user,
            &without_path,
            json!({"last_name": "Later"}),
            Some("\"1\""),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.tier"]);
    app.patch(
        &user,
        &without_path,
        json!({"custom": {"tier": "silver"}}),
        Some("\"1\""),
    )
    .await
    .expect(422);
    app.patch(
        &user,
        &without_path,
        json!({"custom": {"tier": "platinum"}}),
        Some("\"1\""),
    )
    .await
    .expect(200);
    let r = app
        .post(&user, "/api/crm/customers", json!({"first_name": "New"}))
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.tier"]);

    // Deleting the definition (admins, If-Match honored) removes its values everywhere.
    app.delete(&user, &tier_path).await.expect(403);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &tier_path,
        None,
        &[("if-match", "\"1\"")],
    )
    .await
    .expect(409);
    app.delete(&admin, &tier_path).await.expect(204);
    app.get(&user, &tier_path).await.expect(404);
    app.delete(&admin, &tier_path).await.expect(404);
    let with_path = format!("/api/crm/customers/{}", id_of(&with));
    let got = app.get(&user, &with_path).await.expect(200);
    assert_eq!(got.body["custom"], json!({}));
    assert_eq!(
        got.body["version"], 2,
        "the content changed, so did the version"
    );
    let got = app.get(&user, &without_path).await.expect(200);
    assert_eq!(got.body["custom"], json!({}));

    // A new field of the same name and another kind starts empty.
    define(
        &app,
        &admin,
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "number"}),
    )
    .await;
    let got = app.get(&user, &with_path).await.expect(200);
    assert_eq!(got.body["custom"], json!({}));
    app.patch(
        &user,
        &with_path,
        json!({"custom": {"tier": 3}}),
        Some("\"2\""),
    )
    .await
    .expect(200);

    assert_eq!(app.events_of("crm.field.created").await.len(), 2);
    let updated = app.events_of("crm.field.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0].data["changed"],
        json!(["label", "options", "required"])
    );
    let deleted = app.events_of("crm.field.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].data["cleared"], 2);
    assert_eq!(deleted[0].actor.id.as_deref(), Some(admin.user_id.as_str()));
}

#[tokio::test]
async fn only_admins_configure_fields() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let body = json!({"entity": "customer", "name": "vip", "label": "VIP", "kind": "boolean"});
    let before = app.row_counts().await;
    app.post(&user, "/api/crm/fields", body.clone())
        .await
        .expect(403);
    assert_eq!(app.row_counts().await, before);
    let field = define(&app, &admin, body).await;
    let path = format!("/api/crm/fields/{}", id_of(&field));
    app.patch(&user, &path, json!({"label": "Very"}), Some("\"1\""))
        .await
        .expect(403);
    app.delete(&user, &path).await.expect(403);
    // Members read them.
    app.get(&user, &path).await.expect(200);
    let list = app.get(&user, "/api/crm/fields").await.expect(200);
    assert_eq!(list.body["items"].as_array().expect("list").len(), 1);
    assert_eq!(app.get(&user, &path).await.expect(200).body, field);
    // The superadmin configures with X-Tenant.
    let root = app.superadmin(Some("acme"));
    app.patch(&root, &path, json!({"label": "Very"}), Some("\"1\""))
        .await
        .expect(200);
    app.delete(&root, &path).await.expect(204);
}

#[tokio::test]
async fn definitions_belong_to_their_tenant() {
    let app = spawn_app().await;
    let (_, admin_a, a) = app.tenant_with_people("one").await;
    let (_, admin_b, b) = app.tenant_with_people("two").await;
    let field = define(
        &app,
        &admin_a,
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "select",
               "options": ["gold"], "required": true}),
    )
    .await;
    let path = format!("/api/crm/fields/{}", id_of(&field));
    let before = app.row_counts().await;
    app.get(&b, &path).await.expect(404);
    app.patch(&admin_b, &path, json!({"label": "Mine"}), Some("\"1\""))
        .await
        .expect(404);
    app.delete(&admin_b, &path).await.expect(404);
    assert_eq!(app.row_counts().await, before);
    let list = app.get(&b, "/api/crm/fields").await.expect(200);
    assert_eq!(list.body["items"], json!([]));
    // Tenant two neither needs nor accepts tenant one's field.
    app.customer(&b, json!({"first_name": "Free"})).await;
    let r = app
        .post(
            &b,
            "/api/crm/customers",
            json!({"first_name": "X", "custom": {"tier": "gold"}}),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["custom.tier"]);
    app.post(&a, "/api/crm/customers", json!({"first_name": "Y"}))
        .await
        .expect(422);
    // The same name may be defined in tenant two, with another kind.
    define(
        &app,
        &admin_b,
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "number"}),
    )
    .await;
    app.customer(&b, json!({"first_name": "Z", "custom": {"tier": 2}}))
        .await;
    let got = app.get(&a, &path).await.expect(200);
    assert_eq!(got.body, field);
}

#[tokio::test]
async fn invalid_definitions_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("acme").await;
    let text = define(
        &app,
        &admin,
        json!({"entity": "customer", "name": "nickname", "label": "Nickname", "kind": "text"}),
    )
    .await;
    let select = define(
        &app,
        &admin,
        json!({"entity": "deal", "name": "source", "label": "Source", "kind": "select",
               "options": ["web", "fair"]}),
    )
    .await;
    let before = app.row_counts().await;
    let ok = |over: Value| {
        let mut body =
            json!({"entity": "company", "name": "rating", "label": "Rating", "kind": "number"});
        for (k, v) in over.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    for (body, code) in [
        (json!({}), 422),
        (ok(json!({"entity": "invoice"})), 422),
        (ok(json!({"kind": "money"})), 422),
        (ok(json!({"name": ""})), 422),
        (ok(json!({"name": "Rating"})), 422),
        (ok(json!({"name": "2fast"})), 422),
        (ok(json!({"name": "with-dash"})), 422),
        (ok(json!({"name": "a".repeat(51)})), 422),
        (ok(json!({"label": ""})), 422),
        (ok(json!({"label": "l".repeat(201)})), 422),
        (ok(json!({"required": "yes"})), 422),
        (ok(json!({"options": ["a"]})), 422),
        (ok(json!({"kind": "select"})), 422),
        (ok(json!({"kind": "select", "options": []})), 422),
        (ok(json!({"kind": "select", "options": ["a", "a"]})), 422),
        (ok(json!({"kind": "select", "options": ["a", " a "]})), 422),
        (ok(json!({"kind": "select", "options": [""]})), 422),
        (
            ok(json!({"kind": "select", "options": ["o".repeat(101)]})),
            422,
        ),
        (
            ok(
                json!({"kind": "select", "options": (0..51).map(|i| i.to_string()).collect::<Vec<_>>()}),
            ),
            422,
        ),
        (ok(json!({"kind": "select", "options": [1]})), 422),
        (ok(json!({"surprise": 1})), 422),
        (ok(json!({"entity": "customer", "name": "nickname"})), 409),
        (
            ok(
                json!({"entity": "customer", "name": "nickname", "kind": "select",
                      "options": ["x"]}),
            ),
            409,
        ),
    ] {
        let r = app.post(&admin, "/api/crm/fields", body.clone()).await;
        assert_eq!(r.status.as_u16(), code, "{body}: {}", r.text);
        if code == 409 {
            assert_eq!(r.body["error"]["code"], "field_exists");
        }
    }
    // All refusals of one body are named together.
    let r = app
        .post(
            &admin,
            "/api/crm/fields",
            ok(json!({"name": "X", "label": "", "options": ["a"]})),
        )
        .await
        .expect(422);
    let mut fields = refused_fields(&r);
    fields.sort();
    assert_eq!(fields, vec!["label", "name", "options"]);

    let text_path = format!("/api/crm/fields/{}", id_of(&text));
    let select_path = format!("/api/crm/fields/{}", id_of(&select));
    for (path, body, code) in [
        (&text_path, json!({"name": "other", "version": 1}), 422),
        (&text_path, json!({"entity": "company", "version": 1}), 422),
        (&text_path, json!({"kind": "number", "version": 1}), 422),
        (&text_path, json!({"kind": null, "version": 1}), 422),
        (&text_path, json!({"options": ["a"], "version": 1}), 422),
        (&text_path, json!({"label": "", "version": 1}), 422),
        (&text_path, json!({"label": 5, "version": 1}), 422),
        (&text_path, json!({"required": "no", "version": 1}), 422),
        (&text_path, json!({"surprise": 1, "version": 1}), 422),
        (&text_path, json!({"label": "New"}), 428),
        (&text_path, json!({"label": "New", "version": 9}), 409),
        (&select_path, json!({"options": [], "version": 1}), 422),
        (
            &select_path,
            json!({"options": ["x", "x"], "version": 1}),
            422,
        ),
    ] {
        let r = app.patch(&admin, path, body.clone(), None).await;
        assert_eq!(r.status.as_u16(), code, "{path} {body}: {}", r.text);
    }
    app.patch(&admin, &text_path, json!({"label": "New"}), Some("bad"))
        .await
        .expect(400);
    app.patch(
        &admin,
        "/api/crm/fields/not-an-id",
        json!({"label": "New"}),
        Some("\"1\""),
    )
    .await
    .expect(404);
    app.get(&user, "/api/crm/fields/not-an-id")
        .await
        .expect(404);
    app.get(&user, &format!("/api/crm/fields/{}", new_id()))
        .await
        .expect(404);
    app.delete(&admin, "/api/crm/fields/not-an-id")
        .await
        .expect(404);
    app.send(
        Some(&admin),
        reqwest::Method::DELETE,
        &text_path,
        None,
        &[("if-match", "bad")],
    )
    .await
    .expect(400);
    for bad in ["entity=invoice", "entity=", "unknown=1"] {
        app.get(&user, &format!("/api/crm/fields?{bad}"))
            .await
            .expect(400);
    }
    let r = app
        .send_raw(
            &admin,
            reqwest::Method::POST,
            "/api/crm/fields",
            "application/json",
            "{nope",
        )
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = app
        .send_raw(
            &admin,
            reqwest::Method::POST,
            "/api/crm/fields",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(r.status.as_u16(), 415);

    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.get(&user, &text_path).await.expect(200).body, text);
    assert_eq!(app.get(&user, &select_path).await.expect(200).body, select);
    assert!(app.events_of("crm.field.updated").await.is_empty());
}

#[tokio::test]
async fn at_most_fifty_fields_per_record_type() {
    let app = spawn_app().await;
    let (_, admin, _) = app.tenant_with_people("acme").await;
    for i in 0..50 {
        define(
            &app,
            &admin,
            json!({"entity": "deal", "name": format!("f{i}"), "label": "F", "kind": "text"}),
        )
        .await;
    }
    let before = app.row_counts().await;
    let r = app
        .post(
            &admin,
            "/api/crm/fields",
            json!({"entity": "deal", "name": "f50", "label": "F", "kind": "text"}),
        )
        .await
        .expect(422);
    assert_eq!(refused_fields(&r), vec!["entity"]);
    assert_eq!(app.row_counts().await, before);
    // Other record types have their own allowance.
    define(
        &app,
        &admin,
        json!({"entity": "company", "name": "f50", "label": "F", "kind": "text"}),
    )
    .await;
    let list = app
        .get(&admin, "/api/crm/fields?entity=deal")
        .await
        .expect(200);
    assert_eq!(list.body["items"].as_array().expect("list").len(), 50);
}
