//! The tenant list: every item carries the tenant's whole summary, and every numeric summary
//! column orders the list, both ways, in keyset pages that neither repeat nor skip a tenant.

use std::sync::Arc;

use platform::events::{Actor, Event, EventHandler};
use platform::ids::{new_id, Timestamp};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{spawn_app, App};

/// The summary column each numeric sort key orders by (`users` is `users_total`'s alias).
const ORDERS: &[(&str, &str)] = &[
    ("users_total", "users_total"),
    ("users", "users_total"),
    ("users_active", "users_active"),
    ("logins_24h", "logins_24h"),
    ("customers", "customers"),
    ("companies", "companies"),
    ("open_deals", "open_deals"),
    ("content_items", "content_items"),
    ("analytics_events", "analytics_events"),
];

fn event(kind: &str, tenant: &str, data: Value) -> Event {
    let source = kind.split('.').next().unwrap_or("test");
    Event::new(
        source,
        kind,
        Some(tenant),
        &new_id(),
        &Actor::system("test"),
        data,
    )
}

/// Applies `n` events made by `make` for `tenant`.
async fn apply(agg: &Arc<dyn EventHandler>, n: i64, make: impl Fn() -> Event) {
    for _ in 0..n {
        agg.handle(&make()).await.expect("applied");
    }
}

/// Nine tenants whose columns take values with ties (0, 1 or 2 in different patterns), the
/// CMS and analytics slots left `null` for some.
async fn populate(app: &App) -> Vec<String> {
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id");
    let agg = app.cdx.consumer();
    let mut tenants = Vec::new();
    for i in 0..9_i64 {
        let t = app.tenant(&format!("t{i}"), client_id).await;
        let id = t["id"].as_str().expect("id").to_string();
        let user = |status: &'static str| {
            let id = id.clone();
            move || event("auth.user.created", &id, json!({ "status": status }))
        };
        apply(&agg, i % 3, user("active")).await;
        apply(&agg, (i / 3) % 3, user("disabled")).await;
        apply(&agg, (i * 2) % 3, || {
            event(
                "auth.login.succeeded",
                &id,
                json!({ "session_id": new_id() }),
            )
        })
        .await;
        apply(&agg, (i + 1) % 3, || {
            event("crm.customer.created", &id, json!({}))
        })
        .await;
        apply(&agg, (i + 2) % 3, || {
            event("crm.company.created", &id, json!({}))
        })
        .await;
        apply(&agg, i % 2, || {
            event(
                "crm.deal.created",
                &id,
                json!({ "status": "open", "value": 100 * (i + 1), "currency": "EUR" }),
            )
        })
        .await;
        if i % 3 != 0 {
            apply(&agg, i % 2 + 1, || {
                event("cms.item.created", &id, json!({}))
            })
            .await;
        }
        if i % 4 != 0 {
            apply(&agg, 1, || {
                event(
                    "analytics.events.counted",
                    &id,
                    json!({ "count": (i % 3) * 10 }),
                )
            })
            .await;
        }
        tenants.push(id);
    }
    tenants
}

