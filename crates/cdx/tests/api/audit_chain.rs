//! The audit log as a tamper-evident hash chain, its signed checkpoints, and a tenant's own
//! audit trail for its admins.

use cdx::chain::{self, ChainReport, VerifyOptions};
use cdx::AuditSettings;
use platform::config::PoolDefaults;
use platform::db::Db;
use platform::events::{Actor, Event};
use platform::ids::new_id;
use platform::testing::TestDatabases;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{ids, spawn_app, App};

fn event(tenant_id: Option<&str>, action: &str, target: &str) -> Event {
    Event::new(
        "auth",
        action,
        tenant_id,
        target,
        &Actor::system("test"),
        json!({ "changed": ["status"], "status": "x" }),
    )
}

/// Publishes `n` events of `tenant_id` through the bus.
async fn publish(app: &App, tenant_id: Option<&str>, n: usize) -> Vec<Event> {
    let mut sent = Vec::new();
    for i in 0..n {
        let e = event(tenant_id, "auth.user.updated", &format!("u{i}"));
        app.bus.publish(&e).await.expect("deliver");
        sent.push(e);
    }
    sent
}

async fn verify(db: &Db) -> ChainReport {
    chain::verify(db, &VerifyOptions::default())
        .await
        .expect("verify runs")
}

/// Every entry, in chain order.
async fn chain_entries(app: &App) -> Vec<Value> {
    let (mut items, _) = app.collect("/api/cdx/audit", 500).await;
    items.sort_by_key(|i| i["seq"].as_i64().expect("seq"));
    items
}

#[tokio::test]
async fn entries_form_a_hash_chain_and_redelivery_changes_nothing() {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    app.tenant("acme", client["id"].as_str().expect("id")).await;
    app.delivered().await;
    let sent = publish(&app, None, 3).await;

    let items = chain_entries(&app).await;
    assert_eq!(items.len(), 6, "admin, client, tenant and three events");
    let mut prev = chain::GENESIS.to_string();
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["seq"].as_i64(), Some(i as i64 + 1), "gap-free from 1");
        assert_eq!(item["prev_hash"].as_str(), Some(prev.as_str()));
        let hash = item["hash"].as_str().expect("hash");
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, prev);
        prev = hash.to_string();
    }
    assert_eq!(items[5]["changed"], json!(["status"]));
    let report = verify(&app.db).await;
    assert!(report.valid, "{report:?}");
    assert_eq!((report.entries, report.head_seq), (6, 6));
    assert_eq!(report.head_hash, prev);

    // At-least-once delivery: the same events again, alone and in a batch, add nothing and
    // leave the chain's head where it was.
    app.bus.publish(&sent[0]).await.expect("redeliver");
    app.bus.publish_batch(&sent).await.expect("redeliver batch");
    let again = verify(&app.db).await;
    assert_eq!(again, report);
    assert_eq!(app.count("audit_log").await, 6);

    // A batch with a repeat inside appends each new event once.
    let fresh = event(None, "auth.login.succeeded", "u9");
    app.bus
        .publish_batch(&[fresh.clone(), sent[1].clone(), fresh.clone()])
        .await
        .expect("batch");
    let after = verify(&app.db).await;
    assert!(after.valid, "{after:?}");
    assert_eq!(after.head_seq, 7);
    let last = chain_entries(&app).await;
    assert_eq!(last[6]["id"], fresh.id.as_str());
    assert_eq!(last[6]["prev_hash"].as_str(), Some(prev.as_str()));
}

