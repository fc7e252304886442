//! Removing a tenant's CRM data: everything of that tenant goes in one transaction, nothing
//! of another tenant is touched, and the removal is announced.

use platform::events::{Actor, Event};
use platform::ids::new_id;
use platform::tenants::{TENANT_CREATED, TENANT_DELETED};
use serde_json::json;

use crate::common::{spawn_app, App};

#[tokio::test]
async fn deleting_a_tenants_data_removes_all_of_it_and_nothing_else() {
    let app = spawn_app().await;
    let (gone, gone_admin, _) = app.tenant_with_people("leaving").await;
    let (_, stay_admin, _) = app.tenant_with_people("staying").await;
    for admin in [&gone_admin, &stay_admin] {
        let company = app
            .post(admin, "/api/crm/companies", json!({"name": "Co"}))
            .await
            .expect(201)
            .id();
        let customer = app
            .post(
                admin,
                "/api/crm/customers",
                json!({"first_name": "C", "company_id": company, "tags": ["t"]}),
            )
            .await
            .expect(201)
            .id();
        app.post(
            admin,
            "/api/crm/deals",
            json!({"title": "D", "value": 5, "currency": "EUR", "customer_id": customer}),
        )
        .await
        .expect(201);
        app.post(
            admin,
            "/api/crm/notes",
            json!({"kind": "note", "body": "n", "customer_id": customer}),
        )
        .await
        .expect(201);
        app.post(
            admin,
            "/api/crm/fields",
            json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "text"}),
        )
        .await
        .expect(201);
    }
    let before = app.row_counts().await;

    let removed = app
        .crm
        .delete_tenant_data(&gone, &Actor::system("test"))
        .await
        .expect("purge");
    assert!(removed >= 10, "removed {removed}");

    // Every table that held the tenant's rows now holds only the other tenant's.
    for (table, count) in app.row_counts().await {
        if ["tenant_replica", "deleted_tenants", "_sqlx_migrations"].contains(&table.as_str()) {
            continue;
        }
        let left: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE tenant_id = $1"
        ))
        .bind(&gone)
        .fetch_one(app.db.reader())
        .await
        .expect("count");
        assert_eq!(left, 0, "{table} still holds the tenant's rows");
        let had = before.iter().find(|(t, _)| t == &table).map(|(_, c)| *c);
        assert!(had.is_some_and(|had| had >= count), "{table}");
    }
    for path in [
        "/api/crm/customers",
        "/api/crm/companies",
        "/api/crm/deals",
        "/api/crm/notes",
    ] {
        let kept = app.get(&stay_admin, path).await.expect(200);
        assert_eq!(
            kept.body["items"].as_array().expect("items").len(),
            1,
            "{path}"
        );
        let purged = app.get(&gone_admin, path).await.expect(200);
        assert_eq!(purged.body["items"], json!([]), "{path}");
    }
    let purged = app.events_of("crm.tenant.purged").await;
    assert_eq!(purged.len(), 1);
    assert_eq!(purged[0].tenant_id.as_deref(), Some(gone.as_str()));
}

/// Rows of `tenant_id` in `table`.
async fn rows_of(app: &App, table: &str, tenant_id: &str) -> i64 {
    let column = if table == "tenant_replica" {
        "id"
    } else {
        "tenant_id"
    };
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1"))
        .bind(tenant_id)
        .fetch_one(app.db.reader())
        .await
        .expect("count")
}

/// Auth's events travel apart from CDX's (another JetStream stream in the distributed
/// topology): `auth.user.created` of a tenant can reach the CRM after `cdx.tenant.deleted`
/// purged it. It must not bring a row of the tenant back.
#[tokio::test]
async fn a_users_creation_arriving_after_the_tenants_purge_writes_nothing() {
    let app = spawn_app().await;
    let (gone, _, _) = app.tenant_with_people("leaving").await;
    let (kept, _, _) = app.tenant_with_people("staying").await;
    assert_eq!(rows_of(&app, "tenant_users", &gone).await, 2);
    let deleted = Event::new(
        "cdx",
        TENANT_DELETED,
        Some(&gone),
        &gone,
        &Actor::system("test"),
        json!({ "slug": "leaving", "status": "active", "changed": [] }),
    );
    app.bus.publish(&deleted).await.expect("deletion applied");
    assert_eq!(rows_of(&app, "tenant_users", &gone).await, 0, "purged");

    // A user auth created before the deletion reached it, announced late.
    app.user(&gone, "user").await;
    assert_eq!(rows_of(&app, "tenant_users", &gone).await, 0);
    // A creation of the tenant seen again (redelivered after its dedup row expired) brings
    // back neither the tenant nor its default pipeline.
    let created_again = Event::new(
        "cdx",
        TENANT_CREATED,
        Some(&gone),
        &gone,
        &Actor::system("test"),
        json!({ "slug": "leaving", "name": "leaving", "client_id": new_id(), "status": "active", "changed": [] }),
    );
    app.bus.publish(&created_again).await.expect("applied");
    for table in ["tenant_replica", "tenant_users", "pipelines", "stages"] {
        assert_eq!(rows_of(&app, table, &gone).await, 0, "{table}");
    }
    let known_deleted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deleted_tenants WHERE id = $1")
            .bind(&gone)
            .fetch_one(app.db.reader())
            .await
            .expect("count");
    assert_eq!(known_deleted, 1);

    // Users of a tenant that exists still arrive.
    app.user(&kept, "user").await;
    assert_eq!(rows_of(&app, "tenant_users", &kept).await, 3);
}
