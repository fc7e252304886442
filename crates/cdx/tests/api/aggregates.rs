//! The aggregates, fed with synthetic events through the consumer and read over HTTP.

use std::sync::Arc;

use platform::events::{Actor, Event, EventHandler};
use platform::ids::new_id;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::{spawn_app, App};

fn event(source: &str, kind: &str, tenant: &str, aggregate: &str, data: Value) -> Event {
    Event::new(
        source,
        kind,
        Some(tenant),
        aggregate,
        &Actor::system("test"),
        data,
    )
}

fn deal(kind: &str, tenant: &str, id: &str, status: &str, value: i64, currency: &str) -> Event {
    event(
        "crm",
        &format!("crm.deal.{kind}"),
        tenant,
        id,
        json!({ "changed": [], "status": status, "value": value, "currency": currency }),
    )
}

async fn summary(app: &App, tenant: &str) -> Value {
    let reply = app.get(&format!("/api/cdx/tenants/{tenant}/summary")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

async fn setup() -> (App, Arc<dyn EventHandler>, String, String) {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id").to_string();
    let tenant = app.tenant("acme", &client_id).await;
    let aggregates = app.cdx.consumer();
    (
        app,
        aggregates,
        tenant["id"].as_str().expect("id").to_string(),
        client_id,
    )
}

#[tokio::test]
async fn counters_follow_events_and_an_event_counts_once() {
    let (app, agg, tenant, _) = setup().await;
    let u1 = new_id();
    let u2 = new_id();
    let created = event(
        "auth",
        "auth.user.created",
        &tenant,
        &u1,
        json!({ "status": "active" }),
    );
    agg.handle(&created).await.expect("applied");
    agg.handle(&created).await.expect("redelivery is a no-op");
    let second = event(
        "auth",
        "auth.user.created",
        &tenant,
        &u2,
        json!({ "status": "active" }),
    );
    let disabled = event(
        "auth",
        "auth.user.updated",
        &tenant,
        &u2,
        json!({ "changed": ["status"], "status": "disabled" }),
    );
    agg.handle_batch(&[&second, &disabled, &created])
        .await
        .expect("batch");
    // A batch delivered again changes nothing.
    agg.handle_batch(&[&second, &disabled])
        .await
        .expect("batch");
    let login = event(
        "auth",
        "auth.login.succeeded",
        &tenant,
        &u1,
        json!({ "session_id": new_id() }),
    );
    agg.handle(&login).await.expect("login");
    agg.handle(&login).await.expect("login again");
    for kind in ["customer", "customer", "company"] {
        let e = event(
            "crm",
            &format!("crm.{kind}.created"),
            &tenant,
            &new_id(),
            json!({ "changed": [] }),
        );
        agg.handle(&e).await.expect("record");
    }
    let import = event(
        "crm",
        "crm.customers.imported",
        &tenant,
        &new_id(),
        json!({ "created": 5, "updated": 1, "skipped": 0, "companies_created": 2 }),
    );
    agg.handle(&import).await.expect("import");
    agg.handle(&import).await.expect("import again");
    let gone = event(
        "crm",
        "crm.customer.deleted",
        &tenant,
        &new_id(),
        json!({ "changed": [] }),
    );
    agg.handle(&gone).await.expect("delete");

    let s = summary(&app, "acme").await;
    assert_eq!(s["tenant_id"], json!(tenant));
    assert_eq!(s["users_total"], 2, "{s}");
    assert_eq!(s["users_active"], 1, "{s}");
    assert_eq!(s["logins_24h"], 1, "{s}");
    assert_eq!(s["customers"], 6, "{s}");
    assert_eq!(s["companies"], 3, "{s}");
    assert_eq!(s["open_deals"], 0, "{s}");

    let deleted = event(
        "auth",
        "auth.user.deleted",
        &tenant,
        &u2,
        json!({ "status": "disabled" }),
    );
    agg.handle(&deleted).await.expect("user deleted");
    let s = summary(&app, &tenant).await;
    assert_eq!(
        (s["users_total"].clone(), s["users_active"].clone()),
        (json!(1), json!(1))
    );

    let overview = app.get("/api/cdx/overview").await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    let o = overview.body;
    assert_eq!(o["tenants"]["total"], 1, "{o}");
    assert_eq!(o["tenants"]["by_status"]["active"], 1, "{o}");
    assert_eq!(o["tenants"]["by_status"]["suspended"], 0, "{o}");
    assert_eq!(o["totals"]["customers"], 6, "{o}");
    assert_eq!(o["totals"]["users_total"], 1, "{o}");
    assert_eq!(o["totals"]["logins_24h"], 1, "{o}");
    let days = o["activity"].as_array().expect("activity");
    assert_eq!(days.len(), 30);
    let today = &days[29];
    assert_eq!(today["logins"], 1, "{o}");
    // Every distinct event applied once: the setup's admin, client and tenant creations
    // (through the bus), then 3 user + 1 login + 3 records + import + delete + user delete.
    assert_eq!(today["events"], 13, "{o}");

    assert_eq!(
        app.get("/api/cdx/tenants/nope/summary").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn deal_value_moves_between_currencies_and_statuses() {
    let (app, agg, tenant, _) = setup().await;
    let (d1, d2) = (new_id(), new_id());
    let steps = [
        deal("created", &tenant, &d1, "open", 1000, "EUR"),
        deal("created", &tenant, &d2, "open", 500, "EUR"),
        // Value and currency change.
        deal("updated", &tenant, &d1, "open", 1200, "USD"),
    ];
    for e in &steps {
        agg.handle(e).await.expect("deal");
    }
    let s = summary(&app, &tenant).await;
    assert_eq!(s["open_deals"], 2, "{s}");
    assert_eq!(
        s["pipeline"],
        json!([
            { "currency": "EUR", "open_value": 500 },
            { "currency": "USD", "open_value": 1200 },
        ])
    );
    // Won: out of the pipeline; stage_changed and closed carry the same state (no double move).
    let won = [
        deal("stage_changed", &tenant, &d2, "won", 500, "EUR"),
        deal("closed", &tenant, &d2, "won", 500, "EUR"),
    ];
    agg.handle_batch(&[&won[0], &won[1]]).await.expect("won");
    let s = summary(&app, &tenant).await;
    assert_eq!(s["open_deals"], 1, "{s}");
    assert_eq!(
        s["pipeline"],
        json!([{ "currency": "USD", "open_value": 1200 }])
    );
    // Reopened with a new value, then the other deal deleted (its event carries nothing).
    agg.handle(&deal("updated", &tenant, &d2, "open", 700, "EUR"))
        .await
        .expect("reopened");
    agg.handle(&event(
        "crm",
        "crm.deal.deleted",
        &tenant,
        &d1,
        json!({ "changed": [] }),
    ))
    .await
    .expect("deleted");
    let s = summary(&app, &tenant).await;
    assert_eq!(s["open_deals"], 1, "{s}");
    assert_eq!(
        s["pipeline"],
        json!([{ "currency": "EUR", "open_value": 700 }])
    );
    // An update naming only a status keeps the known value and currency.
    // The overview computed now is kept while nothing changes; the next event replaces it.
    let o = app.get("/api/cdx/overview").await.body;
    assert_ne!(o["totals"]["pipeline"], json!([]), "{o}");
    agg.handle(&event(
        "crm",
        "crm.deal.closed",
        &tenant,
        &d2,
        json!({ "status": "lost" }),
    ))
    .await
    .expect("lost");
    let s = summary(&app, &tenant).await;
    assert_eq!(s["open_deals"], 0, "{s}");
    assert_eq!(s["pipeline"], json!([]));
    let o = app.get("/api/cdx/overview").await.body;
    assert_eq!(o["totals"]["pipeline"], json!([]), "{o}");
}

#[tokio::test]
async fn purge_resets_the_crm_counters() {
    let (app, agg, tenant, _) = setup().await;
    let user = event(
        "auth",
        "auth.user.created",
        &tenant,
        &new_id(),
        json!({ "status": "active" }),
    );
    agg.handle(&user).await.expect("user");
    for e in [
        event("crm", "crm.customer.created", &tenant, &new_id(), json!({})),
        event("crm", "crm.company.created", &tenant, &new_id(), json!({})),
        deal("created", &tenant, &new_id(), "open", 300, "GBP"),
    ] {
        agg.handle(&e).await.expect("record");
    }
    let purge = event(
        "crm",
        "crm.tenant.purged",
        &tenant,
        &tenant,
        json!({ "removed": {} }),
    );
    agg.handle(&purge).await.expect("purged");
    let s = summary(&app, &tenant).await;
    assert_eq!(
        (
            s["customers"].clone(),
            s["companies"].clone(),
            s["open_deals"].clone()
        ),
        (json!(0), json!(0), json!(0)),
        "{s}"
    );
    assert_eq!(s["pipeline"], json!([]));
    // Users are auth's, not touched by the CRM's purge.
    assert_eq!(s["users_total"], 1);
    // A deal created after the purge counts from zero.
    agg.handle(&deal("created", &tenant, &new_id(), "open", 50, "GBP"))
        .await
        .expect("deal");
    let s = summary(&app, &tenant).await;
    assert_eq!(
        s["pipeline"],
        json!([{ "currency": "GBP", "open_value": 50 }])
    );
}

#[tokio::test]
async fn tenant_list_carries_summaries_and_sorts_with_stable_paging() {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id").to_string();
    let agg = app.cdx.consumer();
    let mut tenants = Vec::new();
    for i in 0..7 {
        let t = app.tenant(&format!("t{i}"), &client_id).await;
        let id = t["id"].as_str().expect("id").to_string();
        // Customers 0,1,2,0,1,2,0: ties that paging must not lose or repeat.
        for _ in 0..(i % 3) {
            agg.handle(&event(
                "crm",
                "crm.customer.created",
                &id,
                &new_id(),
                json!({}),
            ))
            .await
            .expect("customer");
        }
        tenants.push(id);
    }
    let (items, _) = app.collect("/api/cdx/tenants", 50).await;
    assert_eq!(items.len(), 7);
    assert_eq!(items[1]["summary"]["customers"], 1);
    assert_eq!(
        items[1]["slug"], "t1",
        "the tenant's own fields stay as they were"
    );
    assert!(items[0]["summary"]["users_total"].is_number());

    for (sort, limit) in [
        ("customers", 2),
        ("-customers", 3),
        ("users", 2),
        ("name", 2),
        ("-created", 3),
    ] {
        let (items, pages) = app
            .collect(&format!("/api/cdx/tenants?sort={sort}"), limit)
            .await;
        assert!(pages >= 3, "{sort}: paged");
        let ids = crate::common::ids(&items);
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            7,
            "{sort}: every tenant exactly once: {ids:?}"
        );
        if sort.ends_with("customers") {
            let values: Vec<i64> = items
                .iter()
                .map(|i| i["summary"]["customers"].as_i64().expect("n"))
                .collect();
            let mut sorted = values.clone();
            sorted.sort();
            if sort.starts_with('-') {
                sorted.reverse();
            }
            assert_eq!(values, sorted, "{sort}");
        }
        if sort == "-created" {
            let mut expected = tenants.clone();
            expected.reverse();
            assert_eq!(ids, expected);
        }
    }
    let bad = app.get("/api/cdx/tenants?sort=bogus").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let bad = app.get("/api/cdx/tenants?sort=customers&cursor=YWJj").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
}

#[tokio::test]
async fn cms_billing_and_analytics_events_fill_their_slots() {
    let (app, agg, tenant, client_id) = setup().await;
    app.bus.subscribe(agg);
    let other = app.tenant("other", &client_id).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let s = summary(&app, &tenant).await;
    assert_eq!(
        (
            &s["content_items"],
            &s["plan"],
            &s["mrr"],
            &s["analytics_events"]
        ),
        (&Value::Null, &Value::Null, &json!([]), &Value::Null),
        "empty slots before any event: {s}"
    );

    let publish = |source: &str, kind: &str, tenant: &str, data: Value| {
        let e = event(source, kind, tenant, &new_id(), data);
        let bus = app.bus.clone();
        async move { bus.publish(&e).await.expect("delivered") }
    };
    for _ in 0..3 {
        publish("cms", "cms.item.created", &tenant, json!({})).await;
    }
    publish("cms", "cms.item.deleted", &tenant, json!({})).await;
    publish(
        "billing",
        "billing.subscription.changed",
        &tenant,
        json!({ "plan": "pro", "mrr": 4900, "currency": "eur" }),
    )
    .await;
    publish(
        "billing",
        "billing.subscription.changed",
        &other,
        json!({ "plan": "starter", "mrr": 900, "currency": "EUR" }),
    )
    .await;
    publish(
        "analytics",
        "analytics.events.counted",
        &tenant,
        json!({ "count": 1200 }),
    )
    .await;
    publish(
        "analytics",
        "analytics.events.counted",
        &tenant,
        json!({ "count": 34 }),
    )
    .await;

    let s = summary(&app, &tenant).await;
    assert_eq!(s["content_items"], 2, "{s}");
    assert_eq!(s["plan"], "pro");
    assert_eq!(s["mrr"], json!([{ "currency": "EUR", "mrr": 4900 }]));
    assert_eq!(s["analytics_events"], 1234);
    assert_eq!(s["customers"], 0, "the other counters are untouched");

    let list = app.get("/api/cdx/tenants?limit=10").await.body;
    let item = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["id"] == tenant.as_str())
        .expect("listed")
        .clone();
    assert_eq!(item["summary"]["content_items"], 2);
    assert_eq!(item["summary"]["plan"], "pro");
    assert_eq!(item["summary"]["mrr"], s["mrr"]);

    let overview = app.get("/api/cdx/overview").await.body;
    let totals = &overview["totals"];
    assert_eq!(totals["content_items"], 2, "{overview}");
    assert_eq!(totals["analytics_events"], 1234);
    assert_eq!(totals["plans"], json!({ "pro": 1, "starter": 1 }));
    assert_eq!(totals["mrr"], json!([{ "currency": "EUR", "mrr": 5800 }]));

    // The subscription ends: no plan, no revenue.
    publish(
        "billing",
        "billing.subscription.changed",
        &tenant,
        json!({ "plan": null }),
    )
    .await;
    let s = summary(&app, &tenant).await;
    assert_eq!((&s["plan"], &s["mrr"]), (&Value::Null, &json!([])), "{s}");
}

/// A small deterministic generator (xorshift), so a failing case replays from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

/// A random event of every kind the aggregates fold or apply, for `tenant`; records come
/// from small pools so that updates, deletions and repeats hit the same ones.
fn random_event(rng: &mut Rng, tenant: &str) -> Event {
    let users = ["u1", "u2", "u3"];
    let deals = ["d1", "d2", "d3"];
    match rng.below(14) {
        0 => event(
            "auth",
            "auth.user.created",
            tenant,
            rng.pick(&users),
            json!({ "status": rng.pick(&["active", "disabled"]) }),
        ),
        1 => event(
            "auth",
            "auth.user.updated",
            tenant,
            rng.pick(&users),
            json!({ "changed": ["status"], "status": rng.pick(&["active", "disabled"]) }),
        ),
        2 => event(
            "auth",
            "auth.user.deleted",
            tenant,
            rng.pick(&users),
            json!({}),
        ),
        3 => event(
            "auth",
            "auth.login.succeeded",
            tenant,
            rng.pick(&users),
            json!({ "session_id": new_id() }),
        ),
        4 | 5 => event("crm", "crm.customer.created", tenant, &new_id(), json!({})),
        6 => event("crm", "crm.customer.deleted", tenant, &new_id(), json!({})),
        7 => event(
            "crm",
            rng.pick(&["crm.company.created", "crm.company.deleted"]),
            tenant,
            &new_id(),
            json!({}),
        ),
        8 => event(
            "crm",
            "crm.customers.imported",
            tenant,
            &new_id(),
            json!({ "created": rng.below(5), "companies_created": rng.below(3) }),
        ),
        9 => deal(
            rng.pick(&["created", "updated", "closed", "deleted"]),
            tenant,
            rng.pick(&deals),
            rng.pick(&["open", "won", "lost"]),
            (rng.below(10) * 100) as i64,
            rng.pick(&["EUR", "USD"]),
        ),
        10 => event(
            "cms",
            rng.pick(&["cms.item.created", "cms.item.deleted"]),
            tenant,
            &new_id(),
            json!({}),
        ),
        11 => event(
            "analytics",
            "analytics.events.counted",
            tenant,
            tenant,
            json!({ "count": rng.below(100) }),
        ),
        12 => match rng.below(2) {
            0 => event(
                "billing",
                "billing.subscription.changed",
                tenant,
                tenant,
                json!({ "plan": rng.pick(&["pro", "team"]), "mrr": rng.below(9000), "currency": rng.pick(&["eur", "USD"]) }),
            ),
            _ => event(
                "billing",
                "billing.subscription.changed",
                tenant,
                tenant,
                json!({ "plan": null }),
            ),
        },
        _ => event(
            "crm",
            "crm.tenant.purged",
            tenant,
            tenant,
            json!({ "rows": 1 }),
        ),
    }
}

/// A summary without what names its tenant.
fn state(mut summary: Value) -> Value {
    for key in ["tenant_id", "slug", "name"] {
        summary.as_object_mut().map(|s| s.remove(key));
    }
    summary
}

#[tokio::test]
async fn a_batch_folds_to_the_same_aggregates_as_its_events_one_by_one() {
    let app = spawn_app().await;
    let client = app.client("Fold").await;
    let client_id = client["id"].as_str().expect("id").to_string();
    let agg = app.cdx.consumer();
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        // Two tenants take the events one at a time, two others the same events in
        // batches, some delivered twice.
        let mut ids = Vec::new();
        for side in ["single-a", "single-b", "batch-a", "batch-b"] {
            let tenant = app.tenant(&format!("{side}-{seed}"), &client_id).await;
            ids.push(tenant["id"].as_str().expect("id").to_string());
        }
        let mut single = Vec::new();
        let mut batched = Vec::new();
        for _ in 0..(20 + rng.below(60)) {
            let side = rng.below(2) as usize;
            let e = random_event(&mut rng, &ids[side]);
            let mut twin = e.clone();
            twin.id = new_id();
            twin.tenant_id = Some(ids[2 + side].clone());
            if twin.aggregate_id == ids[side] {
                twin.aggregate_id = ids[2 + side].clone();
            }
            // A login is keyed by its session, which the twin opened anew.
            if twin.data.get("session_id").is_some() {
                twin.data["session_id"] = json!(new_id());
            }
            single.push(e);
            batched.push(twin);
        }
        for e in &single {
            agg.handle(e).await.expect("one event");
        }
        let refs: Vec<&Event> = batched.iter().collect();
        let mut rest = &refs[..];
        while !rest.is_empty() {
            let n = 1 + rng.below(rest.len() as u64) as usize;
            let (batch, after) = rest.split_at(n);
            agg.handle_batch(batch).await.expect("batch");
            if rng.below(3) == 0 {
                agg.handle_batch(batch).await.expect("batch again");
            }
            rest = after;
        }
        for side in 0..2 {
            assert_eq!(
                state(summary(&app, &ids[side]).await),
                state(summary(&app, &ids[2 + side]).await),
                "seed {seed}, tenant {side}: events {:#?}",
                single
                    .iter()
                    .filter(|e| e.tenant_id.as_deref() == Some(&ids[side]))
                    .map(|e| (&e.event_type, &e.aggregate_id, &e.data))
                    .collect::<Vec<_>>()
            );
        }
    }
}
