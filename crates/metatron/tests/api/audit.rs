//! Every action leaves its audit entry in CDX.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{within, TestApp, ADMIN, SUPERADMIN, USER};

/// Audit entries matching `query`, waiting (10 s at most) for the relay.
async fn audit(app: &TestApp, token: &str, query: &str, at_least: usize) -> Vec<Value> {
    let path = format!("/api/cdx/audit?{query}");
    within(std::time::Duration::from_secs(10), || async {
        let (status, page) = app.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        (items.len() >= at_least).then_some(items)
    })
    .await
    .unwrap_or_else(|| panic!("fewer than {at_least} audit entries for {query}"))
}

#[tokio::test]
async fn logins_user_changes_and_revocations_are_audited() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    let admin = app.token(ADMIN).await;
    app.login_as((USER.0, "wrong-pass"), None).await;
    let user = app
        .create_user(&admin, None, "audited@demo.com", "user")
        .await;
    let user_id = user["id"].as_str().expect("id");
    app.call(
        Method::PATCH,
        &format!("/api/auth/users/{user_id}"),
        Some(&admin),
        Some(json!({ "status": "disabled" })),
    )
    .await;
    app.call(Method::POST, "/api/auth/logout", Some(&admin), None)
        .await;

    let failed = audit(&app, &root, "action=auth.login.failed", 1).await;
    assert_eq!(failed[0]["detail"]["reason"], "bad_credentials");
    assert_eq!(failed[0]["detail"]["username"], USER.0);
    assert!(failed[0]["request_id"].is_string());
    assert!(failed[0]["ip"].is_string());

    let succeeded = audit(&app, &root, "action=auth.login.succeeded", 2).await;
    assert!(succeeded
        .iter()
        .any(|e| e["actor"]["role"] == "superadmin" && e["tenant_id"].is_null()));

    let created = audit(&app, &root, "action=auth.user.created", 1).await;
    let entry = created
        .iter()
        .find(|e| e["target"] == user_id)
        .expect("user.created entry");
    assert_eq!(entry["actor"]["role"], "admin");
    assert!(entry["tenant_id"].is_string());
    assert!(
        entry["detail"].get("password").is_none() && entry["detail"].get("password_hash").is_none()
    );

    let updated = audit(&app, &root, "action=auth.user.updated", 1).await;
    assert_eq!(updated[0]["detail"]["changed"], json!(["status"]));
    audit(&app, &root, "action=auth.session.revoked", 1).await;

    // Prefix filter, tenant filter and paging by cursor.
    let all_auth = audit(&app, &root, "action=auth.*&limit=500", 5).await;
    let tenant_id = entry["tenant_id"].as_str().expect("tenant");
    let scoped = audit(&app, &root, &format!("tenant={tenant_id}&limit=500"), 1).await;
    assert!(scoped.iter().all(|e| e["tenant_id"] == tenant_id));
    assert!(scoped.len() < all_auth.len() + 10);
    let (_, first) = app
        .call(Method::GET, "/api/cdx/audit?limit=2", Some(&root), None)
        .await;
    let cursor = first["next_cursor"].as_str().expect("more than one page");
    let (_, second) = app
        .call(
            Method::GET,
            &format!("/api/cdx/audit?limit=2&cursor={cursor}"),
            Some(&root),
            None,
        )
        .await;
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);
}

#[tokio::test]
async fn nothing_secret_reaches_the_audit_trail() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    app.login_as((USER.0, "hunter2-secret"), None).await;
    // The failed login's entry is there (the one that could carry the password) ...
    audit(&app, &root, "action=auth.login.failed", 1).await;
    // ... among everything the trail holds.
    let entries = audit(&app, &root, "limit=500", 3).await;
    let text = serde_json::to_string(&entries).expect("json");
    assert!(!text.contains("hunter2-secret"));
    assert!(!text.contains("$argon2id$"));
}