#[tokio::test]
async fn a_changed_row_is_the_first_broken_entry() {
    let app = spawn_app().await;
    publish(&app, None, 5).await;
    assert!(verify(&app.db).await.valid);
    let third = chain_entries(&app).await[2]["id"]
        .as_str()
        .expect("id")
        .to_string();
    sqlx::query("UPDATE audit_log SET detail = '{\"status\":\"forged\"}' WHERE seq = 3")
        .execute(app.db.writer())
        .await
        .expect("tamper");
    let report = verify(&app.db).await;
    assert!(!report.valid);
    let broken = report.broken.expect("a break");
    assert_eq!(broken.seq, Some(3));
    assert_eq!(broken.id.as_deref(), Some(third.as_str()));
    assert_eq!(report.entries, 2, "entries before the break verified");

    // The API's verification flag says the same.
    let api = app
        .post("/api/cdx/audit/verify?wait_ms=10000", json!({}))
        .await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    assert_eq!(api.body["latest"]["valid"], false, "{}", api.body);
    assert_eq!(api.body["latest"]["broken"]["seq"], 3);
    assert_eq!(api.body["latest"]["broken"]["id"], third.as_str());
}

#[tokio::test]
async fn a_removed_row_is_found_in_the_middle_and_at_the_end() {
    // The setup's own entry (the first admin) first: the rows deleted below are then the
    // ones meant, not a place a late entry takes.
    let app = spawn_app().await;
    app.delivered().await;
    publish(&app, None, 5).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 4")
        .execute(app.db.writer())
        .await
        .expect("delete");
    let report = verify(&app.db).await;
    let broken = report.broken.expect("a break");
    assert_eq!(broken.seq, Some(4));
    assert!(broken.reason.contains("missing"), "{}", broken.reason);

    let app = spawn_app().await;
    app.delivered().await;
    publish(&app, None, 5).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 6")
        .execute(app.db.writer())
        .await
        .expect("delete the last");
    let broken = verify(&app.db).await.broken.expect("truncation is a break");
    assert_eq!(broken.seq, Some(6));

    // A row slipped in outside the writer (no chain position) is a break too.
    let app = spawn_app().await;
    app.delivered().await;
    sqlx::query(
        "INSERT INTO audit_log (id, occurred_at, actor_role, action, target, detail) \
         VALUES ('zzz', 1, 'system', 'x.y', 't', '{}')",
    )
    .execute(app.db.writer())
    .await
    .expect("insert");
    let broken = verify(&app.db).await.broken.expect("unchained row");
    assert_eq!((broken.seq, broken.id.as_deref()), (None, Some("zzz")));
}

#[tokio::test]
async fn checkpoints_are_signed_every_n_entries_and_verified() {
    let app = spawn_app().await;
    // The first admin's entry first, so the positions below are fixed.
    app.delivered().await;
    let consumer = app
        .cdx
        .clone()
        .with_audit(AuditSettings {
            checkpoint_every: 3,
            checkpoint_interval_secs: 60,
            ..Default::default()
        })
        .consumer();
    for _ in 0..7 {
        let e = event(None, "auth.user.updated", "u");
        consumer.handle(&e).await.expect("append");
    }
    // 8 entries (with the admin's): checkpoints at 3 and 6.
    let report = verify(&app.db).await;
    assert!(report.valid, "{report:?}");
    assert_eq!((report.entries, report.checkpoints), (8, 2));
    assert_eq!(report.keys.len(), 1, "one key, generated on first use");
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_checkpoints ORDER BY seq")
        .fetch_all(app.db.reader())
        .await
        .expect("checkpoints");
    assert_eq!(seqs, [3, 6]);

    // The timer's checkpoint signs the head; nothing new, nothing signed.
    assert_eq!(app.cdx.checkpoint_audit().await.expect("sign"), Some(8));
    assert_eq!(app.cdx.checkpoint_audit().await.expect("sign"), None);
    let report = verify(&app.db).await;
    assert_eq!((report.checkpoints, report.keys.len()), (3, 1));

    // The signature covers seq and hash: one checkpoint's signature on another is refused.
    let sig: String = sqlx::query_scalar("SELECT signature FROM audit_checkpoints WHERE seq = 3")
        .fetch_one(app.db.reader())
        .await
        .expect("sig");
    sqlx::query("UPDATE audit_checkpoints SET signature = $1 WHERE seq = 6")
        .bind(sig)
        .execute(app.db.writer())
        .await
        .expect("tamper");
    let broken = verify(&app.db).await.broken.expect("bad signature");
    assert_eq!(broken.seq, Some(6));
    assert!(broken.reason.contains("signature"), "{}", broken.reason);
}

