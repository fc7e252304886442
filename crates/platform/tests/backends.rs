//! The kernel's storage contract on the backend under test (`TEST_BACKEND`): databases are
//! created on first connect, migrations apply once per database, services sharing one
//! PostgreSQL database through schemas keep separate tables and histories, and the
//! outbox/dedup round trip holds, and a tenant's tables export page by page.

use futures_util::TryStreamExt;
use platform::config::PoolDefaults;
use platform::db::{Backend, Db, MigrationFile};
use platform::events::{begin_once, record, Actor, Event};
use platform::export::{export_tables_in_pages, ExportTable};
use platform::testing::{backend, TestDatabases};

const SERVICE_MIGRATIONS: &[MigrationFile] = &[MigrationFile {
    version: 100,
    name: "things",
    sql: "CREATE TABLE things (tenant_id TEXT NOT NULL, id TEXT NOT NULL, flag BIGINT NOT NULL, PRIMARY KEY (tenant_id, id));",
}];

async fn open(url: &str) -> Db {
    let db = Db::connect("svc", url, Some(2), &PoolDefaults::default())
        .await
        .expect("connect");
    db.migrate(SERVICE_MIGRATIONS).await.expect("migrate");
    db
}

#[tokio::test]
async fn empty_and_already_migrated_databases() {
    let dbs = TestDatabases::new();
    let url = dbs.url("svc");
    let db = open(&url).await;
    assert_eq!(db.migration_version().await.expect("version"), Some(100));
    db.close().await;
    // Opening again finds everything applied and changes nothing.
    let db = open(&url).await;
    assert!(db
        .migrations_current(SERVICE_MIGRATIONS)
        .await
        .expect("current"));
    let tables = db.tables().await.expect("tables");
    for t in ["outbox", "processed_events", "tenant_replica", "things"] {
        assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
    }
    assert_eq!(db.backend(), backend());
}