#[tokio::test]
async fn audit_verify_passes_on_a_clean_trail_and_fails_after_tampering() {
    let dbs = platform::testing::TestDatabases::new();
    let settings = crate::common::test_settings(&dbs);
    let run = |args: &[&str]| crate::cli::metatron(&settings, args, None);
    let (ok, out, err) = run(&["seed-demo"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(ok, "a clean trail verifies: {out}{err}");
    assert!(out.contains("OK") && out.contains("head: entry"), "{out}");
    let (ok, out, err) = run(&["audit", "verify", "--json"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["valid"], true);
    let entries = report["entries"].as_i64().expect("entries");
    assert!(entries >= 5, "{report}");

    let (ok, out, err) = run(&["audit", "export"]);
    assert!(ok, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON entry per line"))
        .collect();
    assert_eq!(lines.len() as i64, entries);
    assert_eq!(lines[0]["seq"], 1);
    let tenant = lines
        .iter()
        .find_map(|l| l["tenant_id"].as_str())
        .expect("a tenant's entry")
        .to_string();
    let (ok, out, _) = run(&["audit", "export", "--tenant", &tenant]);
    assert!(ok);
    assert!(out
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).expect("json")["tenant_id"] == tenant.as_str()));
    let (ok, _, err) = run(&["audit", "export", "--from", "yesterday"]);
    assert!(!ok && err.contains("--from"), "{err}");

    let url = settings.cdx.database.url.as_deref().expect("url");
    let db = platform::db::Db::connect_existing("cdx", url, Some(1), &settings.database)
        .await
        .expect("cdx database");
    sqlx::query("UPDATE audit_log SET actor_name = 'someone else' WHERE seq = 2")
        .execute(db.writer())
        .await
        .expect("tamper");
    db.close().await;
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(!ok, "a tampered trail fails: {out}");
    assert!(out.contains("BROKEN at entry 2"), "{out}");
    assert!(err.contains("broken at entry 2"), "{err}");
}

/// `metatron audit prune` removes the entries past the retention up to a signed checkpoint;
/// `metatron audit verify` still verifies the rest from that anchor and still finds a change.
#[tokio::test]
async fn pruned_audit_trail_still_verifies_and_still_shows_tampering() {
    let app = TestApp::spawn().await;
    let root = app.token(SUPERADMIN).await;
    app.app().flush_events().await.expect("events delivered");
    let consumer = app.app().cdx.consumer();
    let old = platform::ids::Timestamp::now().plus_secs(-40 * 86_400);
    for i in 0..5 {
        let mut event = platform::events::Event::new(
            "crm",
            "crm.customer.created",
            None,
            &format!("old-{i}"),
            &platform::events::Actor::system("test"),
            json!({}),
        );
        event.occurred_at = old;
        consumer.handle(&event).await.expect("audited");
    }
    let anchor = app
        .app()
        .cdx
        .checkpoint_audit()
        .await
        .expect("checkpoint")
        .expect("signed");
    // Something recent after the anchor.
    app.create_user(&root, Some("demo"), "recent@demo.com", "user")
        .await;
    app.app().flush_events().await.expect("events delivered");

    let (ok, out, err) = crate::cli::metatron(&app.settings, &["audit", "prune"], None);
    assert!(!ok && err.contains("retention_days"), "{out}{err}");
    let (ok, out, err) =
        crate::cli::metatron(&app.settings, &["audit", "prune", "--days", "30"], None);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("the chain now starts after entry {anchor}")),
        "{out}"
    );
    let (ok, out, err) = crate::cli::metatron(&app.settings, &["audit", "verify", "--json"], None);
    assert!(ok, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["pruned_through"], anchor);
    let recent = audit(&app, &root, "action=auth.user.created&limit=500", 1).await;
    assert!(recent.iter().all(|e| e["seq"].as_i64() > Some(anchor)));
    assert!(audit(&app, &root, "action=crm.customer.created", 0)
        .await
        .iter()
        .all(|e| !e["target"].as_str().unwrap_or("").starts_with("old-")));

    // A changed entry after the anchor breaks the chain there.
    let seq = recent[0]["seq"].as_i64().expect("seq");
    let db = &app
        .app()
        .services
        .iter()
        .find(|s| s.info.name == "cdx")
        .expect("cdx")
        .db;
    sqlx::query("UPDATE audit_log SET ip = '10.6.6.6' WHERE seq = $1")
        .bind(seq)
        .execute(db.writer())
        .await
        .expect("tamper");
    let (ok, out, err) = crate::cli::metatron(&app.settings, &["audit", "verify"], None);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("broken at entry {seq}")),
        "{out}{err}"
    );
}

