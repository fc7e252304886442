//! The permissions matrix: who may do what on every resource. Users read and write records
//! of their tenant; deleting and configuring (pipelines, custom fields) is for admins; the
//! superadmin acts in any tenant with `X-Tenant` and must name one; nobody acts without a
//! token.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{spawn_app, App, Who};

/// The roles of the matrix, in column order.
const ROLES: [&str; 5] = [
    "anonymous",
    "user",
    "admin",
    "superadmin+x-tenant",
    "superadmin",
];

/// Answers the status `role` gets for `method path body`.
async fn status(
    app: &App,
    who: Option<&Who>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    app.send(who, method, path, body, &[]).await.status.as_u16()
}

/// Creates one record of each kind as the admin; answers their paths.
async fn records(app: &App, admin: &Who) -> Vec<(&'static str, String)> {
    let company = app
        .post(admin, "/api/crm/companies", json!({"name": "Matrix Co"}))
        .await
        .expect(201)
        .id();
    let customer = app
        .post(
            admin,
            "/api/crm/customers",
            json!({"first_name": "Matrix", "company_id": company}),
        )
        .await
        .expect(201)
        .id();
    let deal = app
        .post(
            admin,
            "/api/crm/deals",
            json!({"title": "Matrix deal", "value": 1, "currency": "EUR"}),
        )
        .await
        .expect(201)
        .id();
    let note = app
        .post(
            admin,
            "/api/crm/notes",
            json!({"kind": "note", "body": "hi", "customer_id": customer}),
        )
        .await
        .expect(201)
        .id();
    let field = app
        .post(
            admin,
            "/api/crm/fields",
            json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "text"}),
        )
        .await
        .expect(201)
        .id();
    // In deletion order: a note about the customer would go with the customer.
    vec![
        ("notes", note),
        ("deals", deal),
        ("customers", customer),
        ("companies", company),
        ("fields", field),
    ]
}

#[tokio::test]
async fn reading_and_writing_is_for_members_deleting_and_configuring_for_admins() {
    let app = spawn_app().await;
    let (_, admin, user) = app.tenant_with_people("matrix").await;
    let root = app.superadmin(Some("matrix"));
    let root_without_tenant = app.superadmin(None);
    let callers: [Option<&Who>; 5] = [
        None,
        Some(&user),
        Some(&admin),
        Some(&root),
        Some(&root_without_tenant),
    ];
    let recs = records(&app, &admin).await;

    // Reads: every member, and the superadmin naming the tenant.
    let mut reads: Vec<String> = [
        "customers",
        "companies",
        "deals",
        "pipelines",
        "notes",
        "fields?entity=customer",
    ]
    .iter()
    .map(|c| format!("/api/crm/{c}"))
    .collect();
    reads.extend(recs.iter().map(|(c, id)| format!("/api/crm/{c}/{id}")));
    reads.push("/api/crm/deals?view=board".into());
    let customer = &recs[2].1;
    reads.push(format!("/api/crm/customers/{customer}/timeline"));
    reads.push("/api/crm/customers/export".into());
    for path in &reads {
        let mut got = Vec::new();
        for who in callers {
            got.push(status(&app, who, Method::GET, path, None).await);
        }
        assert_eq!(got, [401, 200, 200, 200, 400], "GET {path} as {ROLES:?}");
    }

    // Writes of records: every member.
    for (i, who) in callers.iter().enumerate() {
        let s = status(
            &app,
            *who,
            Method::POST,
            "/api/crm/customers",
            Some(json!({"first_name": format!("W{i}")})),
        )
        .await;
        assert_eq!(
            s,
            [401, 201, 201, 201, 400][i],
            "POST customers as {}",
            ROLES[i]
        );
        let s = status(
            &app,
            *who,
            Method::POST,
            "/api/crm/companies",
            Some(json!({"name": format!("W{i}")})),
        )
        .await;
        assert_eq!(
            s,
            [401, 201, 201, 201, 400][i],
            "POST companies as {}",
            ROLES[i]
        );
    }

    // Configuration: admins (and the superadmin in the tenant) only.
    for (i, who) in callers.iter().enumerate() {
        let s = status(&app, *who, Method::POST, "/api/crm/fields",
            Some(json!({"entity": "company", "name": format!("f{i}"), "label": "F", "kind": "number"}))).await;
        assert_eq!(
            s,
            [401, 403, 201, 201, 400][i],
            "POST fields as {}",
            ROLES[i]
        );
        let s = status(&app, *who, Method::POST, "/api/crm/pipelines",
            Some(json!({"name": format!("P{i}"), "stages": [{"name": "Open"}, {"name": "Won", "kind": "won"}]}))).await;
        assert_eq!(
            s,
            [401, 403, 201, 201, 400][i],
            "POST pipelines as {}",
            ROLES[i]
        );
    }

    // Deletes: admins only (notes also by their author); try the user first, then the admin.
    for (collection, id) in &recs {
        let path = format!("/api/crm/{collection}/{id}");
        assert_eq!(
            status(&app, None, Method::DELETE, &path, None).await,
            401,
            "{path}"
        );
        assert_eq!(
            status(&app, Some(&user), Method::DELETE, &path, None).await,
            403,
            "{path}"
        );
        assert_eq!(
            status(
                &app,
                Some(&root_without_tenant),
                Method::DELETE,
                &path,
                None
            )
            .await,
            400,
            "{path}"
        );
        assert_eq!(
            status(&app, Some(&admin), Method::DELETE, &path, None).await,
            204,
            "{path}"
        );
        assert_eq!(
            status(&app, Some(&admin), Method::GET, &path, None).await,
            404,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_bad_or_expired_token_is_refused_everywhere() {
    let app = spawn_app().await;
    let (tenant, _, user) = app.tenant_with_people("tokens").await;
    let expired = Who {
        token: app
            .signer
            .issue(&user.user_id, Some(&tenant), "user", "sid", -120)
            .expect("token")
            .0,
        ..user.clone()
    };
    let tampered = Who {
        token: format!("{}x", user.token),
        ..user.clone()
    };
    for who in [&expired, &tampered] {
        for path in [
            "/api/crm/customers",
            "/api/crm/deals",
            "/api/crm/notes",
            "/api/crm/pipelines",
        ] {
            assert_eq!(
                status(&app, Some(who), Method::GET, path, None).await,
                401,
                "{path}"
            );
        }
    }
}
