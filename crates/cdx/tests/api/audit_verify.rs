//! The API's verification of the audit chain: a background run of the whole walk, one at a
//! time, whose verdict and progress any request reads without waiting for the walk.

use std::time::{Duration, Instant};

use cdx::chain::{self, PinnedKey, VerifyOptions};
use cdx::AuditSettings;
use platform::config::HttpSettings;
use platform::events::{Actor, Event};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{spawn_app, spawn_app_with, App, Reply};

async fn post(app: &App, path: &str) -> Reply {
    app.send(Method::POST, path, Some(&app.token), None, &[])
        .await
}

/// Appends `n` platform events to the chain, in batches as the relay hands them over.
async fn append(app: &App, n: usize) {
    let consumer = app.cdx.consumer();
    let events: Vec<Event> = (0..n)
        .map(|i| {
            Event::new(
                "auth",
                "auth.user.updated",
                None,
                &format!("u{i}"),
                &Actor::system("test"),
                json!({ "changed": ["status"] }),
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        let batch: Vec<&Event> = chunk.iter().collect();
        consumer.handle_batch(&batch).await.expect("append");
    }
}

/// Inserts a running verification as another CDX process would, beating at `heartbeat_at`.
async fn running_elsewhere(app: &App, id: &str, heartbeat_at: i64) {
    sqlx::query(
        "INSERT INTO audit_verifications (id, started_at, running, heartbeat_at, \
         entries_checked, entries_total) VALUES ($1, $2, 1, $2, 40, 100)",
    )
    .bind(id)
    .bind(heartbeat_at)
    .execute(app.db.writer())
    .await
    .expect("a running verification");
}

fn now_ms() -> i64 {
    platform::ids::Timestamp::now().millis()
}

#[tokio::test]
async fn a_started_verification_reports_its_verdict_and_finds_an_old_changed_row() {
    let app = spawn_app().await;
    app.delivered().await;
    append(&app, 30).await;

    let none = app.get("/api/cdx/audit/verify").await;
    assert_eq!(none.status, StatusCode::OK, "{}", none.body);
    assert_eq!(
        none.body,
        json!({ "latest": null, "running": null, "failed": null })
    );

    let started = post(&app, "/api/cdx/audit/verify").await;
    assert!(
        [StatusCode::ACCEPTED, StatusCode::OK].contains(&started.status),
        "{} {}",
        started.status,
        started.body
    );
    let id = started.body["running"]["id"]
        .as_str()
        .or_else(|| started.body["latest"]["id"].as_str())
        .expect("the run's id")
        .to_string();
    let done = app.get("/api/cdx/audit/verify?wait_ms=10000").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let latest = &done.body["latest"];
    assert_eq!(latest["id"], id.as_str(), "{}", done.body);
    assert_eq!(latest["valid"], true, "{}", done.body);
    assert_eq!(latest["entries"], 31, "the admin's entry and 30 events");
    assert_eq!(latest["head_seq"], 31);
    assert!(latest["broken"].is_null());
    assert!(latest["started_at"].as_str() <= latest["finished_at"].as_str());
    assert!(done.body["running"].is_null() && done.body["failed"].is_null());

    // An entry verified by the last run is changed: the next run walks everything again.
    sqlx::query("UPDATE audit_log SET target = 'forged' WHERE seq = 2")
        .execute(app.db.writer())
        .await
        .expect("tamper");
    append(&app, 5).await;
    let again = post(&app, "/api/cdx/audit/verify?wait_ms=10000").await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let latest = &again.body["latest"];
    assert_ne!(latest["id"], id.as_str(), "a new run");
    assert_eq!(latest["valid"], false, "{}", again.body);
    assert_eq!(latest["broken"]["seq"], 2);
    assert_eq!(
        latest["entries"], 1,
        "only the entry before the break verified"
    );

    // Only the newest verdict is kept.
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_verifications")
        .fetch_one(app.db.reader())
        .await
        .expect("count");
    assert_eq!(kept, 1);
}

#[tokio::test]
async fn one_verification_runs_at_a_time_and_an_abandoned_one_is_replaced() {
    let app = spawn_app().await;
    app.delivered().await;
    let other = platform::ids::new_id();
    running_elsewhere(&app, &other, now_ms()).await;

    let status = app.get("/api/cdx/audit/verify").await;
    assert_eq!(
        status.body["running"]["id"],
        other.as_str(),
        "{}",
        status.body
    );
    assert_eq!(status.body["running"]["entries_checked"], 40);
    assert_eq!(status.body["running"]["entries_total"], 100);

    let refused = post(&app, "/api/cdx/audit/verify").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "verification_running");
    assert_eq!(
        refused.body["error"]["details"]["running"]["id"],
        other.as_str()
    );

    // Waiting for a run that does not end gives up at `wait_ms`, still answering.
    let began = Instant::now();
    let waited = app.get("/api/cdx/audit/verify?wait_ms=400").await;
    assert_eq!(waited.status, StatusCode::OK);
    assert!(began.elapsed() >= Duration::from_millis(400));
    assert_eq!(waited.body["running"]["id"], other.as_str());

    // Its process stopped beating a while ago: it is reported abandoned, and replaced.
    sqlx::query("UPDATE audit_verifications SET heartbeat_at = $1 WHERE id = $2")
        .bind(now_ms() - 120_000)
        .bind(&other)
        .execute(app.db.writer())
        .await
        .expect("stale");
    let stale = app.get("/api/cdx/audit/verify").await;
    assert!(stale.body["running"].is_null(), "{}", stale.body);
    assert_eq!(stale.body["failed"]["id"], other.as_str());
    assert!(stale.body["failed"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("abandoned")));

    let replaced = post(&app, "/api/cdx/audit/verify?wait_ms=10000").await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    assert_eq!(replaced.body["latest"]["valid"], true, "{}", replaced.body);
    let closed: (Option<i64>, Option<String>) =
        sqlx::query_as("SELECT running, error FROM audit_verifications WHERE id = $1")
            .bind(&other)
            .fetch_one(app.db.reader())
            .await
            .expect("the abandoned run is kept as the newest failure");
    assert_eq!(closed.0, None);
    assert!(closed.1.is_some_and(|e| e.contains("abandoned")));
    // It is older than the verdict, so no longer reported.
    assert!(replaced.body["failed"].is_null(), "{}", replaced.body);
}

/// A log whose walk outlasts a request: every request answers before the request timeout,
/// and the verdict covers every entry.
#[tokio::test]
async fn a_log_longer_than_a_request_still_gets_a_verdict() {
    // A second: room for a status request's 150 ms wait on a busy machine (at 300 ms one
    // was cut off under a loaded CI run).
    let http = HttpSettings {
        request_timeout_ms: 1000,
        ..HttpSettings::default()
    };
    let app = spawn_app_with(http, AuditSettings::default()).await;
    app.delivered().await;
    append(&app, 20_000).await;

    let too_long = post(&app, "/api/cdx/audit/verify?wait_ms=1000").await;
    assert_eq!(
        too_long.status,
        StatusCode::BAD_REQUEST,
        "{}",
        too_long.body
    );
    assert!(
        too_long.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at most 900")),
        "{}",
        too_long.body
    );

    let started = post(&app, "/api/cdx/audit/verify?wait_ms=100").await;
    assert!(
        [StatusCode::ACCEPTED, StatusCode::OK].contains(&started.status),
        "{} {}",
        started.status,
        started.body
    );
    let mut progress = Vec::new();
    let verdict = loop {
        let status = app.get("/api/cdx/audit/verify?wait_ms=150").await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.body);
        if let Some(checked) = status.body["running"]["entries_checked"].as_i64() {
            assert_eq!(status.body["running"]["entries_total"], 20_001);
            progress.push(checked);
        } else {
            break status.body["latest"].clone();
        }
        assert!(progress.len() < 400, "no verdict after {progress:?}");
    };
    assert_eq!(verdict["valid"], true, "{verdict}");
    assert_eq!(verdict["entries"], 20_001);
    // The walk outlasted the requests that followed it, reporting its progress meanwhile.
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
}

