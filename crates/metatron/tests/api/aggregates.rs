//! CDX's aggregates over the whole platform: changes made through auth's and the CRM's APIs
//! reach the tenant summary, the overview and the tenant list through events alone.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{TestApp, SUPERADMIN};

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, value) = app
        .call_with(Method::POST, path, Some(token), Some(body), &[])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {value}");
    value
}

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, value) = app.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {value}");
    value
}

#[tokio::test]
async fn summary_and_overview_follow_the_services() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let tenant_id = app.create_tenant(&root, "agg").await;
    app.create_user(&root, Some("agg"), "boss@agg.test", "admin")
        .await;
    let worker = app
        .create_user(&root, Some("agg"), "worker@agg.test", "user")
        .await;
    let (status, login) = app
        .login_as(("boss@agg.test", "password123"), Some("agg"))
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let boss = login["access_token"].as_str().expect("token").to_string();

    // The worker is disabled: still a user, no longer an active one.
    let path = format!("/api/auth/users/{}", worker["id"].as_str().expect("id"));
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&boss),
            Some(json!({ "status": "disabled" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for name in ["Ada", "Grace"] {
        post(
            &app,
            &boss,
            "/api/crm/customers",
            json!({ "first_name": name }),
        )
        .await;
    }
    post(
        &app,
        &boss,
        "/api/crm/companies",
        json!({ "name": "Initech" }),
    )
    .await;
    let deal = post(
        &app,
        &boss,
        "/api/crm/deals",
        json!({ "title": "Big one", "value": 125_000, "currency": "EUR" }),
    )
    .await;
    post(
        &app,
        &boss,
        "/api/crm/deals",
        json!({ "title": "Small one", "value": 900, "currency": "USD" }),
    )
    .await;
    // The big deal changes currency and value: the pipeline follows.
    let path = format!("/api/crm/deals/{}", deal["id"].as_str().expect("id"));
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&boss),
            Some(json!({ "value": 1_000, "currency": "USD", "version": deal["version"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.app().flush_events().await.expect("events delivered");

    let summary = get(&app, &root, "/api/cdx/tenants/agg/summary").await;
    assert_eq!(summary["tenant_id"], json!(tenant_id));
    assert_eq!(summary["users_total"], 2, "{summary}");
    assert_eq!(summary["users_active"], 1, "{summary}");
    assert_eq!(summary["logins_24h"], 1, "{summary}");
    assert_eq!(summary["customers"], 2, "{summary}");
    assert_eq!(summary["companies"], 1, "{summary}");
    assert_eq!(summary["open_deals"], 2, "{summary}");
    assert_eq!(
        summary["pipeline"],
        json!([{ "currency": "USD", "open_value": 1_900 }]),
        "{summary}"
    );

    // The counts equal what the CRM itself lists for the tenant.
    let customers = get(&app, &boss, "/api/crm/customers?limit=500").await;
    assert_eq!(
        customers["items"].as_array().expect("items").len() as i64,
        summary["customers"].as_i64().expect("n")
    );

    let overview = get(&app, &root, "/api/cdx/overview").await;
    assert_eq!(overview["tenants"]["total"], 2, "{overview}");
    assert_eq!(overview["tenants"]["by_status"]["active"], 2, "{overview}");
    let demo = get(&app, &root, "/api/cdx/tenants/demo/summary").await;
    for counter in ["users_total", "customers", "companies", "open_deals"] {
        assert_eq!(
            overview["totals"][counter].as_i64(),
            Some(summary[counter].as_i64().expect("n") + demo[counter].as_i64().expect("n")),
            "{counter}: {overview}"
        );
    }
    let days = overview["activity"].as_array().expect("days");
    assert_eq!(days.len(), 30);
    let today = &days[29];
    assert!(today["logins"].as_i64() >= Some(2), "{overview}");
    assert!(today["events"].as_i64() >= Some(10), "{overview}");

    // The tenant list carries the same counters and sorts by them.
    let list = get(&app, &root, "/api/cdx/tenants?sort=-users").await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let agg = items
        .iter()
        .find(|t| t["slug"] == "agg")
        .expect("agg listed");
    assert_eq!(agg["summary"]["customers"], 2);
    assert_eq!(agg["summary"]["users_active"], 1);
    assert!(
        items[0]["summary"]["users_total"].as_i64() >= items[1]["summary"]["users_total"].as_i64()
    );
}

/// A tiny deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

async fn send(
    app: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    version: &Value,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let etag = format!("\"{version}\"");
    app.call_with(
        method,
        path,
        Some(token),
        body,
        &[("if-match", etag.as_str())],
    )
    .await
}

/// Every item of a list (at most 500).
async fn all(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let page = get(app, token, &format!("{path}{sep}limit=500")).await;
    assert!(page["next_cursor"].is_null(), "{path}: more than one page");
    page["items"].as_array().expect("items").clone()
}

/// Drift check: after random operations in two tenants, CDX's counters equal the counts taken
/// through the services' own APIs.
#[tokio::test]
async fn aggregates_equal_the_services_own_counts() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let mut rng = Lcg(42);
    for slug in ["drift-a", "drift-b"] {
        app.create_tenant(&root, slug).await;
        let boss_email = format!("boss@{slug}.test");
        app.create_user(&root, Some(slug), &boss_email, "admin")
            .await;
        let (status, login) = app
            .login_as((boss_email.as_str(), "password123"), Some(slug))
            .await;
        assert_eq!(status, StatusCode::OK, "{login}");
        let boss = login["access_token"].as_str().expect("token").to_string();

        let mut users = Vec::new();
        for i in 0..3 + rng.below(3) {
            users.push(
                app.create_user(&boss, None, &format!("u{i}@{slug}.test"), "user")
                    .await,
            );
        }
        for user in &users {
            let path = format!("/api/auth/users/{}", user["id"].as_str().expect("id"));
            match rng.below(3) {
                0 => {
                    let body = json!({ "status": "disabled" });
                    let (status, v) = send(
                        &app,
                        Method::PATCH,
                        &boss,
                        &path,
                        &user["version"],
                        Some(body),
                    )
                    .await;
                    assert_eq!(status, StatusCode::OK, "{v}");
                }
                1 => {
                    let (status, v) = app.call(Method::DELETE, &path, Some(&boss), None).await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
                }
                _ => {}
            }
        }

        for (noun, body) in [
            ("customers", json!({ "first_name": "Someone" })),
            ("companies", json!({ "name": "Some Co" })),
        ] {
            let path = format!("/api/crm/{noun}");
            let mut made = Vec::new();
            for _ in 0..2 + rng.below(4) {
                made.push(post(&app, &boss, &path, body.clone()).await);
            }
            for item in made.iter().filter(|_| rng.below(3) == 0) {
                let path = format!("{path}/{}", item["id"].as_str().expect("id"));
                let (status, v) =
                    send(&app, Method::DELETE, &boss, &path, &item["version"], None).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
            }
        }

        let currencies = ["EUR", "USD", "GBP"];
        for i in 0..4 + rng.below(4) {
            let body = json!({
                "title": format!("Deal {i}"),
                "value": 100 * (1 + rng.below(50)) as i64,
                "currency": currencies[rng.below(3)],
            });
            let mut deal = post(&app, &boss, "/api/crm/deals", body).await;
            let path = format!("/api/crm/deals/{}", deal["id"].as_str().expect("id"));
            for _ in 0..rng.below(4) {
                let body = match rng.below(4) {
                    0 => json!({ "value": 100 * (1 + rng.below(50)) as i64 }),
                    1 => json!({ "currency": currencies[rng.below(3)] }),
                    2 => json!({ "status": if rng.below(2) == 0 { "won" } else { "lost" } }),
                    _ => json!({ "status": "open" }),
                };
                let (status, v) = send(
                    &app,
                    Method::PATCH,
                    &boss,
                    &path,
                    &deal["version"],
                    Some(body),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{v}");
                deal = v;
            }
            if rng.below(4) == 0 {
                let (status, v) =
                    send(&app, Method::DELETE, &boss, &path, &deal["version"], None).await;
                assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
            }
        }
    }
    app.app().flush_events().await.expect("events delivered");

    for slug in ["drift-a", "drift-b"] {
        let (status, login) = app
            .login_as(
                (format!("boss@{slug}.test").as_str(), "password123"),
                Some(slug),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{login}");
        let boss = login["access_token"].as_str().expect("token").to_string();
        let users = all(&app, &boss, "/api/auth/users").await;
        let customers = all(&app, &boss, "/api/crm/customers").await;
        let companies = all(&app, &boss, "/api/crm/companies").await;
        let open = all(&app, &boss, "/api/crm/deals?status=open").await;
        let mut pipeline = std::collections::BTreeMap::<String, i64>::new();
        for deal in &open {
            *pipeline
                .entry(deal["currency"].as_str().expect("currency").to_string())
                .or_default() += deal["value"].as_i64().expect("value");
        }
        let pipeline: Vec<Value> = pipeline
            .into_iter()
            .filter(|(_, v)| *v != 0)
            .map(|(currency, open_value)| json!({ "currency": currency, "open_value": open_value }))
            .collect();
        app.app().flush_events().await.expect("events delivered");
        let summary = get(&app, &root, &format!("/api/cdx/tenants/{slug}/summary")).await;
        let truth = json!({
            "users_total": users.len(),
            "users_active": users.iter().filter(|u| u["status"] == "active").count(),
            "customers": customers.len(),
            "companies": companies.len(),
            "open_deals": open.len(),
            "pipeline": pipeline,
            "logins_24h": 2,
        });
        for (key, expected) in truth.as_object().expect("object") {
            assert_eq!(
                &summary[key], expected,
                "{slug} drifted on {key}: {summary}"
            );
        }
    }
    // The facts the services compute from their own databases give the same numbers.
    let (ok, out, err) = crate::cli::metatron(&app.settings, &["cdx", "rebuild", "--check"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 counter(s) drifted"), "{out}");
}

/// The cdx database of a running test platform.
fn cdx_db(app: &TestApp) -> platform::db::Db {
    app.app()
        .services
        .iter()
        .find(|s| s.info.name == "cdx")
        .expect("cdx")
        .db
        .clone()
}

/// Drift the events cannot explain (lost records, a wrong counter) is reported by
/// `cdx rebuild --check`, which changes nothing, and repaired by `cdx rebuild` from the
/// services' own data; later events then keep the repaired aggregates exact.
#[tokio::test]
async fn rebuild_reports_and_repairs_drift_from_the_services_data() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let admin = app.token(crate::common::ADMIN).await;
    let user = app
        .create_user(&admin, None, "drifter@demo.com", "user")
        .await;
    let deal = post(
        &app,
        &admin,
        "/api/crm/deals",
        json!({ "title": "Big", "value": 7000, "currency": "CHF" }),
    )
    .await;
    app.app().flush_events().await.expect("events delivered");
    let before = get(&app, &root, "/api/cdx/tenants/demo/summary").await;
    let tenant = before["tenant_id"].as_str().expect("tenant id").to_string();

    // CDX loses track of the user and the deal, and a counter goes wrong.
    let db = cdx_db(&app);
    for sql in [
        "DELETE FROM tenant_users WHERE tenant_id = $1",
        "DELETE FROM tenant_deals WHERE tenant_id = $1",
        "DELETE FROM tenant_pipeline WHERE tenant_id = $1",
        "DELETE FROM tenant_logins WHERE tenant_id = $1",
        "UPDATE tenant_summary SET customers = 99, users_total = 0, users_active = 0, \
         open_deals = 0, logins_24h = 0 WHERE tenant_id = $1",
    ] {
        sqlx::query(sql)
            .bind(&tenant)
            .execute(db.writer())
            .await
            .expect("tamper");
    }

    let (ok, out, _) = crate::cli::metatron(
        &app.settings,
        &["cdx", "rebuild", "--check", "--json"],
        None,
    );
    assert!(!ok, "a check with drift exits non-zero: {out}");
    let drift: Value = serde_json::from_str(&out).expect("drift as JSON");
    let found = |counter: &str| {
        drift
            .as_array()
            .expect("list")
            .iter()
            .find(|d| d["tenant_id"] == tenant.as_str() && d["counter"] == counter)
            .cloned()
            .unwrap_or_else(|| panic!("no drift on {counter}: {drift}"))
    };
    assert_eq!(found("customers")["kept"], 99);
    assert_eq!(found("customers")["recomputed"], before["customers"]);
    assert_eq!(found("users_total")["recomputed"], before["users_total"]);
    assert_eq!(found("pipeline.CHF")["recomputed"], 7000);
    assert_eq!(found("logins_24h")["recomputed"], before["logins_24h"]);
    // The check changed nothing.
    assert_eq!(
        get(&app, &root, "/api/cdx/tenants/demo/summary").await["customers"],
        99
    );

    let (ok, out, err) = crate::cli::metatron(&app.settings, &["cdx", "rebuild"], None);
    assert!(ok, "{out}{err}");
    assert!(out.contains("aggregates rebuilt"), "{out}");
    let repaired = get(&app, &root, "/api/cdx/tenants/demo/summary").await;
    for key in [
        "users_total",
        "users_active",
        "customers",
        "companies",
        "open_deals",
        "logins_24h",
        "pipeline",
    ] {
        assert_eq!(repaired[key], before[key], "{key}: {repaired}");
    }
    let (ok, out, err) = crate::cli::metatron(&app.settings, &["cdx", "rebuild", "--check"], None);
    assert!(ok && out.contains("0 counter(s) drifted"), "{out}{err}");

    // The repaired per-record state keeps later changes exact: disabling the user and
    // closing the deal move the counters once.
    let path = format!("/api/auth/users/{}", user["id"].as_str().expect("id"));
    let (status, v) = send(
        &app,
        Method::PATCH,
        &admin,
        &path,
        &user["version"],
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let path = format!("/api/crm/deals/{}", deal["id"].as_str().expect("id"));
    let (status, v) = send(
        &app,
        Method::PATCH,
        &admin,
        &path,
        &deal["version"],
        Some(json!({ "status": "won" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    app.app().flush_events().await.expect("events delivered");
    let after = get(&app, &root, "/api/cdx/tenants/demo/summary").await;
    assert_eq!(after["users_total"], before["users_total"]);
    assert_eq!(
        after["users_active"].as_i64(),
        before["users_active"].as_i64().map(|n| n - 1)
    );
    assert_eq!(
        after["open_deals"].as_i64(),
        before["open_deals"].as_i64().map(|n| n - 1)
    );
    let (ok, out, err) = crate::cli::metatron(&app.settings, &["cdx", "rebuild", "--check"], None);
    assert!(ok && out.contains("0 counter(s) drifted"), "{out}{err}");
}