#[tokio::test]
async fn portable_types_round_trip() {
    let dbs = TestDatabases::new();
    let db = open(&dbs.url("svc")).await;
    let mut tx = db.begin().await.expect("begin");
    sqlx::query("INSERT INTO things (tenant_id, id, flag) VALUES ($1, $2, $3)")
        .bind("t1")
        .bind("a")
        .bind(1i64)
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    let flag: i64 = sqlx::query_scalar("SELECT flag FROM things WHERE tenant_id = $1 AND id = $2")
        .bind("t1")
        .bind("a")
        .fetch_one(db.reader())
        .await
        .expect("select");
    assert_eq!(flag, 1);
    let duplicate = async {
        let mut tx = db.begin().await?;
        sqlx::query("INSERT INTO things (tenant_id, id, flag) VALUES ('t1', 'a', 0)")
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await
    .expect_err("primary key holds");
    assert_eq!(platform::ApiError::from(duplicate).code, "already_exists");
}

#[tokio::test]
async fn events_apply_once_per_consumer() {
    let dbs = TestDatabases::new();
    let db = open(&dbs.url("svc")).await;
    let event = Event::new(
        "svc",
        "svc.thing.created",
        Some("t1"),
        "a",
        &Actor::system("test"),
        serde_json::json!({}),
    );
    let mut tx = db.begin().await.expect("begin");
    record(&mut tx, &event).await.expect("record");
    tx.commit().await.expect("commit");
    assert_eq!(db.count_rows("outbox").await.expect("count"), 1);
    let first = begin_once(&db, "consumer", &event).await.expect("begin");
    first
        .expect("first delivery applies")
        .commit()
        .await
        .expect("commit");
    assert!(
        begin_once(&db, "consumer", &event)
            .await
            .expect("begin")
            .is_none(),
        "a redelivery is skipped"
    );
    assert!(
        begin_once(&db, "other", &event)
            .await
            .expect("begin")
            .is_some(),
        "per consumer"
    );
}

#[tokio::test]
async fn postgres_services_can_share_a_database_through_schemas() {
    if backend() != Backend::Postgres {
        // Schemas are a PostgreSQL layout; on SQLite every service has its own file.
        return;
    }
    let dbs = TestDatabases::new();
    let shared = dbs.url("shared");
    let a = open(&format!("{shared}?schema=svc_a")).await;
    let b = Db::connect(
        "other",
        &format!("{shared}?schema=svc_b"),
        Some(2),
        &PoolDefaults::default(),
    )
    .await
    .expect("connect");
    b.migrate(&[]).await.expect("migrate");
    assert!(a
        .tables()
        .await
        .expect("tables")
        .contains(&"things".to_string()));
    assert!(
        !b.tables()
            .await
            .expect("tables")
            .contains(&"things".to_string()),
        "schemas keep tables apart"
    );
    assert_eq!(a.migration_version().await.expect("v"), Some(100));
    assert_eq!(
        b.migration_version().await.expect("v"),
        platform::db::KERNEL_MIGRATIONS.last().map(|m| m.version),
        "one history per service"
    );
}

/// Tables of the export test: `things` (the chosen columns only), `tags` (a two-column
/// key, several rows sharing its first column) and an empty one.
const EXPORTED: &[ExportTable] = &[
    ExportTable {
        name: "things",
        columns: "id, flag",
        key: &["id"],
    },
    ExportTable {
        name: "tags",
        columns: "*",
        key: &["tag", "thing_id"],
    },
    ExportTable {
        name: "drafts",
        columns: "*",
        key: &["id"],
    },
];

#[tokio::test]
async fn a_tenant_export_streams_every_row_page_by_page() {
    let dbs = TestDatabases::new();
    let db = open(&dbs.url("svc")).await;
    for sql in [
        "CREATE TABLE tags (tenant_id TEXT NOT NULL, tag TEXT NOT NULL, thing_id TEXT NOT NULL, \
         PRIMARY KEY (tenant_id, tag, thing_id))",
        "CREATE TABLE drafts (tenant_id TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (tenant_id, id))",
        "INSERT INTO things (tenant_id, id, flag) VALUES \
         ('t1', 'e', 4), ('t1', 'a', 0), ('t1', 'c', 2), ('t1', 'b', 1), ('t1', 'd', 3), ('t2', 'x', 9)",
        "INSERT INTO tags (tenant_id, tag, thing_id) VALUES \
         ('t1', 'red', 'c'), ('t1', 'red', 'a'), ('t1', 'blue', 'a'), ('t1', 'red', 'b'), ('t2', 'red', 'x')",
    ] {
        sqlx::query(sql).execute(db.writer()).await.expect(sql);
    }

    let chunks: Vec<_> = export_tables_in_pages(db.clone(), "t1", EXPORTED, 2)
        .try_collect()
        .await
        .expect("export");
    // One chunk per page of at most two rows: things 2+2+1, tags 2+2+0, drafts 0.
    assert_eq!(chunks.len(), 7, "{chunks:?}");
    let document: Vec<u8> = chunks.concat();
    let document: serde_json::Value = serde_json::from_slice(&document).expect("one JSON object");
    assert_eq!(
        document,
        serde_json::json!({
            "things": [
                {"id": "a", "flag": 0}, {"id": "b", "flag": 1}, {"id": "c", "flag": 2},
                {"id": "d", "flag": 3}, {"id": "e", "flag": 4},
            ],
            "tags": [
                {"tenant_id": "t1", "tag": "blue", "thing_id": "a"},
                {"tenant_id": "t1", "tag": "red", "thing_id": "a"},
                {"tenant_id": "t1", "tag": "red", "thing_id": "b"},
                {"tenant_id": "t1", "tag": "red", "thing_id": "c"},
            ],
            "drafts": [],
        })
    );

    // A tenant with no rows, and a service with no tables, still export a whole object.
    let empty: Vec<_> = export_tables_in_pages(db.clone(), "t3", EXPORTED, 2)
        .try_collect()
        .await
        .expect("export");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&empty.concat()).expect("json"),
        serde_json::json!({"things": [], "tags": [], "drafts": []})
    );
    let none: Vec<_> = export_tables_in_pages(db, "t1", &[], 2)
        .try_collect()
        .await
        .expect("export");
    assert_eq!(none.concat(), b"{}");
}
