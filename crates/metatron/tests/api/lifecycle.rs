//! A tenant's lifecycle end to end: the events its suspension and deletion make the services
//! record leave at once, its export holds every record created for it and nothing else, and
//! its deletion leaves no row of it in any service database (checked in the databases).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use platform::db::{contains_pattern, Backend, Db};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Row;

use crate::common::{within, TestApp, SUPERADMIN, USER};
use crate::provisioning::create_with_admin;

#[tokio::test]
async fn events_recorded_on_suspension_and_deletion_leave_without_waiting_for_the_poll() {
    // Relays poll once a minute: whatever arrives sooner was delivered because its commit
    // woke the relay.
    let app = TestApp::spawn_with(|settings| settings.events.poll_ms = 60_000).await;
    let root = app.token(SUPERADMIN).await;
    app.token(USER).await;
    let (_, demo) = app
        .call(Method::GET, "/api/cdx/tenants/demo", Some(&root), None)
        .await;
    let tenant = demo["id"].as_str().expect("tenant id").to_string();

    let (status, body) = app
        .call(
            Method::PATCH,
            "/api/cdx/tenants/demo",
            Some(&root),
            Some(json!({ "status": "suspended" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let revoked = format!("/api/cdx/audit?action=auth.session.revoked&tenant={tenant}");
    // Well within the 60 s poll, with room for a loaded machine.
    let audited = within(Duration::from_secs(15), || async {
        let (_, audit) = app.call(Method::GET, &revoked, Some(&root), None).await;
        audit["items"]
            .as_array()
            .filter(|items| !items.is_empty())
            .cloned()
    })
    .await;
    assert!(
        audited.is_some(),
        "auth's revocations of the suspended tenant's sessions are not audited within 15 s"
    );

    // Every service's purge report (auth's and the CRM's events) arrives without the poll.
    let report = app
        .delete_tenant(&root, "demo", Duration::from_secs(15))
        .await;
    assert_eq!(
        report["services"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
}

#[tokio::test]
async fn deleting_a_tenant_leaves_no_row_of_it_in_any_service_database() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let tenant = populate(&app, &root, "wiped-out").await;
    let mut needles = vec![
        ("tenant id", tenant.id.clone()),
        ("slug", tenant.slug.clone()),
    ];
    needles.extend(
        tenant
            .ids("auth", "users")
            .iter()
            .map(|id| ("user", id.clone())),
    );
    needles.extend(tenant.sessions.iter().map(|sid| ("session", sid.clone())));

    // The search finds the tenant in every table that holds its data, so that finding
    // nothing afterwards means something (CDX's copies come from events: delivered first).
    app.app().flush_events().await.expect("events delivered");
    let before = occurrences(&app, &needles).await;
    let tables: BTreeSet<&str> = before.iter().map(|(at, _)| table_of(at)).collect();
    for expected in [
        "auth.users",
        "auth.sessions",
        "auth.refresh_tokens",
        "auth.login_attempts",
        "auth.setup_tokens",
        "auth.tenant_replica",
        "crm.customers",
        "crm.customer_tags",
        "crm.companies",
        "crm.deals",
        "crm.stage_changes",
        "crm.pipelines",
        "crm.stages",
        "crm.notes",
        "crm.field_definitions",
        "crm.tenant_users",
        "crm.tenant_replica",
        "cdx.tenants",
        "cdx.tenant_summary",
        "cdx.tenant_users",
        "cdx.tenant_logins",
        "cdx.tenant_deals",
        "cdx.tenant_pipeline",
        "cdx.activity_daily",
        "cdx.tenant_replica",
    ] {
        assert!(
            tables.contains(expected),
            "{expected} not found: {before:?}"
        );
    }

    app.delete_tenant(&root, &tenant.slug, Duration::from_secs(30))
        .await;
    // Every event the purges recorded is delivered (and gone from the outboxes).
    app.app().flush_events().await.expect("events delivered");

    // Only the ids of the tenant's revoked sessions stay, in a table without tenant, user
    // or address, so that their access tokens stay refused until they would have expired;
    // and each service knows the tenant's id as deleted, so that a late event of another
    // service brings nothing of it back.
    let after = occurrences(&app, &needles).await;
    let kept = BTreeSet::from([
        ("auth.revoked_sessions.session_id".to_string(), "session"),
        ("auth.deleted_tenants.id".to_string(), "tenant id"),
        ("crm.deleted_tenants.id".to_string(), "tenant id"),
        ("cdx.deleted_tenants.id".to_string(), "tenant id"),
    ]);
    assert_eq!(after, kept, "rows of the deleted tenant remain");
}

#[tokio::test]
async fn the_export_holds_every_record_created_for_the_tenant_and_nothing_else() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let tenant = populate(&app, &root, "exported").await;
    let (status, export) = app
        .call(
            Method::GET,
            "/api/cdx/tenants/exported/export",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["tenant"]["id"], tenant.id.as_str());
    let services = &export["services"];
    assert_eq!(services["cdx"]["tenant"]["id"], tenant.id.as_str());

    for ((service, table), ids) in &tenant.records {
        let rows = rows(services, service, table);
        let exported: BTreeSet<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
        for id in ids {
            assert!(
                exported.contains(id.as_str()),
                "{service}.{table} misses {id}: {rows:?}"
            );
        }
    }
    // Tags and custom field values travel with their records.
    let tags = rows(services, "crm", "customer_tags");
    for customer in tenant.ids("crm", "customers") {
        let row = rows(services, "crm", "customers")
            .into_iter()
            .find(|row| row["id"] == customer.as_str())
            .expect("exported customer");
        assert!(row["custom"].to_string().contains("tier"), "{row}");
        for tag in ["vip", tenant.slug.as_str()] {
            assert!(
                tags.iter()
                    .any(|t| t["customer_id"] == customer.as_str() && t["tag"] == tag),
                "{customer} lacks the tag {tag}: {tags:?}"
            );
        }
    }
    for service in ["auth", "crm"] {
        for (table, rows) in services[service].as_object().expect("tables") {
            for row in rows.as_array().expect("rows") {
                if let Some(owner) = row.get("tenant_id") {
                    assert_eq!(owner, tenant.id.as_str(), "{service}.{table}: {row}");
                }
            }
        }
    }

    // Nothing of another tenant, nothing secret.
    let text = export.to_string();
    let demo = [("x-tenant", "demo")];
    let (_, other) = app
        .call_with(Method::GET, "/api/crm/customers", Some(&root), None, &demo)
        .await;
    let (_, others) = app
        .call_with(Method::GET, "/api/auth/users", Some(&root), None, &demo)
        .await;
    for record in other["items"]
        .as_array()
        .into_iter()
        .chain(others["items"].as_array())
        .flatten()
    {
        let id = record["id"].as_str().expect("id");
        assert!(!text.contains(id), "another tenant's {record} is exported");
    }
    for secret in
        tenant
            .secrets
            .iter()
            .map(String::as_str)
            .chain(["$argon2", "password", "token_hash"])
    {
        assert!(!text.contains(secret), "{secret} is exported: {text}");
    }
}

/// A tenant filled through the API with data of every kind.
struct Populated {
    id: String,
    slug: String,
    /// Ids of what was created, by service and table.
    records: BTreeMap<(&'static str, &'static str), Vec<String>>,
    /// Its users' sessions.
    sessions: Vec<String>,
    /// What must never leave auth: the setup token, access and refresh tokens.
    secrets: Vec<String>,
}

impl Populated {
    /// Notes the `id` of `record`, created in `service`'s `table`, and answers it.
    fn add(&mut self, service: &'static str, table: &'static str, record: &Value) -> String {
        let id = record["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {record}"))
            .to_string();
        self.records
            .entry((service, table))
            .or_default()
            .push(id.clone());
        id
    }

    fn ids(&self, service: &'static str, table: &'static str) -> &[String] {
        self.records
            .get(&(service, table))
            .map_or(&[], Vec::as_slice)
    }

    /// Logs a user of the tenant in: notes the user, the session and its tokens; answers
    /// the access token.
    async fn log_in(&mut self, app: &TestApp, email: &str, password: &str) -> String {
        let (status, login) = app.login_as((email, password), Some(&self.slug)).await;
        assert_eq!(status, StatusCode::OK, "{login}");
        self.add("auth", "users", &login["user"]);
        let token = login["access_token"].as_str().expect("token").to_string();
        let (_, sessions) = app
            .call(Method::GET, "/api/auth/sessions", Some(&token), None)
            .await;
        let current = sessions["items"]
            .as_array()
            .and_then(|items| items.iter().find(|s| s["current"] == true))
            .and_then(|s| s["id"].as_str())
            .expect("the current session");
        self.sessions.push(current.to_string());
        self.secrets.push(token.clone());
        self.secrets.push(
            login["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_string(),
        );
        token
    }
}

/// POSTs `body` to `path` as `token`, expecting `201`; answers the created record.
async fn create(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, created) = app.call(Method::POST, path, Some(token), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {created}");
    created
}

/// Creates tenant `slug` with its admin and a user (both logged in), custom fields,
/// companies, tagged customers with custom values, an extra pipeline, deals (one moved to
/// another stage), a note and activities. Every name and address holds the slug.
async fn populate(app: &TestApp, root: &str, slug: &str) -> Populated {
    let admin_email = format!("boss@{slug}.example");
    let (status, tenant) = create_with_admin(app, root, slug, &admin_email).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    let setup = tenant["admin_setup"]["token"]
        .as_str()
        .expect("setup token")
        .to_string();
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/setup-password",
            None,
            Some(json!({ "token": setup, "password": "a-good-secret" })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut data = Populated {
        id: tenant["id"].as_str().expect("id").to_string(),
        slug: slug.to_string(),
        records: BTreeMap::new(),
        sessions: Vec::new(),
        secrets: vec![setup],
    };
    let admin = data.log_in(app, &admin_email, "a-good-secret").await;
    let staff_email = format!("staff@{slug}.example");
    app.create_user(&admin, None, &staff_email, "user").await;
    let staff = data.log_in(app, &staff_email, "password123").await;

    for field in [
        json!({"entity": "customer", "name": "tier", "label": "Tier", "kind": "select",
               "options": ["gold", "silver"]}),
        json!({"entity": "deal", "name": "source", "label": "Source", "kind": "text"}),
    ] {
        let field = create(app, &admin, "/api/crm/fields", field).await;
        data.add("crm", "field_definitions", &field);
    }
    let mut companies = Vec::new();
    for name in ["Holdings", "Labs"] {
        let company =
            json!({"name": format!("{slug} {name}"), "domain": format!("{slug}.example")});
        let company = create(app, &admin, "/api/crm/companies", company).await;
        companies.push(data.add("crm", "companies", &company));
    }
    let mut customers = Vec::new();
    for (token, first, tier, company) in [
        (&admin, "Ada", "gold", &companies[0]),
        (&staff, "Grace", "silver", &companies[1]),
    ] {
        let customer = json!({
            "first_name": first, "last_name": slug,
            "email": format!("{}@{slug}.example", first.to_lowercase()),
            "company_id": company, "tags": ["vip", slug], "custom": {"tier": tier},
        });
        let customer = create(app, token, "/api/crm/customers", customer).await;
        customers.push(data.add("crm", "customers", &customer));
    }
    let renewals = json!({"name": "Renewals", "stages": [
        {"name": "Due"}, {"name": "Renewed", "kind": "won"}, {"name": "Cancelled", "kind": "lost"}]});
    let renewals = create(app, &admin, "/api/crm/pipelines", renewals).await;
    // The default pipeline came with the tenant; both are the tenant's, with their stages.
    let (_, pipelines) = app
        .call(Method::GET, "/api/crm/pipelines", Some(&admin), None)
        .await;
    let pipelines = pipelines["items"].as_array().expect("pipelines").clone();
    assert_eq!(pipelines.len(), 2, "{pipelines:?}");
    for pipeline in &pipelines {
        data.add("crm", "pipelines", pipeline);
        for stage in pipeline["stages"].as_array().expect("stages") {
            data.add("crm", "stages", stage);
        }
    }
    let licence = json!({"title": format!("{slug} licence"), "value": 500_000, "currency": "EUR",
        "customer_id": customers[0], "company_id": companies[0], "custom": {"source": "referral"}});
    let licence = create(app, &admin, "/api/crm/deals", licence).await;
    let licence_id = data.add("crm", "deals", &licence);
    let renewal = json!({"title": format!("{slug} renewal"), "value": 9_900, "currency": "USD",
        "pipeline_id": renewals["id"], "customer_id": customers[1]});
    let renewal = create(app, &staff, "/api/crm/deals", renewal).await;
    data.add("crm", "deals", &renewal);
    let next_stage = pipelines
        .iter()
        .find(|p| p["id"] == licence["pipeline_id"])
        .and_then(|p| p["stages"].get(1))
        .and_then(|s| s["id"].as_str())
        .expect("a second stage");
    let (status, moved) = app
        .call(
            Method::PATCH,
            &format!("/api/crm/deals/{licence_id}"),
            Some(&admin),
            Some(json!({ "stage_id": next_stage, "version": licence["version"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    for note in [
        json!({"body": format!("Met {slug} at the fair"), "customer_id": customers[0]}),
        json!({"kind": "call", "body": "Called about the licence", "deal_id": licence_id}),
        json!({"kind": "task", "body": "Send the offer", "customer_id": customers[1],
               "due_on": "2030-01-31"}),
    ] {
        let note = create(app, &staff, "/api/crm/notes", note).await;
        data.add("crm", "notes", &note);
    }
    data
}

/// The exported rows of `service`'s `table`.
fn rows(services: &Value, service: &str, table: &str) -> Vec<Value> {
    services[service][table]
        .as_array()
        .unwrap_or_else(|| panic!("no {service}.{table} in the export"))
        .clone()
}

/// `service.table` of a `service.table.column`.
fn table_of(at: &str) -> &str {
    at.rsplit_once('.').map_or(at, |(table, _)| table)
}

/// Where the service databases hold one of `needles` (what, value): `service.table.column`
/// and what, searched in every text column and every column named after a tenant, of every
/// table. CDX's audit trail and purge reports are exempt: the trail is append-only and
/// hash-chained, the report is the record of the deletion.
async fn occurrences(
    app: &TestApp,
    needles: &[(&'static str, String)],
) -> BTreeSet<(String, &'static str)> {
    const EXEMPT: &[&str] = &["cdx.audit_log", "cdx.tenant_purges"];
    let mut found = BTreeSet::new();
    for (service, database) in app.settings.service_databases() {
        let url = database.url.as_deref().expect("a database url");
        let db = Db::connect_existing(service, url, Some(1), &app.settings.database)
            .await
            .expect("the service database");
        for table in db.tables().await.expect("tables") {
            let at = format!("{service}.{table}");
            if EXEMPT.contains(&at.as_str()) {
                continue;
            }
            for column in searched_columns(&db, &table).await {
                let sql = format!(
                    "SELECT COUNT(*) AS n FROM \"{table}\" \
                     WHERE LOWER(CAST(\"{column}\" AS TEXT)) LIKE $1 ESCAPE '\\'"
                );
                for (what, value) in needles {
                    let n: i64 = sqlx::query(&sql)
                        .bind(contains_pattern(value))
                        .fetch_one(db.reader())
                        .await
                        .and_then(|row| row.try_get("n"))
                        .unwrap_or_else(|e| panic!("{at}.{column}: {e}"));
                    if n > 0 {
                        found.insert((format!("{at}.{column}"), *what));
                    }
                }
            }
        }
        db.close().await;
    }
    found
}

/// The columns of `table` that can hold an id or a name: text columns, and any column
/// named after a tenant, as the database's catalogue lists them.
async fn searched_columns(db: &Db, table: &str) -> Vec<String> {
    let sql = match db.backend() {
        Backend::Sqlite => "SELECT name AS c, type AS t FROM pragma_table_info($1)",
        Backend::Postgres => {
            "SELECT CAST(column_name AS TEXT) AS c, CAST(data_type AS TEXT) AS t \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
    };
    let columns = sqlx::query(sql)
        .bind(table)
        .fetch_all(db.reader())
        .await
        .expect("the catalogue");
    columns
        .iter()
        .filter_map(|row| {
            let name: String = row.try_get("c").ok()?;
            let kind: String = row.try_get::<String, _>("t").ok()?.to_lowercase();
            let searched =
                kind.contains("text") || kind.contains("char") || name.contains("tenant");
            searched.then_some(name)
        })
        .collect()
}