/// Whoever can write the cdx database can recompute the chain and re-sign every checkpoint
/// with a key of their own: verification only notices against a key pinned outside it.
#[tokio::test]
async fn a_chain_re_signed_with_another_key_fails_only_against_the_pinned_key() {
    let app = TestApp::spawn().await;
    app.app().flush_events().await.expect("events delivered");
    app.app()
        .cdx
        .checkpoint_audit()
        .await
        .expect("checkpoint")
        .expect("signed");
    let (ok, keys, err) = crate::cli::metatron(&app.settings, &["audit", "key"], None);
    assert!(ok, "{keys}{err}");
    let (key_id, public_key) = keys
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("`<key id> <public key>`: {keys}"));
    let key_file = app.settings.data_dir.join("pinned-keys.txt");
    std::fs::write(&key_file, format!("# pinned today\n{keys}")).expect("key file");
    let key_file = key_file.to_str().expect("utf-8 path");
    let verify = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["audit", "verify"];
        all.extend_from_slice(args);
        crate::cli::metatron_with_env(&app.settings, &all, None, env)
    };
    let (ok, out, err) = verify(&["--public-key", public_key], &[]);
    assert!(ok, "the genuine chain verifies against its key: {out}{err}");
    assert!(out.contains("pinned"), "{out}");
    let (ok, out, err) = verify(&["--public-key-file", key_file], &[]);
    assert!(ok, "{out}{err}");

    // Every checkpoint and key is replaced by ones signed with a new key.
    let db = &app
        .app()
        .services
        .iter()
        .find(|s| s.info.name == "cdx")
        .expect("cdx")
        .db;
    for sql in [
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_signing_keys",
        "UPDATE audit_chain_head SET checkpoint_seq = 0",
    ] {
        sqlx::query(sql)
            .execute(db.writer())
            .await
            .expect("re-sign");
    }
    let head = app
        .app()
        .cdx
        .checkpoint_audit()
        .await
        .expect("checkpoint")
        .expect("signed");

    let (ok, out, err) = verify(&[], &[]);
    assert!(
        ok,
        "without a pinned key the re-signed chain passes: {out}{err}"
    );
    let (ok, out, err) = verify(&["--public-key", public_key], &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("broken at entry {head}"))
            && err.contains("which is not a pinned key"),
        "{err}"
    );
    let (ok, _, err) = verify(&["--public-key-file", key_file], &[]);
    assert!(!ok && err.contains("not a pinned key"), "{err}");
    // The setting pins the key too, from the environment as from the file.
    let pinned = format!("[\"{public_key}\"]");
    let (ok, out, _) = verify(
        &["--json"],
        &[("METATRON_CDX_AUDIT_PINNED_PUBLIC_KEYS", pinned.as_str())],
    );
    assert!(!ok, "{out}");
    let report: Value = serde_json::from_str(&out).expect("report");
    assert_eq!(report["pinned"], true);
    assert_eq!(report["broken"]["seq"], head, "{report}");
    assert!(report["keys"].as_array().is_some_and(|keys| keys
        .iter()
        .all(|k| k["id"] != key_id && k["pinned"] == false)));

    // Keys that are no keys are refused, naming what is wrong.
    let (ok, _, err) = verify(&["--public-key", "not-a-key"], &[]);
    assert!(
        !ok && err.contains("--public-key") && err.contains("Ed25519"),
        "{err}"
    );
    let (ok, _, err) = verify(
        &[],
        &[("METATRON_CDX_AUDIT_PINNED_PUBLIC_KEYS", "[\"abc\"]")],
    );
    assert!(!ok && err.contains("pinned_public_keys"), "{err}");
}