#[tokio::test]
async fn rows_from_before_the_chain_are_chained_once() {
    let dbs = TestDatabases::new();
    let db = Db::connect("cdx", &dbs.url("cdx"), None, &PoolDefaults::default())
        .await
        .expect("connect");
    db.migrate(&cdx::MIGRATIONS[..1]).await.expect("old schema");
    for i in 0..3 {
        sqlx::query(
            "INSERT INTO audit_log (id, occurred_at, actor_role, action, target, detail) \
             VALUES ($1, $2, 'system', 'cdx.client.updated', 'c1', $3)",
        )
        .bind(format!("old-{i}"))
        .bind(i64::from(i))
        .bind(json!({ "changed": ["name"] }).to_string())
        .execute(db.writer())
        .await
        .expect("old row");
    }
    db.migrate(cdx::MIGRATIONS).await.expect("upgrade");
    let waiting = verify(&db).await;
    assert!(!waiting.valid);
    assert!(waiting
        .broken
        .expect("break")
        .reason
        .contains("not chained yet"));

    let replica = platform::tenants::TenantReplica::new(db.clone());
    let bus = platform::events::Bus::new();
    let outbox = platform::events::Outbox::new(db.clone(), bus);
    let auth = platform::caller::AuthContext {
        verifier: platform::token::Verifier::new("metatron", "metatron"),
        revocations: platform::caller::Revocations::new(),
        tenants: replica,
    };
    let cdx = cdx::Cdx::new(db.clone(), outbox, auth, crate::common::cheap_hashing(1024));
    assert_eq!(cdx.prepare_audit_chain().await.expect("backfill"), 3);
    assert_eq!(cdx.prepare_audit_chain().await.expect("once"), 0);
    cdx.consumer()
        .handle(&event(None, "auth.user.updated", "u"))
        .await
        .expect("append");
    let report = verify(&db).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries, 4);
    let first: (i64, String) =
        sqlx::query_as("SELECT seq, changed FROM audit_log WHERE id = 'old-0'")
            .fetch_one(db.reader())
            .await
            .expect("row");
    assert_eq!(first, (1, "[\"name\"]".to_string()));
}

