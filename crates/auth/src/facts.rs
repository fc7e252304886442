//! Auth's facts for CDX's aggregates ([`platform::facts`]): every tenant user with its
//! status, and the successful logins of the last two days (one session each; superadmin
//! sessions carry no tenant and are left out).

use async_trait::async_trait;
use platform::db::Db;
use platform::facts::{
    FactsPage, LoginFact, PageBuilder, ServiceFacts, UserFact, RECENT_LOGINS_MS,
};
use platform::ids::Timestamp;
use platform::ApiError;
use sqlx::Row;

/// Reads the facts from auth's database (in-process, and behind `/internal/auth/facts`).
#[derive(Debug, Clone)]
pub struct AuthFacts {
    db: Db,
}

impl AuthFacts {
    /// The facts of auth's database `db`.
    pub fn new(db: Db) -> Self {
        AuthFacts { db }
    }
}

#[async_trait]
impl ServiceFacts for AuthFacts {
    async fn facts(&self, after: Option<&str>, limit: i64) -> Result<FactsPage, ApiError> {
        let mut page = PageBuilder::start(&self.db, after, limit).await?;
        page.fill(
            &self.db,
            "SELECT tenant_id, id, status FROM users \
             WHERE tenant_id BETWEEN $1 AND $2 ORDER BY tenant_id, id",
            |facts, row| {
                facts.users.push(UserFact {
                    id: row.try_get("id")?,
                    status: row.try_get("status")?,
                });
                Ok(())
            },
        )
        .await?;
        let since = Timestamp::now().millis() - RECENT_LOGINS_MS;
        page.fill(
            &self.db,
            &format!(
                "SELECT tenant_id, id, created_at FROM sessions \
                 WHERE tenant_id BETWEEN $1 AND $2 AND created_at >= {since} \
                 ORDER BY tenant_id, created_at"
            ),
            |facts, row| {
                facts.logins.push(LoginFact {
                    session_id: row.try_get("id")?,
                    at: row.try_get("created_at")?,
                });
                Ok(())
            },
        )
        .await?;
        Ok(page.finish())
    }
}
