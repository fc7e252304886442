//! Removing a tenant's CRM data: everything of that tenant goes in one transaction, nothing
//! of another tenant is touched, and the removal is announced.

use platform::events::Actor;
use serde_json::json;

use crate::common::spawn_app;

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
        if ["tenant_replica", "_sqlx_migrations"].contains(&table.as_str()) {
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
