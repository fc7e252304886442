//! Tenants: CRUD, suspend and resume, and the replica kept in step.

use platform::ids::new_id;
use platform::tenants::TenantStatus;
use reqwest::{header, StatusCode};
use serde_json::json;

use crate::common::{ids, spawn_app};

#[tokio::test]
async fn tenants_crud_suspend_resume_and_replica() {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id");

    let tenant = app.tenant("acme", client_id).await;
    let id = tenant["id"].as_str().expect("id");
    assert_eq!(tenant["status"], "active");
    assert_eq!(tenant["client_id"], client_id);
    // Delivered before the request returned: the replica knows the tenant already.
    let replica = app
        .replica
        .resolve("acme")
        .await
        .expect("replica")
        .expect("present");
    assert_eq!(
        (replica.id.as_str(), replica.status),
        (id, TenantStatus::Active)
    );

    for key in [id, "acme"] {
        let got = app.get(&format!("/api/cdx/tenants/{key}")).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, tenant);
        assert_eq!(got.headers[header::ETAG], "\"1\"");
    }

    let path = format!("/api/cdx/tenants/{id}");
    let suspended = app
        .patch(&path, json!({ "status": "suspended" }), Some("\"1\""))
        .await;
    assert_eq!(suspended.status, StatusCode::OK, "{}", suspended.body);
    assert_eq!(suspended.body["status"], "suspended");
    assert_eq!(suspended.body["version"], 2);
    let replica = app
        .replica
        .resolve(id)
        .await
        .expect("replica")
        .expect("present");
    assert_eq!(replica.status, TenantStatus::Suspended);

    let stale = app
        .patch(&path, json!({ "status": "active" }), Some("\"1\""))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);

    let resumed = app
        .patch(
            "/api/cdx/tenants/acme",
            json!({ "status": "active", "name": "Acme EU", "version": 2 }),
            None,
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    assert_eq!(
        (
            resumed.body["status"].as_str(),
            resumed.body["name"].as_str()
        ),
        (Some("active"), Some("Acme EU"))
    );
    let replica = app
        .replica
        .resolve("acme")
        .await
        .expect("replica")
        .expect("present");
    assert_eq!(replica.status, TenantStatus::Active);

    let bad_status = app.patch(&path, json!({ "status": "deleted" }), None).await;
    assert_eq!(bad_status.status, StatusCode::UNPROCESSABLE_ENTITY);
    let slug_change = app.patch(&path, json!({ "slug": "other" }), None).await;
    assert_eq!(
        slug_change.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "the slug is immutable"
    );

    let duplicate = app
        .post(
            "/api/cdx/tenants",
            json!({ "slug": "acme", "name": "Again", "client_id": client_id }),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.body["error"]["code"], "slug_taken");

    for slug in ["A", "-acme", "acme-", "ac_me", "Acme"] {
        let reply = app
            .post(
                "/api/cdx/tenants",
                json!({ "slug": slug, "name": "X", "client_id": client_id }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{slug}");
        assert_eq!(reply.body["error"]["details"]["field"], "slug", "{slug}");
    }
    for unknown in [new_id(), "not-an-id".to_string()] {
        let reply = app
            .post(
                "/api/cdx/tenants",
                json!({ "slug": "fresh", "name": "X", "client_id": unknown }),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reply.body
        );
        assert_eq!(reply.body["error"]["details"]["field"], "client_id");
    }
    assert_eq!(app.count("tenants").await, 1);

    for missing in [
        "/api/cdx/tenants/nope",
        "/api/cdx/tenants/NOPE!",
        &format!("/api/cdx/tenants/{}", new_id()),
    ] {
        assert_eq!(
            app.get(missing).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }

    let other_client = app.client("Globex").await;
    let other_id = other_client["id"].as_str().expect("id");
    let globex = app.tenant("globex", other_id).await;
    app.patch(
        &format!("/api/cdx/tenants/{}", globex["id"].as_str().expect("id")),
        json!({ "status": "suspended" }),
        None,
    )
    .await;
    let (all, _) = app.collect("/api/cdx/tenants", 1).await;
    assert_eq!(all.len(), 2);
    let (active, _) = app.collect("/api/cdx/tenants?status=active", 10).await;
    assert_eq!(ids(&active), vec![id.to_string()]);
    let (of_globex, _) = app
        .collect(&format!("/api/cdx/tenants?client_id={other_id}"), 10)
        .await;
    assert_eq!(of_globex.len(), 1);
    assert_eq!(of_globex[0]["slug"], "globex");
    let (searched, _) = app.collect("/api/cdx/tenants?q=EU", 10).await;
    assert_eq!(
        ids(&searched),
        vec![id.to_string()],
        "search covers the name"
    );
    let (searched, _) = app.collect("/api/cdx/tenants?q=glob", 10).await;
    assert_eq!(searched.len(), 1, "search covers the slug");
    let bad = app.get("/api/cdx/tenants?status=gone").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
