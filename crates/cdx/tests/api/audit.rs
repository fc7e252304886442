//! The audit log and the service registry.

use platform::events::{Actor, Event};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{ids, spawn_app};

#[tokio::test]
async fn audit_log_records_every_action_with_filters() {
    let app = spawn_app().await;
    let started = platform::ids::Timestamp::now().plus_secs(-1).to_rfc3339();
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id");
    app.patch(
        &format!("/api/cdx/clients/{client_id}"),
        json!({ "name": "Acme Corp" }),
        None,
    )
    .await;
    let tenant = app.tenant("acme", client_id).await;
    let tenant_id = tenant["id"].as_str().expect("id");
    app.patch(
        "/api/cdx/tenants/acme",
        json!({ "status": "suspended" }),
        None,
    )
    .await;
    let other = app.tenant("other", client_id).await;
    app.delivered().await;

    let all = app.get("/api/cdx/audit").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let items = all.body["items"].as_array().expect("items");
    let actions: Vec<&str> = items
        .iter()
        .map(|i| i["action"].as_str().expect("action"))
        .collect();
    assert_eq!(
        actions,
        vec![
            "cdx.tenant.created",
            "cdx.tenant.updated",
            "cdx.tenant.created",
            "cdx.client.updated",
            "cdx.client.created",
            "cdx.admin.created",
        ],
        "newest first"
    );
    let mut sorted = ids(items);
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids(items), sorted);

    let suspended = &items[1];
    assert_eq!(suspended["target"], tenant_id);
    assert_eq!(suspended["tenant_id"], tenant_id);
    assert_eq!(suspended["actor"]["id"], app.admin_id.as_str());
    assert_eq!(suspended["actor"]["role"], "superadmin");
    assert_eq!(suspended["ip"], "127.0.0.1");
    assert!(suspended["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert_eq!(suspended["detail"]["status"], "suspended");
    assert_eq!(suspended["detail"]["slug"], "acme");
    assert_eq!(suspended["detail"]["changed"], json!(["status"]));
    assert_eq!(
        items[3]["detail"],
        json!({ "name": "Acme Corp", "changed": ["name"] })
    );
    assert_eq!(items[5]["actor"]["role"], "system");
    assert_eq!(items[5]["detail"], json!({ "username": "root" }));
    assert!(items[0]["occurred_at"]
        .as_str()
        .expect("time")
        .ends_with('Z'));

    let tenants = app.get("/api/cdx/audit?action=cdx.tenant.*").await;
    let tenants = tenants.body["items"].as_array().expect("items").clone();
    assert_eq!(tenants.len(), 3);
    assert!(tenants
        .iter()
        .all(|i| i["action"].as_str().expect("a").starts_with("cdx.tenant.")));
    let exact = app.get("/api/cdx/audit?action=cdx.tenant.updated").await;
    assert_eq!(exact.body["items"].as_array().expect("items").len(), 1);
    let of_tenant = app.get(&format!("/api/cdx/audit?tenant={tenant_id}")).await;
    let of_tenant = of_tenant.body["items"].as_array().expect("items").clone();
    assert_eq!(of_tenant.len(), 2);
    assert!(of_tenant.iter().all(|i| i["tenant_id"] == tenant_id));
    let of_other = app
        .get(&format!(
            "/api/cdx/audit?tenant={}",
            other["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(of_other.body["items"].as_array().expect("items").len(), 1);
    let by_admin = app
        .get(&format!(
            "/api/cdx/audit?actor={}&action=cdx.*",
            app.admin_id
        ))
        .await;
    assert_eq!(by_admin.body["items"].as_array().expect("items").len(), 5);

    let window = app.get(&format!("/api/cdx/audit?from={started}")).await;
    assert_eq!(window.body["items"].as_array().expect("items").len(), 6);
    let future = platform::ids::Timestamp::now().plus_secs(3600).to_rfc3339();
    let later = app.get(&format!("/api/cdx/audit?from={future}")).await;
    assert_eq!(later.body["items"], json!([]));
    let earlier = app.get(&format!("/api/cdx/audit?to={started}")).await;
    assert_eq!(earlier.body["items"], json!([]));

    let (paged, pages) = app.collect("/api/cdx/audit", 4).await;
    assert_eq!((ids(&paged), pages), (ids(items), 2));

    for bad in [
        "from=yesterday",
        "to=2025-13-01",
        "action=AUTH",
        "action=a*b",
        "cursor=%21",
    ] {
        let reply = app.get(&format!("/api/cdx/audit?{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
    }

    // At-least-once delivery: the same event twice is still one entry.
    let event = Event::new(
        "auth",
        "auth.login.succeeded",
        Some(tenant_id),
        "u1",
        &Actor::system("t"),
        json!({}),
    );
    app.bus.publish(&event).await.expect("deliver");
    app.bus.publish(&event).await.expect("redeliver");
    let logins = app.get("/api/cdx/audit?action=auth.login.*").await;
    assert_eq!(
        ids(logins.body["items"].as_array().expect("items")),
        vec![event.id.clone()]
    );
}

#[tokio::test]
async fn services_registry_reports_health() {
    let app = spawn_app().await;
    app.cdx
        .register_service("cdx", "0.1.0", "http://127.0.0.1:3001")
        .await
        .expect("register");
    app.cdx
        .register_service("auth", "0.1.0", "http://127.0.0.1:3003")
        .await
        .expect("register");
    app.cdx
        .register_service("auth", "0.2.0", "http://127.0.0.1:3003")
        .await
        .expect("upsert");
    app.cdx.record_health("auth", true).await.expect("health");
    app.cdx.record_health("cdx", false).await.expect("health");
    let unknown = app
        .cdx
        .record_health("nope", true)
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.status.as_u16(), 404);

    let reply = app.get("/api/cdx/services").await;
    assert_eq!(reply.status, StatusCode::OK);
    let items = reply.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["name"], "auth");
    assert_eq!(items[0]["version"], "0.2.0");
    assert_eq!(items[0]["status"], "up");
    assert!(items[0]["last_checked_at"]
        .as_str()
        .expect("time")
        .ends_with('Z'));
    assert_eq!(items[1]["status"], "down");
}
