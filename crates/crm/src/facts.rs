//! The CRM's facts for CDX's aggregates ([`platform::facts`]): the number of customers and
//! of companies of each tenant, and every deal with its status, value and currency.

use async_trait::async_trait;
use platform::db::Db;
use platform::facts::{DealFact, FactsPage, PageBuilder, ServiceFacts};
use platform::ApiError;
use sqlx::Row;

/// Reads the facts from the CRM's database (in-process, and behind `/internal/crm/facts`).
#[derive(Debug, Clone)]
pub struct CrmFacts {
    db: Db,
}

impl CrmFacts {
    /// The facts of the CRM database `db`.
    pub fn new(db: Db) -> Self {
        CrmFacts { db }
    }
}

#[async_trait]
impl ServiceFacts for CrmFacts {
    async fn facts(&self, after: Option<&str>, limit: i64) -> Result<FactsPage, ApiError> {
        let mut page = PageBuilder::start(&self.db, after, limit).await?;
        page.fill(
            &self.db,
            "SELECT tenant_id, COUNT(*) AS n FROM customers \
             WHERE tenant_id BETWEEN $1 AND $2 GROUP BY tenant_id",
            |facts, row| {
                facts.customers = row.try_get("n")?;
                Ok(())
            },
        )
        .await?;
        page.fill(
            &self.db,
            "SELECT tenant_id, COUNT(*) AS n FROM companies \
             WHERE tenant_id BETWEEN $1 AND $2 GROUP BY tenant_id",
            |facts, row| {
                facts.companies = row.try_get("n")?;
                Ok(())
            },
        )
        .await?;
        page.fill(
            &self.db,
            "SELECT tenant_id, id, status, value, currency FROM deals \
             WHERE tenant_id BETWEEN $1 AND $2 ORDER BY tenant_id, id",
            |facts, row| {
                facts.deals.push(DealFact {
                    id: row.try_get("id")?,
                    status: row.try_get("status")?,
                    value: row.try_get("value")?,
                    currency: row.try_get("currency")?,
                });
                Ok(())
            },
        )
        .await?;
        Ok(page.finish())
    }
}