#[tokio::test]
async fn tenant_admins_read_only_their_own_tenants_trail() {
    let app = spawn_app().await;
    let client = app.client("Acme").await;
    let client_id = client["id"].as_str().expect("id");
    let a = app.tenant("alpha", client_id).await;
    let b = app.tenant("beta", client_id).await;
    let (a, b) = (
        a["id"].as_str().expect("id").to_string(),
        b["id"].as_str().expect("id").to_string(),
    );
    app.delivered().await;
    publish(&app, Some(&a), 3).await;
    publish(&app, Some(&b), 2).await;
    app.bus
        .publish(&event(Some(&a), "auth.login.succeeded", "u1"))
        .await
        .expect("deliver");

    let token = |tenant: &str, role: &str| {
        app.signer
            .issue(&new_id(), Some(tenant), role, &new_id(), 600)
            .expect("token")
            .0
    };
    let get = |path: String, token: String, headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.send(Method::GET, &path, Some(&token), None, &headers)
                .await
        }
    };
    let admin_a = token(&a, "admin");
    let own = get("/api/cdx/tenant-audit".into(), admin_a.clone(), vec![]).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
    let items = own.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "tenant created, three updates, one login");
    assert!(items.iter().all(|i| i["tenant_id"] == a.as_str()));
    assert!(items
        .iter()
        .all(|i| i["seq"].is_i64() && i["hash"].is_string()));

    // Filters and paging as in the superadmin's log.
    let logins = get(
        "/api/cdx/tenant-audit?action=auth.login.*".into(),
        admin_a.clone(),
        vec![],
    )
    .await;
    assert_eq!(logins.body["items"].as_array().expect("items").len(), 1);
    let target = get(
        "/api/cdx/tenant-audit?target=u1".into(),
        admin_a.clone(),
        vec![],
    )
    .await;
    let target = target.body["items"].as_array().expect("items").clone();
    assert_eq!(target.len(), 2, "an update and the login of u1");
    assert!(target.iter().all(|i| i["target"] == "u1"));
    let first = get(
        "/api/cdx/tenant-audit?limit=3".into(),
        admin_a.clone(),
        vec![],
    )
    .await;
    let cursor = first.body["next_cursor"].as_str().expect("a second page");
    let second = get(
        format!("/api/cdx/tenant-audit?limit=3&cursor={cursor}"),
        admin_a.clone(),
        vec![],
    )
    .await;
    let mut paged = ids(first.body["items"].as_array().expect("items"));
    paged.extend(ids(second.body["items"].as_array().expect("items")));
    assert_eq!(paged, ids(items));

    // Never another tenant's: naming it is refused, and `tenant` is no parameter here.
    let other = get(
        "/api/cdx/tenant-audit".into(),
        admin_a.clone(),
        vec![("x-tenant", b.clone())],
    )
    .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    let param = get(
        format!("/api/cdx/tenant-audit?tenant={b}"),
        admin_a.clone(),
        vec![],
    )
    .await;
    assert_eq!(param.status, StatusCode::BAD_REQUEST);
    let user = get("/api/cdx/tenant-audit".into(), token(&a, "user"), vec![]).await;
    assert_eq!(user.status, StatusCode::FORBIDDEN);
    let anonymous = app
        .send(Method::GET, "/api/cdx/tenant-audit", None, None, &[])
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    // Tenant admins do not read the platform-wide log.
    let platform_log = get("/api/cdx/audit".into(), admin_a.clone(), vec![]).await;
    assert_eq!(platform_log.status, StatusCode::FORBIDDEN);

    // The superadmin names the tenant.
    let root = app.token.clone();
    let none = get("/api/cdx/tenant-audit".into(), root.clone(), vec![]).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    let beta = get(
        "/api/cdx/tenant-audit".into(),
        root.clone(),
        vec![("x-tenant", "beta".into())],
    )
    .await;
    assert_eq!(beta.status, StatusCode::OK, "{}", beta.body);
    let beta = beta.body["items"].as_array().expect("items").clone();
    assert_eq!(beta.len(), 3);
    assert!(beta.iter().all(|i| i["tenant_id"] == b.as_str()));
    let unknown = get(
        "/api/cdx/tenant-audit".into(),
        root.clone(),
        vec![("x-tenant", "nope".into())],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // The platform-wide log filters by target too.
    let by_target = app.get("/api/cdx/audit?target=u1").await;
    let by_target = by_target.body["items"].as_array().expect("items").clone();
    assert_eq!(by_target.len(), 3, "u1 in both tenants, and the login");
    assert!(by_target.iter().all(|i| i["target"] == "u1"));
}