#[tokio::test]
async fn only_the_superadmin_verifies_and_bad_waits_are_refused() {
    let app = spawn_app().await;
    let admin = app.tenant_token("admin");
    for method in [Method::GET, Method::POST] {
        let refused = app
            .send(
                method.clone(),
                "/api/cdx/audit/verify",
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{method}");
        let anonymous = app
            .send(method, "/api/cdx/audit/verify", None, None, &[])
            .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
    for query in ["wait_ms=soon", "wait_ms=-1", "wait_ms=60000", "wait=5"] {
        let bad = app.get(&format!("/api/cdx/audit/verify?{query}")).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{query}: {}", bad.body);
        let body: &Value = &bad.body;
        assert!(body["error"]["code"].is_string(), "{query}: {body}");
    }
    let nothing_started: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_verifications")
        .fetch_one(app.db.reader())
        .await
        .expect("count");
    assert_eq!(nothing_started, 0);
}

/// Replaces every checkpoint and key by ones of a key CDX generates anew, as whoever can
/// write the database can; answers the position of the new checkpoint.
async fn re_sign_with_a_new_key(app: &App) -> i64 {
    for sql in [
        "DELETE FROM audit_checkpoints",
        "DELETE FROM audit_signing_keys",
        "UPDATE audit_chain_head SET checkpoint_seq = 0",
    ] {
        sqlx::query(sql)
            .execute(app.db.writer())
            .await
            .expect("re-sign");
    }
    app.cdx
        .checkpoint_audit()
        .await
        .expect("checkpoint")
        .expect("signed")
}

#[tokio::test]
async fn with_a_pinned_key_a_re_signed_chain_fails_the_api_verification() {
    let key = platform::token::generate_key().expect("key");
    let audit = AuditSettings {
        pinned_public_keys: vec![PinnedKey::parse(&key.public_x).expect("a key")],
        ..AuditSettings::default()
    };
    let app = spawn_app_with(HttpSettings::default(), audit).await;
    app.delivered().await;
    // The pinned key is the one CDX signs with.
    sqlx::query(
        "INSERT INTO audit_signing_keys (id, algorithm, public_key, private_pkcs8, created_at) \
         VALUES ($1, 'Ed25519', $2, $3, $4)",
    )
    .bind(&key.kid)
    .bind(&key.public_x)
    .bind(&key.private_pkcs8)
    .bind(now_ms())
    .execute(app.db.writer())
    .await
    .expect("the operator's key");
    append(&app, 3).await;
    let signed = app
        .cdx
        .checkpoint_audit()
        .await
        .expect("sign")
        .expect("signed");

    let genuine = post(&app, "/api/cdx/audit/verify?wait_ms=10000").await;
    let latest = &genuine.body["latest"];
    assert_eq!(latest["valid"], true, "{}", genuine.body);
    assert_eq!(latest["pinned"], true);
    assert_eq!(latest["signed_through"], signed);
    assert_eq!(latest["keys"][0]["pinned"], true);

    let head = re_sign_with_a_new_key(&app).await;
    let forged = post(&app, "/api/cdx/audit/verify?wait_ms=10000").await;
    let latest = &forged.body["latest"];
    assert_eq!(latest["valid"], false, "{}", forged.body);
    assert_eq!(latest["broken"]["seq"], head);
    assert!(
        latest["broken"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a pinned key")),
        "{}",
        forged.body
    );
    // Trusting the keys the database holds, the re-signed chain passes.
    let unpinned = chain::verify(&app.db, &VerifyOptions::default())
        .await
        .expect("verify");
    assert!(unpinned.valid, "{unpinned:?}");
    assert!(!unpinned.pinned);
}
