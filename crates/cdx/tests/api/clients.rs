//! Clients: CRUD, preconditions and paging.

use platform::ids::new_id;
use reqwest::{header, StatusCode};
use serde_json::json;

use crate::common::{ids, spawn_app};

#[tokio::test]
async fn clients_crud_with_etags_and_stale_writes() {
    let app = spawn_app().await;
    let created = app
        .post("/api/cdx/clients", json!({ "name": "  Acme  " }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.headers[header::ETAG], "\"1\"");
    let client = created.body;
    assert_eq!(client["name"], "Acme");
    assert_eq!(client["version"], 1);
    assert!(client["created_at"].as_str().expect("time").ends_with('Z'));
    let id = client["id"].as_str().expect("id");
    let path = format!("/api/cdx/clients/{id}");

    let got = app.get(&path).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, client);
    assert_eq!(got.headers[header::ETAG], "\"1\"");

    let renamed = app
        .patch(&path, json!({ "name": "Acme Corp" }), Some("\"1\""))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.body["name"], "Acme Corp");
    assert_eq!(renamed.body["version"], 2);
    assert_eq!(renamed.headers[header::ETAG], "\"2\"");

    let stale = app
        .patch(&path, json!({ "name": "Lost" }), Some("\"1\""))
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["error"]["code"], "version_conflict");
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);
    let stale = app
        .patch(&path, json!({ "name": "Lost", "version": 1 }), None)
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["error"]["details"]["current_version"], 2);
    let disagree = app
        .patch(&path, json!({ "version": 1 }), Some("\"2\""))
        .await;
    assert_eq!(disagree.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.get(&path).await.body["name"], "Acme Corp");

    // A body `version` alone is a valid precondition, and a no-op change bumps nothing.
    let same = app
        .patch(&path, json!({ "name": "Acme Corp", "version": 2 }), None)
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(same.body["version"], 2);

    app.client("Globex").await;
    let taken = app
        .post("/api/cdx/clients", json!({ "name": "Globex" }))
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let taken = app.patch(&path, json!({ "name": "Globex" }), None).await;
    assert_eq!(taken.status, StatusCode::CONFLICT);

    let empty = app.post("/api/cdx/clients", json!({ "name": "   " })).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.body["error"]["details"]["field"], "name");

    for missing in [
        "/api/cdx/clients/nope",
        &format!("/api/cdx/clients/{}", new_id()),
    ] {
        let reply = app.get(missing).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(reply.body["error"]["code"], "not_found");
    }
    let reply = app
        .patch(
            &format!("/api/cdx/clients/{}", new_id()),
            json!({ "name": "X" }),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let found = app.get("/api/cdx/clients?q=CORP").await;
    assert_eq!(
        ids(found.body["items"].as_array().expect("items")),
        vec![id.to_string()]
    );
    let none = app.get("/api/cdx/clients?q=%25").await;
    assert_eq!(none.body["items"], json!([]), "wildcards are literal");
}

#[tokio::test]
async fn pagination_has_no_gaps_or_duplicates() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            app.client(&format!("Client {i}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let (items, pages) = app.collect("/api/cdx/clients", 2).await;
    assert_eq!(pages, 3);
    assert_eq!(
        ids(&items),
        created,
        "all five, once each, in creation order"
    );

    let (items, pages) = app.collect("/api/cdx/clients?q=client", 5).await;
    assert_eq!((items.len(), pages), (5, 1));

    for bad in ["limit=0", "limit=501", "limit=x", "cursor=%21%21"] {
        let reply = app.get(&format!("/api/cdx/clients?{bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn concurrent_writes_on_one_version_let_exactly_one_win() {
    let app = spawn_app().await;
    let client = app.client("Racy").await;
    let path = format!("/api/cdx/clients/{}", client["id"].as_str().expect("id"));
    let attempts = (0..6).map(|i| {
        let (app, path) = (&app, &path);
        async move {
            app.patch(path, json!({ "name": format!("Racy {i}") }), Some("\"1\""))
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let stale = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, stale), (1, 5), "{statuses:?}");
    assert_eq!(app.get(&path).await.body["version"], 2);
}
