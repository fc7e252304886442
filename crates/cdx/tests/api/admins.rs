//! Superadmins, the admin directory and the demo seed.

use cdx::Cdx;
use platform::caller::{AuthContext, Revocations};
use platform::config::PoolDefaults;
use platform::db::Db;
use platform::directory::AdminDirectory;
use platform::events::{Actor, Bus, Outbox};
use platform::ids::new_id;
use platform::tenants::TenantReplica;
use platform::testing::TestDatabases;
use platform::token::Verifier;
use secrecy::SecretString;
use sqlx::Row;

use crate::common::{cheap_hashing, spawn_app};

#[tokio::test]
async fn seed_and_admin_directory() {
    let app = spawn_app().await;
    let first = app.cdx.seed_demo().await.expect("seed");
    let again = app.cdx.seed_demo().await.expect("seed again");
    assert_eq!(first, again, "idempotent");
    assert_eq!(first.slug, "demo");
    assert_eq!(app.count("tenants").await, 1);
    assert_eq!(app.count("clients").await, 1);
    assert_eq!(app.count("admins").await, 2);
    // Delivered before seed_demo returned.
    assert_eq!(
        app.replica.resolve("demo").await.expect("replica"),
        Some(first.clone())
    );
    let tenant = app.get("/api/cdx/tenants/demo").await;
    assert_eq!(tenant.body["name"], "Demo Tenant");
    let clients = app.get("/api/cdx/clients").await;
    assert_eq!(clients.body["items"][0]["name"], "Demo Client");
    assert_eq!(tenant.body["client_id"], clients.body["items"][0]["id"]);

    let pw = |s: &str| SecretString::from(s.to_string());
    let demo = app
        .cdx
        .verify_admin("test", &pw("test123"))
        .await
        .expect("verify");
    let demo = demo.expect("the demo admin logs in");
    assert_eq!(demo.username, "test");
    assert_eq!(
        app.cdx
            .verify_admin("TEST", &pw("test123"))
            .await
            .expect("verify"),
        Some(demo.clone())
    );
    assert_eq!(
        app.cdx
            .verify_admin("test", &pw("wrong"))
            .await
            .expect("verify"),
        None
    );
    assert_eq!(
        app.cdx
            .verify_admin("nobody", &pw("test123"))
            .await
            .expect("verify"),
        None
    );
    assert_eq!(
        app.cdx
            .verify_admin("x", &pw("test123"))
            .await
            .expect("verify"),
        None
    );
    assert_eq!(
        app.cdx.admin_by_id(&demo.id).await.expect("by id"),
        Some(demo.clone())
    );
    assert_eq!(app.cdx.admin_by_id(&new_id()).await.expect("by id"), None);
    assert_eq!(app.cdx.admin_by_id("garbage").await.expect("by id"), None);
    assert!(app.cdx.has_admin().await.expect("has admin"));

    let system = Actor::system("test");
    let short = app
        .cdx
        .create_admin("ops", &pw("test123"), &system)
        .await
        .expect_err("too short");
    assert_eq!(short.status.as_u16(), 422);
    let taken = app
        .cdx
        .create_admin("Test", &pw("long enough"), &system)
        .await
        .expect_err("taken");
    assert_eq!(taken.status.as_u16(), 409);
    let invalid = app
        .cdx
        .create_admin("a b", &pw("long enough"), &system)
        .await
        .expect_err("invalid");
    assert_eq!(invalid.details.expect("details")["field"], "username");

    // New hash parameters: the next successful login stores an upgraded hash.
    let stored = || async {
        sqlx::query("SELECT password_hash FROM admins WHERE username = $1")
            .bind("test")
            .fetch_one(app.db.reader())
            .await
            .expect("row")
            .try_get::<String, _>("password_hash")
            .expect("hash")
    };
    let before = stored().await;
    let auth = AuthContext {
        verifier: Verifier::new("metatron", "metatron"),
        revocations: Revocations::new(),
        tenants: app.replica.clone(),
    };
    let upgraded = Cdx::new(
        app.db.clone(),
        app.outbox.clone(),
        auth,
        cheap_hashing(2048),
    );
    assert!(upgraded
        .verify_admin("test", &pw("test123"))
        .await
        .expect("verify")
        .is_some());
    let after = stored().await;
    assert_ne!(before, after);
    assert!(after.contains("m=2048"), "{after}");
    assert!(upgraded
        .verify_admin("test", &pw("test123"))
        .await
        .expect("verify")
        .is_some());
}

#[tokio::test]
async fn an_empty_registry_has_no_admin() {
    let dbs = TestDatabases::new();
    let db = Db::connect("cdx", &dbs.url("cdx"), None, &PoolDefaults::default())
        .await
        .expect("connect");
    db.migrate(cdx::SERVICE.migrations).await.expect("migrate");
    db.migrate(cdx::SERVICE.migrations)
        .await
        .expect("migrations are idempotent");
    let bus = Bus::new();
    let auth = AuthContext {
        verifier: Verifier::new("metatron", "metatron"),
        revocations: Revocations::new(),
        tenants: TenantReplica::new(db.clone()),
    };
    let cdx = Cdx::new(
        db.clone(),
        Outbox::new(db.clone(), bus),
        auth,
        cheap_hashing(1024),
    );
    assert!(!cdx.has_admin().await.expect("has admin"));
    assert!(db
        .migrations_current(cdx::SERVICE.migrations)
        .await
        .expect("current"));
    let tables = db.tables().await.expect("tables");
    for table in ["clients", "tenants", "admins", "services", "audit_log"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing: {tables:?}"
        );
    }
}