/// The value a tenant's summary column orders by: a `null` slot as 0.
fn order_value(item: &Value, column: &str) -> i64 {
    item["summary"][column].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn every_numeric_column_orders_the_list_both_ways_with_gap_free_pages() {
    let app = spawn_app().await;
    let tenants = populate(&app).await;
    let mut by_id = tenants.clone();
    by_id.sort();

    for (key, column) in ORDERS {
        for descending in [false, true] {
            let sort = if descending {
                format!("-{key}")
            } else {
                key.to_string()
            };
            let (items, pages) = app
                .collect(&format!("/api/cdx/tenants?sort={sort}"), 2)
                .await;
            assert_eq!(pages, 5, "{sort}: nine tenants in pages of two");
            let mut ids = crate::common::ids(&items);
            let listed: Vec<(i64, String)> = items
                .iter()
                .map(|item| (order_value(item, column), item["id"].to_string()))
                .collect();
            // Ordered by the column, ties by id, all in the asked direction.
            let mut expected = listed.clone();
            expected.sort();
            if descending {
                expected.reverse();
            }
            assert_eq!(listed, expected, "{sort}");
            let distinct: std::collections::BTreeSet<i64> =
                listed.iter().map(|(value, _)| *value).collect();
            assert!(
                distinct.len() > 1 && distinct.len() < 9,
                "{sort}: values with ties {listed:?}"
            );
            ids.sort();
            assert_eq!(ids, by_id, "{sort}: every tenant exactly once");
        }
    }
}

#[tokio::test]
async fn list_items_carry_the_summary_of_the_summary_endpoint() {
    let app = spawn_app().await;
    populate(&app).await;
    let (items, _) = app.collect("/api/cdx/tenants", 50).await;
    assert_eq!(items.len(), 9);
    for item in &items {
        let id = item["id"].as_str().expect("id");
        let reply = app.get(&format!("/api/cdx/tenants/{id}/summary")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let mut summary = reply.body;
        let summary = summary.as_object_mut().expect("object");
        for tenant_field in ["tenant_id", "slug", "name", "status", "updated_at"] {
            summary.remove(tenant_field);
        }
        assert_eq!(&item["summary"], &Value::Object(summary.clone()), "{id}");
    }
    // t1: one open deal of 200 EUR, logins in the window, a `null` analytics slot (t0, t4, t8).
    let t1 = &items[1]["summary"];
    assert_eq!(
        t1["pipeline"],
        json!([{ "currency": "EUR", "open_value": 200 }])
    );
    assert_eq!(t1["logins_24h"], 2);
    assert_eq!(items[0]["summary"]["pipeline"], json!([]));
    assert!(items[4]["summary"]["analytics_events"].is_null());
    assert!(items[0]["summary"]["content_items"].is_null());
}

#[tokio::test]
async fn an_unknown_sort_is_refused_naming_every_allowed_key() {
    let app = spawn_app().await;
    for bad in ["bogus", "-id", "plan", "pipeline", "logins"] {
        let reply = app.get(&format!("/api/cdx/tenants?sort={bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
        let error = &reply.body["error"];
        assert_eq!(error["code"], "invalid_sort");
        let allowed: Vec<&str> = error["details"]["allowed"]
            .as_array()
            .expect("allowed keys")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for (key, _) in ORDERS {
            assert!(allowed.contains(key), "{key} missing from {allowed:?}");
            let message = error["message"].as_str().expect("message");
            assert!(message.contains(key), "{message}");
        }
        assert!(allowed.contains(&"name") && allowed.contains(&"created"));
    }
}

async fn logins_24h(app: &App, tenant: &str) -> Value {
    let reply = app.get(&format!("/api/cdx/tenants/{tenant}/summary")).await;
    reply.body["logins_24h"].clone()
}

#[tokio::test]
async fn logins_leave_the_24_hour_count_as_they_turn_a_day_old() {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    let tenant = app.tenant("acme", client["id"].as_str().expect("id")).await;
    let tenant = tenant["id"].as_str().expect("id").to_string();
    let agg = app.cdx.consumer();
    let login_at = |ago_ms: i64| {
        let mut login = event(
            "auth.login.succeeded",
            &tenant,
            json!({ "session_id": new_id() }),
        );
        login.occurred_at = Timestamp(Timestamp::now().millis() - ago_ms);
        login
    };
    const DAY: i64 = 86_400_000;
    let logins = [login_at(DAY + 60_000), login_at(DAY - 1_500), login_at(0)];
    let batch: Vec<&Event> = logins.iter().collect();
    agg.handle_batch(&batch).await.expect("applied");
    assert_eq!(
        logins_24h(&app, &tenant).await,
        2,
        "the day-old login never counted"
    );
    // Redelivered, they count once.
    agg.handle_batch(&batch).await.expect("applied");
    assert_eq!(logins_24h(&app, &tenant).await, 2);

    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    app.cdx.expire_logins().await.expect("expired");
    assert_eq!(
        logins_24h(&app, &tenant).await,
        1,
        "the login that turned a day old left"
    );
    let listed = app.get("/api/cdx/tenants?sort=-logins_24h").await;
    assert_eq!(listed.body["items"][0]["summary"]["logins_24h"], 1);
}
