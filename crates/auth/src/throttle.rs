//! Brute-force protection: per-account and per-IP lockouts that grow with each failure,
//! computed from the `login_attempts` table so they hold across restarts and replicas.

use axum::http::StatusCode;
use platform::caller::RequestMeta;
use platform::events::{record, Actor, Event};
use platform::ids::Timestamp;
use platform::ApiError;
use serde_json::json;

use crate::events::LOGIN_FAILED;
use crate::store;
use crate::Auth;

impl Auth {
    /// Records a failed login as an `auth.login.failed` event and, when `counts`, as a
    /// failed attempt for throttling.
    pub(crate) async fn record_failure(
        &self,
        username: &str,
        account_key: &str,
        reason: &str,
        meta: &RequestMeta,
        counts: bool,
    ) -> Result<(), ApiError> {
        let actor = Actor {
            id: None,
            role: "anonymous".into(),
            name: Some(username.to_string()),
            request_id: meta.request_id.clone(),
            ip: meta.ip.clone(),
        };
        let event = Event::new(
            "auth",
            LOGIN_FAILED,
            None,
            account_key,
            &actor,
            json!({ "username": username, "reason": reason }),
        );
        let mut tx = self.0.db.begin().await?;
        if counts {
            store::insert_attempt(
                &mut tx,
                account_key,
                meta.ip.as_deref(),
                None,
                Some(reason),
                Timestamp::now(),
            )
            .await?;
        }
        record(&mut tx, &event).await?;
        tx.commit().await?;
        self.0.outbox.notify();
        Ok(())
    }

    pub(crate) async fn check_throttle(
        &self,
        account_key: &str,
        ip: Option<&str>,
    ) -> Result<(), ApiError> {
        let t = &self.0.config.throttle;
        let now = Timestamp::now();
        let since = now.plus_secs(-t.window_secs);
        let lockout = |failures: i64, threshold: i64, latest: Option<Timestamp>| -> Option<i64> {
            let latest = latest?;
            if failures < threshold {
                return None;
            }
            let doublings = (failures - threshold).min(20) as u32;
            let secs = t
                .base_lockout_secs
                .saturating_mul(1i64 << doublings)
                .min(t.max_lockout_secs);
            let remaining_ms = latest.plus_secs(secs).millis() - now.millis();
            (remaining_ms > 0).then(|| (remaining_ms + 999) / 1000)
        };
        let seen = store::failures(self.0.db.reader(), account_key, ip, since).await?;
        let wait = lockout(seen.account, t.account_failures, seen.account_latest).max(lockout(
            seen.ip,
            t.ip_failures,
            seen.ip_latest,
        ));
        match wait {
            Some(secs) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed logins; try again in {secs} seconds"),
            )
            .with_retry_after(secs as u64)),
            None => Ok(()),
        }
    }
}