#[tokio::test]
async fn concurrent_writers_append_one_after_the_other() {
    let app = spawn_app().await;
    app.delivered().await;
    let mut tasks = Vec::new();
    for w in 0..6 {
        let consumer = app.cdx.consumer();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let events: Vec<Event> = (0..3)
                    .map(|j| event(None, "auth.user.updated", &format!("w{w}-{i}-{j}")))
                    .collect();
                let refs: Vec<&Event> = events.iter().collect();
                consumer.handle_batch(&refs).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let report = verify(&app.db).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(report.entries, 1 + 6 * 10 * 3);
}

#[tokio::test]
async fn the_export_lists_entries_in_chain_order() {
    let app = spawn_app().await;
    app.delivered().await;
    let t = new_id();
    publish(&app, Some(&t), 3).await;
    publish(&app, None, 2).await;
    let mut all = Vec::new();
    let n = chain::export(&app.db, None, None, None, |e| {
        all.push(e.seq.expect("seq"));
        Ok(())
    })
    .await
    .expect("export");
    assert_eq!((n, all), (6, vec![1, 2, 3, 4, 5, 6]));
    let mut of_tenant = Vec::new();
    chain::export(&app.db, Some(&t), None, None, |e| {
        of_tenant.push(e.tenant_id.clone());
        Ok(())
    })
    .await
    .expect("export");
    assert_eq!(of_tenant, vec![Some(t.clone()); 3]);
    let future = platform::ids::Timestamp::now().plus_secs(3600);
    let none = chain::export(&app.db, None, Some(future), None, |_| Ok(()))
        .await
        .expect("export");
    assert_eq!(none, 0);
}

#[tokio::test]
async fn pruning_keeps_the_chain_verifiable_from_its_signed_anchor() {
    let app = spawn_app().await;
    app.delivered().await;
    let consumer = app
        .cdx
        .clone()
        .with_audit(AuditSettings {
            checkpoint_every: 3,
            ..Default::default()
        })
        .consumer();
    // After the admin's entry (1): entries 2..=8 from 40 days ago, 9..=11 from now;
    // checkpoints at 3, 6 and 9.
    let old = platform::ids::Timestamp::now().plus_secs(-40 * 86_400);
    for i in 0..10 {
        let mut e = event(None, "auth.user.updated", &format!("u{i}"));
        if i < 7 {
            e.occurred_at = old;
        }
        consumer.handle(&e).await.expect("append");
    }
    assert_eq!(chain::prune(&app.db, 50).await.expect("prune"), None);

    // Pruned in chain order up to the newest checkpoint older than 30 days: entry 6.
    let pruned = chain::prune(&app.db, 30)
        .await
        .expect("prune")
        .expect("something pruned");
    assert_eq!((pruned.entries, pruned.through_seq), (6, 6));
    assert_eq!(chain::prune(&app.db, 30).await.expect("again"), None);
    let report = verify(&app.db).await;
    assert!(report.valid, "{report:?}");
    assert_eq!(report.pruned_through, 6);
    assert_eq!(report.entries, 5, "entries 7..=11 walked");
    assert_eq!(report.checkpoints, 2, "the anchor and checkpoint 9");
    assert_eq!(report.head_seq, 11);
    let seqs: Vec<i64> = chain_entries(&app)
        .await
        .iter()
        .map(|e| e["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [7, 8, 9, 10, 11]);

    // A changed entry after the anchor is still the first broken one.
    let detail: String = sqlx::query_scalar("SELECT detail FROM audit_log WHERE seq = 8")
        .fetch_one(app.db.reader())
        .await
        .expect("detail");
    let set_detail = |text: String| {
        let db = app.db.clone();
        async move {
            sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 8")
                .bind(text)
                .execute(db.writer())
                .await
                .expect("update")
        }
    };
    set_detail(r#"{"status":"forged"}"#.to_string()).await;
    let broken = verify(&app.db).await.broken.expect("tamper detected");
    assert_eq!(broken.seq, Some(8), "{}", broken.reason);
    set_detail(detail).await;
    assert!(verify(&app.db).await.valid);

    // Removing the entry right after the anchor is found.
    let removed = sqlx::query("DELETE FROM audit_log WHERE seq = 7")
        .execute(app.db.writer())
        .await
        .expect("delete")
        .rows_affected();
    assert_eq!(removed, 1);
    let broken = verify(&app.db).await.broken.expect("gap detected");
    assert_eq!(broken.seq, Some(7), "{}", broken.reason);

    // Moving the anchor (hiding more entries as "pruned") needs a signed checkpoint there.
    sqlx::query("UPDATE audit_chain_head SET pruned_seq = 7")
        .execute(app.db.writer())
        .await
        .expect("move anchor");
    let broken = verify(&app.db).await.broken.expect("unsigned anchor");
    assert_eq!(broken.seq, Some(7));
    assert!(broken.reason.contains("pruned"), "{}", broken.reason);
}
